// The N-API layer: thin wrappers that validate JS arguments, run the C++ core in workers and turn
// results into plain JS values (all buffers in V8's own memory, as Electron requires).
#include "napi_exports.h"
#include "pg_log.h"

#include <napi.h>

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    pg_log_init();
    pg_register_system(env, exports);
    pg_register_gguf(env, exports);
    pg_register_convert(env, exports);
    pg_register_model(env, exports);
    pg_register_image(env, exports);
    return exports;
}

NODE_API_MODULE(paligemma, Init)

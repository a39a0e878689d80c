// The N-API layer: thin wrappers that convert JS arguments, run the C++ core in workers and turn
// results into plain JS values (all buffers in V8's own memory, as Electron requires).
#include "napi_addon_data.h"
#include "napi_exports.h"
#include "pg_error.h"
#include "pg_generate.h"
#include "pg_log.h"

#include <napi.h>

namespace {

// Enumerations the TypeScript contract (lib/native/contract.ts) spells too; a test compares them.
Napi::Object constants(Napi::Env env) {
    Napi::Object o     = Napi::Object::New(env);
    Napi::Array  codes = Napi::Array::New(env);
    for (int c = PG_ERR_INVALID_ARGUMENT; c <= PG_ERR_INTERNAL; ++c) codes.Set(codes.Length(), pg_error_code_name((pg_error_code) c));
    o.Set("errorCodes", codes);
    Napi::Array reasons = Napi::Array::New(env);
    for (const char * r : PG_STOP_REASON_NAMES) reasons.Set(reasons.Length(), r);
    o.Set("stopReasons", reasons);
    Napi::Array phases = Napi::Array::New(env);
    for (const char * r : PG_PHASE_NAMES) phases.Set(phases.Length(), r);
    o.Set("phases", phases);
    return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    pg_log_init();
    auto * data = new pg_addon_data();
    env.SetInstanceData<pg_addon_data>(data);
    env.AddCleanupHook([data]() { data->abort_all(); });
    pg_register_system(env, exports);
    pg_register_gguf(env, exports);
    pg_register_convert(env, exports);
    pg_register_model(env, exports);
    pg_register_image(env, exports);
    exports.Set("constants", constants(env));
    return exports;
}

}  // namespace

NODE_API_MODULE(paligemma, Init)

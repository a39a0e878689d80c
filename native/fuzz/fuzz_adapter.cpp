// libFuzzer target: bytes as a LoRA adapter file, loaded as the text part and as the vision part of
// an adapter for the tiny model (the paths a hostile adapter takes: our checks, then llama.cpp's
// adapter loader and our vision adapter loader). Loaded adapters are freed again at once.
#include "fuzz_model.h"

#include <unistd.h>
#include <cstdio>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const std::string path = "/tmp/pg-fuzz-adapter-" + std::to_string(getpid()) + ".gguf";
    pg_model *               m    = pg_fuzz_model();
    FILE *                   f    = fopen(path.c_str(), "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    for (int as_vision = 0; as_vision < 2; ++as_vision) {
        int             id = -1;
        pg_adapter_info info;
        pg_error        err;
        if (pg_model_load_adapter(*m, as_vision ? "" : path, as_vision ? path : "", id, info, err)) pg_model_free_adapter(*m, id);
    }
    return 0;
}

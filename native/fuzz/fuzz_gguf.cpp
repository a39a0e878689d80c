// libFuzzer target: GGUF bytes -> our header/bounds checks -> the text-model validator and the
// vision loader (the paths a hostile model file takes before any inference).
#include "pg_gguf.h"
#include "pg_text.h"
#include "pg_vision.h"

#include <unistd.h>
#include <cstdio>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const std::string path = "/tmp/pg-fuzz-" + std::to_string(getpid()) + ".gguf";
    FILE *                   f    = fopen(path.c_str(), "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    pg_error     err;
    pg_gguf_file g;
    if (pg_gguf_open(path, g, err) && pg_gguf_check_data_bounds(g, err)) {
        pg_error e1, e2;
        pg_text_check_file(path, e1);
        pg_vision_model  vm;
        pg_vision_params vp;
        pg_vision_load(path, vp, vm, nullptr, e2);
    }
    return 0;
}

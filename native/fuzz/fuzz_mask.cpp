// libFuzzer target: 16 arbitrary integers as <seg> codes into the mask decoder (out-of-range codes
// must be refused, never index the codebook).
#include "fuzz_model.h"

#include <cstring>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (size < 16 * sizeof(int32_t)) return 0;
    int32_t codes[16];
    memcpy(codes, data, sizeof codes);
    std::vector<float> mask;
    pg_error           err;
    pg_model_decode_mask(*pg_fuzz_model(), codes, mask, err);
    return 0;
}

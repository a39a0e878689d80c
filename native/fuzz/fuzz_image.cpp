// libFuzzer target: image bytes -> decoding (stb_image behind our header checks) -> PIL-exact resize.
#include "pg_image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    pg_image_rgb img;
    pg_error     err;
    if (pg_image_decode(data, size, std::string(), img, err) && (uint64_t) img.width * img.height <= 4u * 1000 * 1000) {
        const float        mean[3] = { 0.5f, 0.5f, 0.5f }, std[3] = { 0.5f, 0.5f, 0.5f };
        std::vector<float> out;
        pg_image_preprocess(img, 56, mean, std, out);
    }
    return 0;
}

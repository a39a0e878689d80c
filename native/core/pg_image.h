// Images: decoding (PNG, JPEG, BMP, GIF first frame) to 8-bit RGB as PIL's convert('RGB') does, and
// PaliGemma's preprocessing: PIL's BICUBIC resize to S x S (its exact fixed-point two-pass
// algorithm), then x/255, then (x - mean) / std, channels first.
#pragma once
#include "pg_error.h"

#include <cstdint>
#include <string>
#include <vector>

// Largest image accepted, in pixels (checked from the header, before any pixel is decoded).
constexpr uint64_t PG_MAX_IMAGE_PIXELS = 100ull * 1000 * 1000;

struct pg_image_rgb {
    int                  width  = 0;
    int                  height = 0;
    std::vector<uint8_t> rgb;  // width * height * 3, row major
};

// Decodes an encoded image held in memory. `label` names it in error messages ("cannot decode image
// photo.jpg: ..."); it may be empty.
bool pg_image_decode(const uint8_t * data, size_t size, const std::string & label, pg_image_rgb & out, pg_error & err);

// Reads width and height from the header only (no pixel is decoded).
bool pg_image_size(const uint8_t * data, size_t size, const std::string & label, int & width, int & height, pg_error & err);

// Wraps raw pixels with 1 (gray), 3 (RGB) or 4 (RGBA: alpha dropped, as PIL's convert('RGB')) channels.
bool pg_image_from_pixels(const uint8_t * data, size_t size, int width, int height, int channels, pg_image_rgb & out, pg_error & err);

// PIL Image.resize((w, h), Image.BICUBIC) on an RGB image, bit-exact.
void pg_image_resize_bicubic(const pg_image_rgb & in, int out_w, int out_h, pg_image_rgb & out);

// Resize to size x size, then normalize to planar float: out[c][y][x] = (v/255 - mean[c]) / std[c].
void pg_image_preprocess(const pg_image_rgb & in, int size, const float mean[3], const float std[3], std::vector<float> & out);

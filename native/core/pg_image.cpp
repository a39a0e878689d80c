#include "pg_image.h"

// stb_image comes from the pinned llama.cpp tree (vendor/stb); compiled here with only what we use.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_NO_STDIO
#include "stb_image.h"
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <cmath>
#include <cstring>
#include <string>

namespace {

// stb_image's failure reasons are terse words ("outofdata"); say what they mean.
std::string decode_failure(const std::string & label) {
    const char * why    = stbi_failure_reason();
    std::string  reason = why ? why : "corrupt data";
    if (reason == "outofdata" || reason == "bad zlib header" || reason == "no IDAT")
        reason = "the data ends early (a truncated file?)";
    else if (reason == "unknown image type")
        reason = "not a PNG, JPEG, BMP or GIF image";
    else
        reason = "corrupt data (" + reason + ")";
    return "cannot decode image" + (label.empty() ? std::string() : " " + label) + ": " + reason;
}

}  // namespace

bool pg_image_size(const uint8_t * data, size_t size, const std::string & label, int & w, int & h, pg_error & err) {
    const std::string name = label.empty() ? "image" : "image " + label;
    if (!data || size == 0) return err.set(PG_ERR_INVALID_IMAGE, name + " is empty");
    if (size > (size_t) INT32_MAX) return err.set(PG_ERR_INVALID_IMAGE, name + ": data is larger than 2 GiB");
    int comp = 0;
    if (!stbi_info_from_memory(data, (int) size, &w, &h, &comp)) return err.set(PG_ERR_INVALID_IMAGE, decode_failure(label));
    return true;
}

bool pg_image_decode(const uint8_t * data, size_t size, const std::string & label, pg_image_rgb & out, pg_error & err) {
    int w = 0, h = 0;
    // Dimensions first, from the header alone: a crafted header must not make us allocate gigabytes.
    if (!pg_image_size(data, size, label, w, h, err)) return false;
    const std::string name = label.empty() ? "image" : "image " + label;
    if (w <= 0 || h <= 0) return err.set(PG_ERR_INVALID_IMAGE, name + " has no pixels");
    if ((uint64_t) w * (uint64_t) h > PG_MAX_IMAGE_PIXELS) {
        return err.set(PG_ERR_INVALID_IMAGE, name + " is " + std::to_string(w) + "x" + std::to_string(h) + ", over the limit of " +
                                                 std::to_string(PG_MAX_IMAGE_PIXELS / 1000000) + " megapixels");
    }
    int       got_w = 0, got_h = 0, got_comp = 0;
    stbi_uc * px = stbi_load_from_memory(data, (int) size, &got_w, &got_h, &got_comp, 3);
    if (!px) return err.set(PG_ERR_INVALID_IMAGE, decode_failure(label));
    out.width  = got_w;
    out.height = got_h;
    out.rgb.assign(px, px + (size_t) got_w * got_h * 3);
    stbi_image_free(px);
    return true;
}

bool pg_image_from_pixels(const uint8_t * data, size_t size, int width, int height, int channels, pg_image_rgb & out, pg_error & err) {
    if (width <= 0 || height <= 0) return err.set(PG_ERR_INVALID_ARGUMENT, "raw image: width and height must be positive");
    if ((uint64_t) width * (uint64_t) height > PG_MAX_IMAGE_PIXELS) {
        return err.set(PG_ERR_INVALID_IMAGE, "raw image is over the limit of " + std::to_string(PG_MAX_IMAGE_PIXELS / 1000000) + " megapixels");
    }
    if (channels != 1 && channels != 3 && channels != 4) {
        return err.set(PG_ERR_INVALID_ARGUMENT, "raw image: channels must be 1, 3 or 4, got " + std::to_string(channels));
    }
    const size_t n = (size_t) width * height;
    if (size != n * channels) {
        return err.set(PG_ERR_INVALID_ARGUMENT, "raw image: data has " + std::to_string(size) + " bytes, expected " + std::to_string(width) + "*" +
                                                    std::to_string(height) + "*" + std::to_string(channels) + " = " + std::to_string(n * channels));
    }
    out.width  = width;
    out.height = height;
    out.rgb.resize(n * 3);
    for (size_t i = 0; i < n; ++i) {
        for (int c = 0; c < 3; ++c) out.rgb[i * 3 + c] = data[i * channels + (channels == 1 ? 0 : c)];
    }
    return true;
}

// ---- PIL's resampling (libImaging/Resample.c), reimplemented: same filter, coefficients and rounding ----

namespace {

constexpr int PRECISION_BITS = 32 - 8 - 2;

double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

struct coeffs {
    int              ksize = 0;
    std::vector<int> bounds;  // per output: first input index, count
    std::vector<int> k;       // per output: ksize fixed-point weights
};

// Weights for mapping in_size samples onto out_size; the filter widens by the scale when shrinking.
coeffs precompute_coeffs(int in_size, int out_size) {
    const double support_base = 2.0;  // bicubic
    double       scale        = (double) in_size / out_size;
    double       filterscale  = scale < 1.0 ? 1.0 : scale;
    double       support      = support_base * filterscale;
    coeffs       c;
    c.ksize = (int) std::ceil(support) * 2 + 1;
    c.bounds.resize((size_t) out_size * 2);
    c.k.assign((size_t) out_size * c.ksize, 0);
    std::vector<double> w((size_t) c.ksize);
    for (int xx = 0; xx < out_size; ++xx) {
        double center = (xx + 0.5) * scale;
        double ss     = 1.0 / filterscale;
        int    xmin   = (int) (center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int) (center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            w[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (int x = 0; x < xmax; ++x) {
            double v                       = ww != 0.0 ? w[x] / ww : w[x];
            c.k[(size_t) xx * c.ksize + x] = v < 0 ? (int) (-0.5 + v * (1 << PRECISION_BITS)) : (int) (0.5 + v * (1 << PRECISION_BITS));
        }
        c.bounds[xx * 2 + 0] = xmin;
        c.bounds[xx * 2 + 1] = xmax;
    }
    return c;
}

inline uint8_t clip8(int64_t in) {
    if (in >= ((int64_t) 1 << PRECISION_BITS << 8)) return 255;
    if (in <= 0) return 0;
    return (uint8_t) (in >> PRECISION_BITS);
}

}  // namespace

void pg_image_resize_bicubic(const pg_image_rgb & in, int out_w, int out_h, pg_image_rgb & out) {
    const bool need_h = out_w != in.width;
    const bool need_v = out_h != in.height;
    coeffs     ch     = precompute_coeffs(in.width, out_w);
    coeffs     cv     = precompute_coeffs(in.height, out_h);

    // Horizontal pass over the rows the vertical pass will read.
    const int            y_first = cv.bounds[0];
    const int            y_last  = cv.bounds[out_h * 2 - 2] + cv.bounds[out_h * 2 - 1];
    pg_image_rgb         tmp;
    const pg_image_rgb * src        = &in;
    int                  row_offset = 0;
    if (need_h) {
        tmp.width  = out_w;
        tmp.height = y_last - y_first;
        tmp.rgb.resize((size_t) tmp.width * tmp.height * 3);
        for (int y = 0; y < tmp.height; ++y) {
            const uint8_t * row = &in.rgb[(size_t) (y + y_first) * in.width * 3];
            uint8_t *       dst = &tmp.rgb[(size_t) y * out_w * 3];
            for (int xx = 0; xx < out_w; ++xx) {
                const int   xmin = ch.bounds[xx * 2], xmax = ch.bounds[xx * 2 + 1];
                const int * k  = &ch.k[(size_t) xx * ch.ksize];
                int64_t     s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < xmax; ++x) {
                    const uint8_t * p = row + (size_t) (x + xmin) * 3;
                    s0 += (int64_t) p[0] * k[x];
                    s1 += (int64_t) p[1] * k[x];
                    s2 += (int64_t) p[2] * k[x];
                }
                dst[xx * 3 + 0] = clip8(s0);
                dst[xx * 3 + 1] = clip8(s1);
                dst[xx * 3 + 2] = clip8(s2);
            }
        }
        src        = &tmp;
        row_offset = y_first;
    }
    if (!need_v) {
        if (src == &tmp)
            out = std::move(tmp);
        else
            out = in;
        return;
    }
    out.width  = src->width;
    out.height = out_h;
    out.rgb.resize((size_t) out.width * out_h * 3);
    for (int yy = 0; yy < out_h; ++yy) {
        const int   ymin = cv.bounds[yy * 2] - row_offset, ymax = cv.bounds[yy * 2 + 1];
        const int * k   = &cv.k[(size_t) yy * cv.ksize];
        uint8_t *   dst = &out.rgb[(size_t) yy * out.width * 3];
        for (int x = 0; x < out.width; ++x) {
            int64_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < ymax; ++y) {
                const uint8_t * p = &src->rgb[((size_t) (y + ymin) * src->width + x) * 3];
                s0 += (int64_t) p[0] * k[y];
                s1 += (int64_t) p[1] * k[y];
                s2 += (int64_t) p[2] * k[y];
            }
            dst[x * 3 + 0] = clip8(s0);
            dst[x * 3 + 1] = clip8(s1);
            dst[x * 3 + 2] = clip8(s2);
        }
    }
}

void pg_image_preprocess(const pg_image_rgb & in, int size, const float mean[3], const float std[3], std::vector<float> & out) {
    pg_image_rgb         resized;
    const pg_image_rgb * img = &in;
    if (in.width != size || in.height != size) {
        pg_image_resize_bicubic(in, size, size, resized);
        img = &resized;
    }
    const size_t plane = (size_t) size * size;
    out.resize(plane * 3);
    for (int c = 0; c < 3; ++c) {
        // Same arithmetic as the reference: x * (1/255) then (x - mean) / std, in float.
        const float scale = 1.0f / 255.0f;
        for (size_t i = 0; i < plane; ++i) out[c * plane + i] = ((float) img->rgb[i * 3 + c] * scale - mean[c]) / std[c];
    }
}

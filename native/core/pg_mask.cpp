#include "pg_mask.h"

#include <algorithm>
#include <string>

namespace {

bool read_tensor(const pg_vision_model & v, const std::string & name, std::vector<int64_t> torch_shape, std::vector<float> & out, pg_error & err) {
    ggml_tensor * t = pg_vision_tensor(v, name.c_str());
    if (!t) return err.set(PG_ERR_INVALID_FILE, v.path + ": segmentation decoder tensor '" + name + "' is missing");
    if (t->type != GGML_TYPE_F32) return err.set(PG_ERR_INVALID_FILE, v.path + ": '" + name + "' must be f32");
    // ggml order is the reversed PyTorch shape.
    const int n = (int) torch_shape.size();
    for (int d = 0; d < GGML_MAX_DIMS; ++d) {
        int64_t want = d < n ? torch_shape[n - 1 - d] : 1;
        if (t->ne[d] != want) return err.set(PG_ERR_INVALID_FILE, v.path + ": '" + name + "' has an unexpected shape");
    }
    out.resize(ggml_nelements(t));
    ggml_backend_tensor_get(t, out.data(), 0, ggml_nbytes(t));
    return true;
}

bool read_conv(const pg_vision_model & v, const std::string & name, int in, int out_ch, int k, bool transposed, pg_conv & c, pg_error & err) {
    c.in                       = in;
    c.out                      = out_ch;
    c.k                        = k;
    c.transposed               = transposed;
    std::vector<int64_t> shape = transposed ? std::vector<int64_t>{ in, out_ch, k, k } : std::vector<int64_t>{ out_ch, in, k, k };
    return read_tensor(v, "seg." + name + ".weight", shape, c.w, err) && read_tensor(v, "seg." + name + ".bias", { out_ch }, c.b, err);
}

// x: [C, H, W] -> [O, H, W], "same" padding.
std::vector<float> conv2d(const pg_conv & c, const std::vector<float> & x, int H, int W) {
    const int          pad = c.k / 2;
    std::vector<float> y((size_t) c.out * H * W);
    for (int o = 0; o < c.out; ++o) {
        float * yo = &y[(size_t) o * H * W];
        std::fill(yo, yo + H * W, c.b[o]);
        for (int i = 0; i < c.in; ++i) {
            const float * xi = &x[(size_t) i * H * W];
            for (int ky = 0; ky < c.k; ++ky) {
                for (int kx = 0; kx < c.k; ++kx) {
                    const float w = c.w[(((size_t) o * c.in + i) * c.k + ky) * c.k + kx];
                    for (int yy = 0; yy < H; ++yy) {
                        const int sy = yy + ky - pad;
                        if (sy < 0 || sy >= H) continue;
                        for (int xx = 0; xx < W; ++xx) {
                            const int sx = xx + kx - pad;
                            if (sx >= 0 && sx < W) yo[yy * W + xx] += w * xi[sy * W + sx];
                        }
                    }
                }
            }
        }
    }
    return y;
}

// x: [C, H, W] -> [O, 2H, 2W]; PyTorch ConvTranspose2d(k=4, stride=2, padding=1).
std::vector<float> conv_transpose2d(const pg_conv & c, const std::vector<float> & x, int H, int W) {
    const int          OH = H * 2, OW = W * 2;
    std::vector<float> y((size_t) c.out * OH * OW);
    for (int o = 0; o < c.out; ++o) std::fill(&y[(size_t) o * OH * OW], &y[(size_t) (o + 1) * OH * OW], c.b[o]);
    for (int i = 0; i < c.in; ++i) {
        const float * xi = &x[(size_t) i * H * W];
        for (int o = 0; o < c.out; ++o) {
            float *       yo = &y[(size_t) o * OH * OW];
            const float * w  = &c.w[((size_t) i * c.out + o) * 16];
            for (int iy = 0; iy < H; ++iy) {
                for (int ix = 0; ix < W; ++ix) {
                    const float v = xi[iy * W + ix];
                    for (int ky = 0; ky < 4; ++ky) {
                        const int oy = iy * 2 - 1 + ky;
                        if (oy < 0 || oy >= OH) continue;
                        for (int kx = 0; kx < 4; ++kx) {
                            const int ox = ix * 2 - 1 + kx;
                            if (ox >= 0 && ox < OW) yo[oy * OW + ox] += v * w[ky * 4 + kx];
                        }
                    }
                }
            }
        }
    }
    return y;
}

void relu(std::vector<float> & x) {
    for (float & v : x) v = v > 0 ? v : 0;
}

}  // namespace

bool pg_mask_decoder_init(const pg_vision_model & v, pg_mask_decoder & d, pg_error & err) {
    if (!v.hp.has_seg_decoder) {
        return err.set(PG_ERR_INVALID_ARGUMENT,
                       v.path + " has no segmentation decoder: reconvert with `paligemma convert <hf-dir> --seg-decoder vae-oid.npz`");
    }
    d.codebook = v.hp.seg_codebook;
    d.dim      = v.hp.seg_dim;
    if (d.codebook <= 0 || d.dim <= 0) return err.set(PG_ERR_INVALID_FILE, v.path + ": bad segmentation codebook size");
    if (!read_tensor(v, "seg.codebook", { d.codebook, d.dim }, d.embeddings, err)) return false;
    if (!read_conv(v, "decoder.0", d.dim, 128, 1, false, d.first, err)) return false;
    for (int r = 0; r < 2; ++r) {
        const std::string p = "decoder." + std::to_string(2 + r) + ".net.";
        if (!read_conv(v, p + "0", 128, 128, 3, false, d.res[r][0], err) || !read_conv(v, p + "2", 128, 128, 3, false, d.res[r][1], err) ||
            !read_conv(v, p + "4", 128, 128, 1, false, d.res[r][2], err)) {
            return false;
        }
    }
    const int chans[5] = { 128, 128, 64, 32, 16 };
    for (int u = 0; u < 4; ++u) {
        if (!read_conv(v, "decoder." + std::to_string(4 + 2 * u), chans[u], chans[u + 1], 4, true, d.up[u], err)) return false;
    }
    return read_conv(v, "decoder.12", 16, 1, 1, false, d.last, err);
}

bool pg_mask_decode(const pg_mask_decoder & d, const int codes[16], std::vector<float> & out, pg_error & err) {
    // Codebook rows laid out channels first on the 4x4 grid.
    std::vector<float> x((size_t) d.dim * 16);
    for (int p = 0; p < 16; ++p) {
        if (codes[p] < 0 || codes[p] >= d.codebook) {
            return err.set(PG_ERR_INVALID_ARGUMENT,
                           "mask code " + std::to_string(codes[p]) + " is out of range (0.." + std::to_string(d.codebook - 1) + ")");
        }
        for (int c = 0; c < d.dim; ++c) x[(size_t) c * 16 + p] = d.embeddings[(size_t) codes[p] * d.dim + c];
    }
    int H = 4, W = 4;
    x = conv2d(d.first, x, H, W);
    relu(x);
    for (const auto & block : d.res) {
        std::vector<float> h = conv2d(block[0], x, H, W);
        relu(h);
        h = conv2d(block[1], h, H, W);
        relu(h);
        h = conv2d(block[2], h, H, W);
        for (size_t i = 0; i < x.size(); ++i) x[i] += h[i];
    }
    for (const auto & up : d.up) {
        x = conv_transpose2d(up, x, H, W);
        H *= 2;
        W *= 2;
        relu(x);
    }
    out = conv2d(d.last, x, H, W);
    return true;
}

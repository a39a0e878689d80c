#include "pg_gemm_q8.h"
#include "pg_backend.h"
#include "pg_x86_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace {

constexpr int QK      = 32;          // values per block (as q8_0)
constexpr int LANES   = 16;          // weight rows per panel: one per 32-bit lane of a zmm
constexpr int BLOCK_W = QK * LANES;  // 512 bytes of weights per block and panel
// + 16 f16 scales (q8_0's own) + 16 int16 weight sums, negated: 576 bytes where q8_0 takes 544. The
// weights are read once per token in decoding, so every byte here is time there.
constexpr int BLOCK_SIZE = BLOCK_W + 32 + 32;
constexpr int SCALES     = BLOCK_W;       // offset of the f16 scales in a block
constexpr int SUMS       = BLOCK_W + 32;  // offset of the negated int16 sums
// GELU (tanh form) is never below -0.170041 (at -0.7525): shifted by this, its output is >= 0.
constexpr float GELU_SHIFT = 0.1701f;
// fc1 of an MLP: its output GELU'd and quantized for fc2 (pg_q8_mlp), after the public epilogues.
constexpr int GELU_QUANTIZE = PG_Q8_BIAS_RESIDUAL + 1;

struct q8_0_block {
    ggml_fp16_t d;
    int8_t      qs[QK];
};
static_assert(sizeof(q8_0_block) == 34, "ggml's block_q8_0 layout");

// Bytes of one quantized activation row: k values, then k/32 float scales, then (the AVX2 form's
// input to a product of signed activations) the k values' magnitudes.
size_t xq_row_bytes(int64_t k, bool magnitudes) {
    return (size_t) k + (size_t) (k / QK) * sizeof(float) + (magnitudes ? (size_t) k : 0);
}

}  // namespace

// The blocks, then the panel's 16 row sums (float): what a shifted input's correction needs.
size_t pg_q8_packed_panel_bytes(int64_t k) {
    return (size_t) (k / QK) * BLOCK_SIZE + LANES * sizeof(float);
}

void pg_q8_pack(const void * q8_0_rows, int64_t n_rows, int64_t k, void * out) {
    const q8_0_block * src   = (const q8_0_block *) q8_0_rows;
    const int64_t      nb    = k / QK;
    const size_t       panel = pg_q8_packed_panel_bytes(k);
    for (int64_t p = 0; p < n_rows / LANES; ++p) {
        uint8_t * dst_panel = (uint8_t *) out + p * panel;
        float *   sums      = (float *) (dst_panel + nb * BLOCK_SIZE);
        for (int lane = 0; lane < LANES; ++lane) {
            const q8_0_block * row     = src + (p * LANES + lane) * nb;
            double             row_sum = 0;
            for (int64_t b = 0; b < nb; ++b) {
                uint8_t * dst = dst_panel + b * BLOCK_SIZE;
                int8_t    q[QK];
                int32_t   sum = 0;
                for (int i = 0; i < QK; ++i) {
                    // ggml's q8_0 quantizer never writes -128 (its scale is amax / 127); another tool's
                    // might, and the AVX2 form cannot negate it: read as -127, in every form alike.
                    q[i] = row[b].qs[i] == -128 ? (int8_t) -127 : row[b].qs[i];
                    sum += q[i];
                }
                // [group of 4 values][lane][4]: one 64-byte row holds 4 values of all 16 rows.
                for (int g = 0; g < QK / 4; ++g) memcpy(dst + g * 64 + lane * 4, q + 4 * g, 4);
                ((ggml_fp16_t *) (dst + SCALES))[lane] = row[b].d;
                // Activations enter shifted by +128 (vpdpbusd multiplies unsigned by signed bytes):
                // starting each block's sum at -128 * sum(w) takes the shift out again (|sum| <= 4064).
                ((int16_t *) (dst + SUMS))[lane] = (int16_t) -sum;
                row_sum += (double) ggml_fp16_to_fp32(row[b].d) * sum;
            }
            sums[lane] = (float) row_sum;
        }
    }
}

void pg_q8_unpack(const void * packed, int64_t n_rows, int64_t k, void * q8_0_rows) {
    q8_0_block *  dst   = (q8_0_block *) q8_0_rows;
    const int64_t nb    = k / QK;
    const size_t  panel = pg_q8_packed_panel_bytes(k);
    for (int64_t p = 0; p < n_rows / LANES; ++p) {
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t *     src = (const uint8_t *) packed + p * panel + b * BLOCK_SIZE;
            const ggml_fp16_t * d   = (const ggml_fp16_t *) (src + SCALES);
            for (int lane = 0; lane < LANES; ++lane) {
                q8_0_block & blk = dst[(p * LANES + lane) * nb + b];
                blk.d            = d[lane];
                for (int i = 0; i < QK; ++i) blk.qs[i] = (int8_t) src[(i / 4) * 64 + lane * 4 + i % 4];
            }
        }
    }
}

#if PG_X86_KERNELS
#include "pg_simd_exp.h"

namespace {

// 32 floats (two vectors) -> 32 unsigned bytes (+128) and their scale, as ggml's q8_0 rounds.
PG_AVX512_VNNI inline void quantize_block(__m512 v0, __m512 v1, uint8_t * q, float * d) {
    const float  amax   = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float  dd     = amax / 127.0f;
    const __m512 inv    = _mm512_set1_ps(dd > 0 ? 1.0f / dd : 0.0f);
    *d                  = dd;
    const __m512i shift = _mm512_set1_epi32(128);
    const __m512i i0    = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v0, inv), _MM_FROUND_TO_NEAREST_INT)), shift);
    const __m512i i1    = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v1, inv), _MM_FROUND_TO_NEAREST_INT)), shift);
    _mm_storeu_si128((__m128i *) q, _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128((__m128i *) (q + 16), _mm512_cvtepi32_epi8(i1));
}

// SigLIP's GELU, tanh form, exactly: 0.5 v (1 + tanh(u)) == v / (1 + exp(-2u)), u = sqrt(2/pi) (v + 0.044715 v^3).
PG_AVX512_VNNI inline __m512 gelu_tanh(__m512 v) {
    const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
    const __m512 z  = _mm512_mul_ps(_mm512_set1_ps(-1.5957691216057308f), _mm512_fmadd_ps(v3, _mm512_set1_ps(0.044715f), v));
    return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), pg_exp_avx512(z)));
}

// Quantizes rows [r0, r1) of x (f32, k values each), with a layer norm first when w is given.
PG_AVX512_VNNI void quantize_rows(const ggml_tensor * x, const float * w, const float * b, float eps, uint8_t * out, int64_t r0, int64_t r1) {
    const int64_t k      = x->ne[0];
    const size_t  stride = xq_row_bytes(k, false);
    for (int64_t r = r0; r < r1; ++r) {
        const float * src  = (const float *) ((const char *) x->data + r * x->nb[1]);
        uint8_t *     q    = out + r * stride;
        float *       d    = (float *) (q + k);
        __m512        mean = _mm512_setzero_ps(), scale = _mm512_set1_ps(1.0f);
        if (w) {
            __m512 sum = _mm512_setzero_ps();
            for (int64_t i = 0; i < k; i += 16) sum = _mm512_add_ps(sum, _mm512_loadu_ps(src + i));
            mean       = _mm512_set1_ps(_mm512_reduce_add_ps(sum) / (float) k);
            __m512 var = _mm512_setzero_ps();
            for (int64_t i = 0; i < k; i += 16) {
                const __m512 c = _mm512_sub_ps(_mm512_loadu_ps(src + i), mean);
                var            = _mm512_fmadd_ps(c, c, var);
            }
            scale = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(var) / (float) k + eps));
        }
        for (int64_t blk = 0; blk < k / QK; ++blk) {
            __m512 v0 = _mm512_loadu_ps(src + blk * QK), v1 = _mm512_loadu_ps(src + blk * QK + 16);
            if (w) {
                v0 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(v0, mean), scale), _mm512_loadu_ps(w + blk * QK), _mm512_loadu_ps(b + blk * QK));
                v1 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(v1, mean), scale), _mm512_loadu_ps(w + blk * QK + 16),
                                     _mm512_loadu_ps(b + blk * QK + 16));
            }
            quantize_block(v0, v1, q + blk * QK, d + blk);
        }
    }
}

// Where a tile's results go.
struct tile_out {
    float *       c;     // f32 output row 0 of the tile, at the tile's first column
    size_t        ldc;   // floats between output rows
    const float * bias;  // at the tile's first column
    const float * res;   // residual, laid out as c (or nullptr)
    size_t        ld_res;
    uint8_t *     q;     // GELU_QUANTIZE: quantized output row 0, at the tile's first column
    float *       qd;    // its scale, at the tile's block
    size_t        ld_q;  // bytes between quantized output rows
};

// MR activation rows x NP panels of 16 weight rows, over all k, then the epilogue.
template <int MR, int NP, int EPI>
PG_AVX512_VNNI void tile(const uint8_t * a, size_t a_stride, int64_t k, const uint8_t * const * panels, const tile_out & o) {
    __m512 acc[MR][NP];
    for (int m = 0; m < MR; ++m)
        for (int j = 0; j < NP; ++j) acc[m][j] = _mm512_setzero_ps();
    const float * scales[MR];
    for (int m = 0; m < MR; ++m) scales[m] = (const float *) (a + m * a_stride + k);
    for (int64_t blk = 0; blk < k / QK; ++blk) {
        const uint8_t * w[NP];
        __m512i         s[MR][NP];
        for (int j = 0; j < NP; ++j) {
            w[j] = panels[j] + blk * BLOCK_SIZE;
            // One token reads every weight once, from memory: ask for them 8 blocks ahead.
            if (MR == 1)
                for (int line = 0; line < BLOCK_SIZE; line += 64) _mm_prefetch((const char *) w[j] + 8 * BLOCK_SIZE + line, _MM_HINT_T0);
            const __m512i corr = _mm512_slli_epi32(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *) (w[j] + SUMS))), 7);
            for (int m = 0; m < MR; ++m) s[m][j] = corr;
        }
        for (int g = 0; g < QK / 4; ++g) {
            __m512i wv[NP];
            for (int j = 0; j < NP; ++j) wv[j] = _mm512_loadu_si512((const void *) (w[j] + g * 64));
            for (int m = 0; m < MR; ++m) {
                int32_t four;
                memcpy(&four, a + m * a_stride + blk * QK + g * 4, 4);
                const __m512i av = _mm512_set1_epi32(four);
                for (int j = 0; j < NP; ++j) s[m][j] = _mm512_dpbusd_epi32(s[m][j], av, wv[j]);
            }
        }
        for (int j = 0; j < NP; ++j) {
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (w[j] + SCALES)));
            for (int m = 0; m < MR; ++m)
                acc[m][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[m][j]), _mm512_mul_ps(d, _mm512_set1_ps(scales[m][blk])), acc[m][j]);
        }
    }
    for (int m = 0; m < MR; ++m) {
        for (int j = 0; j < NP; ++j) {
            acc[m][j] = _mm512_add_ps(acc[m][j], _mm512_loadu_ps(o.bias + j * LANES));
            if (EPI == PG_Q8_BIAS_RESIDUAL) acc[m][j] = _mm512_add_ps(acc[m][j], _mm512_loadu_ps(o.res + m * o.ld_res + j * LANES));
            if (EPI != GELU_QUANTIZE) _mm512_storeu_ps(o.c + m * o.ldc + j * LANES, acc[m][j]);
        }
        // The tile's 32 columns are one block of the next product's activations.
        if (EPI == GELU_QUANTIZE)
            quantize_block(gelu_tanh(acc[m][0]), gelu_tanh(acc[m][NP - 1]), o.q + m * o.ld_q, (float *) ((char *) o.qd + m * o.ld_q));
    }
}

// The 512-bit kernels, as the driver below calls them: up to 6 activation rows per tile.
template <int EPI>
struct isa_avx512 {
    static constexpr int ROWS = 6;
    static void          quantize(const ggml_tensor * x, const float * w, const float * b, float eps, uint8_t * out, int64_t r0, int64_t r1) {
                 quantize_rows(x, w, b, eps, out, r0, r1);
    }
    template <int NP, bool GELU_IN>
    static void tiles(int64_t m_left, const uint8_t * a, size_t a_stride, int64_t k, const uint8_t * const * panels, const tile_out & o) {
        static_assert(!GELU_IN, "the 512-bit form stores GELU's output as any other activation");
        switch (m_left) {
            case 1: return tile<1, NP, EPI>(a, a_stride, k, panels, o);
            case 2: return tile<2, NP, EPI>(a, a_stride, k, panels, o);
            case 3: return tile<3, NP, EPI>(a, a_stride, k, panels, o);
            case 4: return tile<4, NP, EPI>(a, a_stride, k, panels, o);
            case 5: return tile<5, NP, EPI>(a, a_stride, k, panels, o);
            default: return tile<6, NP, EPI>(a, a_stride, k, panels, o);
        }
    }
};

}  // namespace

// 256-bit AVX-VNNI (vpdpbusd on ymm: Intel client CPUs since Alder Lake, AMD Zen 5), for CPUs
// without AVX-512: activations +128 and the packed corrections, as the 512-bit form.
namespace pg_q8_avx_vnni {
#define PG_TARGET __attribute__((target("avx2,fma,f16c,avxvnni")))
namespace {

constexpr bool SHIFTED         = true;
constexpr bool GELU_UNSIGNED   = false;
constexpr bool MAGNITUDES      = false;
constexpr int  TILE_ROWS       = 2;  // 2 x 4 sums, 4 weight vectors, the activations: one register each
constexpr int  PANELS_PER_PASS = 2;
using wvec                     = __m256i;
using act                      = __m256i;
PG_TARGET inline wvec load_weights(const uint8_t * p) {
    return _mm256_loadu_si256((const __m256i *) p);
}
PG_TARGET inline act activation(__m256i a, __m256i) {
    return a;
}
PG_TARGET inline __m256i dot(__m256i s, act a, wvec w) {
    return _mm256_dpbusd_avx_epi32(s, a, w);
}
// The shared text names it; this form never reads GELU's output unsigned (linear_for).
PG_TARGET inline __m256i dot_unsigned(__m256i s, __m256i a, wvec w) {
    return _mm256_dpbusd_avx_epi32(s, a, w);
}

#include "pg_gemm_q8_256.inc"

}  // namespace
#undef PG_TARGET
}  // namespace pg_q8_avx_vnni

// Plain AVX2 (Intel Haswell to Comet Lake, AMD Zen 1-3): vpmaddubsw multiplies unsigned by signed bytes
// and saturates pairs at 16 bits, so the activations stay signed, their magnitude (<= 127, stored
// beside them by the quantizer) is the unsigned side and their sign moves onto the weights (|w| <= 127, see pg_q8_pack):
// a pair of products stays below 2^15 - 1, exact. Four instructions per step (two of them
// multiplies) where vpdpbusd is one; three for fc2, whose input (GELU's output, shifted to >= 0) is
// stored unsigned.
namespace pg_q8_avx2 {
#define PG_TARGET __attribute__((target("avx2,fma,f16c")))
namespace {

constexpr bool SHIFTED       = false;
constexpr bool GELU_UNSIGNED = true;
constexpr bool MAGNITUDES    = true;  // stored once by the quantizer: no vpabsb per broadcast
// A step needs the activations, their magnitude and the signed weights beside the sums: 4 x 2 sums
// and 2 weight vectors fit the 16 registers, where 2 x 4 and 4 spilled sums and reloaded weights.
constexpr int TILE_ROWS       = 4;
constexpr int PANELS_PER_PASS = 1;
using wvec                    = __m256i;
struct act {
    __m256i a, magnitude;
};
PG_TARGET inline wvec load_weights(const uint8_t * p) {
    return _mm256_loadu_si256((const __m256i *) p);
}
PG_TARGET inline act activation(__m256i a, __m256i magnitude) {
    return { a, magnitude };
}
// The empty asm keeps each sum in a register as it goes: without it gcc spilled two of a tile's sums
// (and, with the steps unrolled, reassociated the additions and spilled every step's products);
// both measured slower in `kernels`.
PG_TARGET inline __m256i dot(__m256i s, const act & x, wvec w) {
    const __m256i pairs = _mm256_maddubs_epi16(x.magnitude, _mm256_sign_epi8(w, x.a));
    __m256i       sum   = _mm256_add_epi32(s, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
    __asm__("" : "+x"(sum));
    return sum;
}
PG_TARGET inline __m256i dot_unsigned(__m256i s, __m256i u, wvec w) {
    __m256i sum = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(u, w), _mm256_set1_epi16(1)));
    __asm__("" : "+x"(sum));
    return sum;
}

#include "pg_gemm_q8_256.inc"

}  // namespace
#undef PG_TARGET
}  // namespace pg_q8_avx2

namespace {

template <template <int> class ISA>
void quantize_op(ggml_tensor * dst, int ith, int nth, void * eps) {
    const ggml_tensor * x   = dst->src[0];
    const int64_t       m   = x->ne[1];
    const int64_t       per = (m + nth - 1) / nth, r0 = per * ith, r1 = std::min(m, r0 + per);
    const float *       w = dst->src[1] ? (const float *) dst->src[1]->data : nullptr;
    const float *       b = dst->src[2] ? (const float *) dst->src[2]->data : nullptr;
    if (r0 < r1) ISA<PG_Q8_BIAS>::quantize(x, w, b, eps ? *(const float *) eps : 0.0f, (uint8_t *) dst->data, r0, r1);
}

// Sources: xq, then (weight, bias) pairs, then the residual for PG_Q8_BIAS_RESIDUAL. GELU_IN: xq
// holds GELU's output + GELU_SHIFT (the AVX2 form's fc2), taken out again through the bias.
template <int EPI, template <int> class ISA, bool GELU_IN>
void linear_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * xq       = dst->src[0];
    const int64_t       m        = xq->ne[1];
    const size_t        a_stride = (size_t) xq->nb[1];
    int                 count    = 0;
    while (count < 3 && dst->src[1 + 2 * count] && dst->src[2 + 2 * count]) ++count;
    const ggml_tensor * res = EPI == PG_Q8_BIAS_RESIDUAL ? dst->src[1 + 2 * count] : nullptr;
    // Threads take whole pairs of panels (32 output rows) over all the weights: a pair's weights
    // stay in cache while every activation row passes.
    int64_t pairs = 0;
    for (int t = 0; t < count; ++t) pairs += (dst->src[1 + 2 * t]->ne[1] + 1) / 2;
    const int64_t per = (pairs + nth - 1) / nth;
    const int64_t p0 = per * ith, p1 = std::min(pairs, p0 + per);
    int64_t       first_pair = 0, first_col = 0;
    for (int t = 0; t < count; ++t) {
        const ggml_tensor * w       = dst->src[1 + 2 * t];
        const float *       bias    = (const float *) dst->src[2 + 2 * t]->data;
        const int64_t       np      = w->ne[1];
        const int64_t       k       = (int64_t) w->ne[0] / BLOCK_SIZE * QK;
        const int64_t       n_pairs = (np + 1) / 2;
        for (int64_t pp = std::max(p0, first_pair); pp < std::min(p1, first_pair + n_pairs); ++pp) {
            const int64_t   local     = pp - first_pair;
            const uint8_t * panels[2] = { (const uint8_t *) w->data + (2 * local) * w->nb[1],
                                          (const uint8_t *) w->data + (2 * local + 1) * w->nb[1] };
            const int64_t   col       = first_col + 2 * local * LANES;
            const int       np_here   = 2 * local + 1 < np ? 2 : 1;
            float           shifted_bias[2 * LANES];
            if (GELU_IN) {
                // W (x + s) + b - s W 1 = W x + b: the shift's share, from the row sums packed after each panel.
                for (int i = 0; i < np_here * LANES; ++i) {
                    const float * sums = (const float *) (panels[i / LANES] + (k / QK) * BLOCK_SIZE);
                    shifted_bias[i]    = bias[2 * local * LANES + i] - GELU_SHIFT * sums[i % LANES];
                }
            }
            for (int64_t r = 0; r < m; r += ISA<EPI>::ROWS) {
                tile_out o{};
                o.bias = GELU_IN ? shifted_bias : bias + 2 * local * LANES;
                if (EPI == GELU_QUANTIZE) {
                    const int64_t n_out = dst->ne[0] * 32 / 36;  // the quantized row's values
                    o.ld_q              = (size_t) dst->nb[1];
                    o.q                 = (uint8_t *) dst->data + r * o.ld_q + col;
                    o.qd                = (float *) ((uint8_t *) dst->data + r * o.ld_q + n_out) + col / QK;
                } else {
                    o.ldc = (size_t) dst->nb[1] / sizeof(float);
                    o.c   = (float *) dst->data + r * o.ldc + col;
                    if (res) {
                        o.ld_res = (size_t) res->nb[1] / sizeof(float);
                        o.res    = (const float *) res->data + r * o.ld_res + col;
                    }
                }
                const uint8_t * a = (const uint8_t *) xq->data + r * a_stride;
                if (np_here == 2)
                    ISA<EPI>::template tiles<2, GELU_IN>(m - r, a, a_stride, k, panels, o);
                else
                    ISA<EPI>::template tiles<1, GELU_IN>(m - r, a, a_stride, k, panels, o);
            }
        }
        first_pair += n_pairs;
        first_col += np * LANES;
    }
}

// GELU_IN: the product that reads GELU_QUANTIZE's output, which only the AVX2 form stores otherwise.
template <int EPI, bool GELU_IN = false>
ggml_custom_op_t linear_for(pg_q8_isa isa) {
    switch (isa) {
        case PG_Q8_AVX512_VNNI: return linear_op<EPI, isa_avx512, false>;
        case PG_Q8_AVX_VNNI: return linear_op<EPI, pg_q8_avx_vnni::isa, false>;
        case PG_Q8_AVX2: break;
    }
    static_assert(pg_q8_avx2::GELU_UNSIGNED && !pg_q8_avx_vnni::GELU_UNSIGNED, "which forms read GELU's output unsigned");
    return linear_op<EPI, pg_q8_avx2::isa, GELU_IN>;
}

ggml_custom_op_t quantize_for(pg_q8_isa isa) {
    switch (isa) {
        case PG_Q8_AVX512_VNNI: return quantize_op<isa_avx512>;
        case PG_Q8_AVX_VNNI: return quantize_op<pg_q8_avx_vnni::isa>;
        case PG_Q8_AVX2: break;
    }
    return quantize_op<pg_q8_avx2::isa>;
}

}  // namespace

bool pg_q8_gemm_available(pg_q8_isa isa) {
    static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                               __builtin_cpu_supports("avx512vnni") && pg_cpu_variant_has("AVX512") && pg_cpu_variant_has("AVX512_VNNI");
    // The 256-bit forms read q8_0's f16 scales with vcvtph2ps: F16C, which every AVX2 CPU we know has
    // but which is a separate CPUID bit (and a separate ggml CPU library feature).
    static const bool avx2     = pg_cpu_has_avx2_fma_f16c();
    static const bool avx_vnni = avx2 && __builtin_cpu_supports("avxvnni") && pg_cpu_variant_has("AVX_VNNI");
    switch (isa) {
        case PG_Q8_AVX512_VNNI: return avx512;
        case PG_Q8_AVX_VNNI: return avx_vnni;
        case PG_Q8_AVX2: return avx2;
    }
    return false;
}

pg_q8_isa pg_q8_widest_isa() {
    return pg_q8_gemm_available(PG_Q8_AVX512_VNNI) ? PG_Q8_AVX512_VNNI : pg_q8_gemm_available(PG_Q8_AVX_VNNI) ? PG_Q8_AVX_VNNI : PG_Q8_AVX2;
}

ggml_tensor * pg_q8_quantize(ggml_context * ctx, ggml_tensor * x, pg_q8_isa isa) {
    ggml_tensor * args[] = { ggml_is_contiguous(x) ? x : ggml_cont(ctx, x) };
    return ggml_custom_4d(ctx, GGML_TYPE_I8, (int64_t) xq_row_bytes(x->ne[0], isa == PG_Q8_AVX2), x->ne[1], 1, 1, args, 1, quantize_for(isa),
                          GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * pg_q8_norm_quantize(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, const float * eps, pg_q8_isa isa) {
    ggml_tensor * args[] = { ggml_is_contiguous(x) ? x : ggml_cont(ctx, x), w, b };
    return ggml_custom_4d(ctx, GGML_TYPE_I8, (int64_t) xq_row_bytes(x->ne[0], isa == PG_Q8_AVX2), x->ne[1], 1, 1, args, 3, quantize_for(isa),
                          GGML_N_TASKS_MAX, (void *) eps);
}

namespace {

// The custom op of a product: xq, the (weight, bias) pairs, the residual; f32 output but for GELU_QUANTIZE.
ggml_tensor * product(ggml_context * ctx, ggml_tensor * const * w, ggml_tensor * const * b, int count, ggml_tensor * xq, ggml_tensor * residual,
                      bool quantized_out, ggml_custom_op_t op) {
    ggml_tensor * args[8];
    int           n    = 0;
    int64_t       rows = 0;
    args[n++]          = xq;
    for (int i = 0; i < count; ++i) {
        args[n++] = w[i];
        args[n++] = b[i];
        rows += w[i]->ne[1] * LANES;
    }
    if (residual) args[n++] = residual;
    if (quantized_out)
        return ggml_custom_4d(ctx, GGML_TYPE_I8, (int64_t) xq_row_bytes(rows, false), xq->ne[1], 1, 1, args, n, op, GGML_N_TASKS_MAX, nullptr);
    return ggml_custom_4d(ctx, GGML_TYPE_F32, rows, xq->ne[1], 1, 1, args, n, op, GGML_N_TASKS_MAX, nullptr);
}

}  // namespace

ggml_tensor * pg_q8_linear(ggml_context * ctx, ggml_tensor * const * w, ggml_tensor * const * b, int count, ggml_tensor * xq, pg_q8_epilogue epilogue,
                           ggml_tensor * residual, pg_q8_isa isa) {
    if (epilogue == PG_Q8_BIAS_RESIDUAL) return product(ctx, w, b, count, xq, residual, false, linear_for<PG_Q8_BIAS_RESIDUAL>(isa));
    return product(ctx, w, b, count, xq, nullptr, false, linear_for<PG_Q8_BIAS>(isa));
}

ggml_tensor * pg_q8_mlp(ggml_context * ctx, ggml_tensor * up_w, ggml_tensor * up_b, ggml_tensor * down_w, ggml_tensor * down_b, ggml_tensor * xq,
                        ggml_tensor * residual, pg_q8_isa isa) {
    ggml_tensor * h = product(ctx, &up_w, &up_b, 1, xq, nullptr, true, linear_for<GELU_QUANTIZE>(isa));
    return product(ctx, &down_w, &down_b, 1, h, residual, false, linear_for<PG_Q8_BIAS_RESIDUAL, true>(isa));
}

#else

bool pg_q8_gemm_available(pg_q8_isa) {
    return false;
}

pg_q8_isa pg_q8_widest_isa() {
    return PG_Q8_AVX2;
}

ggml_tensor * pg_q8_quantize(ggml_context *, ggml_tensor *, pg_q8_isa) {
    return nullptr;
}

ggml_tensor * pg_q8_norm_quantize(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, const float *, pg_q8_isa) {
    return nullptr;
}

ggml_tensor * pg_q8_linear(ggml_context *, ggml_tensor * const *, ggml_tensor * const *, int, ggml_tensor *, pg_q8_epilogue, ggml_tensor *,
                           pg_q8_isa) {
    return nullptr;
}

ggml_tensor * pg_q8_mlp(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *, pg_q8_isa) {
    return nullptr;
}

#endif

#include "pg_gemm_q4.h"
#include "pg_backend.h"
#include "pg_x86_kernels.h"

#include <algorithm>
#include <cstring>

namespace {

constexpr int QK      = 32;              // values per block (as q4_0)
constexpr int LANES   = 16;              // weight rows per panel: one per 32-bit lane of a zmm
constexpr int BLOCK_W = QK * LANES / 2;  // 256 bytes of nibbles per block and panel
// A panel: every block's nibbles, then every block's 16 scales in f16, as q4_0 keeps them (decoding
// one token reads all the weights: f32 scales made it 11% more bytes and 10% slower than ggml's).
constexpr int SCALES_SIZE = LANES * 2;

struct q4_0_block {
    ggml_fp16_t d;
    uint8_t     qs[QK / 2];  // value i in the low nibble of qs[i], value i + 16 in the high one
};
static_assert(sizeof(q4_0_block) == 18, "ggml's block_q4_0 layout");

// Bytes of one quantized activation row: k values, then k/32 float scales and k/32 int32 sums.
size_t xq_row_bytes(int64_t k) {
    return (size_t) k + (size_t) (k / QK) * 8;
}

}  // namespace

size_t pg_q4_packed_panel_bytes(int64_t k) {
    return (size_t) (k / QK) * (BLOCK_W + SCALES_SIZE);
}

// Byte j of 4-byte group g (g < 4) of a lane holds values 4g + j (low nibble) and 16 + 4g + j (high):
// exactly q4_0's byte 4g + j, so a lane's block is its 16 bytes in four 4-byte pieces.
void pg_q4_pack(const void * q4_0_rows, int64_t n_rows, int64_t k, void * out) {
    const q4_0_block * src   = (const q4_0_block *) q4_0_rows;
    const int64_t      nb    = k / QK;
    const size_t       panel = pg_q4_packed_panel_bytes(k);
    for (int64_t p = 0; p < n_rows / LANES; ++p) {
        for (int lane = 0; lane < LANES; ++lane) {
            const q4_0_block * row = src + (p * LANES + lane) * nb;
            for (int64_t b = 0; b < nb; ++b) {
                uint8_t * dst = (uint8_t *) out + p * panel;
                for (int g = 0; g < 4; ++g) memcpy(dst + b * BLOCK_W + g * 64 + lane * 4, row[b].qs + 4 * g, 4);
                ((ggml_fp16_t *) (dst + nb * BLOCK_W + b * SCALES_SIZE))[lane] = row[b].d;
            }
        }
    }
}

void pg_q4_unpack(const void * packed, int64_t n_rows, int64_t k, void * q4_0_rows) {
    q4_0_block *  dst   = (q4_0_block *) q4_0_rows;
    const int64_t nb    = k / QK;
    const size_t  panel = pg_q4_packed_panel_bytes(k);
    for (int64_t p = 0; p < n_rows / LANES; ++p) {
        for (int lane = 0; lane < LANES; ++lane) {
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t * src = (const uint8_t *) packed + p * panel;
                q4_0_block &    blk = dst[(p * LANES + lane) * nb + b];
                for (int g = 0; g < 4; ++g) memcpy(blk.qs + 4 * g, src + b * BLOCK_W + g * 64 + lane * 4, 4);
                blk.d = ((const ggml_fp16_t *) (src + nb * BLOCK_W + b * SCALES_SIZE))[lane];
            }
        }
    }
}

#if PG_X86_KERNELS

namespace {

// Rows [r0, r1) of x: each block of 32 as signed bytes (ggml's q8_0 rounding), its scale and its sum.
PG_AVX512_VNNI void quantize_rows(const ggml_tensor * x, uint8_t * out, int64_t r0, int64_t r1) {
    const int64_t k  = x->ne[0];
    const int64_t nb = k / QK;
    for (int64_t r = r0; r < r1; ++r) {
        const float * src  = (const float *) ((const char *) x->data + r * x->nb[1]);
        int8_t *      q    = (int8_t *) (out + r * xq_row_bytes(k));
        float *       d    = (float *) (q + k);
        int32_t *     sums = (int32_t *) (d + nb);
        for (int64_t b = 0; b < nb; ++b) {
            const __m512  v0 = _mm512_loadu_ps(src + b * QK), v1 = _mm512_loadu_ps(src + b * QK + 16);
            const float   amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            const float   dd   = amax / 127.0f;
            const __m512  inv  = _mm512_set1_ps(dd > 0 ? 1.0f / dd : 0.0f);
            const __m512i i0   = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v0, inv), _MM_FROUND_TO_NEAREST_INT));
            const __m512i i1   = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v1, inv), _MM_FROUND_TO_NEAREST_INT));
            _mm_storeu_si128((__m128i *) (q + b * QK), _mm512_cvtepi32_epi8(i0));
            _mm_storeu_si128((__m128i *) (q + b * QK + 16), _mm512_cvtepi32_epi8(i1));
            d[b]    = dd;
            sums[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        }
    }
}

inline int32_t four_bytes(const int8_t * p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// MR activation rows x NP panels of 16 weight rows, over all k.
template <int MR, int NP>
PG_AVX512_VNNI void tile(const uint8_t * a, size_t a_stride, int64_t k, const uint8_t * const * panels, float * c, size_t ldc) {
    const int64_t nb = k / QK;
    __m512        acc[MR][NP];
    for (int m = 0; m < MR; ++m)
        for (int j = 0; j < NP; ++j) acc[m][j] = _mm512_setzero_ps();
    const int8_t *  x[MR];
    const float *   scales[MR];
    const int32_t * sums[MR];
    for (int m = 0; m < MR; ++m) {
        x[m]      = (const int8_t *) (a + m * a_stride);
        scales[m] = (const float *) (x[m] + k);
        sums[m]   = (const int32_t *) (scales[m] + nb);
    }
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int64_t blk = 0; blk < nb; ++blk) {
        __m512i s[MR][NP];
        for (int m = 0; m < MR; ++m) {
            // The nibbles are the values + 8: start each sum at -8 sum(x).
            const __m512i start = _mm512_set1_epi32(-8 * sums[m][blk]);
            for (int j = 0; j < NP; ++j) s[m][j] = start;
        }
        // One token reads every weight once, from memory: ask for the nibbles 8 blocks ahead.
        if (MR == 1)
            for (int j = 0; j < NP; ++j)
                for (int line = 0; line < BLOCK_W; line += 64) _mm_prefetch((const char *) panels[j] + (blk + 8) * BLOCK_W + line, _MM_HINT_T0);
        for (int g = 0; g < 4; ++g) {
            __m512i lo[NP], hi[NP];
            for (int j = 0; j < NP; ++j) {
                const __m512i w = _mm512_loadu_si512((const void *) (panels[j] + blk * BLOCK_W + g * 64));
                lo[j]           = _mm512_and_si512(w, low);
                hi[j]           = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);
            }
            for (int m = 0; m < MR; ++m) {
                const __m512i x_lo = _mm512_set1_epi32(four_bytes(x[m] + blk * QK + 4 * g));
                const __m512i x_hi = _mm512_set1_epi32(four_bytes(x[m] + blk * QK + 16 + 4 * g));
                for (int j = 0; j < NP; ++j) s[m][j] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s[m][j], lo[j], x_lo), hi[j], x_hi);
            }
        }
        for (int j = 0; j < NP; ++j) {
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (panels[j] + nb * BLOCK_W + blk * SCALES_SIZE)));
            for (int m = 0; m < MR; ++m)
                acc[m][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[m][j]), _mm512_mul_ps(d, _mm512_set1_ps(scales[m][blk])), acc[m][j]);
        }
    }
    for (int m = 0; m < MR; ++m)
        for (int j = 0; j < NP; ++j) _mm512_storeu_ps(c + m * ldc + j * LANES, acc[m][j]);
}

template <int NP>
void tiles(int64_t m_left, const uint8_t * a, size_t a_stride, int64_t k, const uint8_t * const * panels, float * c, size_t ldc) {
    switch (m_left) {
        case 1: return tile<1, NP>(a, a_stride, k, panels, c, ldc);
        case 2: return tile<2, NP>(a, a_stride, k, panels, c, ldc);
        case 3: return tile<3, NP>(a, a_stride, k, panels, c, ldc);
        case 4: return tile<4, NP>(a, a_stride, k, panels, c, ldc);
        case 5: return tile<5, NP>(a, a_stride, k, panels, c, ldc);
        default: return tile<6, NP>(a, a_stride, k, panels, c, ldc);
    }
}

constexpr int ROWS = 6;

void quantize_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x   = dst->src[0];
    const int64_t       m   = x->ne[1];
    const int64_t       per = (m + nth - 1) / nth, r0 = per * ith, r1 = std::min(m, r0 + per);
    if (r0 < r1) quantize_rows(x, (uint8_t *) dst->data, r0, r1);
}

// Sources: xq, the packed weight. Threads take whole pairs of panels (32 output rows): a pair's
// weights stay in cache while every activation row passes.
void linear_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * xq       = dst->src[0];
    const ggml_tensor * w        = dst->src[1];
    const int64_t       m        = xq->ne[1];
    const size_t        a_stride = (size_t) xq->nb[1];
    const int64_t       np       = w->ne[1];
    const int64_t       k        = (int64_t) w->ne[0] / (BLOCK_W + SCALES_SIZE) * QK;
    const int64_t       pairs    = (np + 1) / 2;
    const int64_t       per      = (pairs + nth - 1) / nth;
    const size_t        ldc      = (size_t) dst->nb[1] / sizeof(float);
    for (int64_t pp = per * ith; pp < std::min(pairs, per * (ith + 1)); ++pp) {
        const uint8_t * panels[2] = { (const uint8_t *) w->data + (2 * pp) * w->nb[1], (const uint8_t *) w->data + (2 * pp + 1) * w->nb[1] };
        for (int64_t r = 0; r < m; r += ROWS) {
            float *         c = (float *) dst->data + r * ldc + 2 * pp * LANES;
            const uint8_t * a = (const uint8_t *) xq->data + r * a_stride;
            if (2 * pp + 1 < np)
                tiles<2>(m - r, a, a_stride, k, panels, c, ldc);
            else
                tiles<1>(m - r, a, a_stride, k, panels, c, ldc);
        }
    }
}

}  // namespace

bool pg_q4_gemm_available() {
    static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                               __builtin_cpu_supports("avx512vnni") && pg_cpu_variant_has("AVX512") && pg_cpu_variant_has("AVX512_VNNI");
    return avx512;
}

ggml_tensor * pg_q4_quantize(ggml_context * ctx, ggml_tensor * x) {
    ggml_tensor * args[] = { x };
    return ggml_custom_4d(ctx, GGML_TYPE_I8, (int64_t) xq_row_bytes(x->ne[0]), x->ne[1], 1, 1, args, 1, quantize_op, GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * pg_q4_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * xq) {
    ggml_tensor * args[] = { xq, w };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1] * LANES, xq->ne[1], 1, 1, args, 2, linear_op, GGML_N_TASKS_MAX, nullptr);
}

#else

bool pg_q4_gemm_available() {
    return false;
}

ggml_tensor * pg_q4_quantize(ggml_context *, ggml_tensor *) {
    return nullptr;
}

ggml_tensor * pg_q4_linear(ggml_context *, ggml_tensor *, ggml_tensor *) {
    return nullptr;
}

#endif

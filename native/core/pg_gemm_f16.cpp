#include "pg_gemm_f16.h"
#include "pg_backend.h"
#include "pg_x86_kernels.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

namespace {

constexpr int LANES = 16;  // weight rows per panel: one zmm, or two ymm, of f32 outputs

// The int16 form: blocks of QK values of a row, integers up to QMAX in magnitude on both sides (QK
// QMAX^2 = 2146959392 < 2^31: a block's products sum in int32 without overflow).
constexpr int     QK          = 32;
constexpr int     QMAX        = 8191;
constexpr int64_t BLOCK_ELEMS = QK * LANES + 2 * LANES;  // a panel's block: 512 integers, then 16 float scales

int64_t blocks_of(int64_t k) {
    return (k + QK - 1) / QK;
}

// A row block of QK values (zeros past k) as integers times a power of two: the smallest exponent
// that keeps amax / 2^e below 2^13, so every f16 value from amax / 4 up is exact (from amax / 8 up
// where amax's significand is at least 1.5).
float pack_block(const ggml_fp16_t * row, int64_t k, int64_t b, int16_t * q) {
    float v[QK], amax = 0.0f;
    for (int i = 0; i < QK; ++i) {
        v[i] = b * QK + i < k ? ggml_fp16_to_fp32(row[b * QK + i]) : 0.0f;
        amax = std::max(amax, std::fabs(v[i]));
    }
    int exponent = 0;
    std::frexp(amax, &exponent);  // amax < 2^exponent
    const float scale = amax > 0.0f ? std::ldexp(1.0f, exponent - 13) : 0.0f;
    for (int i = 0; i < QK; ++i) q[i] = (int16_t) (scale > 0.0f ? std::clamp<long>(std::lrint(v[i] / scale), -QMAX, QMAX) : 0);
    return scale;
}

}  // namespace

const char * pg_f16_isa_name(pg_f16_isa isa) {
    switch (isa) {
        case PG_F16_AVX512: return "f16";
        case PG_F16_AVX2: return "f16-avx2";
        case PG_F16_INT16_AVX2: break;
    }
    return "int16-avx2";
}

int64_t pg_f16_panel_elems(int64_t k, pg_f16_isa isa) {
    return isa == PG_F16_INT16_AVX2 ? blocks_of(k) * BLOCK_ELEMS : LANES * k;
}

void pg_f16_pack(const ggml_fp16_t * rows, int64_t n_rows, int64_t k, pg_f16_isa isa, int16_t * out) {
    const int64_t panel_elems = pg_f16_panel_elems(k, isa);
    for (int64_t p = 0; p < n_rows / LANES; ++p) {
        int16_t * panel = out + p * panel_elems;
        for (int lane = 0; lane < LANES; ++lane) {
            const ggml_fp16_t * row = rows + (p * LANES + lane) * k;
            if (isa != PG_F16_INT16_AVX2) {
                for (int64_t i = 0; i < k; ++i) memcpy(panel + i * LANES + lane, row + i, sizeof(ggml_fp16_t));
                continue;
            }
            for (int64_t b = 0; b < blocks_of(k); ++b) {
                int16_t *   block = panel + b * BLOCK_ELEMS;
                int16_t     q[QK];
                const float scale = pack_block(row, k, b, q);
                // [pair of values][lane][2]: one 64-byte row holds 2 values of all 16 rows; the scales after.
                for (int i = 0; i < QK; ++i) block[(i / 2) * 2 * LANES + lane * 2 + i % 2] = q[i];
                memcpy(block + QK * LANES + 2 * lane, &scale, sizeof scale);
            }
        }
    }
}

#if PG_X86_KERNELS
#include "pg_simd_exp.h"

namespace {

// Where a tile's results go.
struct tile_out {
    float *       c;     // output row 0 of the tile, at the tile's first column
    size_t        ldc;   // floats between output rows
    const float * bias;  // at the tile's first column
    const float * res;   // residual, laid out as c (or nullptr)
    size_t        ld_res;
};

#define PG_TARGET512 __attribute__((target("avx512f")))
#define PG_TARGET256 __attribute__((target("avx2,fma,f16c")))

// MR activation rows x NP panels over all k: one conversion per panel and step, MR x NP FMAs.
template <int MR, int NP>
PG_TARGET512 void tile512(const float * a, size_t lda, int64_t k, const ggml_fp16_t * const * panels, const tile_out & o) {
    __m512 acc[MR][NP];
    for (int m = 0; m < MR; ++m)
        for (int p = 0; p < NP; ++p) acc[m][p] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; ++i) {
        __m512 w[NP];
        for (int p = 0; p < NP; ++p) w[p] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (panels[p] + i * LANES)));
        for (int m = 0; m < MR; ++m) {
            const __m512 x = _mm512_set1_ps(a[m * lda + i]);
            for (int p = 0; p < NP; ++p) acc[m][p] = _mm512_fmadd_ps(x, w[p], acc[m][p]);
        }
    }
    for (int m = 0; m < MR; ++m) {
        for (int p = 0; p < NP; ++p) {
            __m512 v = _mm512_add_ps(acc[m][p], _mm512_loadu_ps(o.bias + p * LANES));
            if (o.res) v = _mm512_add_ps(v, _mm512_loadu_ps(o.res + m * o.ld_res + p * LANES));
            _mm512_storeu_ps(o.c + m * o.ldc + p * LANES, v);
        }
    }
}

// A 256-bit tile's outputs (MR rows of one panel, two vectors each): bias, residual, store.
template <int MR>
PG_TARGET256 void store_tile256(const __m256 * lo, const __m256 * hi, const tile_out & o) {
    const __m256 b0 = _mm256_loadu_ps(o.bias), b1 = _mm256_loadu_ps(o.bias + 8);
    for (int m = 0; m < MR; ++m) {
        __m256 v0 = _mm256_add_ps(lo[m], b0), v1 = _mm256_add_ps(hi[m], b1);
        if (o.res) {
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(o.res + m * o.ld_res));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(o.res + m * o.ld_res + 8));
        }
        _mm256_storeu_ps(o.c + m * o.ldc, v0);
        _mm256_storeu_ps(o.c + m * o.ldc + 8, v1);
    }
}

// One panel (two ymm of outputs) x MR rows: 2 MR accumulators of 16 registers (two arrays, not one
// of pairs: GCC kept the latter in memory across the loop).
template <int MR>
PG_TARGET256 void tile256(const float * a, size_t lda, int64_t k, const ggml_fp16_t * const * panels, const tile_out & o) {
    __m256 lo[MR], hi[MR];
    for (int m = 0; m < MR; ++m) lo[m] = hi[m] = _mm256_setzero_ps();
    const ggml_fp16_t * panel = panels[0];
    for (int64_t i = 0; i < k; ++i) {
        const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (panel + i * LANES)));
        const __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (panel + i * LANES + 8)));
        for (int m = 0; m < MR; ++m) {
            const __m256 x = _mm256_set1_ps(a[m * lda + i]);
            lo[m]          = _mm256_fmadd_ps(x, w0, lo[m]);
            hi[m]          = _mm256_fmadd_ps(x, w1, hi[m]);
        }
    }
    store_tile256<MR>(lo, hi, o);
}

// An int16 activation row (quantize_rows_i16): blocks_of(k) blocks of QK integers, then their float scales.
int64_t i16_row_elems(int64_t k) {
    return blocks_of(k) * (QK + 2);
}

// Rows [r0, r1) of x (f32, k values each) as int16 blocks: amax / QMAX per block of 32, zeros past k.
PG_TARGET256 void quantize_rows_i16(const ggml_tensor * x, int16_t * out, int64_t r0, int64_t r1) {
    const int64_t k = x->ne[0], nb = blocks_of(k);
    const __m256  sign = _mm256_set1_ps(-0.0f);
    for (int64_t r = r0; r < r1; ++r) {
        const float * src = (const float *) ((const char *) x->data + r * x->nb[1]);
        int16_t *     q   = out + r * i16_row_elems(k);
        float *       d   = (float *) (q + nb * QK);
        for (int64_t b = 0; b < nb; ++b) {
            float         tail[QK] = {};
            const float * v        = src + b * QK;
            if (b * QK + QK > k) {
                memcpy(tail, v, (size_t) (k - b * QK) * sizeof(float));
                v = tail;
            }
            __m256 f[4];
            for (int t = 0; t < 4; ++t) f[t] = _mm256_loadu_ps(v + 8 * t);
            const __m256 amax = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, f[0]), _mm256_andnot_ps(sign, f[1])),
                                              _mm256_max_ps(_mm256_andnot_ps(sign, f[2]), _mm256_andnot_ps(sign, f[3])));
            const float  dd   = pg_hmax_avx2(amax) / (float) QMAX;
            // A denormal step would make its inverse infinite (and 0 x inf NaN): such a block is zeros.
            const __m256 inv = _mm256_set1_ps(dd >= FLT_MIN ? 1.0f / dd : 0.0f);
            __m256i      i[4];
            for (int t = 0; t < 4; ++t) i[t] = _mm256_cvtps_epi32(_mm256_mul_ps(f[t], inv));
            // Packing works within 128-bit halves: the 64-bit groups come out as 0 2 1 3.
            _mm256_storeu_si256((__m256i *) (q + b * QK), _mm256_permute4x64_epi64(_mm256_packs_epi32(i[0], i[1]), 0xD8));
            _mm256_storeu_si256((__m256i *) (q + b * QK + 16), _mm256_permute4x64_epi64(_mm256_packs_epi32(i[2], i[3]), 0xD8));
            d[b] = dd;
        }
    }
}

// One int16 panel x MR rows: per block, 2 MR int32 sums over its 16 pairs of values (vpmaddwd,
// vpaddd), then scaled into f32 sums.
template <int MR>
PG_TARGET256 void tile_i16(const int16_t * a, size_t lda, int64_t k, const int16_t * const * panels, const tile_out & o) {
    const int64_t nb = blocks_of(k);
    __m256        lo[MR], hi[MR];
    for (int m = 0; m < MR; ++m) lo[m] = hi[m] = _mm256_setzero_ps();
    for (int64_t blk = 0; blk < nb; ++blk) {
        const int16_t * w = panels[0] + blk * BLOCK_ELEMS;
        __m256i         s0[MR], s1[MR];
        for (int m = 0; m < MR; ++m) s0[m] = s1[m] = _mm256_setzero_si256();
#pragma GCC unroll 16
        for (int g = 0; g < QK / 2; ++g) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i *) (w + g * 2 * LANES));
            const __m256i w1 = _mm256_loadu_si256((const __m256i *) (w + g * 2 * LANES + 16));
            for (int m = 0; m < MR; ++m) {
                int32_t two;
                memcpy(&two, a + m * lda + blk * QK + 2 * g, sizeof two);
                const __m256i x = _mm256_set1_epi32(two);
                s0[m]           = _mm256_add_epi32(s0[m], _mm256_madd_epi16(x, w0));
                s1[m]           = _mm256_add_epi32(s1[m], _mm256_madd_epi16(x, w1));
                // Kept in registers: left alone, GCC spills some of them inside the loop.
                __asm__("" : "+x"(s0[m]), "+x"(s1[m]));
            }
        }
        const float * ws = (const float *) (w + QK * LANES);
        const __m256  d0 = _mm256_loadu_ps(ws), d1 = _mm256_loadu_ps(ws + 8);
        for (int m = 0; m < MR; ++m) {
            const __m256 xs = _mm256_set1_ps(((const float *) (a + m * lda + nb * QK))[blk]);
            lo[m]           = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0[m]), _mm256_mul_ps(d0, xs), lo[m]);
            hi[m]           = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1[m]), _mm256_mul_ps(d1, xs), hi[m]);
        }
    }
    store_tile256<MR>(lo, hi, o);
}

// The forms as the driver calls them: PANELS weight panels per tile, up to ROWS activation rows.
struct isa512 {
    using act                   = float;
    using weight                = ggml_fp16_t;
    static constexpr int PANELS = 2, ROWS = 8;
    static int64_t       depth(const ggml_tensor * x, const ggml_tensor *) { return x->ne[0]; }
    template <int NP>
    static void tiles(int64_t m_left, const float * a, size_t lda, int64_t k, const ggml_fp16_t * const * panels, const tile_out & o) {
        switch (std::min<int64_t>(m_left, ROWS)) {
            case 1: return tile512<1, NP>(a, lda, k, panels, o);
            case 2: return tile512<2, NP>(a, lda, k, panels, o);
            case 3: return tile512<3, NP>(a, lda, k, panels, o);
            case 4: return tile512<4, NP>(a, lda, k, panels, o);
            case 5: return tile512<5, NP>(a, lda, k, panels, o);
            case 6: return tile512<6, NP>(a, lda, k, panels, o);
            case 7: return tile512<7, NP>(a, lda, k, panels, o);
            default: return tile512<8, NP>(a, lda, k, panels, o);
        }
    }
};

struct isa256 {
    using act                   = float;
    using weight                = ggml_fp16_t;
    static constexpr int PANELS = 1, ROWS = 6;
    static int64_t       depth(const ggml_tensor * x, const ggml_tensor *) { return x->ne[0]; }
    template <int NP>
    static void tiles(int64_t m_left, const float * a, size_t lda, int64_t k, const ggml_fp16_t * const * panels, const tile_out & o) {
        switch (std::min<int64_t>(m_left, ROWS)) {
            case 1: return tile256<1>(a, lda, k, panels, o);
            case 2: return tile256<2>(a, lda, k, panels, o);
            case 3: return tile256<3>(a, lda, k, panels, o);
            case 4: return tile256<4>(a, lda, k, panels, o);
            case 5: return tile256<5>(a, lda, k, panels, o);
            default: return tile256<6>(a, lda, k, panels, o);
        }
    }
};

struct isa_i16 {
    using act                   = int16_t;
    using weight                = int16_t;
    static constexpr int PANELS = 1, ROWS = 4;
    // The values per row the blocks hold (x is the quantized activations).
    static int64_t depth(const ggml_tensor *, const ggml_tensor * w) { return w->ne[0] / BLOCK_ELEMS * QK; }
    template <int NP>
    static void tiles(int64_t m_left, const int16_t * a, size_t lda, int64_t k, const int16_t * const * panels, const tile_out & o) {
        switch (std::min<int64_t>(m_left, ROWS)) {
            case 1: return tile_i16<1>(a, lda, k, panels, o);
            case 2: return tile_i16<2>(a, lda, k, panels, o);
            case 3: return tile_i16<3>(a, lda, k, panels, o);
            default: return tile_i16<4>(a, lda, k, panels, o);
        }
    }
};

void quantize_i16_op(ggml_tensor * dst, int ith, int nth, void *) {
    const int64_t m = dst->ne[1], per = (m + nth - 1) / nth, r0 = per * ith, r1 = std::min(m, r0 + per);
    if (r0 < r1) quantize_rows_i16(dst->src[0], (int16_t *) dst->data, r0, r1);
}

// Sources: x, w, b, then the residual or nothing. Threads take whole groups of panels over all the
// rows: a group's weights stay in cache while every activation row passes.
template <class ISA>
void linear_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x   = dst->src[0];
    const ggml_tensor * w   = dst->src[1];
    const float *       b   = (const float *) dst->src[2]->data;
    const ggml_tensor * res = dst->src[3];
    const int64_t       k = ISA::depth(x, w), m = x->ne[1], np = w->ne[1];
    const size_t        lda    = (size_t) x->nb[1] / sizeof(typename ISA::act);
    const int64_t       groups = (np + ISA::PANELS - 1) / ISA::PANELS;
    const int64_t       per = (groups + nth - 1) / nth, g0 = per * ith, g1 = std::min(groups, g0 + per);
    for (int64_t g = g0; g < g1; ++g) {
        const typename ISA::weight * panels[ISA::PANELS];
        const int                    here = (int) std::min<int64_t>(ISA::PANELS, np - g * ISA::PANELS);
        for (int p = 0; p < ISA::PANELS; ++p)
            panels[p] = (const typename ISA::weight *) ((const char *) w->data + (g * ISA::PANELS + std::min(p, here - 1)) * w->nb[1]);
        const int64_t col = g * ISA::PANELS * LANES;
        for (int64_t r = 0; r < m; r += ISA::ROWS) {
            tile_out o{};
            o.ldc  = (size_t) dst->nb[1] / sizeof(float);
            o.c    = (float *) dst->data + r * o.ldc + col;
            o.bias = b + col;
            if (res) {
                o.ld_res = (size_t) res->nb[1] / sizeof(float);
                o.res    = (const float *) res->data + r * o.ld_res + col;
            }
            const typename ISA::act * a = (const typename ISA::act *) x->data + r * lda;
            if (here == ISA::PANELS)
                ISA::template tiles<ISA::PANELS>(m - r, a, lda, k, panels, o);
            else
                ISA::template tiles<1>(m - r, a, lda, k, panels, o);
        }
    }
}

}  // namespace

bool pg_f16_gemm_available(pg_f16_isa isa) {
    static const bool avx512 = __builtin_cpu_supports("avx512f") && pg_cpu_variant_has("AVX512");
    return isa == PG_F16_AVX512 ? avx512 : pg_cpu_has_avx2_fma_f16c();  // the int16 form as well
}

pg_f16_isa pg_f16_widest_isa() {
    return pg_f16_gemm_available(PG_F16_AVX512) ? PG_F16_AVX512 : PG_F16_AVX2;
}

ggml_tensor * pg_f16_input(ggml_context * ctx, ggml_tensor * x, pg_f16_isa isa) {
    // The kernels read each activation row's values contiguously (rows may sit at any stride).
    if (x->nb[0] != sizeof(float)) x = ggml_cont(ctx, x);
    if (isa != PG_F16_INT16_AVX2) return x;
    ggml_tensor * src[] = { x };
    return ggml_custom_4d(ctx, GGML_TYPE_I16, i16_row_elems(x->ne[0]), x->ne[1], 1, 1, src, 1, quantize_i16_op, GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * pg_f16_product(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * in, ggml_tensor * residual, pg_f16_isa isa) {
    ggml_tensor *    args[] = { in, w, b, residual };
    ggml_custom_op_t op     = isa == PG_F16_AVX512 ? linear_op<isa512> : isa == PG_F16_AVX2 ? linear_op<isa256> : linear_op<isa_i16>;
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1] * LANES, in->ne[1], 1, 1, args, residual ? 4 : 3, op, GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * pg_f16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * x, ggml_tensor * residual, pg_f16_isa isa) {
    return pg_f16_product(ctx, w, b, pg_f16_input(ctx, x, isa), residual, isa);
}

#else

bool pg_f16_gemm_available(pg_f16_isa) {
    return false;
}

pg_f16_isa pg_f16_widest_isa() {
    return PG_F16_AVX2;
}

ggml_tensor * pg_f16_input(ggml_context *, ggml_tensor *, pg_f16_isa) {
    return nullptr;
}

ggml_tensor * pg_f16_product(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *, pg_f16_isa) {
    return nullptr;
}

ggml_tensor * pg_f16_linear(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *, pg_f16_isa) {
    return nullptr;
}

#endif

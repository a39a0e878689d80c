#include "pg_gemm_f16.h"
#include "pg_backend.h"
#include "pg_x86_kernels.h"

#include <algorithm>
#include <cstring>

namespace {

constexpr int LANES = 16;  // weight rows per panel: one zmm, or two ymm, of f32 outputs

}  // namespace

void pg_f16_pack(const ggml_fp16_t * rows, int64_t n_rows, int64_t k, ggml_fp16_t * out) {
    for (int64_t p = 0; p < n_rows / LANES; ++p) {
        ggml_fp16_t * panel = out + p * k * LANES;
        for (int lane = 0; lane < LANES; ++lane) {
            const ggml_fp16_t * row = rows + (p * LANES + lane) * k;
            for (int64_t i = 0; i < k; ++i) panel[i * LANES + lane] = row[i];
        }
    }
}

#if PG_X86_KERNELS

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

// The forms as the driver calls them: PANELS weight panels per tile, up to ROWS activation rows.
struct isa512 {
    static constexpr int PANELS = 2, ROWS = 8;
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
    static constexpr int PANELS = 1, ROWS = 6;
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

// Sources: x, w, b, then the residual or nothing. Threads take whole groups of panels over all the
// rows: a group's weights stay in cache while every activation row passes.
template <class ISA>
void linear_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x   = dst->src[0];
    const ggml_tensor * w   = dst->src[1];
    const float *       b   = (const float *) dst->src[2]->data;
    const ggml_tensor * res = dst->src[3];
    const int64_t       k = x->ne[0], m = x->ne[1], np = w->ne[1];
    const size_t        lda    = (size_t) x->nb[1] / sizeof(float);
    const int64_t       groups = (np + ISA::PANELS - 1) / ISA::PANELS;
    const int64_t       per = (groups + nth - 1) / nth, g0 = per * ith, g1 = std::min(groups, g0 + per);
    for (int64_t g = g0; g < g1; ++g) {
        const ggml_fp16_t * panels[ISA::PANELS];
        const int           here = (int) std::min<int64_t>(ISA::PANELS, np - g * ISA::PANELS);
        for (int p = 0; p < ISA::PANELS; ++p)
            panels[p] = (const ggml_fp16_t *) ((const char *) w->data + (g * ISA::PANELS + std::min(p, here - 1)) * w->nb[1]);
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
            const float * a = (const float *) x->data + r * lda;
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
    return isa == PG_F16_AVX512 ? avx512 : pg_cpu_has_avx2_fma_f16c();
}

pg_f16_isa pg_f16_widest_isa() {
    return pg_f16_gemm_available(PG_F16_AVX512) ? PG_F16_AVX512 : PG_F16_AVX2;
}

ggml_tensor * pg_f16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * x, ggml_tensor * residual, pg_f16_isa isa) {
    // The kernels read each activation row's values contiguously (rows may sit at any stride).
    if (x->nb[0] != sizeof(float)) x = ggml_cont(ctx, x);
    ggml_tensor *    args[] = { x, w, b, residual };
    ggml_custom_op_t op     = isa == PG_F16_AVX512 ? linear_op<isa512> : linear_op<isa256>;
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1] * LANES, x->ne[1], 1, 1, args, residual ? 4 : 3, op, GGML_N_TASKS_MAX, nullptr);
}

#else

bool pg_f16_gemm_available(pg_f16_isa) {
    return false;
}

pg_f16_isa pg_f16_widest_isa() {
    return PG_F16_AVX2;
}

ggml_tensor * pg_f16_linear(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *, pg_f16_isa) {
    return nullptr;
}

#endif

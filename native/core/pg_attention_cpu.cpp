#include "pg_attention_cpu.h"
#include "pg_backend.h"
#include "pg_x86_kernels.h"

#include <algorithm>
#include <cmath>
#include <vector>

#if PG_X86_KERNELS
#include "pg_simd_exp.h"

namespace {

constexpr int QUERIES = 64;  // queries per block: one block's scores are 64 x CHUNK floats
constexpr int CHUNK   = PG_ATTENTION_CHUNK;

}  // namespace

// 512-bit vectors (AVX-512 F): 32 registers.
namespace pg_attention_avx512 {
#define PG_TARGET __attribute__((target("avx512f")))
namespace {

struct simd {
    using reg                        = __m512;
    static constexpr int W           = 16;
    static constexpr int VALUE_GROUP = 8;
    static constexpr int value_rows(int g) { return g <= 5 ? 4 : 2; }

    PG_TARGET static __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16) 0xFFFF : n <= 0 ? (__mmask16) 0 : (__mmask16) ((1u << n) - 1); }
    PG_TARGET static reg       zero() { return _mm512_setzero_ps(); }
    PG_TARGET static reg       set1(float x) { return _mm512_set1_ps(x); }
    PG_TARGET static reg       load(const float * p) { return _mm512_loadu_ps(p); }
    PG_TARGET static void      store(float * p, reg v) { _mm512_storeu_ps(p, v); }
    // The first n lanes from p (n may exceed W), the rest `fill`.
    PG_TARGET static reg   load_n(const float * p, int64_t n, float fill) { return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), lanes(n), p); }
    PG_TARGET static void  store_n(float * p, int64_t n, reg v) { _mm512_mask_storeu_ps(p, lanes(n), v); }
    PG_TARGET static reg   keep_n(reg v, int64_t n) { return _mm512_maskz_mov_ps(lanes(n), v); }
    PG_TARGET static reg   fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    PG_TARGET static reg   fmsub(reg a, reg b, reg c) { return _mm512_fmsub_ps(a, b, c); }
    PG_TARGET static reg   mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
    PG_TARGET static reg   add(reg a, reg b) { return _mm512_add_ps(a, b); }
    PG_TARGET static reg   max(reg a, reg b) { return _mm512_max_ps(a, b); }
    PG_TARGET static float reduce_max(reg v) { return _mm512_reduce_max_ps(v); }
    PG_TARGET static float reduce_add(reg v) { return _mm512_reduce_add_ps(v); }
    PG_TARGET static reg   exp2(reg x) { return pg_exp2_avx512(x); }
};

#include "pg_attention_cpu.inc"

}  // namespace
#undef PG_TARGET
}  // namespace pg_attention_avx512

// 256-bit vectors (AVX2 + FMA): 16 registers, so the values go in groups of at most 4 vectors; a
// group of 3 (SigLIP's head of 72 is 9 vectors, 3 x 3) takes 4 rows: 12 sums, 3 values and a weight.
namespace pg_attention_avx2 {
#define PG_TARGET __attribute__((target("avx2,fma")))
namespace {

struct simd {
    using reg                        = __m256;
    static constexpr int W           = 8;
    static constexpr int VALUE_GROUP = 4;
    static constexpr int value_rows(int g) { return g <= 3 ? 4 : 2; }

    PG_TARGET static __m256i lanes(int64_t n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32((int) std::min<int64_t>(std::max<int64_t>(n, 0), 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    PG_TARGET static reg  zero() { return _mm256_setzero_ps(); }
    PG_TARGET static reg  set1(float x) { return _mm256_set1_ps(x); }
    PG_TARGET static reg  load(const float * p) { return _mm256_loadu_ps(p); }
    PG_TARGET static void store(float * p, reg v) { _mm256_storeu_ps(p, v); }
    PG_TARGET static reg  load_n(const float * p, int64_t n, float fill) {
         const __m256i k = lanes(n);
         return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, k), _mm256_castsi256_ps(k));
    }
    PG_TARGET static void  store_n(float * p, int64_t n, reg v) { _mm256_maskstore_ps(p, lanes(n), v); }
    PG_TARGET static reg   keep_n(reg v, int64_t n) { return _mm256_and_ps(v, _mm256_castsi256_ps(lanes(n))); }
    PG_TARGET static reg   fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    PG_TARGET static reg   fmsub(reg a, reg b, reg c) { return _mm256_fmsub_ps(a, b, c); }
    PG_TARGET static reg   mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
    PG_TARGET static reg   add(reg a, reg b) { return _mm256_add_ps(a, b); }
    PG_TARGET static reg   max(reg a, reg b) { return _mm256_max_ps(a, b); }
    PG_TARGET static float reduce_max(reg v) { return pg_hmax_avx2(v); }
    PG_TARGET static float reduce_add(reg v) { return pg_hsum_avx2(v); }
    PG_TARGET static reg   exp2(reg x) { return pg_exp2_avx2(x); }
};

#include "pg_attention_cpu.inc"

}  // namespace
#undef PG_TARGET
}  // namespace pg_attention_avx2

bool pg_attention_cpu_available(pg_attention_isa isa) {
    static const bool avx512 = __builtin_cpu_supports("avx512f") && pg_cpu_variant_has("AVX512");
    static const bool avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && pg_cpu_variant_has("AVX2") && pg_cpu_variant_has("FMA");
    return isa == PG_ATTENTION_AVX512 ? avx512 : avx2;
}

int pg_attention_cpu_lanes(pg_attention_isa isa) {
    return isa == PG_ATTENTION_AVX512 ? pg_attention_avx512::simd::W : pg_attention_avx2::simd::W;
}

ggml_tensor * pg_attention_cpu(ggml_context * ctx, ggml_tensor * q, ggml_tensor * kc, ggml_tensor * v, pg_attention_isa isa) {
    ggml_tensor *    args[] = { q, kc, v };
    ggml_custom_op_t op     = isa == PG_ATTENTION_AVX512 ? pg_attention_avx512::attention_op : pg_attention_avx2::attention_op;
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[2], q->ne[1], 1, 1, args, 3, op, GGML_N_TASKS_MAX, nullptr);
}

#else

bool pg_attention_cpu_available(pg_attention_isa) {
    return false;
}

int pg_attention_cpu_lanes(pg_attention_isa) {
    return 16;
}

ggml_tensor * pg_attention_cpu(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, pg_attention_isa) {
    return nullptr;
}

#endif

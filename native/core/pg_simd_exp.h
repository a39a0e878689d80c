// exp(x) and 2^x on 16 floats with AVX-512F and on 8 with AVX2 + FMA, and two AVX2 reductions, shared
// by our kernels (softmax in pg_attention_cpu, GELU in pg_gemm_q8). Include only where <immintrin.h>
// and the x86-64 GNU target attributes are available.
#pragma once

#include <immintrin.h>

// x clamped to [-88, 88]: 2^n e^r with |r| <= ln2/2, e^r by its series to r^6 (relative error under
// 2e-7), 2^n applied exactly by vscalefps. Inlines into any caller compiled for AVX-512F or more.
__attribute__((target("avx512f"))) inline __m512 pg_exp_avx512(__m512 x) {
    x              = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
    const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x));
    __m512       p = _mm512_set1_ps(1.0f / 720);
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p              = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// The same on 8 floats with AVX2 + FMA; 2^n goes into the exponent bits (n is within [-127, 127]
// after the clamp, and 2^-127 flushes to 0, far below anything a softmax or GELU keeps).
__attribute__((target("avx2,fma"))) inline __m256 pg_exp_avx2(__m256 x) {
    x               = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.0f)), _mm256_set1_ps(88.0f));
    const __m256 n  = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r  = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x));
    __m256       p  = _mm256_set1_ps(1.0f / 720);
    p               = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p               = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p               = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p               = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p               = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p               = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// 2^t for softmax exponents (t <= 0; clamped to [-126, 126]): 2^n 2^f with n = round(t), |f| <= 1/2, 2^f by a
// degree-5 polynomial fitted for least relative error on [-1/2, 1/2] (`paligemma-native kernels` prints the
// error of both forms against double precision).
// Five multiply-adds where exp's range reduction and series take ten: a softmax runs exp2 of
// (score x scale x log2 e - max), one multiply-add from the raw score, as often as the products' steps.
// The polynomial's coefficients, constant term first.
constexpr float pg_exp2_poly[6] = { 1.000000119e+0f, 6.931469440e-1f, 2.402212024e-1f, 5.550713092e-2f, 9.675541893e-3f, 1.327647129e-3f };

__attribute__((target("avx512f"))) inline __m512 pg_exp2_avx512(__m512 t) {
    t              = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-126.0f)), _mm512_set1_ps(126.0f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512       p = _mm512_set1_ps(pg_exp2_poly[5]);
    for (int i = 4; i >= 0; --i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(pg_exp2_poly[i]));
    return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx2,fma"))) inline __m256 pg_exp2_avx2(__m256 t) {
    t              = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(126.0f));
    const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(t, n);
    __m256       p = _mm256_set1_ps(pg_exp2_poly[5]);
    for (int i = 4; i >= 0; --i) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(pg_exp2_poly[i]));
    // 2^n into the exponent bits by an integer add: p is within [0.70, 1.42], so the sum stays a
    // normal float for n >= -125 (2^-126 and below, far under anything a softmax keeps, may come out denormal).
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

// Horizontal maximum and sum of 8 floats (AVX), shared by the 256-bit forms of our kernels.
__attribute__((target("avx2,fma"))) inline float pg_hmax_avx2(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x        = _mm_max_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_max_ss(x, _mm_shuffle_ps(x, x, 1)));
}

__attribute__((target("avx2,fma"))) inline float pg_hsum_avx2(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x        = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps(x, x, 1)));
}

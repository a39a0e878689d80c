#include "pg_attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics (their _mm512_undefined operands) as maybe uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#include "pg_simd_exp.h"
#define PG_AVX512 __attribute__((target("avx512f")))

namespace {

constexpr int QUERIES = 64;  // queries per block: one block's scores are 64 x N floats
constexpr int KEYS    = 32;  // keys per register tile: two vectors
constexpr int CHUNK   = PG_ATTENTION_CHUNK;

__mmask16 lanes(int64_t n) {
    return n >= 16 ? (__mmask16) 0xFFFF : n <= 0 ? (__mmask16) 0 : (__mmask16) ((1u << n) - 1);
}

// s[r][j0 .. j0+nk) = q[r] . kt[.][j]: R query rows against up to 32 keys (side by side in lanes).
// s[r][j0 .. j0+32) = q[r] . kt[.][j]: R query rows against 32 keys side by side in lanes. The
// chunk holds whole tiles (padding keys are zero), so no lane needs masking here.
template <int R>
PG_AVX512 void scores(const float * q, int64_t q_stride, const float * kt, int64_t kt_stride, int64_t hd, int64_t j0, float * s, int64_t s_stride) {
    __m512 acc[R][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
        const __m512 k0 = _mm512_loadu_ps(kt + d * kt_stride + j0);
        const __m512 k1 = _mm512_loadu_ps(kt + d * kt_stride + j0 + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m512 qv = _mm512_set1_ps(q[r * q_stride + d]);
            acc[r][0]       = _mm512_fmadd_ps(qv, k0, acc[r][0]);
            acc[r][1]       = _mm512_fmadd_ps(qv, k1, acc[r][1]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        _mm512_storeu_ps(s + r * s_stride + j0, acc[r][0]);
        _mm512_storeu_ps(s + r * s_stride + j0 + 16, acc[r][1]);
    }
}

// Online softmax over one chunk of one row's scores (flash attention's update): s[0 .. n) -> exp
// (scale s - m_new) in place, where m_new = max(*m, scale max(s)); *l (the running sum) and the
// row's output accumulator o (hd values) are rescaled to the new maximum.
PG_AVX512 void softmax_chunk(float * s, int64_t n, float scale, float * m, float * l, float * o, int64_t hd) {
    const __m512 sc = _mm512_set1_ps(scale);
    __m512       mx = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), lanes(n - j), s + j));
    const float  m_new = std::max(*m, _mm512_reduce_max_ps(mx) * scale);
    const __m512 shift = _mm512_set1_ps(m_new);
    __m512       sum   = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = lanes(n - j);
        const __m512    p = pg_exp_avx512(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, s + j), sc, shift));
        _mm512_mask_storeu_ps(s + j, k, p);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, p));
    }
    if (*m != -INFINITY && *m != m_new) {
        const float  alpha = expf(*m - m_new);
        const __m512 a     = _mm512_set1_ps(alpha);
        *l *= alpha;
        for (int64_t d = 0; d < hd; d += 16)
            _mm512_mask_storeu_ps(o + d, lanes(hd - d), _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(hd - d), o + d), a));
    }
    *l += _mm512_reduce_add_ps(sum);
    *m = m_new;
}

// o[r][.] += sum_j p[r][j] v[j] over n keys: R rows, the head's values in NV whole vectors (rows
// of v and o are padded to them).
template <int R, int NV>
PG_AVX512 void values(const float * p, int64_t p_stride, const float * v, int64_t v_stride, int64_t n, float * o, int64_t o_stride) {
    __m512 acc[R][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int t = 0; t < NV; ++t) acc[r][t] = _mm512_loadu_ps(o + r * o_stride + 16 * t);
    for (int64_t j = 0; j < n; ++j) {
        __m512 vv[NV];
#pragma GCC unroll 8
        for (int t = 0; t < NV; ++t) vv[t] = _mm512_loadu_ps(v + j * v_stride + 16 * t);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m512 pv = _mm512_set1_ps(p[r * p_stride + j]);
#pragma GCC unroll 8
            for (int t = 0; t < NV; ++t) acc[r][t] = _mm512_fmadd_ps(pv, vv[t], acc[r][t]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int t = 0; t < NV; ++t) _mm512_storeu_ps(o + r * o_stride + 16 * t, acc[r][t]);
}

void scores_rows(int64_t rows, const float * q, int64_t q_stride, const float * kt, int64_t kt_stride, int64_t hd, int64_t j0, float * s,
                 int64_t s_stride) {
    switch (rows) {
        case 1: return scores<1>(q, q_stride, kt, kt_stride, hd, j0, s, s_stride);
        case 2: return scores<2>(q, q_stride, kt, kt_stride, hd, j0, s, s_stride);
        case 3: return scores<3>(q, q_stride, kt, kt_stride, hd, j0, s, s_stride);
        case 4: return scores<4>(q, q_stride, kt, kt_stride, hd, j0, s, s_stride);
        case 5: return scores<5>(q, q_stride, kt, kt_stride, hd, j0, s, s_stride);
        default: return scores<6>(q, q_stride, kt, kt_stride, hd, j0, s, s_stride);
    }
}

template <int NV>
void values_rows(int64_t rows, const float * p, int64_t p_stride, const float * v, int64_t v_stride, int64_t n, float * o, int64_t o_stride) {
    // Accumulators: R x NV vectors of the 32 registers.
    constexpr int R = NV <= 5 ? 4 : 2;
    for (int64_t r = 0; r < rows; r += R) {
        const int64_t left = std::min<int64_t>(R, rows - r);
        const float * pr   = p + r * p_stride;
        float *       orow = o + r * o_stride;
        if (left == R)
            values<R, NV>(pr, p_stride, v, v_stride, n, orow, o_stride);
        else if (left == 1)
            values<1, NV>(pr, p_stride, v, v_stride, n, orow, o_stride);
        else if (left == 2)
            values<2, NV>(pr, p_stride, v, v_stride, n, orow, o_stride);
        else
            values<3, NV>(pr, p_stride, v, v_stride, n, orow, o_stride);
    }
}

void values_dispatch(int64_t rows, const float * p, int64_t p_stride, const float * v, int64_t v_stride, int64_t n, float * o, int64_t o_stride) {
    switch (v_stride / 16) {
        case 1: return values_rows<1>(rows, p, p_stride, v, v_stride, n, o, o_stride);
        case 2: return values_rows<2>(rows, p, p_stride, v, v_stride, n, o, o_stride);
        case 3: return values_rows<3>(rows, p, p_stride, v, v_stride, n, o, o_stride);
        case 4: return values_rows<4>(rows, p, p_stride, v, v_stride, n, o, o_stride);
        case 5: return values_rows<5>(rows, p, p_stride, v, v_stride, n, o, o_stride);
        case 6: return values_rows<6>(rows, p, p_stride, v, v_stride, n, o, o_stride);
        case 7: return values_rows<7>(rows, p, p_stride, v, v_stride, n, o, o_stride);
        default: return values_rows<8>(rows, p, p_stride, v, v_stride, n, o, o_stride);
    }
}

// Per head and block of 64 queries, over chunks of 128 keys: scores, the online softmax update,
// the values' weighted sum; a chunk's scores, keys and values stay in the core's caches.
PG_AVX512 void attention_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * q  = dst->src[0];
    const ggml_tensor * kc = dst->src[1];
    const ggml_tensor * v  = dst->src[2];
    const int64_t       hd = q->ne[0], n = q->ne[1], heads = q->ne[2], vpad = v->ne[0];
    const float         scale  = 1.0f / sqrtf((float) hd);
    const int64_t       blocks = (n + QUERIES - 1) / QUERIES;
    const int64_t       os     = dst->nb[1] / sizeof(float);
    // Scratch of the compute team's threads, kept across calls: one chunk's scores, the block's
    // output accumulators (head size rounded up to whole vectors), running maxima and sums.
    thread_local std::vector<float> s, acc;
    s.resize((size_t) (QUERIES * CHUNK));
    const int64_t acc_stride = vpad;
    acc.resize((size_t) (QUERIES * acc_stride));
    float m[QUERIES], l[QUERIES];
    for (int64_t item = ith; item < heads * blocks; item += nth) {
        const int64_t h = item / blocks, i0 = (item % blocks) * QUERIES, rows = std::min<int64_t>(QUERIES, n - i0);
        const float * qh = (const float *) ((const char *) q->data + h * q->nb[2] + i0 * q->nb[1]);
        const float * vh = (const float *) ((const char *) v->data + h * v->nb[2]);
        std::fill(acc.begin(), acc.end(), 0.0f);
        std::fill(m, m + QUERIES, -INFINITY);
        std::fill(l, l + QUERIES, 0.0f);
        for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
            const int64_t nc  = std::min<int64_t>(CHUNK, n - c0);
            const float * kch = (const float *) ((const char *) kc->data + h * kc->nb[3] + (c0 / CHUNK) * kc->nb[2]);
            for (int64_t j0 = 0; j0 < nc; j0 += KEYS) {
                for (int64_t r = 0; r < rows; r += 6) {
                    scores_rows(std::min<int64_t>(6, rows - r), qh + r * hd, hd, kch, CHUNK, hd, j0, s.data() + r * CHUNK, CHUNK);
                }
            }
            for (int64_t r = 0; r < rows; ++r) softmax_chunk(s.data() + r * CHUNK, nc, scale, m + r, l + r, acc.data() + r * acc_stride, acc_stride);
            values_dispatch(rows, s.data(), CHUNK, vh + c0 * vpad, vpad, nc, acc.data(), acc_stride);
        }
        float * oh = (float *) ((char *) dst->data + i0 * dst->nb[1]) + h * hd;
        for (int64_t r = 0; r < rows; ++r) {
            const __m512 inv = _mm512_set1_ps(1.0f / l[r]);
            for (int64_t d = 0; d < hd; d += 16) {
                _mm512_mask_storeu_ps(oh + r * os + d, lanes(hd - d), _mm512_mul_ps(_mm512_loadu_ps(acc.data() + r * acc_stride + d), inv));
            }
        }
    }
}

}  // namespace

bool pg_attention_cpu_available() {
    static const bool ok = __builtin_cpu_supports("avx512f");
    return ok;
}

ggml_tensor * pg_attention_cpu(ggml_context * ctx, ggml_tensor * q, ggml_tensor * kc, ggml_tensor * v) {
    ggml_tensor * args[] = { q, kc, v };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[2], q->ne[1], 1, 1, args, 3, attention_op, GGML_N_TASKS_MAX, nullptr);
}

#else

bool pg_attention_cpu_available() {
    return false;
}

ggml_tensor * pg_attention_cpu(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *) {
    return nullptr;
}

#endif

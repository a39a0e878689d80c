#include "pg_attention_cpu.h"
#include "pg_backend.h"
#include "pg_x86_kernels.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
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

// The 16-bit integer form: the scores' and the values' products as vpmaddwd (16 multiply-adds, two
// per lane, into int32) where the float form runs one FMA per 8: `paligemma-native kernels` puts the
// int16 step at ~1.7x the FMA one on AVX2 CPUs. Softmax stays in floats.
//
// Scales: q per query row and k per key (over the head), each to +-QK_LIMIT so that a head's HDP
// products sum within int32; one multiply per score undoes both. v per key, folded into the
// probabilities before they are quantized (p' = p v_scale, per query row and chunk of CHUNK keys to
// +-PV_LIMIT, CHUNK products per int32 sum): the values' sums then need one scale per row and chunk.
// 13 bits (head size 72) and 12 bits of magnitude against the 11 of the f16 K and V of ggml's fused kernel.
namespace int16 {

constexpr int PV_LIMIT = 4095;  // CHUNK x 4095 x 4095 < 2^31

// The prepared K and V of one head, in int16 units: K in chunks as [chunk][pair][key][2] (a vector
// holds 8 keys x one pair of dimensions), V as [key pair][dimension][2] (8 dimensions x two keys),
// then the keys' float scales for K and for V. Keys past N are zero with scale 0.
struct head_layout {
    int64_t hd, hdp, vp, np;  // head size, rounded to pairs, to whole vectors; keys rounded to chunks
    int64_t k_off() const { return 0; }
    int64_t v_off() const { return np * hdp; }
    int64_t k_scale_off() const { return np * hdp + np * vp; }
    int64_t v_scale_off() const { return k_scale_off() + 2 * np; }
    int64_t elements() const { return v_scale_off() + 2 * np; }
};

// wide: V rows padded to 16 dimensions (the 512-bit form's vectors), else 8.
head_layout layout_of(int64_t hd, int64_t n, bool wide) {
    const int64_t lanes = wide ? 16 : 8;
    return { hd, (hd + 1) / 2 * 2, (hd + lanes - 1) / lanes * lanes, (n + CHUNK - 1) / CHUNK * CHUNK };
}

// The ops' userdata (pg_attention_cpu_int16 sets it): whether they are the 512-bit form.
bool is_wide(const void * userdata) {
    return *(const bool *) userdata;
}

int qk_limit(int64_t hdp) {
    return (int) std::min(16383.0, std::floor(std::sqrt(2147483647.0 / (double) hdp)));
}

// The scale and its inverse for values up to amax quantized to +-limit: zero where the scale would
// be denormal (its inverse would overflow).
inline void scale_for(float amax, int limit, float & d, float & inv) {
    d   = amax / (float) limit;
    inv = d >= FLT_MIN ? 1.0f / d : 0.0f;
    if (inv == 0.0f) d = 0.0f;
}

PG_TARGET float amax_of(const float * x, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256       m    = _mm256_setzero_ps();
    int64_t      i    = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    float r = pg_hmax_avx2(m);
    for (; i < n; ++i) r = std::max(r, std::fabs(x[i]));
    return r;
}

inline int16_t quantize_one(float x, float inv) {
    return (int16_t) lrintf(x * inv);
}

// n floats times inv -> int16 in order, zeros up to n_out.
PG_TARGET void quantize_row(const float * x, int64_t n, int64_t n_out, float inv, int16_t * out) {
    const __m256 iv = _mm256_set1_ps(inv);
    int64_t      i  = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), iv));
        const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), iv));
        // packs works within 128-bit halves: 64-bit groups come out as 0 2 1 3.
        _mm256_storeu_si256((__m256i *) (out + i), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8));
    }
    for (; i < n; ++i) out[i] = quantize_one(x[i], inv);
    for (; i < n_out; ++i) out[i] = 0;
}

// Sources: k, v ([C, N] f32, rows contiguous). Items: (head, chunk of keys).
PG_TARGET void prepare_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor *               k     = dst->src[0];
    const ggml_tensor *               v     = dst->src[1];
    const int64_t                     heads = dst->ne[1], n = k->ne[1], hd = k->ne[0] / heads;
    const head_layout                 L      = layout_of(hd, n, is_wide(userdata));
    const int64_t                     chunks = L.np / CHUNK, pairs = L.hdp / 2;
    const int                         lim = qk_limit(L.hdp);
    thread_local std::vector<int16_t> row;
    row.resize((size_t) (2 * L.vp + L.hdp));
    for (int64_t item = ith; item < heads * chunks; item += nth) {
        const int64_t h = item / chunks, c = item % chunks;
        int16_t *     base = (int16_t *) ((char *) dst->data + h * dst->nb[1]);
        int32_t *     kq   = (int32_t *) (base + L.k_off() + c * CHUNK * L.hdp);  // one pair of dimensions per 32 bits
        float *       ks   = (float *) (base + L.k_scale_off());
        float *       vs   = (float *) (base + L.v_scale_off());
        for (int64_t i = 0; i < CHUNK; i += 2) {
            // Two keys at a time: V interleaves them.
            int16_t * vrow[2] = { row.data(), row.data() + L.vp };
            for (int e = 0; e < 2; ++e) {
                const int64_t j = c * CHUNK + i + e;
                if (j >= n) {
                    for (int64_t p = 0; p < pairs; ++p) kq[p * CHUNK + i + e] = 0;
                    std::fill(vrow[e], vrow[e] + L.vp, (int16_t) 0);
                    ks[j] = vs[j] = 0.0f;
                    continue;
                }
                const float * kr = (const float *) ((const char *) k->data + j * k->nb[1]) + h * hd;
                const float * vr = (const float *) ((const char *) v->data + j * v->nb[1]) + h * hd;
                float         d, inv;
                scale_for(amax_of(kr, hd), lim, d, inv);
                ks[j]          = d;
                int16_t * krow = row.data() + 2 * L.vp;
                quantize_row(kr, hd, L.hdp, inv, krow);
                for (int64_t p = 0; p < pairs; ++p) memcpy(kq + p * CHUNK + i + e, krow + 2 * p, 4);
                scale_for(amax_of(vr, hd), PV_LIMIT, d, inv);
                vs[j] = d;
                quantize_row(vr, hd, L.vp, inv, vrow[e]);
            }
            int16_t * vq = base + L.v_off() + (c * CHUNK + i) * L.vp;
            for (int64_t d = 0; d < L.vp; d += 8) {
                const __m128i a = _mm_loadu_si128((const __m128i *) (vrow[0] + d)), b = _mm_loadu_si128((const __m128i *) (vrow[1] + d));
                _mm_storeu_si128((__m128i *) (vq + 2 * d), _mm_unpacklo_epi16(a, b));
                _mm_storeu_si128((__m128i *) (vq + 2 * d + 8), _mm_unpackhi_epi16(a, b));
            }
        }
    }
}

// The products over AVX2: vpmaddwd then vpaddd, 8 lanes.
namespace narrow {
struct vec {
    using i                    = __m256i;
    using f                    = __m256;
    static constexpr int LANES = 8;
    PG_TARGET static i   zero() { return _mm256_setzero_si256(); }
    PG_TARGET static i   load(const int16_t * p) { return _mm256_loadu_si256((const __m256i *) p); }
    PG_TARGET static i   broadcast_pair(const int16_t * p) {
          int32_t two;
          memcpy(&two, p, 4);
          return _mm256_set1_epi32(two);
    }
    // The empty asm keeps each int32 sum in its register (as in the int8 products' steps): without
    // it gcc reassociated the sums and the 1024-token op ran 1.4x slower; a two-instruction asm
    // step (no copies through temporaries) made it spill and ran slower still.
    PG_TARGET static i dot(i s, i a, i b) {
        i sum = _mm256_add_epi32(s, _mm256_madd_epi16(a, b));
        __asm__("" : "+x"(sum));
        return sum;
    }
    PG_TARGET static f    loadf(const float * p) { return _mm256_loadu_ps(p); }
    PG_TARGET static void storef(float * p, f x) { _mm256_storeu_ps(p, x); }
    PG_TARGET static f    set1(float x) { return _mm256_set1_ps(x); }
    PG_TARGET static f    to_float(i x) { return _mm256_cvtepi32_ps(x); }
    PG_TARGET static f    mul(f a, f b) { return _mm256_mul_ps(a, b); }
    PG_TARGET static f    fmadd(f a, f b, f c) { return _mm256_fmadd_ps(a, b, c); }
};
constexpr int SCORE_ROWS  = 6;  // 6 rows x 2 vectors: 12 sums, the 2 keys and a broadcast in the 16 registers
constexpr int VALUE_GROUP = 3;  // 4 rows x 3 vectors: 12 sums, 3 values and a weight
#include "pg_attention_int16.inc"
}  // namespace narrow

// A row's weighted probabilities of one chunk (softmax_chunk<true>'s, amax their maximum) quantized:
// n floats -> n int16 (zero up to an even count) and the row's scale.
PG_TARGET void quantize_probabilities(const float * p, float amax, int64_t n, int16_t * out, float * scale) {
    float inv;
    scale_for(amax, PV_LIMIT, *scale, inv);
    quantize_row(p, n, (n + 1) / 2 * 2, inv, out);
}

// The 512-bit form (AVX-512 BW + VNNI): the same layouts (V rows padded to 16 dimensions), one
// vpdpwssd per step, 16 lanes; 32 registers: 12 query rows x 2 vectors of keys for the scores,
// 4 rows x 5 vectors (80 dimensions) for the values.
namespace wide {
#pragma push_macro("PG_TARGET")
#undef PG_TARGET
#define PG_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma")))
struct vec {
    using i                    = __m512i;
    using f                    = __m512;
    static constexpr int LANES = 16;
    PG_TARGET static i   zero() { return _mm512_setzero_si512(); }
    PG_TARGET static i   load(const int16_t * p) { return _mm512_loadu_si512((const void *) p); }
    PG_TARGET static i   broadcast_pair(const int16_t * p) {
          int32_t two;
          memcpy(&two, p, 4);
          return _mm512_set1_epi32(two);
    }
    PG_TARGET static i dot(i s, i a, i b) {
        i sum = _mm512_dpwssd_epi32(s, a, b);
        __asm__("" : "+v"(sum));
        return sum;
    }
    PG_TARGET static f    loadf(const float * p) { return _mm512_loadu_ps(p); }
    PG_TARGET static void storef(float * p, f x) { _mm512_storeu_ps(p, x); }
    PG_TARGET static f    set1(float x) { return _mm512_set1_ps(x); }
    PG_TARGET static f    to_float(i x) { return _mm512_cvtepi32_ps(x); }
    PG_TARGET static f    mul(f a, f b) { return _mm512_mul_ps(a, b); }
    PG_TARGET static f    fmadd(f a, f b, f c) { return _mm512_fmadd_ps(a, b, c); }
};
constexpr int SCORE_ROWS  = 12;
constexpr int VALUE_GROUP = 5;
#include "pg_attention_int16.inc"
#pragma pop_macro("PG_TARGET")
}  // namespace wide

// The weighted probabilities (p times the key's value scale, under 2^-12) of keys far below a
// row's maximum fall under FLT_MIN, and x86 cores take a slow assist for each denormal result:
// with a tower's scores spread wide, a third of this op's own time at 448 px went to that one
// multiply (perf). Such terms weigh nothing next to the row's maximum, so the op runs with
// denormals flushed (FTZ, DAZ) and gives the thread its MXCSR back at the end. (The float forms
// add p v into normal sums and showed no such cost.)
struct denormals_flushed {
    unsigned saved = _mm_getcsr();
    denormals_flushed() { _mm_setcsr(saved | 0x8040u); }
    ~denormals_flushed() { _mm_setcsr(saved); }
    denormals_flushed(const denormals_flushed &)             = delete;
    denormals_flushed & operator=(const denormals_flushed &) = delete;
};

// Sources: q ([C, N] f32, rows contiguous), the prepared K and V. Items: (head, block of QUERIES queries).
PG_TARGET void attention_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const denormals_flushed           flushed;
    const bool                        wide  = is_wide(userdata);
    const ggml_tensor *               q     = dst->src[0];
    const ggml_tensor *               prep  = dst->src[1];
    const int64_t                     heads = prep->ne[1], n = q->ne[1], hd = q->ne[0] / heads;
    const head_layout                 L           = layout_of(hd, n, wide);
    const auto                        scores_rows = wide ? wide::scores_rows : narrow::scores_rows;
    const auto                        values_all  = wide ? wide::values_all : narrow::values_all;
    const int64_t                     key_step    = wide ? wide::SCORE_KEYS : narrow::SCORE_KEYS;
    const int64_t                     score_rows  = wide ? wide::SCORE_ROWS : narrow::SCORE_ROWS;
    const int64_t                     pairs       = L.hdp / 2;
    const int                         lim         = qk_limit(L.hdp);
    const float                       scale2      = 1.44269504f / sqrtf((float) hd);
    const int64_t                     blocks      = (n + QUERIES - 1) / QUERIES;
    const int64_t                     os          = dst->nb[1] / sizeof(float);
    thread_local std::vector<float>   s, acc;
    thread_local std::vector<int16_t> qi, pi;
    s.resize((size_t) (QUERIES * CHUNK));
    acc.resize((size_t) (QUERIES * L.vp));
    qi.resize((size_t) (QUERIES * L.hdp));
    pi.resize((size_t) (QUERIES * CHUNK));
    float m[QUERIES], l[QUERIES], qs[QUERIES], ps[QUERIES];
    for (int64_t item = ith; item < heads * blocks; item += nth) {
        const int64_t   h = item / blocks, i0 = (item % blocks) * QUERIES, rows = std::min<int64_t>(QUERIES, n - i0);
        const int16_t * base = (const int16_t *) ((const char *) prep->data + h * prep->nb[1]);
        const float *   ks   = (const float *) (base + L.k_scale_off());
        const float *   vs   = (const float *) (base + L.v_scale_off());
        for (int64_t r = 0; r < rows; ++r) {
            const float * qr = (const float *) ((const char *) q->data + (i0 + r) * q->nb[1]) + h * hd;
            float         inv;
            scale_for(amax_of(qr, hd), lim, qs[r], inv);
            quantize_row(qr, hd, L.hdp, inv, qi.data() + r * L.hdp);
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        std::fill(m, m + QUERIES, -INFINITY);
        std::fill(l, l + QUERIES, 0.0f);
        for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
            const int64_t   nc = std::min<int64_t>(CHUNK, n - c0);
            const int16_t * kc = base + L.k_off() + c0 * L.hdp;
            // Past nc the keys are K's zero padding (chunks are whole): their scores are never read.
            for (int64_t j0 = 0; j0 < nc; j0 += key_step) {
                for (int64_t r = 0; r < rows; r += score_rows) {
                    scores_rows(std::min<int64_t>(score_rows, rows - r), qi.data() + r * L.hdp, L.hdp, qs + r, kc, ks + c0, pairs, j0,
                                s.data() + r * CHUNK, CHUNK);
                }
            }
            for (int64_t r = 0; r < rows; ++r) {
                float amax;
                // The 512-bit form's softmax at its width too (V rows there are whole 16-float vectors).
                (wide ? pg_attention_avx512::softmax_chunk<true> : softmax_chunk<true>) (s.data() + r * CHUNK, nc, scale2, m + r, l + r,
                                                                                         acc.data() + r * L.vp, L.vp, vs + c0, &amax);
                quantize_probabilities(s.data() + r * CHUNK, amax, nc, pi.data() + r * CHUNK, ps + r);
            }
            values_all(rows, pi.data(), CHUNK, ps, base + L.v_off() + c0 * L.vp, L.vp, (nc + 1) / 2, acc.data(), L.vp);
        }
        float * oh = (float *) ((char *) dst->data + i0 * dst->nb[1]) + h * hd;
        for (int64_t r = 0; r < rows; ++r) {
            const __m256 inv = _mm256_set1_ps(1.0f / l[r]);
            int64_t      d   = 0;
            for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(oh + r * os + d, _mm256_mul_ps(_mm256_loadu_ps(acc.data() + r * L.vp + d), inv));
            if (d < hd) simd::store_n(oh + r * os + d, hd - d, _mm256_mul_ps(_mm256_loadu_ps(acc.data() + r * L.vp + d), inv));
        }
    }
}

}  // namespace int16

}  // namespace
#undef PG_TARGET
}  // namespace pg_attention_avx2

bool pg_attention_cpu_available(pg_attention_isa isa) {
    static const bool avx512 = __builtin_cpu_supports("avx512f") && pg_cpu_variant_has("AVX512");
    static const bool avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && pg_cpu_variant_has("AVX2") && pg_cpu_variant_has("FMA");
    static const bool avx512_vnni =
        avx512 && avx2 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni") && pg_cpu_variant_has("AVX512_VNNI");
    return isa == PG_ATTENTION_AVX512 ? avx512 : isa == PG_ATTENTION_AVX512_VNNI ? avx512_vnni : avx2;
}

int pg_attention_cpu_lanes(pg_attention_isa isa) {
    return isa == PG_ATTENTION_AVX512 ? pg_attention_avx512::simd::W : pg_attention_avx2::simd::W;
}

ggml_tensor * pg_attention_cpu(ggml_context * ctx, ggml_tensor * q, ggml_tensor * kc, ggml_tensor * v, pg_attention_isa isa) {
    ggml_tensor *    args[] = { q, kc, v };
    ggml_custom_op_t op     = isa == PG_ATTENTION_AVX512 ? pg_attention_avx512::attention_op : pg_attention_avx2::attention_op;
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[2], q->ne[1], 1, 1, args, 3, op, GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * pg_attention_cpu_int16(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int heads, pg_attention_isa isa) {
    namespace i16 = pg_attention_avx2::int16;
    // Both ops read the form from their userdata, a pointer to a constant that outlives every graph.
    static const bool      forms[2] = { false, true };
    const bool *           wide     = &forms[isa == PG_ATTENTION_AVX512_VNNI ? 1 : 0];
    const i16::head_layout L        = i16::layout_of(q->ne[0] / heads, q->ne[1], *wide);
    ggml_tensor *          kv[]     = { k, v };
    ggml_tensor * prepared = ggml_custom_4d(ctx, GGML_TYPE_I16, L.elements(), heads, 1, 1, kv, 2, i16::prepare_op, GGML_N_TASKS_MAX, (void *) wide);
    ggml_tensor * args[]   = { q, prepared };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0], q->ne[1], 1, 1, args, 2, i16::attention_op, GGML_N_TASKS_MAX, (void *) wide);
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

ggml_tensor * pg_attention_cpu_int16(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, int, pg_attention_isa) {
    return nullptr;
}

#endif

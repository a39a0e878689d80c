// The vision tower's attention on the CPU as one ggml custom op, for x86-64 CPUs with AVX-512 or
// with AVX2 + FMA (the same kernel over 512- or 256-bit vectors).
//
// Why: SigLIP's head size (72) is not a multiple of 16, so ggml's separate attention ops fall back
// to one dot product per score, and its fused kernel walks the keys one by one; together with the
// softmax that was 40% of an encode once the matrix products got fast. Here, per head and block of
// 64 queries: the scores against all keys as a register-blocked product (keys side by side in
// vector lanes), an exact softmax, then the weighted sum of values (value dimensions in lanes).
// Only one block's scores exist at a time (64 x N floats per thread), never the N x N matrix.
// A second form runs both products in 16-bit integers, q, k and v quantized per row: over AVX2
// (vpmaddwd: twice the FMA's multiply-adds per instruction) or, with AVX-512 VNNI, over 512-bit
// vectors (vpdpwssd: the same, in one instruction), its softmax at that width too.
#pragma once
#include "ggml.h"

// The vector width the kernel runs at.
enum pg_attention_isa {
    PG_ATTENTION_AVX512,  // 16 floats per vector (AVX-512 F)
    PG_ATTENTION_AVX2,    // 8 floats per vector (AVX2 + FMA): CPUs without AVX-512
    // pg_attention_cpu_int16 only: its products over 512-bit vectors with vpdpwssd (AVX-512 BW and
    // VNNI), twice the 512-bit FMA's multiply-adds per instruction; the softmax over AVX-512 F.
    PG_ATTENTION_AVX512_VNNI,
};

// This CPU runs the kernel at that width, and this build has it.
bool pg_attention_cpu_available(pg_attention_isa isa);

// Floats per vector at that width: v's rows are padded with zeros to a multiple of it.
int pg_attention_cpu_lanes(pg_attention_isa isa);

// Keys per chunk of the online softmax: K comes in chunks of this many keys side by side.
constexpr int PG_ATTENTION_CHUNK = 128;

// q: [head size, N, heads]; v: the same with rows padded with zeros to pg_attention_cpu_lanes(isa);
// kc: K in chunks, [PG_ATTENTION_CHUNK, head size, chunks, heads] (keys past N are zero and
// ignored). All contiguous. Returns softmax(q k^T / sqrt(head size)) v as [head size x heads, N],
// token-major.
ggml_tensor * pg_attention_cpu(ggml_context * ctx, ggml_tensor * q, ggml_tensor * kc, ggml_tensor * v, pg_attention_isa isa);

// The same attention with 16-bit integer products, over AVX2 or (isa PG_ATTENTION_AVX512_VNNI)
// 512-bit vectors, as pg_attention_cpu_available(isa) says: q, k, v straight from the projections,
// [heads x head size, N] f32 with contiguous rows (views into a wider tensor are fine); K and V
// quantized once per head by a first op. Returns [heads x head size, N].
ggml_tensor * pg_attention_cpu_int16(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int heads, pg_attention_isa isa);

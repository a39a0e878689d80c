// The vision tower's attention on the CPU as one ggml custom op, for CPUs with AVX-512.
//
// Why: SigLIP's head size (72) is not a multiple of 16, so ggml's separate attention ops fall back
// to one dot product per score, and its fused kernel walks the keys one by one; together with the
// softmax that was 40% of an encode once the matrix products got fast. Here, per head and block of
// 64 queries: the scores against all keys as a register-blocked product (keys side by side in
// vector lanes), an exact softmax, then the weighted sum of values (value dimensions in lanes).
// Only one block's scores exist at a time (64 x N floats per thread), never the N x N matrix.
#pragma once
#include "ggml.h"

// This CPU runs the kernel (AVX-512 F), and this build has it.
bool pg_attention_cpu_available();

// Keys per chunk of the online softmax: K comes in chunks of this many keys side by side.
constexpr int PG_ATTENTION_CHUNK = 128;

// q: [head size, N, heads]; v: the same with rows padded with zeros to a multiple of 16 values;
// kc: K in chunks, [PG_ATTENTION_CHUNK, head size, chunks, heads] (keys past N are zero and
// ignored). All contiguous. Returns softmax(q k^T / sqrt(head size)) v as [head size x heads, N],
// token-major.
ggml_tensor * pg_attention_cpu(ggml_context * ctx, ggml_tensor * q, ggml_tensor * kc, ggml_tensor * v);

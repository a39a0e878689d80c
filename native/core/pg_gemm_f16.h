// Our matrix product for f16 weights on x86 CPUs with AVX-512 or AVX2 + FMA + F16C, as a ggml custom op.
//
// Why: ggml's f16 product (llamafile's tinyBLAS on x86) converts the activations to f16 first, in
// a pass of its own, and then converts both operands back to f32 in every step of its tiles. Here
// the weights are repacked once at load into panels of 16 rows stored k-major (16 f16 values of one
// input column side by side), so each step converts one vector of weights, broadcasts f32
// activations as they are and does one FMA per tile row: the products run at the FMA units' rate,
// and the activations keep their f32 precision (ggml rounds them to f16).
#pragma once
#include "ggml.h"

#include <cstddef>
#include <cstdint>

enum pg_f16_isa {
    PG_F16_AVX512,  // 512-bit: AVX-512 F (one panel per zmm)
    PG_F16_AVX2,    // 256-bit: AVX2 + FMA + F16C (two ymm per panel)
};

// This CPU runs the kernels with that set, and this build has them.
bool pg_f16_gemm_available(pg_f16_isa isa);
// The widest form this CPU has (PG_F16_AVX2 when it has none: check with pg_f16_gemm_available).
pg_f16_isa pg_f16_widest_isa();

// A packed f16 weight of n rows x k values is GGML_TYPE_I16 [16 k, n / 16] (n a multiple of 16).
void pg_f16_pack(const ggml_fp16_t * rows, int64_t n_rows, int64_t k, ggml_fp16_t * out);

// w x + b (+ residual), f32 [n, m]; x: f32 [k, m]; b: f32 [n]; residual: f32 [n, m] or nullptr.
ggml_tensor * pg_f16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * x, ggml_tensor * residual, pg_f16_isa isa);

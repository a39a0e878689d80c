// Our matrix product for f16 weights on x86 CPUs with AVX-512 or AVX2 + FMA + F16C, as a ggml custom op.
//
// Why: ggml's f16 product (llamafile's tinyBLAS on x86) converts the activations to f16 first, in
// a pass of its own, and then converts both operands back to f32 in every step of its tiles. Here
// the weights are repacked once at load into panels of 16 rows stored k-major (16 f16 values of one
// input column side by side), so each step converts one vector of weights, broadcasts f32
// activations as they are and does one FMA per tile row: the products run at the FMA units' rate,
// and the activations keep their f32 precision (ggml rounds them to f16). On CPUs without AVX-512
// that rate is as far as f32 goes, so a third form multiplies integers instead (below).
#pragma once
#include "ggml.h"

#include <cstddef>
#include <cstdint>

enum pg_f16_isa {
    PG_F16_AVX512,      // 512-bit: AVX-512 F (one panel per zmm)
    PG_F16_AVX2,        // 256-bit: AVX2 + FMA + F16C (two ymm per panel)
    PG_F16_INT16_AVX2,  // 256-bit AVX2, the weights as 14-bit integers per block of 32 (below)
};

// The form's name in model.info's visionMatmul: "f16", "f16-avx2" or "int16-avx2".
const char * pg_f16_isa_name(pg_f16_isa isa);

// This CPU runs the kernels with that set, and this build has them.
bool pg_f16_gemm_available(pg_f16_isa isa);
// The widest form this CPU has (PG_F16_AVX2 when it has none: check with pg_f16_gemm_available).
pg_f16_isa pg_f16_widest_isa();

// The int16 form: on AVX2 without AVX-512, vpmaddwd multiplies 16 pairs of 16-bit integers per
// instruction at the rate vpmaddubsw runs q8_0 (`paligemma-native kernels` prints both peaks), 1.7x
// the FMA units' f32 rate there. Each weight block of 32 values of a row becomes 14-bit integers
// times a power of two (values from a quarter of the block's largest up keep every bit of their f16
// significand), each activation block of 32 values 14-bit integers times amax / 8191 (about what
// rounding them to f16, as ggml's f16 product does, costs in error: `paligemma-native kernels`, also
// with a few large input channels); 32 products of two 14-bit integers fit an int32 sum. k is
// padded with zeros to whole blocks.

// Elements (int16) of one packed panel of 16 rows of k values in form `isa`: a packed weight of n
// rows is GGML_TYPE_I16 [pg_f16_panel_elems(k, isa), n / 16] (n a multiple of 16).
int64_t pg_f16_panel_elems(int64_t k, pg_f16_isa isa);
// Packs n_rows x k f16 values (row-major) for form `isa` into `out` (pg_f16_panel_elems(k, isa) x
// n_rows / 16 int16).
void pg_f16_pack(const ggml_fp16_t * rows, int64_t n_rows, int64_t k, pg_f16_isa isa, int16_t * out);

// The activations x (f32 [k, m]) as form `isa` reads them: contiguous rows for the f32 forms, the
// int16 form's quantized blocks. One per input, shared by every product of the form that reads it.
ggml_tensor * pg_f16_input(ggml_context * ctx, ggml_tensor * x, pg_f16_isa isa);
// w x + b (+ residual), f32 [n, m], from pg_f16_input's tensor; b: f32 [n]; residual: f32 [n, m] or nullptr.
ggml_tensor * pg_f16_product(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * in, ggml_tensor * residual, pg_f16_isa isa);
// Both: pg_f16_product of pg_f16_input(x).
ggml_tensor * pg_f16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * x, ggml_tensor * residual, pg_f16_isa isa);

// Our matrix products for q8_0 weights on x86 CPUs with AVX-512 VNNI, AVX-VNNI or AVX2, as ggml custom ops.
//
// Why: on x86, ggml has no repacked layout for q8_0; its q8_0 products (llamafile's tinyBLAS) run
// at half the rate of its repacked q4_0 ones, and they were 80% of a vision encode. Here the
// weights are repacked once at load into panels of 16 rows whose 4-byte groups sit side by side,
// so that one vpdpbusd multiplies 4 values of 16 rows at once (of 8 rows, twice, on 256 bits); activations are quantized to 8 bits
// per block of 32 (as ggml does for q8_0), shifted to unsigned, with the shift's effect precomputed
// per weight block (plain AVX2 has no vpdpbusd: vpmaddubsw + vpmaddwd on signed activations). Results match ggml's q8_0 product to the rounding of
// the activations' scales. What surrounds a product in the tower (the layer norm before it; the bias, residual or GELU and the next product's
// quantization after it) runs inside the same op: fewer passes and barriers.
#pragma once
#include "ggml.h"

#include <cstddef>
#include <cstdint>

// The vector width and instruction set the kernels run with.
enum pg_q8_isa {
    PG_Q8_AVX512_VNNI,  // 512-bit: AVX-512 F/BW/VL + VNNI
    PG_Q8_AVX_VNNI,     // 256-bit: AVX2 + FMA + AVX-VNNI (CPUs without AVX-512 that have vpdpbusd on ymm)
    PG_Q8_AVX2,         // 256-bit: AVX2 + FMA (vpmaddubsw; the activations' bytes are signed in this form)
};

// This CPU runs the kernels with that set, and this build has them.
bool pg_q8_gemm_available(pg_q8_isa isa);
// The widest form this CPU has (PG_Q8_AVX2 when it has none: check with pg_q8_gemm_available).
pg_q8_isa pg_q8_widest_isa();

// Bytes of one packed panel of 16 rows of k values (k a multiple of 32). A packed weight of n rows
// is GGML_TYPE_I8 of [pg_q8_packed_panel_bytes(k), n / 16].
size_t pg_q8_packed_panel_bytes(int64_t k);

// Packs n_rows x k q8_0 blocks (ggml's block_q8_0, row-major; n_rows a multiple of 16) into `out`.
void pg_q8_pack(const void * q8_0_rows, int64_t n_rows, int64_t k, void * out);
// The inverse, back to ggml's block_q8_0 rows (a -128 comes back as -127, as the products read it).
void pg_q8_unpack(const void * packed, int64_t n_rows, int64_t k, void * q8_0_rows);

// Quantized activations: GGML_TYPE_I8 [k + 4 k/32, m], each row k bytes (unsigned, +128; signed for
// PG_Q8_AVX2) then k/32 float scales (PG_Q8_AVX2: then the k bytes' magnitudes, [2 k + 4 k/32, m]).
// One per input, shared by every product of the same form that reads it.
ggml_tensor * pg_q8_quantize(ggml_context * ctx, ggml_tensor * x, pg_q8_isa isa);  // x: f32 [k, m]
// The layer norm of x (gain w, bias b: f32 [k]), quantized, in one pass. `eps` must outlive the graph.
ggml_tensor * pg_q8_norm_quantize(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, const float * eps, pg_q8_isa isa);

enum pg_q8_epilogue {
    PG_Q8_BIAS,           // f32 [n, m]: W x + b
    PG_Q8_BIAS_RESIDUAL,  // f32 [n, m]: W x + b + residual
};

// The products of `count` packed weights w[i] (biases b[i], f32) with xq, their outputs side by
// side along the rows (q, k and v in one op), then the epilogue. residual: f32 [n, m] or nullptr.
ggml_tensor * pg_q8_linear(ggml_context * ctx, ggml_tensor * const * w, ggml_tensor * const * b, int count, ggml_tensor * xq, pg_q8_epilogue epilogue,
                           ggml_tensor * residual, pg_q8_isa isa);

// residual + down (gelu_tanh (up xq + up_b)) + down_b, f32 [c, m]: up's epilogue applies GELU and
// quantizes for down (in the AVX2 form shifted to >= 0 and unsigned: one instruction fewer per step),
// so the MLP's width never exists in f32. up_w's rows a multiple of 32.
ggml_tensor * pg_q8_mlp(ggml_context * ctx, ggml_tensor * up_w, ggml_tensor * up_b, ggml_tensor * down_w, ggml_tensor * down_b, ggml_tensor * xq,
                        ggml_tensor * residual, pg_q8_isa isa);

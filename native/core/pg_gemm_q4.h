// Our matrix product for q4_0 weights on x86 CPUs with AVX-512 VNNI, as ggml custom ops: the text
// model's q4_0 layers (pg_text_matmul.h).
//
// Why: ggml's repacked q4_0 product reaches about 430 GFLOP/s on 2 AVX-512 cores, our int8 one 1100
// (`paligemma-native kernels --gemma`), and the text prefill is most of the time to the first token.
// q4_0 stores 4-bit values 0..15 with an offset of 8; vpdpbusd multiplies unsigned by signed bytes, so
// the nibbles go on its unsigned side as they are (one mask, or a shift and a mask, per 64 bytes and
// two groups of values) and the offset leaves through the activations' block sums: W (n - 8) x =
// W n x - 8 sum(x) per block. Weights are packed once at load: panels of 16 rows whose 4-byte groups sit
// side by side, as pg_gemm_q8.h, a 64-byte row holding the low and the high nibbles of 16 rows.
#pragma once
#include "ggml.h"

#include <cstddef>
#include <cstdint>

// This CPU runs the kernel (AVX-512 F/BW/VL + VNNI), and this build has it.
bool pg_q4_gemm_available();

// Bytes of one packed panel of 16 rows of k values (k a multiple of 32). A packed weight of n rows
// is GGML_TYPE_I8 of [pg_q4_packed_panel_bytes(k), n / 16].
size_t pg_q4_packed_panel_bytes(int64_t k);

// Packs n_rows x k q4_0 blocks (ggml's block_q4_0, row-major; n_rows a multiple of 16) into `out`, and back.
void pg_q4_pack(const void * q4_0_rows, int64_t n_rows, int64_t k, void * out);
void pg_q4_unpack(const void * packed, int64_t n_rows, int64_t k, void * q4_0_rows);

// Activations for it: GGML_TYPE_I8 [k + 8 k/32, m], each row k signed bytes, then k/32 float scales,
// then k/32 int32 sums of the bytes. x: f32 [k, m], rows contiguous.
ggml_tensor * pg_q4_quantize(ggml_context * ctx, ggml_tensor * x);

// W xq, f32 [n, m], for a packed weight w.
ggml_tensor * pg_q4_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * xq);

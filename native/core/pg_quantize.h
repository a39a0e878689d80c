// Quantization: whole text models through llama.cpp's own quantizer, and rows of vision tensors
// through ggml's quantizer (the converter streams tensors through it chunk by chunk).
#pragma once
#include "pg_error.h"

#include "ggml.h"

#include <cstdint>
#include <string>
#include <vector>

// Type names accepted by the converter: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q4_k_s,
// q5_k_m, q5_k_s, q6_k, q3_k_m, q2_k.
bool pg_quantize_model(const std::string & in_path, const std::string & out_path, const std::string & type, int n_threads, pg_error & err);

// Converts `n_rows` rows of `n_cols` floats to `type` (F16, BF16, F32 or a block-quantized type whose
// block size divides n_cols), appending to `out`.
bool pg_quantize_rows(const float * src, int64_t n_rows, int64_t n_cols, ggml_type type, std::vector<uint8_t> & out, pg_error & err);

// ggml type by lower-case name ("q8_0", "f16", ...); GGML_TYPE_COUNT if unknown.
ggml_type pg_ggml_type_from_name(const std::string & name);

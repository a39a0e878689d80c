// Our int8 products (pg_gemm_q8.h, pg_gemm_q4.h) for the language model's q8_0 and q4_0 weights,
// offered to llama.cpp as an accelerator device, the way its BLAS backend is offered.
//
// Why: on x86, ggml has no repacked layout for q8_0, and its q8_0 products run at a fifth of ours on
// AVX-512 VNNI; its repacked q4_0 ones at under half of ours (`paligemma-native kernels --gemma`);
// and the text prefill is most of the time to the first token. llama.cpp puts a weight in an
// accelerator device's buffer type first when that device supports the weight's operation, and adds
// the device's backend to its scheduler: the weights of the layers' matrix products are packed into
// our layout while they load, and those products run here; every other operation stays on the CPU
// backend. Only models loaded inside a pg_text_matmul_scope use it.
#pragma once
#include "pg_gemm_q8.h"

// Registers the device with ggml, once; false when this CPU or build has none of our int8 forms.
bool pg_text_matmul_register();

// While alive, models loaded on this thread pack their eligible weights for the given form (q4_0
// ones only for the AVX-512 VNNI form).
struct pg_text_matmul_scope {
    explicit pg_text_matmul_scope(pg_q8_isa isa);
    ~pg_text_matmul_scope();
    pg_text_matmul_scope(const pg_text_matmul_scope &)             = delete;
    pg_text_matmul_scope & operator=(const pg_text_matmul_scope &) = delete;
    // Weights packed on this thread since the scope began.
    int packed() const;
};

// Loads a text GGUF with llama.cpp's own loader and reports what llama.cpp made of it. Used by the
// converter's tests to prove that llama.cpp reads our files as it reads its own.
#pragma once
#include "pg_error.h"

#include <cstdint>
#include <string>
#include <vector>

struct pg_text_inspection {
    std::string                       description;  // llama_model_desc, e.g. "gemma 2B Q8_0"
    std::string                       architecture;
    uint64_t                          n_params    = 0;
    uint64_t                          size_bytes  = 0;
    int32_t                           n_embd      = 0;
    int32_t                           n_layer     = 0;
    int32_t                           n_head      = 0;
    int32_t                           n_head_kv   = 0;
    int32_t                           n_vocab     = 0;
    int32_t                           n_ctx_train = 0;
    int32_t                           n_swa       = 0;
    std::vector<std::vector<int32_t>> tokens;  // one list per input text, no BOS, special pieces not parsed
};

bool pg_text_inspect(const std::string & path, const std::vector<std::string> & texts, bool vocab_only, pg_text_inspection & out, pg_error & err);

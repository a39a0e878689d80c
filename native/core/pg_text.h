// The language model side: llama.cpp's gemma/gemma2 over our converted text GGUF, plus direct
// access to rows of its token embedding table (the prefix is fed to llama.cpp as embeddings).
#pragma once
#include "pg_error.h"
#include "pg_vision.h"

#include "llama-cpp.h"
#include "llama.h"

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

struct pg_text_params {
    std::vector<ggml_backend_dev_t> devices;  // empty: CPU only
    int                             n_gpu_layers = 0;
    int                             n_ctx        = 0;  // 0: image tokens + 512, capped by the model
    int                             n_threads    = 1;
    llama_flash_attn_type           flash_attn   = LLAMA_FLASH_ATTN_TYPE_AUTO;
    ggml_type                       kv_type      = GGML_TYPE_F16;
    int                             min_ctx      = 0;  // the context must hold at least this many tokens
    bool                            use_mmap     = true;
    // The q8_0 matrix products of the layers on the CPU: ggml's, or ours (pg_text_matmul.h);
    // auto measures both on this machine at the model's shapes (prefill and one token) and keeps ours
    // only when it wins both, and only in a VNNI form (pg_text.cpp says why).
    pg_vision_matmul matmul = PG_VISION_MATMUL_AUTO;
};

struct pg_text_model {
    llama_model_ptr     model;
    llama_context_ptr   ctx;
    const llama_vocab * vocab = nullptr;
    std::string         path;
    std::string         arch;
    int                 n_embd      = 0;
    int                 n_vocab     = 0;
    int                 n_ctx       = 0;
    int                 n_ctx_train = 0;
    std::string         matmul      = "ggml";  // what runs the q8_0 products: "ggml", or our form ("int8", "int8-avxvnni", "int8-avx2")
    // token_embd.weight in the file, for reading rows without touching llama.cpp internals
    uint64_t  tok_embd_offset = 0;
    ggml_type tok_embd_type   = GGML_TYPE_F32;
    size_t    tok_embd_row    = 0;
    // The running operation's abort flag, read by llama.cpp's abort callback during decode.
    std::atomic<const std::atomic<bool> *> abort_source{ nullptr };
};

// Our checks of a text GGUF (everything llama.cpp's loader would assert on), without loading it.
bool pg_text_check_file(const std::string & path, pg_error & err);

bool pg_text_load(const std::string & path, const pg_text_params & params, pg_text_model & out, const pg_progress_fn & progress, pg_error & err);

// Plain text to ids: no BOS; control pieces (<bos>, <eos>, <image>) only when parse_special.
bool pg_text_tokenize(const pg_text_model & m, const std::string & text, bool parse_special, std::vector<int32_t> & out, pg_error & err);

// The bytes of one token's piece (<loc>/<seg> pieces included; control tokens empty).
std::string pg_text_piece(const pg_text_model & m, int32_t id);

// Rows of the token embedding table, dequantized to float.
bool pg_text_embed_rows(const pg_text_model & m, const int32_t * ids, size_t n, float * out, pg_error & err);

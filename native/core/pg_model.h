// A loaded PaliGemma: vision tower + language model from a matching GGUF pair.
#pragma once
#include "pg_error.h"
#include "pg_generate.h"
#include "pg_mask.h"
#include "pg_text.h"
#include "pg_vision.h"

#include <atomic>
#include <mutex>
#include <string>

struct pg_model_params {
    std::string           model_path;
    std::string           mmproj_path;
    std::string           gpu = "auto";  // auto | cpu | cuda | metal | vulkan
    int                   gpu_layers = -1;  // with a GPU: layers to offload (-1: all)
    int                   threads    = 0;   // 0: physical cores
    int                   n_ctx      = 0;   // 0: image tokens + 512
    llama_flash_attn_type flash_attn = LLAMA_FLASH_ATTN_TYPE_AUTO;
    ggml_type             kv_type    = GGML_TYPE_F16;
    // Memory-map the text weights: -1 auto (yes with a GPU; no on the CPU, where llama.cpp copies
    // most weights into its repacked layout anyway, so mapping would keep them resident twice).
    int                   mmap = -1;
};

struct pg_model {
    pg_vision_model vision;
    pg_text_model   text;
    std::string     backend;  // device name the model runs on, e.g. "CPU", "CUDA0"
    int             threads = 1;
    std::mutex      mu;       // one operation at a time on the shared llama.cpp context
    pg_mask_decoder mask;     // filled on first use (segmentation)
    bool            mask_ready = false;
};

// progress: 0..1 over both files; return false to abort (the load then fails with PG_ERR_ABORTED).
bool pg_model_load(const pg_model_params & params, pg_model & out, const pg_progress_fn & progress, pg_error & err);

// BOS + tokens of prompt + "\n", as PaliGemma's processor builds the text part of the prefix.
bool pg_model_prefix_ids(pg_model & m, const std::string & prompt, std::vector<int32_t> & out, pg_error & err);

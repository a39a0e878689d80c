// A loaded PaliGemma, the unit every caller uses: the vision tower and the language model from a
// matching GGUF pair, the image-embedding cache and the mask decoder. It owns the pipeline
// (image -> pixels -> embedding -> prefix -> tokens) and its own thread safety: every operation
// that touches ggml state runs on the process's compute thread (pg_executor.h), in call order per
// calling thread, so callers on any thread need no locks of their own.
#pragma once
#include "pg_embed_cache.h"
#include "pg_error.h"
#include "pg_generate.h"
#include "pg_vision.h"

#include "llama.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct pg_model_params {
    std::string           model_path;
    std::string           mmproj_path;
    std::string           gpu        = "auto";  // auto | cpu | cuda | metal | vulkan
    int                   gpu_layers = -1;      // with a GPU: layers to offload (-1: all)
    int                   threads    = 0;       // 0: physical cores
    int                   n_ctx      = 0;       // 0: image tokens + 512
    llama_flash_attn_type flash_attn = LLAMA_FLASH_ATTN_TYPE_AUTO;
    ggml_type             kv_type    = GGML_TYPE_F16;
    // Memory-map the text weights: -1 auto (yes with a GPU; no on the CPU, where llama.cpp copies
    // most weights into its repacked layout anyway, so mapping would keep them resident twice).
    int mmap = -1;
    // The vision tower's attention: AUTO lets the loader choose, but flash_attn disabled (the
    // precise setting) means separate ops there too.
    pg_vision_attention vision_attention  = PG_VISION_ATTENTION_AUTO;
    pg_vision_matmul    vision_matmul     = PG_VISION_MATMUL_AUTO;
    pg_vision_matmul    text_matmul       = PG_VISION_MATMUL_AUTO;  // the text model's q8_0 products (pg_text_params::matmul)
    bool                vision_repack     = true;
    size_t              image_cache_bytes = 64u << 20;  // 0: no image-embedding cache
};

// What a loaded model is, for callers that show or check it.
struct pg_model_info {
    std::string family;  // "paligemma" | "paligemma2"
    int         image_size = 0, patch_size = 0, image_tokens = 0, image_token_id = 0;
    int         vision_width = 0, vision_layers = 0;
    std::string text_arch;  // "gemma" | "gemma2"
    std::string text_description;
    uint64_t    text_params = 0;
    int         text_width = 0, text_layers = 0, vocab_size = 0;
    int         context_size = 0, trained_context_size = 0;
    std::string backend;  // device name, e.g. "CPU", "CUDA0"
    int         threads = 0;
    std::string vision_attention;  // the kernel the tower uses: "fused" | "separate" | "tiled"
    std::string vision_matmul;  // its matrix products: "int8" | "int8-avxvnni" | "int8-avx2" (ours, q8_0) | "f16" | "f16-avx2" | "int16-avx2" (ours,
                                // f16) | "ggml"
    std::string text_matmul;    // the text model's, the same names
    bool        has_seg_decoder = false;
    int         bos_id = 0, eos_id = 0;
};

// An image as a caller holds it. Pointers are borrowed for the duration of the call.
enum pg_image_kind { PG_IMAGE_NONE, PG_IMAGE_ENCODED, PG_IMAGE_PIXELS, PG_IMAGE_EMBEDDING };

struct pg_image_input {
    pg_image_kind   kind  = PG_IMAGE_NONE;
    const uint8_t * data  = nullptr;  // ENCODED: PNG/JPEG/BMP/GIF bytes; PIXELS: width x height x channels
    size_t          size  = 0;
    int             width = 0, height = 0, channels = 0;
    const float *   embedding = nullptr;  // EMBEDDING: tokens x dim values
    int             tokens = 0, dim = 0;
    // Non-empty: the embedding is looked up and kept in the model's cache under this key (the
    // caller's digest of data). A hit skips decoding and the vision tower.
    std::string cache_key;
    std::string label;  // names the image in error messages (a file name, say); may be empty
};

struct pg_encode_result {
    pg_image_embedding_ptr embedding;
    double                 preprocess_ms = 0, encode_ms = 0;
    bool                   cached = false;
};

// A loaded LoRA adapter, as callers see it.
struct pg_adapter_info {
    std::string              path;         // the language-model part (llama.cpp's LoRA format)
    std::string              vision_path;  // the vision tower / projector part; "" when none
    std::string              name, base_name, family, trained_on;
    int                      rank   = 0;
    float                    alpha  = 0;
    bool                     rslora = false;
    std::vector<std::string> targets;         // "text.q_proj", "vision.fc1", "projector", ...
    uint64_t                 bytes      = 0;  // weights held in memory
    bool                     has_text   = false;
    bool                     has_vision = false;
};

// An adapter applied to one call, at a scale (1: as trained; 0: no effect).
struct pg_adapter_use {
    int   id    = 0;
    float scale = 1.0f;
};

struct pg_generate_request {
    pg_image_input              image;
    std::string                 prompt;
    bool                        special_tokens = false;  // <bos>, <eos>, <image> in the prompt as control tokens
    pg_decoding                 decoding;
    std::vector<pg_adapter_use> adapters;  // applied to the tower (their vision parts) and the language model
};

struct pg_model;
struct pg_model_deleter {
    void operator()(pg_model * m) const;
};
using pg_model_ptr = std::unique_ptr<pg_model, pg_model_deleter>;

// progress: 0..1 over both files; return false to abort (the load then fails with PG_ERR_ABORTED).
bool pg_model_load(const pg_model_params & params, const pg_progress_fn & progress, pg_model_ptr & out, pg_error & err);

const pg_model_info & pg_model_get_info(const pg_model & m);

// Plain text to ids: no BOS; control pieces (<bos>, <eos>, <image>) only when special.
bool pg_model_tokenize(const pg_model & m, const std::string & text, bool special, std::vector<int32_t> & out, pg_error & err);
// Ids to text: <loc>/<seg> pieces kept, control tokens dropped.
bool pg_model_detokenize(const pg_model & m, const int32_t * ids, size_t n, std::string & out, pg_error & err);

// What the vision tower sees: 3 x S x S normalized pixels, channels first (no cache, no tower).
bool pg_model_preprocess(const pg_model & m, const pg_image_input & image, std::vector<float> & pixels, pg_error & err);

// The projector output for an image: from the cache, computed, or an embedding the caller gave
// (checked for shape and finite values).
// Vision parts of `adapters` apply; the cache keeps adapted embeddings apart from plain ones.
bool pg_model_encode(pg_model & m, const pg_image_input & image, const std::vector<pg_adapter_use> & adapters, const std::atomic<bool> * abort,
                     pg_encode_result & out, pg_error & err);

// The whole pipeline in one call: the image (cached, encoded or given), the prefix, the answer. An
// abort is not an error: out.reason is PG_STOP_ABORT and out.aborted_in says where it landed.
bool pg_model_generate(pg_model & m, const pg_generate_request & req, const pg_generate_callbacks & cb, const std::atomic<bool> * abort,
                       pg_generate_result & out, pg_error & err);

// Loads a LoRA adapter for this model: `path` in llama.cpp's LoRA format (may hold no tensors when
// only the tower is adapted), `vision_path` ("" for none) with the tower's and projector's pairs.
// Both are checked against the model (family, widths, tensor names and shapes, finite values)
// before anything is allocated. Any number may be loaded; none applies until a call names it.
bool pg_model_load_adapter(pg_model & m, const std::string & path, const std::string & vision_path, int & id, pg_adapter_info & info, pg_error & err);

// Frees an adapter (false when no adapter has that id). The caller makes sure no call uses it.
bool pg_model_free_adapter(pg_model & m, int id);

// big_vision's VQ-VAE decoder: 16 codes (a 4x4 grid, row-major) -> 64 x 64 floats, about -1..1.
bool pg_model_decode_mask(pg_model & m, const int32_t codes[16], std::vector<float> & out, pg_error & err);

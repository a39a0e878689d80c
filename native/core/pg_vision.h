// The SigLIP vision tower + linear projector of PaliGemma, as a ggml graph over the mmproj GGUF
// written by our converter.
#pragma once
#include "pg_error.h"
#include "pg_gemm_f16.h"
#include "pg_gemm_q8.h"

#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "ggml.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

// Progress: fraction of weight bytes loaded; return false to abort.
using pg_progress_fn = std::function<bool(float)>;

struct pg_vision_hparams {
    std::string family;  // "paligemma" or "paligemma2"
    int         image_size      = 0;
    int         patch_size      = 0;
    int         image_tokens    = 0;
    int         hidden          = 0;
    int         ffn             = 0;
    int         layers          = 0;
    int         heads           = 0;
    float       eps             = 1e-6f;
    int         proj_dim        = 0;  // = text model width
    int         image_token_id  = 0;
    int         text_vocab_size = 0;
    float       mean[3]         = { 0.5f, 0.5f, 0.5f };
    float       std[3]          = { 0.5f, 0.5f, 0.5f };
    bool        has_seg_decoder = false;
    int         seg_codebook    = 0;
    int         seg_dim         = 0;
};

struct pg_vision_layer {
    ggml_tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    ggml_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
    ggml_tensor *up_w, *up_b, *down_w, *down_b;
};

// How the tower computes attention.
enum pg_vision_attention {
    PG_VISION_ATTENTION_AUTO,        // the loader chooses
    PG_VISION_ATTENTION_FUSED,       // ggml_flash_attn_ext: the N x N scores never materialize; K, V in f16
    PG_VISION_ATTENTION_SEPARATE,    // QK^T, softmax, AV as separate ops in f32
    PG_VISION_ATTENTION_TILED,       // ours (pg_attention_cpu.h): one op per block of queries, f32, AVX-512
                                     // (asked for on a CPU without it: the AVX2 one below)
    PG_VISION_ATTENTION_TILED_AVX2,  // the same over 256-bit vectors (AVX2 + FMA)
    PG_VISION_ATTENTION_INT16_AVX2,  // ours over AVX2 with the products in 16-bit integers (q, k, v about
                                     // as precise as the fused kernel's f16 K and V)
    PG_VISION_ATTENTION_INT16,       // the same products over 512-bit vectors (AVX-512 BW + VNNI)
                                     // (asked for on a CPU without them: the AVX2 one above)
};

// How the tower's q8_0 and f16 matrices are multiplied on the CPU.
enum pg_vision_matmul {
    PG_VISION_MATMUL_AUTO,           // the loader races ours against ggml's and keeps the fastest
    PG_VISION_MATMUL_GGML,           // ggml's own q8_0 product
    PG_VISION_MATMUL_INT8,           // ours (pg_gemm_q8.h): weights repacked at load, the widest form the CPU has
    PG_VISION_MATMUL_INT8_AVX_VNNI,  // ours over 256-bit vectors with AVX-VNNI
    PG_VISION_MATMUL_INT8_AVX2,      // ours over 256-bit vectors with plain AVX2
    PG_VISION_MATMUL_INT16_AVX2,     // as INT8_AVX2, and f16 matrices as 14-bit integers (pg_gemm_f16.h)
};

// Shared with the text model's textMatmul: the option value's name when it forces our product
// (nullptr for auto and ggml); whether this machine has the form it forces (else an error naming
// `option`); the form our product runs in for it (the widest this CPU has, unless a 256-bit one is asked for).
const char * pg_matmul_forced_int8_name(pg_vision_matmul mm);
bool         pg_matmul_check_forced(pg_vision_matmul mm, bool is_cpu, const char * option, pg_error & err);
pg_q8_isa    pg_matmul_isa(pg_vision_matmul mm);
// How the options and the model's info name a form: "int8" (AVX-512 VNNI), "int8-avxvnni", "int8-avx2".
const char * pg_q8_isa_name(pg_q8_isa isa);
// The visionAttention option's name for a kernel ("fused", "tiled-avx2", ...; "auto" for auto).
const char * pg_vision_attention_name(pg_vision_attention a);

struct pg_vision_params {
    ggml_backend_dev_t  device    = nullptr;  // nullptr: CPU
    int                 n_threads = 1;
    pg_vision_attention attention = PG_VISION_ATTENTION_AUTO;
    // CPU: matrix weights in ggml's repacking buffer (the layout llama.cpp's own CPU matrix kernels
    // are fastest with); false keeps them in the plain buffer, for A/B measurements.
    bool             repack = true;
    pg_vision_matmul matmul = PG_VISION_MATMUL_AUTO;
};

struct pg_vision_model {
    pg_vision_hparams            hp;
    std::string                  path;
    ggml_backend_ptr             backend;
    ggml_context_ptr             ctx_w;  // weight tensors in the device's default buffer
    ggml_context_ptr             ctx_r;  // CPU: matrix weights in a repacking buffer (as llama.cpp does)
    ggml_backend_buffer_ptr      buf_w;
    ggml_backend_buffer_ptr      buf_r;
    ggml_gallocr_ptr             galloc;  // compute buffer, reused across encodes
    bool                         is_cpu      = true;
    int                          n_threads   = 1;
    pg_vision_attention          attention   = PG_VISION_ATTENTION_FUSED;
    bool                         int8_matmul = false;              // q8_0 matrices packed for pg_q8_mul_mat
    pg_q8_isa                    q8_isa      = PG_Q8_AVX512_VNNI;  // which form of it runs
    bool                         f16_matmul  = false;              // f16 matrices packed for pg_f16_linear
    pg_f16_isa                   f16_isa     = PG_F16_AVX512;      // which form of it runs
    ggml_tensor *                patch_w = nullptr, *patch_b = nullptr, *pos = nullptr;
    ggml_tensor *                post_w = nullptr, *post_b = nullptr, *mm_w = nullptr, *mm_b = nullptr;
    std::vector<pg_vision_layer> blocks;
    std::vector<uint8_t>         graph_meta;  // scratch for graph metadata
};

bool pg_vision_load(const std::string & path, const pg_vision_params & params, pg_vision_model & out, const pg_progress_fn & progress,
                    pg_error & err);

// A LoRA adapter's part for the tower: per adapted matrix W, the pair (A, B) of W + B A, its scale
// already folded into B; ggml layout [in, r] for A and [r, out] for B (as llama.cpp's text
// adapters), f32, on the tower's backend. SigLIP's padded MLP width is padded here too.
// One adapted matrix: W x + B (A x). On the CPU B is kept transposed, [out, r] as ggml sees it, so
// that our update op adds r whole rows of it per token (ggml's product at an inner size of r wastes
// most of its time on tiles); other backends keep B as ggml multiplies it, [r, out].
struct pg_vision_lora_pair {
    ggml_tensor * a            = nullptr;  // [in, r]
    ggml_tensor * b            = nullptr;
    bool          b_transposed = false;
};

enum pg_vision_lora_slot { PG_LORA_Q, PG_LORA_K, PG_LORA_V, PG_LORA_O, PG_LORA_UP, PG_LORA_DOWN, PG_LORA_SLOTS };

struct pg_vision_lora {
    std::vector<std::vector<pg_vision_lora_pair>> layers;  // [layer][slot]
    pg_vision_lora_pair                           projector;
    ggml_context_ptr                              ctx;
    ggml_backend_buffer_ptr                       buf;
    size_t                                        bytes = 0;
};

struct pg_vision_lora_use {
    const pg_vision_lora * lora  = nullptr;
    float                  scale = 1.0f;
};

// Reads the vision part of an adapter for this tower, checking it against the model first.
bool pg_vision_lora_load(const pg_vision_model & m, const std::string & path, pg_vision_lora & out, pg_error & err);

// A weight tensor of the loaded model by name (nullptr when absent).
ggml_tensor * pg_vision_tensor(const pg_vision_model & m, const char * name);

// pixels: 3 x S x S planar, normalized. out: image_tokens x proj_dim (projector output, unscaled).
// abort_flag stops the graph between nodes on the CPU (PG_ERR_ABORTED); GPU graphs run to the end.
// loras: adapters applied to this encode (empty for the plain tower).
bool pg_vision_encode(pg_vision_model & m, const float * pixels, const std::vector<pg_vision_lora_use> & loras, std::vector<float> & out,
                      const std::atomic<bool> * abort_flag, pg_error & err);

#include "pg_vision.h"
#include "pg_attention_cpu.h"
#include "pg_backend.h"
#include "pg_gemm_q8.h"
#include "pg_gguf.h"
#include "pg_log.h"
#include "pg_tune.h"

#include "gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace {

pg_vision_attention measure_attention(const pg_vision_model & m);
bool                measure_matmul(const pg_vision_model & m);
int                 measure_f16_matmul(const pg_vision_model & m, const pg_f16_isa * forms, int count);

// A required integer key in [lo, hi].
bool read_int(const gguf_context * g, const std::string & path, const char * key, int lo, int hi, int & out, pg_error & err) {
    int64_t v = 0;
    if (gguf_find_key(g, key) < 0)
        return err.set(PG_ERR_INVALID_FILE, path + ": key '" + key + "' is missing: not a PaliGemma mmproj file from our converter");
    if (!pg_gguf_get_int(g, key, v)) return err.set(PG_ERR_INVALID_FILE, path + ": key '" + key + "' has the wrong type");
    if (v < lo || v > hi) return err.set(PG_ERR_INVALID_FILE, path + ": key '" + key + "' is out of range");
    out = (int) v;
    return true;
}

bool read_f32_array3(const gguf_context * g, const char * key, float out[3]) {
    int64_t id = gguf_find_key(g, key);
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, id) != GGUF_TYPE_FLOAT32 || gguf_get_arr_n(g, id) != 3)
        return false;
    memcpy(out, gguf_get_arr_data(g, id), 3 * sizeof(float));
    return true;
}

// Architecture, family and every hyperparameter, checked for consistency.
bool read_hparams(const gguf_context * g, const std::string & path, pg_vision_hparams & hp, pg_error & err) {
    const std::string arch = pg_gguf_get_string(g, "general.architecture");
    if (arch != "clip") {
        return err.set(PG_ERR_INVALID_FILE, path + ": architecture is '" + (arch.empty() ? "?" : arch) +
                                                "', expected a PaliGemma vision (mmproj) file ('clip')" +
                                                (arch == "gemma" || arch == "gemma2" ? "; the text model and mmproj look swapped" : ""));
    }
    hp.family = pg_gguf_get_string(g, "paligemma.family");
    if (hp.family.empty())
        return err.set(PG_ERR_INVALID_FILE, path + ": no 'paligemma.family' key: a clip file, but not a PaliGemma mmproj from our converter");
    const int big = 1 << 24;
    if (!read_int(g, path, "paligemma.image_size", 0, big, hp.image_size, err) ||
        !read_int(g, path, "paligemma.patch_size", 0, big, hp.patch_size, err) ||
        !read_int(g, path, "paligemma.image_tokens", 0, big, hp.image_tokens, err) ||
        !read_int(g, path, "clip.vision.embedding_length", 0, big, hp.hidden, err) ||
        !read_int(g, path, "clip.vision.feed_forward_length", 0, big, hp.ffn, err) ||
        !read_int(g, path, "clip.vision.block_count", 0, big, hp.layers, err) ||
        !read_int(g, path, "clip.vision.attention.head_count", 0, big, hp.heads, err) ||
        !read_int(g, path, "paligemma.text_embedding_length", 0, big, hp.proj_dim, err) ||
        !read_int(g, path, "paligemma.image_token_id", 0, big, hp.image_token_id, err) ||
        !read_int(g, path, "paligemma.text_vocab_size", 0, big, hp.text_vocab_size, err)) {
        return false;
    }
    if (hp.patch_size == 0 || hp.image_size % hp.patch_size != 0 ||
        (hp.image_size / hp.patch_size) * (hp.image_size / hp.patch_size) != hp.image_tokens) {
        return err.set(PG_ERR_INVALID_FILE, path + ": image size, patch size and image tokens do not agree");
    }
    if (hp.heads == 0 || hp.hidden % hp.heads != 0 || hp.layers == 0 || hp.layers > 1000) {
        return err.set(PG_ERR_INVALID_FILE, path + ": implausible vision hyperparameters");
    }
    int64_t eps_id = gguf_find_key(g, "clip.vision.attention.layer_norm_epsilon");
    if (eps_id >= 0 && gguf_get_kv_type(g, eps_id) == GGUF_TYPE_FLOAT32) hp.eps = gguf_get_val_f32(g, eps_id);
    read_f32_array3(g, "paligemma.image_mean", hp.mean);
    read_f32_array3(g, "paligemma.image_std", hp.std);
    for (float s : hp.std) {
        if (!(s > 0)) return err.set(PG_ERR_INVALID_FILE, path + ": image_std must be positive");
    }
    int64_t seg        = gguf_find_key(g, "paligemma.has_seg_decoder");
    hp.has_seg_decoder = seg >= 0 && gguf_get_kv_type(g, seg) == GGUF_TYPE_BOOL && gguf_get_val_bool(g, seg);
    if (hp.has_seg_decoder) {
        return read_int(g, path, "paligemma.seg.codebook_size", 1, big, hp.seg_codebook, err) &&
               read_int(g, path, "paligemma.seg.embedding_dim", 1, big, hp.seg_dim, err);
    }
    return true;
}

bool init_backend(const pg_vision_params & params, pg_vision_model & m, pg_error & err) {
    ggml_backend_dev_t dev = params.device ? params.device : ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return err.set(PG_ERR_BACKEND, pg_no_cpu_backend_message());
    m.backend.reset(ggml_backend_dev_init(dev, nullptr));
    if (!m.backend) return err.set(PG_ERR_BACKEND, std::string("cannot initialise ") + ggml_backend_dev_name(dev));
    m.is_cpu = ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU;
    // 'tiled' is ours at the widest vectors the CPU has; either form needs the CPU backend.
    pg_vision_attention attention = params.attention;
    if (attention == PG_VISION_ATTENTION_TILED && !pg_attention_cpu_available(PG_ATTENTION_AVX512)) attention = PG_VISION_ATTENTION_TILED_AVX2;
    if (attention == PG_VISION_ATTENTION_INT16 && !pg_attention_cpu_available(PG_ATTENTION_AVX512_VNNI)) attention = PG_VISION_ATTENTION_INT16_AVX2;
    const bool tiled = attention == PG_VISION_ATTENTION_TILED || attention == PG_VISION_ATTENTION_TILED_AVX2 ||
                       attention == PG_VISION_ATTENTION_INT16_AVX2 || attention == PG_VISION_ATTENTION_INT16;
    const pg_attention_isa needs = attention == PG_VISION_ATTENTION_TILED   ? PG_ATTENTION_AVX512
                                   : attention == PG_VISION_ATTENTION_INT16 ? PG_ATTENTION_AVX512_VNNI
                                                                            : PG_ATTENTION_AVX2;
    if (tiled && !(m.is_cpu && pg_attention_cpu_available(needs))) {
        return err.set(PG_ERR_INVALID_ARGUMENT, std::string("visionAttention '") + pg_vision_attention_name(params.attention) +
                                                    "' needs the CPU backend on an x86-64 CPU with AVX2 and FMA, which this one is not");
    }
    if (!pg_matmul_check_forced(params.matmul, m.is_cpu, "visionMatmul", err)) return false;
    m.n_threads = params.n_threads > 0 ? params.n_threads : 1;
    m.attention = attention;
    pg_backend_set_threads(m.backend.get(), m.n_threads);
    return true;
}

bool is_matrix_weight(const char * name) {
    static const char * suffixes[] = { "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_out.weight", "ffn_up.weight", "ffn_down.weight" };
    const size_t        n          = strlen(name);
    for (const char * s : suffixes) {
        const size_t k = strlen(s);
        if (n > k && strcmp(name + n - k, s) == 0 && strncmp(name, "v.blk.", 6) == 0) return true;
    }
    return strcmp(name, "mm.0.weight") == 0;
}

bool has_matrices_of(const gguf_context * g, ggml_type type) {
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        if (gguf_get_tensor_type(g, i) == type && is_matrix_weight(gguf_get_tensor_name(g, i))) return true;
    }
    return false;
}

// Our int8 product for q8_0 matrices and one of our f16 ones for f16 matrices (other weight types
// keep ggml's): as asked (a forced form of ours forces both, in its vector width), or, by default,
// each when it measures faster here; the f16 race runs every form this CPU has (which one wins
// depends on its FMA units' rate against its integer multiplies').
void choose_matmul(const gguf_context * g, const pg_vision_params & params, pg_vision_model & m) {
    m.q8_isa          = pg_matmul_isa(params.matmul);
    m.f16_isa         = params.matmul == PG_VISION_MATMUL_INT8 || params.matmul == PG_VISION_MATMUL_AUTO ? pg_f16_widest_isa()
                        : params.matmul == PG_VISION_MATMUL_INT16_AVX2                                   ? PG_F16_INT16_AVX2
                                                                                                         : PG_F16_AVX2;
    const bool forced = pg_matmul_forced_int8_name(params.matmul) != nullptr;
    const bool pick   = params.matmul == PG_VISION_MATMUL_AUTO && m.is_cpu;
    m.int8_matmul     = has_matrices_of(g, GGML_TYPE_Q8_0) && (forced || (pick && pg_q8_gemm_available(m.q8_isa) && measure_matmul(m)));
    m.f16_matmul      = has_matrices_of(g, GGML_TYPE_F16) && pg_f16_gemm_available(m.f16_isa) && (forced || pick);
    if (!m.f16_matmul || forced) return;
    pg_f16_isa forms[3];
    int        count = 0;
    for (pg_f16_isa f : { PG_F16_AVX512, PG_F16_AVX2, PG_F16_INT16_AVX2 }) {
        if (pg_f16_gemm_available(f)) forms[count++] = f;
    }
    const int choice = measure_f16_matmul(m, forms, count);
    m.f16_matmul     = choice >= 0;
    if (choice >= 0) m.f16_isa = forms[choice];
}

// Asks the backend whether a matrix product with a weight of this type and shape, held in `buft`,
// runs there (the repacked layouts exist for some types and shapes only).
bool repack_supports(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft, ggml_type type, const int64_t * ne) {
    ggml_context_ptr ctx(ggml_init({ ggml_tensor_overhead() * 4, nullptr, true }));
    if (!ctx) return false;
    ggml_tensor *           w  = ggml_new_tensor_2d(ctx.get(), type, ne[0], ne[1]);
    ggml_tensor *           x  = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, ne[0], 512);
    ggml_tensor *           op = ggml_mul_mat(ctx.get(), w, x);
    ggml_backend_buffer_ptr buf(ggml_backend_buft_alloc_buffer(buft, 0));
    w->buffer = buf.get();
    return buf && ggml_backend_dev_supports_op(dev, op);
}

// A q8_0 matrix weight that goes into our own packed layout (pg_gemm_q8.h) instead of ggml's.
bool is_packed_q8(const pg_vision_model & m, const char * name, ggml_type type, const int64_t * ne) {
    return m.int8_matmul && type == GGML_TYPE_Q8_0 && is_matrix_weight(name) && ne[1] % 16 == 0 && ne[2] == 1 && ne[3] == 1;
}

// An f16 matrix weight that goes into our panels (pg_gemm_f16.h).
bool is_packed_f16(const pg_vision_model & m, const char * name, ggml_type type, const int64_t * ne) {
    return m.f16_matmul && type == GGML_TYPE_F16 && is_matrix_weight(name) && ne[1] % 16 == 0 && ne[2] == 1 && ne[3] == 1;
}

// One ggml tensor per file tensor: q8_0 and f16 matrices packed for our products when they are on; other
// matrix weights in the CPU's repacking buffer type where it supports them; everything else in the
// device's default buffer.
bool create_tensors(const gguf_context * g, const pg_vision_params & params, ggml_backend_buffer_type_t & repack, pg_vision_model & m,
                    pg_error & err) {
    const int64_t n_tensors = gguf_get_n_tensors(g);
    const size_t  ctx_size  = ggml_tensor_overhead() * (size_t) (n_tensors + 1);
    m.ctx_w.reset(ggml_init({ ctx_size, nullptr, true }));
    m.ctx_r.reset(ggml_init({ ctx_size, nullptr, true }));
    if (!m.ctx_w || !m.ctx_r) return err.set(PG_ERR_OUT_OF_MEMORY, "cannot create weight contexts");
    repack                 = m.is_cpu && params.repack ? pg_cpu_repack_buffer_type() : nullptr;
    ggml_backend_dev_t dev = ggml_backend_get_device(m.backend.get());
    for (int64_t i = 0; i < n_tensors; ++i) {
        const char * name = gguf_get_tensor_name(g, i);
        if (strlen(name) >= GGML_MAX_NAME) return err.set(PG_ERR_INVALID_FILE, m.path + ": tensor name too long");
        const ggml_type type = gguf_get_tensor_type(g, i);
        const int64_t * ne   = gguf_get_tensor_ne(g, i);
        ggml_tensor *   t    = nullptr;
        if (is_packed_q8(m, name, type, ne)) {
            t = ggml_new_tensor_2d(m.ctx_w.get(), GGML_TYPE_I8, (int64_t) pg_q8_packed_panel_bytes(ne[0]), ne[1] / 16);
        } else if (is_packed_f16(m, name, type, ne)) {
            t = ggml_new_tensor_2d(m.ctx_w.get(), GGML_TYPE_I16, pg_f16_panel_elems(ne[0], m.f16_isa), ne[1] / 16);
        } else {
            const bool into_repack = repack && is_matrix_weight(name) && repack_supports(dev, repack, type, ne);
            t                      = ggml_new_tensor((into_repack ? m.ctx_r : m.ctx_w).get(), type, GGML_MAX_DIMS, ne);
        }
        ggml_set_name(t, name);
    }
    return true;
}

// Finds a tensor and checks its shape (ggml order) and that its type suits the op that uses it, as
// the file describes it (a packed tensor's own shape is its layout's).
ggml_tensor * need(const pg_vision_model & m, const gguf_context * g, const std::string & name, std::initializer_list<int64_t> shape,
                   pg_tensor_use use, pg_error & err) {
    ggml_tensor * t  = pg_vision_tensor(m, name.c_str());
    const int64_t id = gguf_find_tensor(g, name.c_str());
    if (!t || id < 0) {
        err.set(PG_ERR_INVALID_FILE, m.path + ": tensor '" + name + "' is missing");
        return nullptr;
    }
    return pg_check_tensor(m.path, name.c_str(), gguf_get_tensor_type(g, id), gguf_get_tensor_ne(g, id), shape, use, err) ? t : nullptr;
}

// Points the model's fields at its tensors, checking every shape against the hyperparameters.
bool bind_tensors(pg_vision_model & m, const gguf_context * g, pg_error & err) {
    const pg_vision_hparams & hp = m.hp;
    const int64_t             C = hp.hidden, F = hp.ffn, P = hp.patch_size, N = hp.image_tokens, D = hp.proj_dim;
    if (!(m.patch_w = need(m, g, "v.patch_embd.weight", { P, P, 3, C }, PG_TENSOR_MATRIX, err))) return false;
    if (m.patch_w->type != GGML_TYPE_F16 && m.patch_w->type != GGML_TYPE_F32) {
        return err.set(PG_ERR_INVALID_FILE, m.path + ": v.patch_embd.weight must be f16 or f32 for ggml's convolution");
    }
    if (!(m.patch_b = need(m, g, "v.patch_embd.bias", { C }, PG_TENSOR_F32, err)) ||
        !(m.pos = need(m, g, "v.position_embd.weight", { C, N }, PG_TENSOR_F32, err)) ||
        !(m.post_w = need(m, g, "v.post_ln.weight", { C }, PG_TENSOR_F32, err)) ||
        !(m.post_b = need(m, g, "v.post_ln.bias", { C }, PG_TENSOR_F32, err)) ||
        !(m.mm_w = need(m, g, "mm.0.weight", { C, D }, PG_TENSOR_MATRIX, err)) || !(m.mm_b = need(m, g, "mm.0.bias", { D }, PG_TENSOR_F32, err))) {
        return false;
    }
    m.blocks.resize(hp.layers);
    for (int i = 0; i < hp.layers; ++i) {
        pg_vision_layer & L = m.blocks[i];
        const std::string b = "v.blk." + std::to_string(i) + ".";
        struct {
            ggml_tensor **                 t;
            const char *                   name;
            std::initializer_list<int64_t> shape;
            pg_tensor_use                  use;
        } want[] = {
            { &L.ln1_w, "ln1.weight", { C }, PG_TENSOR_F32 },
            { &L.ln1_b, "ln1.bias", { C }, PG_TENSOR_F32 },
            { &L.ln2_w, "ln2.weight", { C }, PG_TENSOR_F32 },
            { &L.ln2_b, "ln2.bias", { C }, PG_TENSOR_F32 },
            { &L.q_w, "attn_q.weight", { C, C }, PG_TENSOR_MATRIX },
            { &L.q_b, "attn_q.bias", { C }, PG_TENSOR_F32 },
            { &L.k_w, "attn_k.weight", { C, C }, PG_TENSOR_MATRIX },
            { &L.k_b, "attn_k.bias", { C }, PG_TENSOR_F32 },
            { &L.v_w, "attn_v.weight", { C, C }, PG_TENSOR_MATRIX },
            { &L.v_b, "attn_v.bias", { C }, PG_TENSOR_F32 },
            { &L.o_w, "attn_out.weight", { C, C }, PG_TENSOR_MATRIX },
            { &L.o_b, "attn_out.bias", { C }, PG_TENSOR_F32 },
            { &L.up_w, "ffn_up.weight", { C, F }, PG_TENSOR_MATRIX },
            { &L.up_b, "ffn_up.bias", { F }, PG_TENSOR_F32 },
            { &L.down_w, "ffn_down.weight", { F, C }, PG_TENSOR_MATRIX },
            { &L.down_b, "ffn_down.bias", { C }, PG_TENSOR_F32 },
        };
        for (auto & w : want) {
            if (!(*w.t = need(m, g, b + w.name, w.shape, w.use, err))) return false;
        }
    }
    return true;
}

bool allocate_weights(pg_vision_model & m, ggml_backend_buffer_type_t repack, pg_error & err) {
    m.buf_w.reset(ggml_backend_alloc_ctx_tensors(m.ctx_w.get(), m.backend.get()));
    if (!m.buf_w) return err.set(PG_ERR_OUT_OF_MEMORY, m.path + ": cannot allocate memory for the vision weights");
    ggml_backend_buffer_set_usage(m.buf_w.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    if (ggml_get_first_tensor(m.ctx_r.get())) {
        m.buf_r.reset(ggml_backend_alloc_ctx_tensors_from_buft(m.ctx_r.get(), repack));
        if (!m.buf_r) return err.set(PG_ERR_OUT_OF_MEMORY, m.path + ": cannot allocate memory for the vision weights");
        ggml_backend_buffer_set_usage(m.buf_r.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    }
    return true;
}

// Reads every tensor's bytes from the file into its buffer (through a staging copy for device memory).
bool read_weights(const pg_gguf_file & f, pg_vision_model & m, const pg_progress_fn & progress, pg_error & err) {
    const gguf_context * g  = f.ctx.get();
    FILE *               fp = fopen(f.path.c_str(), "rb");
    if (!fp) return err.set(PG_ERR_FILE_NOT_FOUND, f.path + ": cannot open");
    std::unique_ptr<FILE, int (*)(FILE *)> guard(fp, fclose);
    std::vector<uint8_t>                   staging;
    const size_t                           base  = gguf_get_data_offset(g);
    size_t                                 total = 0, done = 0;
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) total += gguf_get_tensor_size(g, i);
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        ggml_tensor * t          = pg_vision_tensor(m, gguf_get_tensor_name(g, i));
        const size_t  n          = gguf_get_tensor_size(g, i);
        const bool    packed_q8  = t->type == GGML_TYPE_I8 && gguf_get_tensor_type(g, i) == GGML_TYPE_Q8_0;
        const bool    packed_f16 = t->type == GGML_TYPE_I16 && gguf_get_tensor_type(g, i) == GGML_TYPE_F16;
        const bool    packed     = packed_q8 || packed_f16;
        const bool    host       = ggml_backend_buffer_is_host(t->buffer);
        if (pg_fseek64(fp, base + gguf_get_tensor_offset(g, i)) != 0) return err.set(PG_ERR_INVALID_FILE, f.path + ": seek failed");
        void * dst = t->data;
        if (!host || packed) {
            staging.resize(n);
            dst = staging.data();
        }
        if (fread(dst, 1, n, fp) != n) return err.set(PG_ERR_INVALID_FILE, f.path + ": truncated tensor data");
        if (packed_q8)
            pg_q8_pack(staging.data(), t->ne[1] * 16, gguf_get_tensor_ne(g, i)[0], t->data);
        else if (packed_f16)
            pg_f16_pack((const ggml_fp16_t *) staging.data(), t->ne[1] * 16, gguf_get_tensor_ne(g, i)[0], m.f16_isa, (int16_t *) t->data);
        else if (!host)
            ggml_backend_tensor_set(t, staging.data(), 0, n);
        done += n;
        if (progress && !progress(total ? (float) done / total : 1.0f)) return err.set(PG_ERR_ABORTED, "loading aborted");
    }
    return true;
}

}  // namespace

ggml_tensor * pg_vision_tensor(const pg_vision_model & m, const char * name) {
    ggml_tensor * t = m.ctx_w ? ggml_get_tensor(m.ctx_w.get(), name) : nullptr;
    return t || !m.ctx_r ? t : ggml_get_tensor(m.ctx_r.get(), name);
}

namespace {

// Which matrix an adapter tensor name adapts: "v.blk.N.<matrix>.weight.lora_a|b" or "mm.0.weight...".
bool parse_lora_name(const std::string & name, int layers, int & layer, int & slot, bool & is_a) {
    static const char * slots[] = { "attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down" };
    const size_t        n       = name.size();
    if (n < 7 || (name.compare(n - 7, 7, ".lora_a") != 0 && name.compare(n - 7, 7, ".lora_b") != 0)) return false;
    is_a                   = name[n - 1] == 'a';
    const std::string base = name.substr(0, n - 7);
    if (base == "mm.0.weight") {
        layer = -1;
        slot  = 0;
        return true;
    }
    int  consumed = 0;
    char matrix[16];
    if (sscanf(base.c_str(), "v.blk.%d.%15[a-z_].weight%n", &layer, matrix, &consumed) != 2 || consumed != (int) base.size()) return false;
    if (layer < 0 || layer >= layers) return false;
    for (int i = 0; i < PG_LORA_SLOTS; ++i) {
        if (strcmp(matrix, slots[i]) == 0) {
            slot = i;
            return true;
        }
    }
    return false;
}

}  // namespace

bool pg_vision_lora_load(const pg_vision_model & m, const std::string & path, pg_vision_lora & out, pg_error & err) {
    pg_gguf_file f;
    if (!pg_gguf_open(path, f, err) || !pg_gguf_check_data_bounds(f, err)) return false;
    const gguf_context * g     = f.ctx.get();
    int64_t              width = 0, blocks = 0;
    if (pg_gguf_get_string(g, "general.type") != "adapter" || pg_gguf_get_string(g, "general.architecture") != "clip") {
        return err.set(PG_ERR_INVALID_FILE, path + ": not the vision part of a PaliGemma adapter (general.type 'adapter', architecture 'clip')");
    }
    const std::string family = pg_gguf_get_string(g, "paligemma.adapter.family");
    if (!family.empty() && family != m.hp.family) {
        return err.set(PG_ERR_INVALID_ARGUMENT, path + ": an adapter for " + family + ", but the model is " + m.hp.family);
    }
    if (!pg_gguf_get_int(g, "paligemma.adapter.vision_embedding_length", width) ||
        !pg_gguf_get_int(g, "paligemma.adapter.vision_block_count", blocks)) {
        return err.set(PG_ERR_INVALID_FILE, path + ": paligemma.adapter.vision_embedding_length or vision_block_count is missing");
    }
    if (width != m.hp.hidden || blocks != m.hp.layers) {
        return err.set(PG_ERR_INVALID_ARGUMENT, path + ": an adapter for a vision tower of width " + std::to_string(width) + " and " +
                                                    std::to_string(blocks) + " blocks, but the model's has " + std::to_string(m.hp.hidden) + " and " +
                                                    std::to_string(m.hp.layers));
    }
    const int64_t C = m.hp.hidden, F = m.hp.ffn, D = m.hp.proj_dim;
    // [in, out] of each matrix as the model holds it (the MLP at its padded width).
    auto dims = [&](int layer, int slot, int64_t & in, int64_t & o) {
        in = o = C;
        if (layer < 0)
            o = D;
        else if (slot == PG_LORA_UP)
            o = F;
        else if (slot == PG_LORA_DOWN)
            in = F;
    };
    struct pending {
        int     layer, slot;
        int64_t a = -1, b = -1;
    };
    std::vector<pending> pairs;
    auto                 find_pair = [&](int layer, int slot) -> pending & {
        for (auto & p : pairs) {
            if (p.layer == layer && p.slot == slot) return p;
        }
        pairs.push_back({ layer, slot });
        return pairs.back();
    };
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        const std::string name  = gguf_get_tensor_name(g, i);
        int               layer = 0, slot = 0;
        bool              is_a = false;
        if (!parse_lora_name(name, m.hp.layers, layer, slot, is_a)) {
            return err.set(PG_ERR_INVALID_FILE, path + ": tensor '" + name + "' is not a LoRA factor of this vision tower");
        }
        pending & p        = find_pair(layer, slot);
        (is_a ? p.a : p.b) = i;
    }
    out.layers.assign((size_t) m.hp.layers, std::vector<pg_vision_lora_pair>(PG_LORA_SLOTS));
    out.ctx.reset(ggml_init({ ggml_tensor_overhead() * (pairs.size() * 2 + 1), nullptr, /*no_alloc =*/true }));
    if (!out.ctx) return err.set(PG_ERR_OUT_OF_MEMORY, path + ": cannot create a context");
    struct to_read {
        int64_t       index;
        ggml_tensor * t;
        int64_t       cols, rows;  // as in the file
        bool          transpose;
    };
    std::vector<to_read> reads;
    for (const pending & p : pairs) {
        const std::string what = p.layer < 0 ? "mm.0.weight" : "v.blk." + std::to_string(p.layer) + " matrix " + std::to_string(p.slot);
        if (p.a < 0 || p.b < 0) return err.set(PG_ERR_INVALID_FILE, path + ": " + what + " has only one of lora_a and lora_b");
        const int64_t * na = gguf_get_tensor_ne(g, p.a);
        const int64_t * nb = gguf_get_tensor_ne(g, p.b);
        int64_t         in = 0, o = 0;
        dims(p.layer, p.slot, in, o);
        const int64_t r = na[1];
        // The MLP's width may be padded in the model (zero rows and columns): the file's may be the unpadded one.
        const bool fits = r > 0 && r == nb[0] && na[2] == 1 && nb[2] == 1 && na[0] <= in && nb[1] <= o &&
                          (p.slot == PG_LORA_DOWN && p.layer >= 0 ? na[0] + 32 > in : na[0] == in) &&
                          (p.slot == PG_LORA_UP && p.layer >= 0 ? nb[1] + 32 > o : nb[1] == o);
        if (!fits) {
            return err.set(PG_ERR_INVALID_ARGUMENT, path + ": " + gguf_get_tensor_name(g, p.a) + " [" + std::to_string(na[0]) + ", " +
                                                        std::to_string(na[1]) + "] and lora_b [" + std::to_string(nb[0]) + ", " +
                                                        std::to_string(nb[1]) + "] do not fit the model's " + std::to_string(in) + " -> " +
                                                        std::to_string(o) + " matrix: an adapter for another model");
        }
        pg_vision_lora_pair & dst = p.layer < 0 ? out.projector : out.layers[p.layer][p.slot];
        dst.a                     = ggml_new_tensor_2d(out.ctx.get(), GGML_TYPE_F32, in, r);
        dst.b_transposed          = m.is_cpu;
        dst.b = dst.b_transposed ? ggml_new_tensor_2d(out.ctx.get(), GGML_TYPE_F32, o, r) : ggml_new_tensor_2d(out.ctx.get(), GGML_TYPE_F32, r, o);
        reads.push_back({ p.a, dst.a, na[0], na[1], false });
        reads.push_back({ p.b, dst.b, nb[0], nb[1], dst.b_transposed });
    }
    out.buf.reset(ggml_backend_alloc_ctx_tensors(out.ctx.get(), m.backend.get()));
    if (!out.buf && !pairs.empty()) return err.set(PG_ERR_OUT_OF_MEMORY, path + ": cannot allocate memory for the adapter");
    out.bytes = out.buf ? ggml_backend_buffer_get_size(out.buf.get()) : 0;
    FILE * fp = fopen(path.c_str(), "rb");
    if (!fp) return err.set(PG_ERR_FILE_NOT_FOUND, path + ": cannot open");
    std::unique_ptr<FILE, int (*)(FILE *)> guard(fp, fclose);
    std::vector<float>                     data, padded;
    for (const to_read & rd : reads) {
        if (!pg_gguf_read_floats(f, fp, rd.index, data, err)) return false;
        const int64_t cols = rd.t->ne[0], rows = rd.t->ne[1];
        padded.assign((size_t) (cols * rows), 0.0f);
        for (int64_t y = 0; y < rd.rows; ++y) {
            if (rd.transpose) {
                for (int64_t x = 0; x < rd.cols; ++x) padded[(size_t) (x * cols + y)] = data[(size_t) (y * rd.cols + x)];
            } else {
                std::copy_n(data.data() + y * rd.cols, rd.cols, padded.data() + y * cols);
            }
        }
        ggml_backend_tensor_set(rd.t, padded.data(), 0, padded.size() * sizeof(float));
    }
    return true;
}

bool pg_vision_load(const std::string & path, const pg_vision_params & params, pg_vision_model & m, const pg_progress_fn & progress, pg_error & err) {
    pg_backend_init_once();
    pg_gguf_file f;
    if (!pg_gguf_open(path, f, err) || !pg_gguf_check_data_bounds(f, err)) return false;
    m.path                            = path;
    ggml_backend_buffer_type_t repack = nullptr;
    if (!read_hparams(f.ctx.get(), path, m.hp, err) || !init_backend(params, m, err)) return false;
    choose_matmul(f.ctx.get(), params, m);
    if (!create_tensors(f.ctx.get(), params, repack, m, err) || !bind_tensors(m, f.ctx.get(), err) || !allocate_weights(m, repack, err) ||
        !read_weights(f, m, progress, err)) {
        return false;
    }
    m.graph_meta.resize(ggml_tensor_overhead() * 4096 + ggml_graph_overhead_custom(4096, false));
    m.galloc.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(m.backend.get())));
    if (!m.galloc) return err.set(PG_ERR_OUT_OF_MEMORY, "vision: cannot create the compute allocator");
    if (m.attention == PG_VISION_ATTENTION_AUTO) m.attention = m.is_cpu ? measure_attention(m) : PG_VISION_ATTENTION_FUSED;
    return true;
}

namespace {

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, eps), w), b);
}

// exp(z) for z in [-80, 80] in plain float arithmetic, so the loop below vectorizes (a libm call
// would not): z = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor series to r^6 (relative error
// under 2e-7), 2^n from the exponent bits.
inline float exp_clamped(float z) {
    const float t    = z * 1.44269504f + 12582912.0f;  // adding 1.5 * 2^23 rounds to an integer
    const float n    = t - 12582912.0f;
    const float r    = (z - n * 0.693145752f) - n * 1.42860677e-6f;  // ln2 in two parts
    const float p    = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    int32_t     bits = (int32_t) n + 127;
    bits <<= 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// The MLP's bias + GELU (tanh approximation) in one pass over the activations, exactly:
// 0.5 v (1 + tanh(u)) == v / (1 + exp(-2u)), u = sqrt(2/pi) (v + 0.044715 v^3). ggml's own GELU
// reads an FP16 table on the CPU (inexact), and composing it from ggml ops costs eight passes.
inline float gelu_tanh_value(float v) {
    float z = -1.5957691216057308f * (v + 0.044715f * v * v * v);  // -2u
    z       = z < -80.0f ? -80.0f : (z > 80.0f ? 80.0f : z);
    return v / (1.0f + exp_clamped(z));
}

// Vector clones chosen at load by the CPU's features. Not "arch=<cpu>" clones: GCC dispatches those
// on the CPU model (arch=haswell runs on Intel Haswell only), so every AMD CPU got the SSE default.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define PG_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PG_SIMD_CLONES
#endif

PG_SIMD_CLONES void gelu_tanh_bias_row(float * y, const float * x, const float * bias, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        y[i] = gelu_tanh_value(x[i] + bias[i]);
    }
}

PG_SIMD_CLONES void gelu_tanh_row(float * y, const float * x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        y[i] = gelu_tanh_value(x[i]);
    }
}

void gelu_tanh_bias_rows(ggml_tensor * dst, const ggml_tensor * a, const ggml_tensor * b, int ith, int nth, void *) {
    const int64_t rows = ggml_nrows(a);
    const int64_t per = (rows + nth - 1) / nth, r0 = per * ith, r1 = r0 + per < rows ? r0 + per : rows;
    for (int64_t r = r0; r < r1; ++r) {
        gelu_tanh_bias_row((float *) ((char *) dst->data + r * dst->nb[1]), (const float *) ((const char *) a->data + r * a->nb[1]),
                           (const float *) b->data, a->ne[0]);
    }
}

void gelu_tanh_rows(ggml_tensor * dst, const ggml_tensor * a, int ith, int nth, void *) {
    const int64_t rows = ggml_nrows(a);
    const int64_t per = (rows + nth - 1) / nth, r0 = per * ith, r1 = r0 + per < rows ? r0 + per : rows;
    for (int64_t r = r0; r < r1; ++r) {
        gelu_tanh_row((float *) ((char *) dst->data + r * dst->nb[1]), (const float *) ((const char *) a->data + r * a->nb[1]), a->ne[0]);
    }
}

// GELU(up + bias); bias may be null (already added).
ggml_tensor * mlp_up_gelu(const pg_vision_model & m, ggml_context * ctx, ggml_tensor * up, ggml_tensor * bias) {
    if (m.is_cpu) {
        return bias ? ggml_map_custom2(ctx, up, bias, gelu_tanh_bias_rows, GGML_N_TASKS_MAX, nullptr)
                    : ggml_map_custom1(ctx, up, gelu_tanh_rows, GGML_N_TASKS_MAX, nullptr);
    }
    // GPU backends run no custom ops; their GELU computes tanh exactly (only the CPU uses a table).
    return ggml_gelu(ctx, bias ? ggml_add(ctx, up, bias) : up);
}

// y[:, n] += sum_k t[k, n] * bt[:, k] for tokens n0..n1: our CPU op for B (A x), with t = A x
// [r, N] and bt = B transposed ([out, r] in ggml order, so column k of B is a contiguous row). Four
// tokens and 16 outputs at a time stay in registers while the r rows of bt stream past, so each load
// of bt feeds four multiply-adds.
PG_SIMD_CLONES void lora_rows(char * y, size_t y_stride, const char * t, size_t t_stride, const float * bt, int64_t out, int64_t r, int64_t n0,
                              int64_t n1) {
    constexpr int T = 4, W = 16;
    int64_t       n = n0;
    for (; n + T <= n1; n += T) {
        float *       yt[T];
        const float * tt[T];
        for (int i = 0; i < T; ++i) {
            yt[i] = (float *) (y + (n + i) * y_stride);
            tt[i] = (const float *) (t + (n + i) * t_stride);
        }
        int64_t o = 0;
        for (; o + W <= out; o += W) {
            float acc[T][W];
            for (int i = 0; i < T; ++i) {
                for (int j = 0; j < W; ++j) acc[i][j] = yt[i][o + j];
            }
            for (int64_t k = 0; k < r; ++k) {
                const float * b = bt + k * out + o;
                for (int i = 0; i < T; ++i) {
                    const float c = tt[i][k];
                    for (int j = 0; j < W; ++j) acc[i][j] += c * b[j];
                }
            }
            for (int i = 0; i < T; ++i) {
                for (int j = 0; j < W; ++j) yt[i][o + j] = acc[i][j];
            }
        }
        for (; o < out; ++o) {
            for (int i = 0; i < T; ++i) {
                float sum = yt[i][o];
                for (int64_t k = 0; k < r; ++k) sum += tt[i][k] * bt[k * out + o];
                yt[i][o] = sum;
            }
        }
    }
    for (; n < n1; ++n) {
        float *       yn = (float *) (y + n * y_stride);
        const float * tn = (const float *) (t + n * t_stride);
        for (int64_t k = 0; k < r; ++k) {
            for (int64_t o = 0; o < out; ++o) yn[o] += tn[k] * bt[k * out + o];
        }
    }
}

void lora_update(ggml_tensor * dst, const ggml_tensor * y, const ggml_tensor * t, const ggml_tensor * bt, int ith, int nth, void *) {
    const int64_t tokens = y->ne[1];
    const int64_t per = (tokens + nth - 1) / nth, n0 = per * ith, n1 = n0 + per < tokens ? n0 + per : tokens;
    if (n0 < n1) lora_rows((char *) dst->data, dst->nb[1], (const char *) t->data, t->nb[1], (const float *) bt->data, y->ne[0], t->ne[0], n0, n1);
}

// y + the low-rank updates of every adapter that touches one matrix, for input x: y + the sum of
// scale * B (A x). layer < 0 is the projector.
ggml_tensor * lora_add(ggml_context * ctx, ggml_tensor * y, const std::vector<pg_vision_lora_use> & loras, int layer, int slot, ggml_tensor * x) {
    for (const pg_vision_lora_use & u : loras) {
        const pg_vision_lora_pair & p = layer < 0 ? u.lora->projector : u.lora->layers[layer][slot];
        if (!p.a || u.scale == 0.0f) continue;
        ggml_tensor * t = ggml_mul_mat(ctx, p.a, x);  // [r, N]
        if (u.scale != 1.0f) t = ggml_scale(ctx, t, u.scale);
        if (p.b_transposed) {
            // y may be a view (q, k, v side by side): the op writes through its strides.
            y = ggml_map_custom3_inplace(ctx, y, t, p.b, lora_update, GGML_N_TASKS_MAX, nullptr);
        } else {
            y = ggml_add(ctx, y, ggml_mul_mat(ctx, p.b, t));
        }
    }
    return y;
}

bool lora_touches(const std::vector<pg_vision_lora_use> & loras, int layer, std::initializer_list<int> slots) {
    for (const pg_vision_lora_use & u : loras) {
        if (u.scale == 0.0f) continue;
        for (int s : slots) {
            if ((layer < 0 ? u.lora->projector : u.lora->layers[layer][s]).a) return true;
        }
    }
    return false;
}

bool packed(const ggml_tensor * w) {
    return w->type == GGML_TYPE_I8;
}

bool packed_f16(const ggml_tensor * w) {
    return w->type == GGML_TYPE_I16;
}

// w x + b, with our int8 product for a packed q8_0 weight and our f16 one for a packed f16 weight.
ggml_tensor * linear(const pg_vision_model & m, ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * x) {
    if (packed(w)) return pg_q8_linear(ctx, &w, &b, 1, pg_q8_quantize(ctx, x, m.q8_isa), PG_Q8_BIAS, nullptr, m.q8_isa);
    if (packed_f16(w)) return pg_f16_linear(ctx, w, b, x, nullptr, m.f16_isa);
    return ggml_add(ctx, ggml_mul_mat(ctx, w, x), b);
}

// x + w y + b: our products add the residual themselves.
ggml_tensor * linear_residual(const pg_vision_model & m, ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * y, ggml_tensor * x) {
    if (packed(w)) return pg_q8_linear(ctx, &w, &b, 1, pg_q8_quantize(ctx, y, m.q8_isa), PG_Q8_BIAS_RESIDUAL, x, m.q8_isa);
    if (packed_f16(w)) return pg_f16_linear(ctx, w, b, y, x, m.f16_isa);
    return ggml_add(ctx, x, linear(m, ctx, w, b, y));
}

// Our attention op's inputs: q and v per head, [HD, N, H] (v's rows padded with zeros to whole
// vectors); K in chunks of keys side by side, [chunk, HD, chunks, H], zero keys padding N to whole
// chunks.
ggml_tensor * tiled_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int H, pg_attention_isa isa) {
    const int64_t C = q->ne[0], N = q->ne[1], HD = C / H, CH = PG_ATTENTION_CHUNK, NP = (N + CH - 1) / CH * CH;
    auto          heads    = [&](ggml_tensor * t) { return ggml_view_3d(ctx, t, HD, H, N, HD * ggml_element_size(t), t->nb[1], 0); };
    auto          per_head = [&](ggml_tensor * t) { return ggml_cont(ctx, ggml_permute(ctx, heads(t), 0, 2, 1, 3)); };
    ggml_tensor * kp       = ggml_cont(ctx, heads(k));  // [HD, H, N]
    if (NP != N) kp = ggml_pad(ctx, kp, 0, 0, (int) (NP - N), 0);
    ggml_tensor * kc    = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, kp, HD, H, CH, NP / CH), 1, 3, 0, 2));
    ggml_tensor * vp    = per_head(v);
    const int64_t lanes = pg_attention_cpu_lanes(isa);
    if (HD % lanes) vp = ggml_pad(ctx, vp, (int) (lanes - HD % lanes), 0, 0, 0);  // whole vectors per row
    return pg_attention_cpu(ctx, per_head(q), kc, vp, isa);
}

// Multi-head attention over q, k, v of [C, N] (C = heads x head size; rows may be views into a
// wider tensor), as `kind` says; [C, N] out.
ggml_tensor * attention(const pg_vision_model & m, ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int H,
                        pg_vision_attention kind) {
    const int64_t C = q->ne[0], N = q->ne[1], HD = C / H;
    const float   scale = 1.0f / sqrtf((float) HD);
    // [C, N] -> [HD, H, N] heads, whatever the row stride.
    auto heads = [&](ggml_tensor * t) { return ggml_view_3d(ctx, t, HD, H, N, HD * ggml_element_size(t), t->nb[1], 0); };
    if (kind == PG_VISION_ATTENTION_TILED) return tiled_attention(ctx, q, k, v, H, PG_ATTENTION_AVX512);
    if (kind == PG_VISION_ATTENTION_TILED_AVX2) return tiled_attention(ctx, q, k, v, H, PG_ATTENTION_AVX2);
    if (kind == PG_VISION_ATTENTION_INT16_AVX2) return pg_attention_cpu_int16(ctx, q, k, v, H, PG_ATTENTION_AVX2);
    if (kind == PG_VISION_ATTENTION_INT16) return pg_attention_cpu_int16(ctx, q, k, v, H, PG_ATTENTION_AVX512_VNNI);
    ggml_tensor * qh = ggml_permute(ctx, heads(q), 0, 2, 1, 3);  // [HD, N, H]
    ggml_tensor * kh = ggml_permute(ctx, heads(k), 0, 2, 1, 3);  // [HD, N, H]
    if (kind == PG_VISION_ATTENTION_FUSED) {
        // The N x N score matrix is never materialized (4096 x 4096 per head at 896 px); K and V in
        // f16 as ggml's kernels want them. A GPU backend without a kernel for SigLIP's head size
        // (72) gets the separate ops instead.
        ggml_tensor * vh = ggml_permute(ctx, heads(v), 0, 2, 1, 3);
        ggml_tensor * fused =
            ggml_flash_attn_ext(ctx, qh, ggml_cast(ctx, kh, GGML_TYPE_F16), ggml_cast(ctx, vh, GGML_TYPE_F16), nullptr, scale, 0.0f, 0.0f);
        ggml_prec_set_acc(fused, GGML_PREC_F32);
        if (m.is_cpu || ggml_backend_supports_op(m.backend.get(), fused)) return ggml_reshape_2d(ctx, fused, C, N);  // [HD, H, N] -> [C, N]
    }
    ggml_tensor * vt  = ggml_cont(ctx, ggml_permute(ctx, heads(v), 1, 2, 0, 3));  // [N, HD, H]
    ggml_tensor * kq  = ggml_mul_mat(ctx, kh, qh);                                // [N_k, N_q, H]
    kq                = ggml_soft_max_ext(ctx, kq, nullptr, scale, 0.0f);
    ggml_tensor * kqv = ggml_mul_mat(ctx, vt, kq);                           // [HD, N, H]
    kqv               = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3));  // [HD, H, N]
    return ggml_reshape_2d(ctx, kqv, C, N);
}

// x + attention(layer_norm(x)): with packed q, k, v, one op normalizes and quantizes x and one
// computes q, k and v side by side; a packed output projection adds the residual itself. An
// adapter's low-rank updates join the fused results (their input, layer_norm(x), is computed once
// more in f32 for them: a small pass beside the products).
ggml_tensor * attention_block(const pg_vision_model & m, ggml_context * ctx, const pg_vision_layer & L, int il,
                              const std::vector<pg_vision_lora_use> & loras, ggml_tensor * x) {
    const int64_t C = m.hp.hidden, N = x->ne[1];
    ggml_tensor * q, *k, *v;
    const bool    adapt_qkv = lora_touches(loras, il, { PG_LORA_Q, PG_LORA_K, PG_LORA_V });
    ggml_tensor * normed    = nullptr;  // f32 layer_norm(x), when some op needs it
    auto          norm_x    = [&] { return normed ? normed : (normed = layer_norm(ctx, x, L.ln1_w, L.ln1_b, m.hp.eps)); };
    if (packed(L.q_w) && packed(L.k_w) && packed(L.v_w)) {
        ggml_tensor * w[] = { L.q_w, L.k_w, L.v_w };
        ggml_tensor * b[] = { L.q_b, L.k_b, L.v_b };
        ggml_tensor * qkv =
            pg_q8_linear(ctx, w, b, 3, pg_q8_norm_quantize(ctx, x, L.ln1_w, L.ln1_b, &m.hp.eps, m.q8_isa), PG_Q8_BIAS, nullptr, m.q8_isa);
        const size_t row = (size_t) C * sizeof(float);
        q                = ggml_view_2d(ctx, qkv, C, N, qkv->nb[1], 0);
        k                = ggml_view_2d(ctx, qkv, C, N, qkv->nb[1], row);
        v                = ggml_view_2d(ctx, qkv, C, N, qkv->nb[1], 2 * row);
    } else if (packed_f16(L.q_w) && packed_f16(L.k_w) && packed_f16(L.v_w)) {
        // One input for the three (the int16 form's quantized blocks), as the q8_0 path shares its.
        ggml_tensor * in = pg_f16_input(ctx, norm_x(), m.f16_isa);
        q                = pg_f16_product(ctx, L.q_w, L.q_b, in, nullptr, m.f16_isa);
        k                = pg_f16_product(ctx, L.k_w, L.k_b, in, nullptr, m.f16_isa);
        v                = pg_f16_product(ctx, L.v_w, L.v_b, in, nullptr, m.f16_isa);
    } else {
        q = linear(m, ctx, L.q_w, L.q_b, norm_x());
        k = linear(m, ctx, L.k_w, L.k_b, norm_x());
        v = linear(m, ctx, L.v_w, L.v_b, norm_x());
    }
    if (adapt_qkv) {
        q = lora_add(ctx, q, loras, il, PG_LORA_Q, norm_x());
        k = lora_add(ctx, k, loras, il, PG_LORA_K, norm_x());
        v = lora_add(ctx, v, loras, il, PG_LORA_V, norm_x());
    }
    ggml_tensor * att = attention(m, ctx, q, k, v, m.hp.heads, m.attention);
    ggml_tensor * out = linear_residual(m, ctx, L.o_w, L.o_b, att, x);
    if (!lora_touches(loras, il, { PG_LORA_O })) return out;
    return lora_add(ctx, out, loras, il, PG_LORA_O, ggml_is_contiguous(att) ? att : ggml_cont(ctx, att));
}

// x + mlp(layer_norm(x)): with packed weights, fc1 applies GELU and quantizes for fc2 itself, and
// fc2 adds the residual: no f32 activations of the MLP's width at all. An adapted fc1 or fc2 needs
// those activations (the update joins before GELU / takes GELU's output), so its products stay
// ours but unfused there.
ggml_tensor * mlp_block(const pg_vision_model & m, ggml_context * ctx, const pg_vision_layer & L, int il,
                        const std::vector<pg_vision_lora_use> & loras, ggml_tensor * x) {
    const bool adapted = lora_touches(loras, il, { PG_LORA_UP, PG_LORA_DOWN });
    if (!adapted && packed(L.up_w) && packed(L.down_w) && L.up_w->ne[1] % 2 == 0) {
        return pg_q8_mlp(ctx, L.up_w, L.up_b, L.down_w, L.down_b, pg_q8_norm_quantize(ctx, x, L.ln2_w, L.ln2_b, &m.hp.eps, m.q8_isa), x, m.q8_isa);
    }
    ggml_tensor * cur = layer_norm(ctx, x, L.ln2_w, L.ln2_b, m.hp.eps);
    ggml_tensor * up  = nullptr;
    if (packed(L.up_w)) {
        up = pg_q8_linear(ctx, &L.up_w, &L.up_b, 1, pg_q8_quantize(ctx, cur, m.q8_isa), PG_Q8_BIAS, nullptr, m.q8_isa);
        up = mlp_up_gelu(m, ctx, lora_add(ctx, up, loras, il, PG_LORA_UP, cur), nullptr);
    } else {
        up = lora_touches(loras, il, { PG_LORA_UP })
                 ? mlp_up_gelu(m, ctx, lora_add(ctx, linear(m, ctx, L.up_w, L.up_b, cur), loras, il, PG_LORA_UP, cur), nullptr)
             : packed_f16(L.up_w) ? mlp_up_gelu(m, ctx, pg_f16_linear(ctx, L.up_w, L.up_b, cur, nullptr, m.f16_isa), nullptr)
                                  : mlp_up_gelu(m, ctx, ggml_mul_mat(ctx, L.up_w, cur), L.up_b);
    }
    ggml_tensor * out = linear_residual(m, ctx, L.down_w, L.down_b, up, x);
    return lora_add(ctx, out, loras, il, PG_LORA_DOWN, up);
}

ggml_cgraph * build_graph(pg_vision_model & m, ggml_context * ctx, const std::vector<pg_vision_lora_use> & loras, ggml_tensor ** inp_out) {
    const pg_vision_hparams & hp = m.hp;
    const int                 S = hp.image_size, P = hp.patch_size, C = hp.hidden, N = hp.image_tokens;

    ggml_tensor * inp = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, S, S, 3);
    ggml_set_name(inp, "pixels");
    ggml_set_input(inp);
    *inp_out = inp;

    // Patch embedding: a P x P convolution with stride P, then one row per patch (row-major h, w).
    ggml_tensor * x = ggml_conv_2d(ctx, m.patch_w, inp, P, P, 0, 0, 1, 1);  // [S/P, S/P, C]
    x               = ggml_reshape_2d(ctx, x, N, C);
    x               = ggml_cont(ctx, ggml_transpose(ctx, x));  // [C, N]
    x               = ggml_add(ctx, x, m.patch_b);
    x               = ggml_add(ctx, x, m.pos);

    for (int il = 0; il < hp.layers; ++il) {
        const pg_vision_layer & L = m.blocks[il];
        x                         = mlp_block(m, ctx, L, il, loras, attention_block(m, ctx, L, il, loras, x));
    }
    ggml_tensor * pre = x;
    if (packed(m.mm_w)) {
        x = pg_q8_linear(ctx, &m.mm_w, &m.mm_b, 1, pg_q8_norm_quantize(ctx, x, m.post_w, m.post_b, &m.hp.eps, m.q8_isa), PG_Q8_BIAS, nullptr,
                         m.q8_isa);  // [D, N]
    } else {
        x = linear(m, ctx, m.mm_w, m.mm_b, layer_norm(ctx, x, m.post_w, m.post_b, m.hp.eps));  // [D, N]
    }
    if (lora_touches(loras, -1, { 0 })) x = lora_add(ctx, x, loras, -1, 0, layer_norm(ctx, pre, m.post_w, m.post_b, m.hp.eps));
    ggml_set_name(x, "image_embd");
    ggml_set_output(x);

    ggml_cgraph * gf = ggml_new_graph_custom(ctx, 4096, false);
    ggml_build_forward_expand(gf, x);
    return gf;
}

struct abort_ctx {
    const std::atomic<bool> * flag;
};

bool abort_cb(void * data) {
    auto * a = (abort_ctx *) data;
    return a->flag && a->flag->load(std::memory_order_relaxed);
}

// Which attention kernel is faster on this machine at the tower's shape, measured once per shape
// and thread count in this process: the two differ by 1.6-3x, in either direction, between CPU
// kinds. The race takes all heads up to 512 tokens and fewer above (one head of 4096 tokens is
// already ~2 GFLOP), at least one per thread; a few milliseconds at 224 px.
pg_vision_attention measure_attention(const pg_vision_model & m) {
    const int H = m.hp.heads, HD = m.hp.hidden / H, N = m.hp.image_tokens;
    // The candidates: ggml's fused kernel; its separate ops, which hold every head's N x N scores at
    // once (1 GiB at 896 px: past 256 MiB they are left out); ours at each vector width the CPU has.
    std::vector<pg_vision_attention> kinds = { PG_VISION_ATTENTION_FUSED };
    if ((int64_t) N * N * H * (int64_t) sizeof(float) <= (256LL << 20)) kinds.push_back(PG_VISION_ATTENTION_SEPARATE);
    if (pg_attention_cpu_available(PG_ATTENTION_AVX512)) kinds.push_back(PG_VISION_ATTENTION_TILED);
    if (pg_attention_cpu_available(PG_ATTENTION_AVX2)) {
        kinds.push_back(PG_VISION_ATTENTION_TILED_AVX2);
        kinds.push_back(PG_VISION_ATTENTION_INT16_AVX2);
    }
    if (pg_attention_cpu_available(PG_ATTENTION_AVX512_VNNI)) kinds.push_back(PG_VISION_ATTENTION_INT16);
    if (kinds.size() == 1) return kinds[0];
    const int         heads = std::max(std::min(m.n_threads, H), std::min(H, (int) ((4LL << 20) / ((int64_t) N * N))));
    const std::string key =
        "attention " + std::to_string(N) + "x" + std::to_string(HD) + "x" + std::to_string(heads) + "@" + std::to_string(m.n_threads);
    const int known = pg_tune_recall(key);
    if (known >= 0) return (pg_vision_attention) known;
    std::vector<pg_tune_graph> graphs(kinds.size());
    for (size_t i = 0; i < kinds.size(); ++i) {
        if (!pg_tune_begin(graphs[i], 64)) return PG_VISION_ATTENTION_FUSED;
        ggml_tensor * qkv[3];
        for (ggml_tensor *& t : qkv) {
            t = ggml_new_tensor_2d(graphs[i].ctx.get(), GGML_TYPE_F32, (int64_t) HD * heads, N);
            pg_tune_input(t);
        }
        if (!pg_tune_finish(graphs[i], m.backend.get(), attention(m, graphs[i].ctx.get(), qkv[0], qkv[1], qkv[2], heads, kinds[i]))) {
            return PG_VISION_ATTENTION_FUSED;
        }
        for (int j = 0; j < 3; ++j) pg_tune_fill(qkv[j], j + 1);
    }
    std::vector<double> us(kinds.size());
    // Three timed rounds, not two: at 448 px over AVX2 ggml's fused kernel and ours are only 1.2-1.4x
    // apart (`paligemma-native kernels`), and a two-round race picked the slower one in one benchmark run of three.
    const int                 fastest = pg_tune_race(m.backend.get(), graphs.data(), (int) graphs.size(), 3, us.data());
    const pg_vision_attention pick    = fastest < 0 ? PG_VISION_ATTENTION_FUSED : kinds[fastest];
    pg_tune_remember(key, pick);
    return pick;
}

// Whether our int8 product beats ggml's q8_0 one on this machine: both on a hidden x hidden weight
// of random values, over the tower's tokens; ours is kept only when it is faster and agrees.
bool measure_matmul(const pg_vision_model & m) {
    const int64_t C = m.hp.hidden - m.hp.hidden % 32;
    return pg_tune_int8_faster(m.backend.get(), GGML_TYPE_Q8_0, C, C, m.hp.image_tokens, m.n_threads, m.q8_isa);
}

// The same for our f16 products (`count` forms) against ggml's: the fastest form's index, or -1.
int measure_f16_matmul(const pg_vision_model & m, const pg_f16_isa * forms, int count) {
    const int64_t C = m.hp.hidden - m.hp.hidden % 16;
    return pg_tune_f16_fastest(m.backend.get(), C, C, m.hp.image_tokens, m.n_threads, forms, count);
}

}  // namespace

bool pg_vision_encode(pg_vision_model & m, const float * pixels, const std::vector<pg_vision_lora_use> & loras, std::vector<float> & out,
                      const std::atomic<bool> * abort_flag, pg_error & err) {
    ggml_context_ptr ctx(ggml_init({ m.graph_meta.size(), m.graph_meta.data(), /*no_alloc =*/true }));
    if (!ctx) return err.set(PG_ERR_OUT_OF_MEMORY, "vision: cannot create a graph context");
    ggml_tensor * inp = nullptr;
    ggml_cgraph * gf  = build_graph(m, ctx.get(), loras, &inp);
    if (!ggml_gallocr_alloc_graph(m.galloc.get(), gf)) return err.set(PG_ERR_OUT_OF_MEMORY, "vision: cannot allocate the compute buffer");
    const size_t S = (size_t) m.hp.image_size;
    ggml_backend_tensor_set(inp, pixels, 0, 3 * S * S * sizeof(float));

    abort_ctx ac = { abort_flag };
    pg_backend_set_abort_callback(m.backend.get(), abort_cb, &ac);
    enum ggml_status st = ggml_backend_graph_compute(m.backend.get(), gf);
    pg_backend_set_abort_callback(m.backend.get(), nullptr, nullptr);
    // Only an abort that stopped the graph fails the encode; one seen after a complete encode is the caller's to act on.
    if (st == GGML_STATUS_ABORTED) return err.set(PG_ERR_ABORTED, "image encoding aborted");
    if (st != GGML_STATUS_SUCCESS) return err.set(PG_ERR_BACKEND, std::string("vision: graph computation failed: ") + ggml_status_to_string(st));

    ggml_tensor * res = ggml_graph_node(gf, -1);
    out.resize((size_t) m.hp.image_tokens * m.hp.proj_dim);
    ggml_backend_tensor_get(res, out.data(), 0, out.size() * sizeof(float));
    return true;
}

const char * pg_matmul_forced_int8_name(pg_vision_matmul mm) {
    switch (mm) {
        case PG_VISION_MATMUL_INT8: return "int8";
        case PG_VISION_MATMUL_INT8_AVX_VNNI: return "int8-avxvnni";
        case PG_VISION_MATMUL_INT8_AVX2: return "int8-avx2";
        case PG_VISION_MATMUL_INT16_AVX2: return "int16-avx2";
        case PG_VISION_MATMUL_AUTO:
        case PG_VISION_MATMUL_GGML: break;
    }
    return nullptr;
}

bool pg_matmul_check_forced(pg_vision_matmul mm, bool is_cpu, const char * option, pg_error & err) {
    const char * name = pg_matmul_forced_int8_name(mm);
    if (!name) return true;
    // 'int8' takes any form, and AVX2 is the least of them.
    const bool vnni = mm == PG_VISION_MATMUL_INT8_AVX_VNNI;
    if (is_cpu && pg_q8_gemm_available(vnni ? PG_Q8_AVX_VNNI : PG_Q8_AVX2)) return true;
    return err.set(PG_ERR_INVALID_ARGUMENT, std::string(option) + " '" + name + "' needs the CPU backend on " +
                                                (vnni ? "a CPU with AVX-VNNI" : "an x86-64 CPU with AVX2 and FMA (and F16C)") +
                                                ", which this one is not");
}

const char * pg_vision_attention_name(pg_vision_attention a) {
    switch (a) {
        case PG_VISION_ATTENTION_AUTO: return "auto";
        case PG_VISION_ATTENTION_FUSED: return "fused";
        case PG_VISION_ATTENTION_SEPARATE: return "separate";
        case PG_VISION_ATTENTION_TILED: return "tiled";
        case PG_VISION_ATTENTION_TILED_AVX2: return "tiled-avx2";
        case PG_VISION_ATTENTION_INT16_AVX2: return "int16-avx2";
        case PG_VISION_ATTENTION_INT16: return "int16";
    }
    return "fused";
}

const char * pg_q8_isa_name(pg_q8_isa isa) {
    switch (isa) {
        case PG_Q8_AVX512_VNNI: return "int8";
        case PG_Q8_AVX_VNNI: return "int8-avxvnni";
        case PG_Q8_AVX2: break;
    }
    return "int8-avx2";
}

pg_q8_isa pg_matmul_isa(pg_vision_matmul mm) {
    // The widest form this CPU has, unless a 256-bit one is asked for.
    if (mm == PG_VISION_MATMUL_INT8_AVX_VNNI) return PG_Q8_AVX_VNNI;
    return mm == PG_VISION_MATMUL_INT8_AVX2 || mm == PG_VISION_MATMUL_INT16_AVX2 ? PG_Q8_AVX2 : pg_q8_widest_isa();
}

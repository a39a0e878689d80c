#include "pg_vision.h"
#include "pg_backend.h"
#include "pg_gguf.h"
#include "pg_log.h"

#include "ggml-alloc.h"
#include "ggml-cpu.h"
#include "gguf.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

pg_vision_model::~pg_vision_model() {
    if (galloc) ggml_gallocr_free((ggml_gallocr_t) galloc);
    if (buf_w) ggml_backend_buffer_free(buf_w);
    if (ctx_w) ggml_free(ctx_w);
    if (buf_r) ggml_backend_buffer_free(buf_r);
    if (ctx_r) ggml_free(ctx_r);
    if (backend) ggml_backend_free(backend);
}

namespace {

bool get_u32(const gguf_context * g, const char * key, int & out, const std::string & path, pg_error & err) {
    int64_t id = gguf_find_key(g, key);
    if (id < 0) return err.set(PG_ERR_INVALID_FILE, path + ": key '" + key + "' is missing: not a PaliGemma mmproj file from our converter");
    gguf_type t = gguf_get_kv_type(g, id);
    if (t == GGUF_TYPE_UINT32) out = (int) gguf_get_val_u32(g, id);
    else if (t == GGUF_TYPE_INT32) out = gguf_get_val_i32(g, id);
    else return err.set(PG_ERR_INVALID_FILE, path + ": key '" + key + "' has the wrong type");
    if (out < 0 || out > (1 << 24)) return err.set(PG_ERR_INVALID_FILE, path + ": key '" + key + "' is out of range");
    return true;
}

bool get_f32_array3(const gguf_context * g, const char * key, float out[3]) {
    int64_t id = gguf_find_key(g, key);
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, id) != GGUF_TYPE_FLOAT32 || gguf_get_arr_n(g, id) != 3) return false;
    memcpy(out, gguf_get_arr_data(g, id), 3 * sizeof(float));
    return true;
}

// Finds a tensor and checks its shape (ggml order) and that its type suits the op that uses it.
ggml_tensor * need(const pg_vision_model & m, const std::string & path, const std::string & name, std::vector<int64_t> shape,
                   bool matrix, pg_error & err) {
    ggml_tensor * t = ggml_get_tensor(m.ctx_w, name.c_str());
    if (!t && m.ctx_r) t = ggml_get_tensor(m.ctx_r, name.c_str());
    if (!t) {
        err.set(PG_ERR_INVALID_FILE, path + ": tensor '" + name + "' is missing");
        return nullptr;
    }
    for (int d = 0; d < GGML_MAX_DIMS; ++d) {
        int64_t want = d < (int) shape.size() ? shape[d] : 1;
        if (t->ne[d] != want) {
            char buf[160];
            snprintf(buf, sizeof(buf), ": tensor '%s' has shape [%lld, %lld, %lld, %lld], expected dimension %d to be %lld", name.c_str(),
                     (long long) t->ne[0], (long long) t->ne[1], (long long) t->ne[2], (long long) t->ne[3], d, (long long) want);
            err.set(PG_ERR_INVALID_FILE, path + buf);
            return nullptr;
        }
    }
    if (matrix && t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16 && !ggml_get_type_traits(t->type)->is_quantized) {
        err.set(PG_ERR_INVALID_FILE, path + ": tensor '" + name + "' has an unusable type " + ggml_type_name(t->type));
        return nullptr;
    }
    if (matrix && t->ne[0] % ggml_blck_size(t->type) != 0) {
        err.set(PG_ERR_INVALID_FILE, path + ": tensor '" + name + "' rows do not divide into blocks");
        return nullptr;
    }
    if (!matrix && t->type != GGML_TYPE_F32) {
        err.set(PG_ERR_INVALID_FILE, path + ": tensor '" + name + "' must be f32, is " + ggml_type_name(t->type));
        return nullptr;
    }
    return t;
}

bool is_matrix_weight(const char * name) {
    static const char * suffixes[] = { "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_out.weight", "ffn_up.weight", "ffn_down.weight" };
    const size_t n = strlen(name);
    for (const char * s : suffixes) {
        const size_t k = strlen(s);
        if (n > k && strcmp(name + n - k, s) == 0 && strncmp(name, "v.blk.", 6) == 0) return true;
    }
    return strcmp(name, "mm.0.weight") == 0;
}

// The CPU backend's extra buffer type that repacks quantized weights for its matrix kernels.
ggml_backend_buffer_type_t pg_cpu_repack_buft() {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu) return nullptr;
    auto get = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    if (!get) return nullptr;
    for (ggml_backend_buffer_type_t * b = get(cpu); b && *b; ++b) {
        if (strstr(ggml_backend_buft_name(*b), "REPACK")) return *b;
    }
    return nullptr;
}

// Asks the backend whether a matrix product with a weight of this type and shape, held in `buft`,
// runs there (the repacked layouts exist for some types and shapes only).
bool pg_repack_supports(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft, ggml_type type, const int64_t * ne) {
    ggml_init_params ip  = { ggml_tensor_overhead() * 4, nullptr, true };
    ggml_context *   ctx = ggml_init(ip);
    if (!ctx) return false;
    ggml_tensor * w  = ggml_new_tensor_2d(ctx, type, ne[0], ne[1]);
    ggml_tensor * x  = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne[0], 512);
    ggml_tensor * op = ggml_mul_mat(ctx, w, x);
    ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(buft, 0);
    w->buffer = buf;
    bool ok = buf && ggml_backend_dev_supports_op(dev, op);
    if (buf) ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return ok;
}

}  // namespace

bool pg_vision_load(const std::string & path, const pg_vision_params & params, pg_vision_model & m,
                    const pg_progress_fn & progress, pg_error & err) {
    pg_backend_init_once();
    pg_gguf_file f;
    if (!pg_gguf_open(path, f, err) || !pg_gguf_check_data_bounds(f, err)) return false;
    const gguf_context * g = f.ctx.get();

    int64_t arch = gguf_find_key(g, "general.architecture");
    if (arch < 0 || gguf_get_kv_type(g, arch) != GGUF_TYPE_STRING || strcmp(gguf_get_val_str(g, arch), "clip") != 0) {
        std::string a = arch >= 0 && gguf_get_kv_type(g, arch) == GGUF_TYPE_STRING ? gguf_get_val_str(g, arch) : "?";
        return err.set(PG_ERR_INVALID_FILE, path + ": architecture is '" + a + "', expected a PaliGemma vision (mmproj) file ('clip')" +
                                                (a == "gemma" || a == "gemma2" ? "; the text model and mmproj look swapped" : ""));
    }
    int64_t fam = gguf_find_key(g, "paligemma.family");
    if (fam < 0 || gguf_get_kv_type(g, fam) != GGUF_TYPE_STRING) {
        return err.set(PG_ERR_INVALID_FILE, path + ": no 'paligemma.family' key: a clip file, but not a PaliGemma mmproj from our converter");
    }
    pg_vision_hparams & hp = m.hp;
    hp.family = gguf_get_val_str(g, fam);
    if (!get_u32(g, "paligemma.image_size", hp.image_size, path, err) || !get_u32(g, "paligemma.patch_size", hp.patch_size, path, err) ||
        !get_u32(g, "paligemma.image_tokens", hp.image_tokens, path, err) ||
        !get_u32(g, "clip.vision.embedding_length", hp.hidden, path, err) ||
        !get_u32(g, "clip.vision.feed_forward_length", hp.ffn, path, err) || !get_u32(g, "clip.vision.block_count", hp.layers, path, err) ||
        !get_u32(g, "clip.vision.attention.head_count", hp.heads, path, err) ||
        !get_u32(g, "paligemma.text_embedding_length", hp.proj_dim, path, err) ||
        !get_u32(g, "paligemma.image_token_id", hp.image_token_id, path, err) ||
        !get_u32(g, "paligemma.text_vocab_size", hp.text_vocab_size, path, err)) {
        return false;
    }
    if (hp.patch_size == 0 || hp.image_size % hp.patch_size != 0 || (hp.image_size / hp.patch_size) * (hp.image_size / hp.patch_size) != hp.image_tokens) {
        return err.set(PG_ERR_INVALID_FILE, path + ": image size, patch size and image tokens do not agree");
    }
    if (hp.heads == 0 || hp.hidden % hp.heads != 0 || hp.layers == 0 || hp.layers > 1000) {
        return err.set(PG_ERR_INVALID_FILE, path + ": implausible vision hyperparameters");
    }
    int64_t eps_id = gguf_find_key(g, "clip.vision.attention.layer_norm_epsilon");
    if (eps_id >= 0 && gguf_get_kv_type(g, eps_id) == GGUF_TYPE_FLOAT32) hp.eps = gguf_get_val_f32(g, eps_id);
    get_f32_array3(g, "paligemma.image_mean", hp.mean);
    get_f32_array3(g, "paligemma.image_std", hp.std);
    for (float s : hp.std) {
        if (!(s > 0)) return err.set(PG_ERR_INVALID_FILE, path + ": image_std must be positive");
    }
    int64_t seg = gguf_find_key(g, "paligemma.has_seg_decoder");
    hp.has_seg_decoder = seg >= 0 && gguf_get_kv_type(g, seg) == GGUF_TYPE_BOOL && gguf_get_val_bool(g, seg);
    if (hp.has_seg_decoder) {
        if (!get_u32(g, "paligemma.seg.codebook_size", hp.seg_codebook, path, err) || !get_u32(g, "paligemma.seg.embedding_dim", hp.seg_dim, path, err)) return false;
    }

    // Backend: the chosen device, or the CPU.
    ggml_backend_dev_t dev = params.device ? params.device : ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return err.set(PG_ERR_BACKEND, "no CPU backend in this build");
    m.backend = ggml_backend_dev_init(dev, nullptr);
    if (!m.backend) return err.set(PG_ERR_BACKEND, std::string("cannot initialise ") + ggml_backend_dev_name(dev));
    m.is_cpu     = ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU;
    m.n_threads  = params.n_threads > 0 ? params.n_threads : 1;
    m.flash_attn = params.flash_attn;
    m.path       = path;
    if (m.is_cpu) ggml_backend_cpu_set_n_threads(m.backend, m.n_threads);

    // Tensors: matrix weights go to the CPU's repacking buffer type where it supports them (the
    // layout llama.cpp's own CPU path uses for fast matrix products), the rest to the default buffer.
    const int64_t n_tensors = gguf_get_n_tensors(g);
    const size_t  ctx_size  = ggml_tensor_overhead() * (size_t) (n_tensors + 1);
    m.ctx_w = ggml_init({ ctx_size, nullptr, true });
    m.ctx_r = ggml_init({ ctx_size, nullptr, true });
    if (!m.ctx_w || !m.ctx_r) return err.set(PG_ERR_OUT_OF_MEMORY, "cannot create weight contexts");
    // PALIGEMMA_VISION_REPACK=0 keeps every weight in the default buffer (for A/B measurements).
    const char * fa_env = getenv("PALIGEMMA_VISION_FA");  // 0/1: force fused attention off/on (A/B measurements)
    if (fa_env && (fa_env[0] == '0' || fa_env[0] == '1')) m.flash_attn = fa_env[0] == '1';
    const char *               no_repack = getenv("PALIGEMMA_VISION_REPACK");
    ggml_backend_buffer_type_t repack    = m.is_cpu && !(no_repack && strcmp(no_repack, "0") == 0) ? pg_cpu_repack_buft() : nullptr;
    for (int64_t i = 0; i < n_tensors; ++i) {
        const char * name = gguf_get_tensor_name(g, i);
        if (strlen(name) >= GGML_MAX_NAME) return err.set(PG_ERR_INVALID_FILE, path + ": tensor name too long");
        ggml_type type = gguf_get_tensor_type(g, i);
        bool      into_repack = repack && is_matrix_weight(name) && pg_repack_supports(dev, repack, type, gguf_get_tensor_ne(g, i));
        ggml_tensor * t = ggml_new_tensor(into_repack ? m.ctx_r : m.ctx_w, type, GGML_MAX_DIMS, gguf_get_tensor_ne(g, i));
        ggml_set_name(t, name);
    }

    const int C = hp.hidden, F = hp.ffn, P = hp.patch_size, N = hp.image_tokens, D = hp.proj_dim;
    if (!(m.patch_w = need(m, path, "v.patch_embd.weight", { P, P, 3, C }, true, err))) return false;
    if (m.patch_w->type != GGML_TYPE_F16 && m.patch_w->type != GGML_TYPE_F32) {
        return err.set(PG_ERR_INVALID_FILE, path + ": v.patch_embd.weight must be f16 or f32 for ggml's convolution");
    }
    if (!(m.patch_b = need(m, path, "v.patch_embd.bias", { C }, false, err)) ||
        !(m.pos = need(m, path, "v.position_embd.weight", { C, N }, false, err)) ||
        !(m.post_w = need(m, path, "v.post_ln.weight", { C }, false, err)) ||
        !(m.post_b = need(m, path, "v.post_ln.bias", { C }, false, err)) ||
        !(m.mm_w = need(m, path, "mm.0.weight", { C, D }, true, err)) || !(m.mm_b = need(m, path, "mm.0.bias", { D }, false, err))) {
        return false;
    }
    m.blocks.resize(hp.layers);
    for (int i = 0; i < hp.layers; ++i) {
        pg_vision_layer & L = m.blocks[i];
        std::string       b = "v.blk." + std::to_string(i) + ".";
        struct {
            ggml_tensor ** t;
            const char *   name;
            std::vector<int64_t> shape;
            bool           matrix;
        } want[] = {
            { &L.ln1_w, "ln1.weight", { C }, false },         { &L.ln1_b, "ln1.bias", { C }, false },
            { &L.ln2_w, "ln2.weight", { C }, false },         { &L.ln2_b, "ln2.bias", { C }, false },
            { &L.q_w, "attn_q.weight", { C, C }, true },      { &L.q_b, "attn_q.bias", { C }, false },
            { &L.k_w, "attn_k.weight", { C, C }, true },      { &L.k_b, "attn_k.bias", { C }, false },
            { &L.v_w, "attn_v.weight", { C, C }, true },      { &L.v_b, "attn_v.bias", { C }, false },
            { &L.o_w, "attn_out.weight", { C, C }, true },    { &L.o_b, "attn_out.bias", { C }, false },
            { &L.up_w, "ffn_up.weight", { C, F }, true },     { &L.up_b, "ffn_up.bias", { F }, false },
            { &L.down_w, "ffn_down.weight", { F, C }, true }, { &L.down_b, "ffn_down.bias", { C }, false },
        };
        for (auto & w : want) {
            if (!(*w.t = need(m, path, b + w.name, w.shape, w.matrix, err))) return false;
        }
    }

    m.buf_w = ggml_backend_alloc_ctx_tensors(m.ctx_w, m.backend);
    if (!m.buf_w) return err.set(PG_ERR_OUT_OF_MEMORY, path + ": cannot allocate memory for the vision weights");
    ggml_backend_buffer_set_usage(m.buf_w, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    if (ggml_get_first_tensor(m.ctx_r)) {
        m.buf_r = ggml_backend_alloc_ctx_tensors_from_buft(m.ctx_r, repack);
        if (!m.buf_r) return err.set(PG_ERR_OUT_OF_MEMORY, path + ": cannot allocate memory for the vision weights");
        ggml_backend_buffer_set_usage(m.buf_r, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    }

    FILE * fp = fopen(path.c_str(), "rb");
    if (!fp) return err.set(PG_ERR_FILE_NOT_FOUND, path + ": cannot open");
    std::unique_ptr<FILE, int (*)(FILE *)> guard(fp, fclose);
    std::vector<uint8_t> staging;
    const size_t         base  = gguf_get_data_offset(g);
    size_t               total = 0, done = 0;
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) total += gguf_get_tensor_size(g, i);
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        ggml_tensor * t = ggml_get_tensor(m.ctx_w, gguf_get_tensor_name(g, i));
        if (!t) t = ggml_get_tensor(m.ctx_r, gguf_get_tensor_name(g, i));
        const size_t  n    = ggml_nbytes(t);
        const bool    host = ggml_backend_buffer_is_host(t->buffer);
        if (pg_fseek64(fp, base + gguf_get_tensor_offset(g, i)) != 0) return err.set(PG_ERR_INVALID_FILE, path + ": seek failed");
        void * dst = t->data;
        if (!host) {
            staging.resize(n);
            dst = staging.data();
        }
        if (fread(dst, 1, n, fp) != n) return err.set(PG_ERR_INVALID_FILE, path + ": truncated tensor data");
        if (!host) ggml_backend_tensor_set(t, staging.data(), 0, n);
        done += n;
        if (progress && !progress(total ? (float) done / total : 1.0f)) return err.set(PG_ERR_ABORTED, "loading aborted");
    }
    m.graph_meta.resize(ggml_tensor_overhead() * 4096 + ggml_graph_overhead_custom(4096, false));
    m.galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(m.backend));
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
    const float t = z * 1.44269504f + 12582912.0f;  // adding 1.5 * 2^23 rounds to an integer
    const float n = t - 12582912.0f;
    const float r = (z - n * 0.693145752f) - n * 1.42860677e-6f;  // ln2 in two parts
    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    int32_t bits = (int32_t) n + 127;
    bits <<= 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// The MLP's bias + GELU (tanh approximation) in one pass over the activations, exactly:
// 0.5 v (1 + tanh(u)) == v / (1 + exp(-2u)), u = sqrt(2/pi) (v + 0.044715 v^3). ggml's own GELU
// reads an FP16 table on the CPU (inexact), and composing it from ggml ops costs eight passes.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("arch=haswell", "default")))  // AVX2 + FMA where the CPU has them
#endif
void gelu_tanh_bias_row(float * y, const float * x, const float * bias, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i] + bias[i];
        float       z = -1.5957691216057308f * (v + 0.044715f * v * v * v);  // -2u
        z = z < -80.0f ? -80.0f : (z > 80.0f ? 80.0f : z);
        y[i] = v / (1.0f + exp_clamped(z));
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

ggml_tensor * mlp_up_gelu(const pg_vision_model & m, ggml_context * ctx, ggml_tensor * up, ggml_tensor * bias) {
    if (m.is_cpu) return ggml_map_custom2(ctx, up, bias, gelu_tanh_bias_rows, GGML_N_TASKS_MAX, nullptr);
    // GPU backends run no custom ops; their GELU computes tanh exactly (only the CPU uses a table).
    return ggml_gelu(ctx, ggml_add(ctx, up, bias));
}

ggml_cgraph * build_graph(pg_vision_model & m, ggml_context * ctx, ggml_tensor ** inp_out) {
    const pg_vision_hparams & hp = m.hp;
    const int S = hp.image_size, P = hp.patch_size, C = hp.hidden, N = hp.image_tokens, H = hp.heads, HD = C / H;

    ggml_tensor * inp = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, S, S, 3);
    ggml_set_name(inp, "pixels");
    ggml_set_input(inp);
    *inp_out = inp;

    // Patch embedding: a P x P convolution with stride P, then one row per patch (row-major h, w).
    ggml_tensor * x = ggml_conv_2d(ctx, m.patch_w, inp, P, P, 0, 0, 1, 1);  // [S/P, S/P, C]
    x = ggml_reshape_2d(ctx, x, N, C);
    x = ggml_cont(ctx, ggml_transpose(ctx, x));  // [C, N]
    x = ggml_add(ctx, x, m.patch_b);
    x = ggml_add(ctx, x, m.pos);

    const float scale = 1.0f / sqrtf((float) HD);
    for (const pg_vision_layer & L : m.blocks) {
        ggml_tensor * cur = layer_norm(ctx, x, L.ln1_w, L.ln1_b, hp.eps);
        ggml_tensor * q   = ggml_add(ctx, ggml_mul_mat(ctx, L.q_w, cur), L.q_b);
        ggml_tensor * k   = ggml_add(ctx, ggml_mul_mat(ctx, L.k_w, cur), L.k_b);
        ggml_tensor * v   = ggml_add(ctx, ggml_mul_mat(ctx, L.v_w, cur), L.v_b);
        q = ggml_permute(ctx, ggml_reshape_3d(ctx, q, HD, H, N), 0, 2, 1, 3);  // [HD, N, H]
        k = ggml_permute(ctx, ggml_reshape_3d(ctx, k, HD, H, N), 0, 2, 1, 3);  // [HD, N, H]
        ggml_tensor * fused = nullptr;
        if (m.flash_attn) {
            // Fused attention: the N x N score matrix is never materialized (4096 x 4096 per head at
            // 896 px); K and V in f16 as ggml's kernels want them. A GPU backend without a kernel
            // for SigLIP's head size (72) gets the separate ops instead.
            ggml_tensor * vf = ggml_permute(ctx, ggml_reshape_3d(ctx, v, HD, H, N), 0, 2, 1, 3);
            fused = ggml_flash_attn_ext(ctx, q, ggml_cast(ctx, k, GGML_TYPE_F16), ggml_cast(ctx, vf, GGML_TYPE_F16), nullptr, scale, 0.0f, 0.0f);
            ggml_prec_set_acc(fused, GGML_PREC_F32);
            if (!m.is_cpu && !ggml_backend_supports_op(m.backend, fused)) fused = nullptr;
        }
        if (fused) {
            cur = ggml_reshape_2d(ctx, fused, C, N);  // [HD, H, N] -> [C, N]
        } else {
            v = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, v, HD, H, N), 1, 2, 0, 3));  // [N, HD, H]
            ggml_tensor * kq = ggml_mul_mat(ctx, k, q);                                         // [N_k, N_q, H]
            kq = ggml_soft_max_ext(ctx, kq, nullptr, scale, 0.0f);
            ggml_tensor * kqv = ggml_mul_mat(ctx, v, kq);                                       // [HD, N, H]
            kqv = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3));                           // [HD, H, N]
            cur = ggml_reshape_2d(ctx, kqv, C, N);
        }
        cur = ggml_add(ctx, ggml_mul_mat(ctx, L.o_w, cur), L.o_b);
        x   = ggml_add(ctx, x, cur);

        cur = layer_norm(ctx, x, L.ln2_w, L.ln2_b, hp.eps);
        cur = mlp_up_gelu(m, ctx, ggml_mul_mat(ctx, L.up_w, cur), L.up_b);
        cur = ggml_add(ctx, ggml_mul_mat(ctx, L.down_w, cur), L.down_b);
        x   = ggml_add(ctx, x, cur);
    }
    x = layer_norm(ctx, x, m.post_w, m.post_b, hp.eps);
    x = ggml_add(ctx, ggml_mul_mat(ctx, m.mm_w, x), m.mm_b);  // [D, N]
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

}  // namespace

bool pg_vision_encode(pg_vision_model & m, const float * pixels, std::vector<float> & out, const std::atomic<bool> * abort_flag,
                      pg_error & err) {
    ggml_init_params ip = { m.graph_meta.size(), m.graph_meta.data(), /*no_alloc =*/ true };
    ggml_context *   ctx = ggml_init(ip);
    if (!ctx) return err.set(PG_ERR_OUT_OF_MEMORY, "vision: cannot create a graph context");
    std::unique_ptr<ggml_context, void (*)(ggml_context *)> guard(ctx, ggml_free);
    ggml_tensor * inp = nullptr;
    ggml_cgraph * gf  = build_graph(m, ctx, &inp);
    if (!ggml_gallocr_alloc_graph((ggml_gallocr_t) m.galloc, gf)) return err.set(PG_ERR_OUT_OF_MEMORY, "vision: cannot allocate the compute buffer");
    const size_t S = (size_t) m.hp.image_size;
    ggml_backend_tensor_set(inp, pixels, 0, 3 * S * S * sizeof(float));

    abort_ctx ac = { abort_flag };
    if (m.is_cpu) ggml_backend_cpu_set_abort_callback(m.backend, abort_cb, &ac);
    enum ggml_status st = ggml_backend_graph_compute(m.backend, gf);
    if (m.is_cpu) ggml_backend_cpu_set_abort_callback(m.backend, nullptr, nullptr);
    if (abort_flag && abort_flag->load()) return err.set(PG_ERR_ABORTED, "image encoding aborted");
    if (st != GGML_STATUS_SUCCESS) return err.set(PG_ERR_BACKEND, std::string("vision: graph computation failed: ") + ggml_status_to_string(st));

    ggml_tensor * res = ggml_graph_node(gf, -1);
    out.resize((size_t) m.hp.image_tokens * m.hp.proj_dim);
    ggml_backend_tensor_get(res, out.data(), 0, out.size() * sizeof(float));
    return true;
}

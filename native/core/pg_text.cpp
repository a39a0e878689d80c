#include "pg_text.h"
#include "pg_backend.h"
#include "pg_gguf.h"
#include "pg_log.h"
#include "pg_text_matmul.h"
#include "pg_tune.h"

#include "ggml-impl.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_set>

namespace {

struct load_progress {
    const pg_progress_fn * fn;
};

bool on_load_progress(float p, void * data) {
    auto * lp = (load_progress *) data;
    return !lp->fn || !*lp->fn || (*lp->fn)(p);
}

bool on_abort(void * data) {
    const std::atomic<bool> * src = ((pg_text_model *) data)->abort_source.load(std::memory_order_relaxed);
    return src && src->load(std::memory_order_relaxed);
}

// An integer metadata value, or -1 when missing or not an integer.
int64_t get_int(const gguf_context * g, const std::string & key) {
    int64_t v = -1;
    return pg_gguf_get_int(g, key.c_str(), v) ? v : -1;
}

// Everything llama.cpp's loader would otherwise meet with an assertion (process abort) instead of an
// error: hyperparameters out of range, tensors of the wrong shape or type, empty dimensions,
// tokenizer arrays that do not match the vocabulary.
bool validate_text_file(const pg_gguf_file & f, const std::string & arch, pg_error & err) {
    const gguf_context * g    = f.ctx.get();
    const std::string &  path = f.path;
    auto                 bad  = [&](const std::string & what) { return err.set(PG_ERR_INVALID_FILE, path + ": " + what); };
    const int64_t        L    = get_int(g, arch + ".block_count");
    const int64_t        D    = get_int(g, arch + ".embedding_length");
    const int64_t        F    = get_int(g, arch + ".feed_forward_length");
    const int64_t        H    = get_int(g, arch + ".attention.head_count");
    const int64_t        KV   = get_int(g, arch + ".attention.head_count_kv") < 0 ? H : get_int(g, arch + ".attention.head_count_kv");
    int64_t              HD   = get_int(g, arch + ".attention.key_length");
    if (HD < 0 && H > 0) HD = D / H;
    const int64_t HDV = get_int(g, arch + ".attention.value_length") < 0 ? HD : get_int(g, arch + ".attention.value_length");
    if (L < 1 || L > 512) return bad(arch + ".block_count is missing or out of range (1..512)");
    if (D < 1 || D > 65536) return bad(arch + ".embedding_length is missing or out of range");
    if (F < 1 || F > (1 << 20)) return bad(arch + ".feed_forward_length is missing or out of range");
    if (H < 1 || H > 1024 || KV < 1 || KV > H || H % KV != 0) return bad("attention head counts are missing or inconsistent");
    if (HD < 1 || HD > 4096 || HDV != HD) return bad("attention head size is missing or out of range");
    const int64_t ctx_len = get_int(g, arch + ".context_length");
    if (ctx_len < 1 || ctx_len > (1 << 24)) return bad(arch + ".context_length is missing or out of range");
    if (arch == "gemma2") {
        const int64_t swa = get_int(g, "gemma2.attention.sliding_window");
        if (gguf_find_key(g, "gemma2.attention.sliding_window") >= 0 && (swa < 1 || swa > (1 << 24)))
            return bad("gemma2.attention.sliding_window is out of range");
    }
    int64_t eps = gguf_find_key(g, (arch + ".attention.layer_norm_rms_epsilon").c_str());
    if (eps < 0 || gguf_get_kv_type(g, eps) != GGUF_TYPE_FLOAT32 || !(gguf_get_val_f32(g, eps) > 0.0f && gguf_get_val_f32(g, eps) < 1.0f)) {
        return bad(arch + ".attention.layer_norm_rms_epsilon is missing or out of range");
    }

    int64_t toks = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (toks < 0 || gguf_get_kv_type(g, toks) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, toks) != GGUF_TYPE_STRING)
        return bad("no tokenizer.ggml.tokens");
    const int64_t V = (int64_t) gguf_get_arr_n(g, toks);
    if (V < 4 || V > (1 << 24)) return bad("tokenizer.ggml.tokens has an implausible size");
    {
        // llama.cpp maps token text to ids and asserts that no two tokens share a text.
        std::unordered_set<std::string_view> seen;
        seen.reserve((size_t) V);
        for (int64_t i = 0; i < V; ++i) {
            if (!seen.insert(std::string_view(gguf_get_arr_str(g, toks, (size_t) i))).second) {
                return bad("token " + std::to_string(i) + " repeats the text of another token");
            }
        }
    }
    for (const char * k : { "tokenizer.ggml.scores", "tokenizer.ggml.token_type" }) {
        int64_t id = gguf_find_key(g, k);
        if (id >= 0 && (gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || (int64_t) gguf_get_arr_n(g, id) != V))
            return bad(std::string(k) + " does not match the vocabulary");
    }
    int64_t tt = gguf_find_key(g, "tokenizer.ggml.token_type");
    if (tt >= 0) {
        if (gguf_get_arr_type(g, tt) != GGUF_TYPE_INT32) return bad("tokenizer.ggml.token_type must be int32");
        const int32_t * types = (const int32_t *) gguf_get_arr_data(g, tt);
        for (int64_t i = 0; i < V; ++i) {
            if (types[i] < 0 || types[i] > 6) return bad("tokenizer.ggml.token_type holds an unknown type");
        }
    }
    for (const char * k :
         { "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id" }) {
        if (gguf_find_key(g, k) >= 0 && (get_int(g, k) < 0 || get_int(g, k) >= V)) return bad(std::string(k) + " is out of range");
    }
    int64_t model = gguf_find_key(g, "tokenizer.ggml.model");
    if (model < 0 || gguf_get_kv_type(g, model) != GGUF_TYPE_STRING || strcmp(gguf_get_val_str(g, model), "llama") != 0) {
        return bad("tokenizer.ggml.model must be 'llama' (SentencePiece), as our converter writes");
    }

    struct want {
        std::string name;
        int64_t     ne0, ne1;
        bool        matrix;
    };
    std::vector<want> wants = { { "token_embd.weight", D, V, true }, { "output_norm.weight", D, 1, false } };
    for (int64_t i = 0; i < L; ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        wants.push_back({ b + "attn_norm.weight", D, 1, false });
        wants.push_back({ b + "attn_q.weight", D, H * HD, true });
        wants.push_back({ b + "attn_k.weight", D, KV * HD, true });
        wants.push_back({ b + "attn_v.weight", D, KV * HD, true });
        wants.push_back({ b + "attn_output.weight", H * HD, D, true });
        wants.push_back({ b + "ffn_norm.weight", D, 1, false });
        wants.push_back({ b + "ffn_gate.weight", D, F, true });
        wants.push_back({ b + "ffn_up.weight", D, F, true });
        wants.push_back({ b + "ffn_down.weight", F, D, true });
        if (arch == "gemma2") {
            wants.push_back({ b + "post_attention_norm.weight", D, 1, false });
            wants.push_back({ b + "post_ffw_norm.weight", D, 1, false });
        }
    }
    for (const want & w : wants) {
        int64_t id = gguf_find_tensor(g, w.name.c_str());
        if (id < 0) return bad("tensor '" + w.name + "' is missing");
        if (!pg_check_tensor(path, w.name.c_str(), gguf_get_tensor_type(g, id), gguf_get_tensor_ne(g, id), { w.ne0, w.ne1 },
                             w.matrix ? PG_TENSOR_MATRIX : PG_TENSOR_F32, err)) {
            return false;
        }
    }
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        const int64_t * ne = gguf_get_tensor_ne(g, i);
        for (int d = 0; d < GGML_MAX_DIMS; ++d) {
            if (ne[d] < 1) return bad(std::string("tensor '") + gguf_get_tensor_name(g, i) + "' has an empty dimension");
        }
    }
    return true;
}

// Opens and checks a text GGUF; `arch` receives its architecture.
bool open_text_file(const std::string & path, pg_gguf_file & f, std::string & arch, pg_error & err) {
    if (!pg_gguf_open(path, f, err) || !pg_gguf_check_data_bounds(f, err)) return false;
    arch = pg_gguf_get_string(f.ctx.get(), "general.architecture");
    if (arch != "gemma" && arch != "gemma2") {
        return err.set(PG_ERR_INVALID_FILE, path + ": architecture is '" + arch + "', expected a PaliGemma text model ('gemma' or 'gemma2')" +
                                                (arch == "clip" ? "; the text model and mmproj look swapped" : ""));
    }
    return true;
}

// llama.cpp's gemma2 asserts (aborting the process) when no layer uses a sliding window.
bool check_gemma2_window(const pg_gguf_file & f, pg_error & err) {
    const gguf_context * g   = f.ctx.get();
    const int64_t        pat = gguf_find_key(g, "gemma2.attention.sliding_window_pattern");
    bool                 any = true;
    if (pat >= 0 && gguf_get_kv_type(g, pat) == GGUF_TYPE_UINT32) any = gguf_get_val_u32(g, pat) != 1;
    if (pat >= 0 && gguf_get_kv_type(g, pat) == GGUF_TYPE_ARRAY) {
        any                = false;
        const gguf_type at = gguf_get_arr_type(g, pat);
        const size_t    n  = gguf_get_arr_n(g, pat);
        if (at == GGUF_TYPE_BOOL || at == GGUF_TYPE_INT8 || at == GGUF_TYPE_UINT8) {
            for (size_t i = 0; i < n; ++i) any |= ((const int8_t *) gguf_get_arr_data(g, pat))[i] != 0;
        } else if (at == GGUF_TYPE_UINT32 || at == GGUF_TYPE_INT32) {
            for (size_t i = 0; i < n; ++i) any |= ((const int32_t *) gguf_get_arr_data(g, pat))[i] != 0;
        } else {
            any = true;
        }
    }
    if (any) return true;
    return err.set(PG_ERR_INVALID_FILE, f.path +
                                            ": gemma2.attention.sliding_window_pattern leaves no sliding-window layer, "
                                            "which llama.cpp cannot run; reconvert with this version's converter");
}

// Where token_embd.weight's rows are in the file: the prefix is built from them directly.
bool locate_token_embd(const pg_gguf_file & f, pg_text_model & m, pg_error & err) {
    const gguf_context * g  = f.ctx.get();
    const int64_t        te = gguf_find_tensor(g, "token_embd.weight");
    m.tok_embd_type         = gguf_get_tensor_type(g, te);
    m.tok_embd_offset       = gguf_get_data_offset(g) + gguf_get_tensor_offset(g, te);
    m.tok_embd_row          = ggml_row_size(m.tok_embd_type, gguf_get_tensor_ne(g, te)[0]);
    if (!ggml_get_type_traits(m.tok_embd_type)->to_float && m.tok_embd_type != GGML_TYPE_F32) {
        return err.set(PG_ERR_INVALID_FILE, f.path + ": token_embd.weight has a type that cannot be dequantized");
    }
    return true;
}

// Our int8 products for the q8_0 (and, with AVX-512 VNNI, q4_0) matrices of the layers on the CPU:
// as asked, or by default (with VNNI) when they measure faster here than ggml's (its q4_0 repacked,
// as llama.cpp loads it) both over a prefix (64 rows through the up product) and for one token (the
// down product, whose rows are the longest).
bool choose_matmul(const pg_gguf_file & f, const std::string & arch, const pg_text_params & params, bool & ours, pg_error & err) {
    ours = false;
    if (params.matmul == PG_VISION_MATMUL_GGML) return true;
    if (!pg_matmul_check_forced(params.matmul, true, "textMatmul", err)) return false;
    // With a GPU, or no weights of ours, auto keeps ggml's and registers nothing (llama.cpp adds an
    // accelerator's backend to every later context, and one without async copies turns off its
    // multi-GPU pipelining).
    const gguf_context * g         = f.ctx.get();
    const int64_t        down      = gguf_find_tensor(g, "blk.0.ffn_down.weight");
    const ggml_type      type      = down < 0 ? GGML_TYPE_COUNT : gguf_get_tensor_type(g, down);
    const bool           auto_pick = params.matmul == PG_VISION_MATMUL_AUTO;
    if (auto_pick && (!params.devices.empty() || (type != GGML_TYPE_Q8_0 && type != GGML_TYPE_Q4_0))) return true;
    if (!pg_text_matmul_register()) return true;
    if (!auto_pick) return ours = true;
    ggml_backend_ptr cpu(ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr));
    if (!cpu) return true;
    pg_backend_set_threads(cpu.get(), params.n_threads);
    const int64_t   D = get_int(g, arch + ".embedding_length"), F = get_int(g, arch + ".feed_forward_length");
    const pg_q8_isa isa = pg_matmul_isa(params.matmul);
    // The plain AVX2 form only when asked for: as a CPU without VNNI (PALIGEMMA_CPU_VARIANT=haswell),
    // it won both races, but whole-token decoding ran at 0.66-0.86x ggml's (kernels --gemma: its
    // 16384 -> 2048 product for one row is slower), which one product's race does not show.
    if (isa == PG_Q8_AVX2) return true;
    // One row of the down product is a near tie with the weight in cache (q4_0: 386-423 against
    // 480 us, PALIGEMMA_LOG=info), where whole tokens, reading every weight from memory, decoded 1.02-1.38x ggml's
    // speed (six rounds): within 10% counts there.
    ours = pg_tune_int8_faster(cpu.get(), type, D, F, 64, params.n_threads, isa) &&
           pg_tune_int8_faster(cpu.get(), type, F, D, 1, params.n_threads, isa, 1.1);
    return true;
}

bool load_llama_model(const std::string & path, const pg_text_params & params, bool ours, pg_text_model & m, const pg_progress_fn & progress,
                      pg_error & err) {
    llama_model_params mp                = llama_model_default_params();
    mp.n_gpu_layers                      = params.n_gpu_layers;
    mp.load_mode                         = params.use_mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
    std::vector<ggml_backend_dev_t> devs = params.devices;
    if (!devs.empty()) {
        devs.push_back(nullptr);
        mp.devices = devs.data();
    }
    load_progress lp               = { &progress };
    mp.progress_callback           = on_load_progress;
    mp.progress_callback_user_data = &lp;
    std::optional<pg_text_matmul_scope> scope;
    if (ours) scope.emplace(pg_matmul_isa(params.matmul));
    pg_log_clear();
    const int64_t t0 = ggml_time_us();
    m.model.reset(llama_model_load_from_file(path.c_str(), mp));
    if (scope && scope->packed() > 0) m.matmul = pg_q8_isa_name(pg_matmul_isa(params.matmul));
    GGML_LOG_INFO("paligemma: text model loaded in %.0f ms, %d weights packed for our products\n", (ggml_time_us() - t0) / 1000.0,
                  scope ? scope->packed() : 0);
    scope.reset();
    if (!m.model) {
        std::string why = pg_log_last_errors();
        if (progress && why.find("cancelled") != std::string::npos) return err.set(PG_ERR_ABORTED, "loading aborted");
        return err.set(PG_ERR_INVALID_FILE, path + ": llama.cpp could not load the model" + (why.empty() ? "" : " (" + why + ")"));
    }
    m.path        = path;
    m.vocab       = llama_model_get_vocab(m.model.get());
    m.n_embd      = llama_model_n_embd(m.model.get());
    m.n_vocab     = llama_vocab_n_tokens(m.vocab);
    m.n_ctx_train = llama_model_n_ctx_train(m.model.get());
    if (m.tok_embd_row != ggml_row_size(m.tok_embd_type, m.n_embd)) {
        return err.set(PG_ERR_INVALID_FILE, path + ": token_embd.weight does not match the vocabulary");
    }
    return true;
}

// The context size: what the caller asked for, else image tokens + 512 rounded up to 256, within
// what the model was trained on.
bool choose_context_size(const pg_text_params & params, const pg_text_model & m, int & n_ctx, pg_error & err) {
    n_ctx = params.n_ctx > 0 ? params.n_ctx : (params.min_ctx + 512 + 255) / 256 * 256;
    if (params.n_ctx > 0 && m.n_ctx_train > 0 && n_ctx > m.n_ctx_train) {
        return err.set(PG_ERR_INVALID_ARGUMENT, "contextSize " + std::to_string(n_ctx) + " is larger than the " + std::to_string(m.n_ctx_train) +
                                                    " tokens this model supports");
    }
    if (m.n_ctx_train > 0 && n_ctx > m.n_ctx_train) n_ctx = m.n_ctx_train;
    if (n_ctx < params.min_ctx + 1) {
        return err.set(PG_ERR_INVALID_ARGUMENT,
                       "contextSize " + std::to_string(n_ctx) + " cannot hold the " + std::to_string(params.min_ctx) + " image tokens and a prompt");
    }
    return true;
}

bool create_context(const pg_text_params & params, pg_text_model & m, pg_error & err) {
    int n_ctx = 0;
    if (!choose_context_size(params, m, n_ctx, err)) return false;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx                = (uint32_t) n_ctx;
    // The prefix (image + prompt) is decoded non-causally in ONE micro-batch: llama.cpp aborts the
    // process if it does not fit, so the micro-batch spans the whole context.
    cp.n_batch   = (uint32_t) n_ctx;
    cp.n_ubatch  = (uint32_t) n_ctx;
    cp.n_seq_max = 1;
    // Only the last position's logits are ever read: a vocabulary-sized output row per batch position
    // (257216 x n_ubatch floats, 790 MB at 768) would be wasted memory.
    cp.n_outputs_max       = 1;
    cp.n_threads           = params.n_threads;
    cp.n_threads_batch     = params.n_threads;
    cp.flash_attn_type     = params.flash_attn;
    cp.type_k              = params.kv_type;
    cp.type_v              = params.kv_type;
    cp.no_perf             = true;
    cp.abort_callback      = on_abort;
    cp.abort_callback_data = &m;
    pg_log_clear();
    m.ctx.reset(llama_init_from_model(m.model.get(), cp));
    if (!m.ctx) {
        std::string why = pg_log_last_errors();
        return err.set(PG_ERR_BACKEND,
                       "llama.cpp could not create a context of " + std::to_string(n_ctx) + " tokens" + (why.empty() ? "" : " (" + why + ")"));
    }
    m.n_ctx = (int) llama_n_ctx(m.ctx.get());
    return true;
}

}  // namespace

bool pg_text_check_file(const std::string & path, pg_error & err) {
    pg_gguf_file f;
    std::string  arch;
    return open_text_file(path, f, arch, err) && validate_text_file(f, arch, err);
}

bool pg_text_load(const std::string & path, const pg_text_params & params, pg_text_model & m, const pg_progress_fn & progress, pg_error & err) {
    pg_backend_init_once();
    // Our own checks first: llama.cpp's loader would accept files we cannot use, and says less.
    pg_gguf_file f;
    if (!open_text_file(path, f, m.arch, err)) return false;
    if (m.arch == "gemma2" && !check_gemma2_window(f, err)) return false;
    bool ours = false;
    return validate_text_file(f, m.arch, err) && locate_token_embd(f, m, err) && choose_matmul(f, m.arch, params, ours, err) &&
           load_llama_model(path, params, ours, m, progress, err) && create_context(params, m, err);
}

bool pg_text_tokenize(const pg_text_model & m, const std::string & text, bool parse_special, std::vector<int32_t> & out, pg_error & err) {
    if (text.size() > (size_t) INT32_MAX / 2) return err.set(PG_ERR_INVALID_ARGUMENT, "text is too long");
    out.resize(text.size() + 4);
    int32_t n = llama_tokenize(m.vocab, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), false, parse_special);
    if (n < 0) {
        out.resize((size_t) -n);
        n = llama_tokenize(m.vocab, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), false, parse_special);
    }
    if (n < 0) return err.set(PG_ERR_INTERNAL, "tokenization failed");
    out.resize((size_t) n);
    return true;
}

std::string pg_text_piece(const pg_text_model & m, int32_t id) {
    char    buf[256];
    int32_t n = llama_token_to_piece(m.vocab, id, buf, sizeof(buf), 0, false);
    if (n >= 0) return std::string(buf, (size_t) n);
    std::string big((size_t) -n, '\0');
    n = llama_token_to_piece(m.vocab, id, big.data(), (int32_t) big.size(), 0, false);
    return n >= 0 ? big.substr(0, (size_t) n) : std::string();
}

bool pg_text_embed_rows(const pg_text_model & m, const int32_t * ids, size_t n, float * out, pg_error & err) {
    FILE * f = fopen(m.path.c_str(), "rb");
    if (!f) return err.set(PG_ERR_FILE_NOT_FOUND, m.path + ": cannot reopen");
    std::unique_ptr<FILE, int (*)(FILE *)> guard(f, fclose);
    std::vector<uint8_t>                   row(m.tok_embd_row);
    const auto *                           traits = ggml_get_type_traits(m.tok_embd_type);
    for (size_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= m.n_vocab) return err.set(PG_ERR_INVALID_ARGUMENT, "token id " + std::to_string(ids[i]) + " is out of range");
        if (pg_fseek64(f, m.tok_embd_offset + (uint64_t) ids[i] * m.tok_embd_row) != 0 || fread(row.data(), 1, row.size(), f) != row.size()) {
            return err.set(PG_ERR_INVALID_FILE, m.path + ": cannot read token embedding row");
        }
        float * dst = out + i * (size_t) m.n_embd;
        if (m.tok_embd_type == GGML_TYPE_F32)
            memcpy(dst, row.data(), row.size());
        else
            traits->to_float(row.data(), dst, m.n_embd);
    }
    return true;
}

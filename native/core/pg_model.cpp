#include "pg_model.h"
#include "pg_backend.h"
#include "pg_executor.h"
#include "pg_gguf.h"
#include "pg_image.h"
#include "pg_log.h"
#include "pg_mask.h"
#include "pg_system.h"
#include "pg_text.h"

#include <sys/stat.h>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>

struct pg_adapter {
    pg_adapter_info      info;
    llama_adapter_lora * text = nullptr;  // null when the adapter leaves the language model alone
    pg_vision_lora       vision;

    ~pg_adapter() {
        if (text) llama_adapter_lora_free(text);
    }
};

struct pg_model {
    pg_vision_model vision;
    pg_text_model   text;
    pg_model_info   info;
    pg_embed_cache  cache;
    pg_mask_decoder mask;  // filled on first use (segmentation)
    bool            mask_ready = false;
    // Last, so that adapters go before the model they belong to.
    std::map<int, std::unique_ptr<pg_adapter>> adapters;
    int                                        next_adapter_id = 1;
};

void pg_model_deleter::operator()(pg_model * m) const {
    delete m;
}

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

// Runs fn on the compute thread and returns its result.
template <typename F>
bool on_compute_thread(F && fn) {
    bool ok = false;
    pg_run_on_compute_thread([&] { ok = fn(); });
    return ok;
}

bool pick_device(const std::string & gpu, ggml_backend_dev_t & out, pg_error & err) {
    out = nullptr;
    // The CPU backend is always needed (the vision tower's helpers, the sampler, and the fallback).
    if (!ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)) return err.set(PG_ERR_BACKEND, pg_no_cpu_backend_message());
    if (gpu == "cpu") return true;
    const char * want = gpu == "cuda" ? "CUDA" : gpu == "metal" ? "MTL" : gpu == "vulkan" ? "Vulkan" : nullptr;
    if (gpu != "auto" && !want) return err.set(PG_ERR_INVALID_ARGUMENT, "gpu: unknown value '" + gpu + "' (auto, cpu, cuda, metal, vulkan)");
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev  = ggml_backend_dev_get(i);
        auto               type = ggml_backend_dev_type(dev);
        if (type != GGML_BACKEND_DEVICE_TYPE_GPU && type != GGML_BACKEND_DEVICE_TYPE_IGPU) continue;
        const char * reg = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
        if (!want || (reg && (strcmp(reg, want) == 0 || (gpu == "metal" && strcmp(reg, "Metal") == 0)))) {
            out = dev;
            return true;
        }
    }
    if (gpu == "auto") return true;
    const std::string flag = gpu == "cuda" ? "CUDA" : gpu == "metal" ? "METAL" : "VULKAN";
    return err.set(PG_ERR_BACKEND, "gpu: '" + gpu + "' was asked for, but this build of paligemma-node has no " + gpu +
                                       " device (build with `npm run build -- --CDGGML_" + flag + "=ON`, or use gpu: 'cpu')");
}

// The two files must come from one checkpoint.
bool check_pair(const pg_model_params & params, const pg_model & m, pg_error & err) {
    const pg_vision_hparams & hp   = m.vision.hp;
    const std::string         pair = params.model_path + " and " + params.mmproj_path + " do not belong together: ";
    if (hp.proj_dim != m.text.n_embd) {
        return err.set(PG_ERR_INVALID_FILE, pair + "the projector outputs " + std::to_string(hp.proj_dim) +
                                                " values per image token, the text model is " + std::to_string(m.text.n_embd) + " wide");
    }
    if (hp.text_vocab_size != m.text.n_vocab) {
        return err.set(PG_ERR_INVALID_FILE,
                       pair + "vocabulary sizes differ (" + std::to_string(hp.text_vocab_size) + " vs " + std::to_string(m.text.n_vocab) + ")");
    }
    const char * image_piece = hp.image_token_id < m.text.n_vocab ? llama_vocab_get_text(m.text.vocab, hp.image_token_id) : nullptr;
    if (!image_piece || strcmp(image_piece, "<image>") != 0) {
        return err.set(PG_ERR_INVALID_FILE, pair + "token " + std::to_string(hp.image_token_id) + " of the text model is not <image>");
    }
    if ((hp.family == "paligemma2") != (m.text.arch == "gemma2")) {
        return err.set(PG_ERR_INVALID_FILE, pair + "a " + hp.family + " vision file with a " + m.text.arch + " text model");
    }
    return true;
}

void fill_info(pg_model & m, const std::string & backend, int threads) {
    const pg_vision_hparams & hp = m.vision.hp;
    pg_model_info &           i  = m.info;
    i.family                     = hp.family;
    i.image_size                 = hp.image_size;
    i.patch_size                 = hp.patch_size;
    i.image_tokens               = hp.image_tokens;
    i.image_token_id             = hp.image_token_id;
    i.vision_width               = hp.hidden;
    i.vision_layers              = hp.layers;
    i.has_seg_decoder            = hp.has_seg_decoder;
    i.text_arch                  = m.text.arch;
    char desc[256];
    llama_model_desc(m.text.model.get(), desc, sizeof(desc));
    i.text_description     = desc;
    i.text_params          = llama_model_n_params(m.text.model.get());
    i.text_width           = m.text.n_embd;
    i.text_layers          = llama_model_n_layer(m.text.model.get());
    i.vocab_size           = m.text.n_vocab;
    i.context_size         = m.text.n_ctx;
    i.trained_context_size = m.text.n_ctx_train;
    i.backend              = backend;
    i.threads              = threads;
    i.vision_attention     = pg_vision_attention_name(m.vision.attention);
    i.vision_matmul = m.vision.int8_matmul ? pg_q8_isa_name(m.vision.q8_isa) : m.vision.f16_matmul ? pg_f16_isa_name(m.vision.f16_isa) : "ggml";
    i.text_matmul   = m.text.matmul;
    i.bos_id        = llama_vocab_bos(m.text.vocab);
    i.eos_id        = llama_vocab_eos(m.text.vocab);
}

bool load(const pg_model_params & params, const pg_progress_fn & progress, pg_model & m, pg_error & err) {
    pg_backend_init_once();
    if (!pg_forced_variant_problem().empty()) return err.set(PG_ERR_BACKEND, pg_forced_variant_problem());
    ggml_backend_dev_t dev = nullptr;
    if (!pick_device(params.gpu, dev, err)) return false;
    const int threads = params.threads > 0 ? params.threads : pg_physical_cores();

    // The vision file is small next to the text model: give it a tenth of the progress bar.
    pg_vision_params vp;
    vp.device    = dev;
    vp.n_threads = threads;
    vp.attention = params.vision_attention;
    if (vp.attention == PG_VISION_ATTENTION_AUTO && params.flash_attn == LLAMA_FLASH_ATTN_TYPE_DISABLED) vp.attention = PG_VISION_ATTENTION_SEPARATE;
    vp.repack                      = params.vision_repack;
    vp.matmul                      = params.vision_matmul;
    pg_progress_fn vision_progress = [&](float f) { return !progress || progress(0.1f * f); };
    if (!pg_vision_load(params.mmproj_path, vp, m.vision, vision_progress, err)) return false;

    pg_text_params tp;
    if (dev) {
        tp.devices.push_back(dev);
        tp.n_gpu_layers = params.gpu_layers < 0 ? 999 : params.gpu_layers;
    }
    tp.n_ctx                     = params.n_ctx;
    tp.n_threads                 = threads;
    tp.flash_attn                = params.flash_attn;
    tp.kv_type                   = params.kv_type;
    tp.matmul                    = params.text_matmul;
    tp.min_ctx                   = m.vision.hp.image_tokens;
    tp.use_mmap                  = params.mmap < 0 ? dev != nullptr : params.mmap != 0;
    pg_progress_fn text_progress = [&](float f) { return !progress || progress(0.1f + 0.9f * f); };
    if (!pg_text_load(params.model_path, tp, m.text, text_progress, err) || !check_pair(params, m, err)) return false;

    fill_info(m, dev ? ggml_backend_dev_name(dev) : "CPU", threads);
    m.cache = pg_embed_cache(params.image_cache_bytes);
    return true;
}

bool decode_pixels(const pg_image_input & in, pg_image_rgb & img, pg_error & err) {
    if (in.kind == PG_IMAGE_ENCODED) return pg_image_decode(in.data, in.size, in.label, img, err);
    if (in.kind == PG_IMAGE_PIXELS) return pg_image_from_pixels(in.data, in.size, in.width, in.height, in.channels, img, err);
    return err.set(PG_ERR_INVALID_ARGUMENT, "no image given (encoded bytes or raw pixels)");
}

bool preprocess(const pg_model & m, const pg_image_input & in, std::vector<float> & pixels, pg_error & err) {
    pg_image_rgb img;
    if (!decode_pixels(in, img, err)) return false;
    pg_image_preprocess(img, m.vision.hp.image_size, m.vision.hp.mean, m.vision.hp.std, pixels);
    return true;
}

// A caller's embedding must have this model's shape and finite values.
bool check_embedding(const pg_model & m, const pg_image_input & in, pg_error & err) {
    const int want_tokens = m.vision.hp.image_tokens, want_dim = m.text.n_embd;
    if (in.tokens != want_tokens || in.dim != want_dim || !in.embedding) {
        return err.set(PG_ERR_INVALID_ARGUMENT, "image embedding is " + std::to_string(in.tokens) + " x " + std::to_string(in.dim) +
                                                    ", this model needs " + std::to_string(want_tokens) + " x " + std::to_string(want_dim));
    }
    for (size_t i = 0; i < (size_t) in.tokens * in.dim; ++i) {
        if (!std::isfinite(in.embedding[i])) return err.set(PG_ERR_INVALID_ARGUMENT, "image embedding holds NaN or infinite values");
    }
    return true;
}

// The adapters of one call, resolved: llama.cpp's for the language model, ours for the tower, and
// what sets the tower's apart in the embedding cache.
struct adapter_set {
    std::vector<llama_adapter_lora *> text;
    std::vector<float>                text_scales;
    std::vector<pg_vision_lora_use>   vision;
    std::string                       cache_suffix;
};

bool resolve_adapters(const pg_model & m, const std::vector<pg_adapter_use> & uses, adapter_set & out, pg_error & err) {
    out = adapter_set();
    for (size_t i = 0; i < uses.size(); ++i) {
        const pg_adapter_use & u  = uses[i];
        auto                   it = m.adapters.find(u.id);
        if (it == m.adapters.end()) return err.set(PG_ERR_INVALID_ARGUMENT, "adapters[" + std::to_string(i) + "]: that adapter was disposed");
        if (!std::isfinite(u.scale)) return err.set(PG_ERR_INVALID_ARGUMENT, "adapters[" + std::to_string(i) + "].scale: expected a finite number");
        for (size_t j = 0; j < i; ++j) {
            if (uses[j].id == u.id)
                return err.set(PG_ERR_INVALID_ARGUMENT, "adapters[" + std::to_string(i) + "]: the same adapter twice in one call");
        }
        const pg_adapter & a = *it->second;
        if (a.text) {
            out.text.push_back(a.text);
            out.text_scales.push_back(u.scale);
        }
        if (a.info.has_vision && u.scale != 0.0f) {
            out.vision.push_back({ &a.vision, u.scale });
            char buf[64];
            snprintf(buf, sizeof buf, "|lora%d@%.9g", u.id, (double) u.scale);
            out.cache_suffix += buf;
        }
    }
    return true;
}

// Decoded, preprocessed and run through the tower, or taken from the cache. Compute thread only.
bool encode(pg_model & m, const pg_image_input & in, const adapter_set & adapters, const std::atomic<bool> * abort, const pg_phase_fn & on_phase,
            pg_encode_result & out, pg_error & err) {
    const std::string key = in.cache_key.empty() ? std::string() : in.cache_key + adapters.cache_suffix;
    if (!key.empty() && (out.embedding = m.cache.get(key))) {
        out.cached = true;
        return true;
    }
    if (on_phase) on_phase(PG_PHASE_ENCODE);
    auto               t0 = clock_type::now();
    std::vector<float> pixels;
    if (!preprocess(m, in, pixels, err)) return false;
    out.preprocess_ms = ms_since(t0);
    auto t1           = clock_type::now();
    auto e            = std::make_shared<pg_image_embedding>();
    if (!pg_vision_encode(m.vision, pixels.data(), adapters.vision, e->data, abort, err)) return false;
    out.encode_ms = ms_since(t1);
    e->tokens     = m.vision.hp.image_tokens;
    e->dim        = m.vision.hp.proj_dim;
    out.embedding = e;
    m.cache.put(key, out.embedding);
    return true;
}

// BOS + tokens of prompt + "\n", as PaliGemma's processor builds the text part of the prefix.
bool prefix_ids(const pg_model & m, const std::string & prompt, bool special, std::vector<int32_t> & out, pg_error & err) {
    std::vector<int32_t> ids;
    if (!pg_text_tokenize(m.text, prompt + "\n", special, ids, err)) return false;
    out.clear();
    out.push_back(llama_vocab_bos(m.text.vocab));
    out.insert(out.end(), ids.begin(), ids.end());
    return true;
}

bool generate(pg_model & m, const pg_generate_request & req, const pg_generate_callbacks & cb, const std::atomic<bool> * abort,
              pg_generate_result & out, pg_error & err) {
    out       = pg_generate_result();
    auto stop = [&](pg_phase phase) {
        out.reason     = PG_STOP_ABORT;
        out.aborted_in = phase;
        return true;
    };
    if (abort && abort->load()) return stop(PG_PHASE_ENCODE);
    adapter_set adapters;
    if (!resolve_adapters(m, req.adapters, adapters, err)) return false;
    // llama.cpp keeps the context's set until it changes (then its graph is rebuilt once).
    if (llama_set_adapters_lora(m.text.ctx.get(), adapters.text.data(), adapters.text.size(), adapters.text_scales.data()) != 0) {
        return err.set(PG_ERR_BACKEND, "cannot apply the adapters to the language model");
    }
    pg_generate_params gp;
    gp.decoding = req.decoding;
    gp.n_image  = m.vision.hp.image_tokens;
    pg_encode_result image;
    if (req.image.kind == PG_IMAGE_EMBEDDING) {
        if (!check_embedding(m, req.image, err)) return false;
        gp.image_embd = req.image.embedding;
    } else {
        if (!encode(m, req.image, adapters, abort, cb.on_phase, image, err)) {
            if (err.code != PG_ERR_ABORTED) return false;
            err = pg_error();
            return stop(PG_PHASE_ENCODE);
        }
        gp.image_embd = image.embedding->data.data();
    }
    if (!prefix_ids(m, req.prompt, req.special_tokens, gp.prefix_ids, err)) return false;
    if (!pg_generate(m.text, gp, cb, abort, out, err)) return false;
    out.preprocess_ms = image.preprocess_ms;
    out.encode_ms     = image.encode_ms;
    out.image_cached  = image.cached;
    if (!out.tokens.empty()) out.first_token_ms += image.preprocess_ms + image.encode_ms;
    return true;
}

}  // namespace

bool pg_model_load(const pg_model_params & params, const pg_progress_fn & progress, pg_model_ptr & out, pg_error & err) {
    pg_model_ptr m(new pg_model());
    if (!on_compute_thread([&] { return load(params, progress, *m, err); })) return false;
    out = std::move(m);
    return true;
}

const pg_model_info & pg_model_get_info(const pg_model & m) {
    return m.info;
}

bool pg_model_tokenize(const pg_model & m, const std::string & text, bool special, std::vector<int32_t> & out, pg_error & err) {
    return pg_text_tokenize(m.text, text, special, out, err);
}

bool pg_model_detokenize(const pg_model & m, const int32_t * ids, size_t n, std::string & out, pg_error & err) {
    out.clear();
    for (size_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= m.text.n_vocab)
            return err.set(PG_ERR_INVALID_ARGUMENT, "detokenize: token id " + std::to_string(ids[i]) + " is out of range");
        out += pg_text_piece(m.text, ids[i]);
    }
    return true;
}

bool pg_model_preprocess(const pg_model & m, const pg_image_input & image, std::vector<float> & pixels, pg_error & err) {
    if (image.kind == PG_IMAGE_EMBEDDING) return err.set(PG_ERR_INVALID_ARGUMENT, "preprocess: expected an image, not an embedding");
    return preprocess(m, image, pixels, err);
}

bool pg_model_encode(pg_model & m, const pg_image_input & image, const std::vector<pg_adapter_use> & adapter_uses, const std::atomic<bool> * abort,
                     pg_encode_result & out, pg_error & err) {
    out = pg_encode_result();
    if (image.kind == PG_IMAGE_EMBEDDING) {
        if (!check_embedding(m, image, err)) return false;
        auto e = std::make_shared<pg_image_embedding>();
        e->data.assign(image.embedding, image.embedding + (size_t) image.tokens * image.dim);
        e->tokens     = image.tokens;
        e->dim        = image.dim;
        out.embedding = e;
        return true;
    }
    return on_compute_thread([&] {
        if (abort && abort->load()) return err.set(PG_ERR_ABORTED, "image encoding aborted");
        adapter_set adapters;
        if (!resolve_adapters(m, adapter_uses, adapters, err)) return false;
        return encode(m, image, adapters, abort, nullptr, out, err);
    });
}

namespace {

// The language-model part, checked before llama.cpp sees it: llama.cpp's own loader refuses
// mismatches too, but does not look at values.
bool check_text_adapter(const pg_model & m, const std::string & path, pg_adapter_info & info, bool & has_tensors, pg_error & err) {
    pg_gguf_file f;
    if (!pg_gguf_open(path, f, err) || !pg_gguf_check_data_bounds(f, err)) return false;
    const gguf_context * g = f.ctx.get();
    if (pg_gguf_get_string(g, "general.type") != "adapter" || pg_gguf_get_string(g, "adapter.type") != "lora") {
        return err.set(
            PG_ERR_INVALID_FILE,
            path + ": not a LoRA adapter (general.type 'adapter', adapter.type 'lora'); convert a PEFT adapter with `paligemma convert-lora`");
    }
    const std::string arch = pg_gguf_get_string(g, "general.architecture");
    if (arch != m.text.arch)
        return err.set(PG_ERR_INVALID_ARGUMENT, path + ": an adapter for " + arch + ", but the model's language model is " + m.text.arch);
    const std::string family = pg_gguf_get_string(g, "paligemma.adapter.family");
    if (!family.empty() && family != m.info.family) {
        return err.set(PG_ERR_INVALID_ARGUMENT, path + ": an adapter for " + family + ", but the model is " + m.info.family);
    }
    int64_t width = 0;
    if (pg_gguf_get_int(g, "paligemma.adapter.text_embedding_length", width) && width != m.text.n_embd) {
        return err.set(PG_ERR_INVALID_ARGUMENT, path + ": an adapter for a language model of width " + std::to_string(width) +
                                                    ", but the model's is " + std::to_string(m.text.n_embd));
    }
    FILE * fp = fopen(path.c_str(), "rb");
    if (!fp) return err.set(PG_ERR_FILE_NOT_FOUND, path + ": cannot open");
    std::unique_ptr<FILE, int (*)(FILE *)> guard(fp, fclose);
    std::vector<float>                     data;
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        if (!pg_gguf_read_floats(f, fp, i, data, err)) return false;
    }
    has_tensors      = gguf_get_n_tensors(g) > 0;
    info.name        = pg_gguf_get_string(g, "general.name");
    info.base_name   = pg_gguf_get_string(g, "paligemma.adapter.base_name");
    info.family      = family;
    info.trained_on  = pg_gguf_get_string(g, "paligemma.adapter.trained_on");
    int64_t rank     = 0;
    info.rank        = pg_gguf_get_int(g, "paligemma.adapter.rank", rank) ? (int) rank : 0;
    const int64_t ka = gguf_find_key(g, "paligemma.adapter.alpha");
    info.alpha       = ka >= 0 && gguf_get_kv_type(g, ka) == GGUF_TYPE_FLOAT32 ? gguf_get_val_f32(g, ka) : 0.0f;
    const int64_t kr = gguf_find_key(g, "paligemma.adapter.rslora");
    info.rslora      = kr >= 0 && gguf_get_kv_type(g, kr) == GGUF_TYPE_BOOL && gguf_get_val_bool(g, kr);
    const int64_t kt = gguf_find_key(g, "paligemma.adapter.targets");
    if (kt >= 0 && gguf_get_kv_type(g, kt) == GGUF_TYPE_ARRAY && gguf_get_arr_type(g, kt) == GGUF_TYPE_STRING) {
        for (size_t j = 0; j < gguf_get_arr_n(g, kt); ++j) info.targets.push_back(gguf_get_arr_str(g, kt, j));
    }
    return true;
}

}  // namespace

bool pg_model_load_adapter(pg_model & m, const std::string & path, const std::string & vision_path, int & id, pg_adapter_info & info,
                           pg_error & err) {
    return on_compute_thread([&] {
        auto a              = std::make_unique<pg_adapter>();
        bool has_text       = false;
        a->info.path        = path;
        a->info.vision_path = vision_path;
        if (!check_text_adapter(m, path, a->info, has_text, err)) return false;
        if (has_text) {
            pg_log_clear();
            a->text = llama_adapter_lora_init(m.text.model.get(), path.c_str());
            if (!a->text) {
                const std::string why = pg_log_last_errors();
                return err.set(PG_ERR_INVALID_FILE, path + ": llama.cpp refused the adapter" + (why.empty() ? "" : " (" + why + ")"));
            }
            a->info.has_text = true;
            struct stat st {};
            if (stat(path.c_str(), &st) == 0) a->info.bytes += (uint64_t) st.st_size;
        }
        if (!vision_path.empty()) {
            if (!pg_vision_lora_load(m.vision, vision_path, a->vision, err)) return false;
            a->info.has_vision = true;
            a->info.bytes += a->vision.bytes;
        }
        if (!a->info.has_text && !a->info.has_vision) return err.set(PG_ERR_INVALID_FILE, path + ": the adapter changes nothing (no LoRA tensors)");
        id   = m.next_adapter_id++;
        info = a->info;
        m.adapters.emplace(id, std::move(a));
        return true;
    });
}

bool pg_model_free_adapter(pg_model & m, int id) {
    return on_compute_thread([&] {
        auto it = m.adapters.find(id);
        if (it == m.adapters.end()) return false;
        // llama.cpp's context must not keep a pointer to a freed adapter.
        if (it->second->text) llama_set_adapters_lora(m.text.ctx.get(), nullptr, 0, nullptr);
        m.adapters.erase(it);
        return true;
    });
}

bool pg_model_generate(pg_model & m, const pg_generate_request & req, const pg_generate_callbacks & cb, const std::atomic<bool> * abort,
                       pg_generate_result & out, pg_error & err) {
    return on_compute_thread([&] { return generate(m, req, cb, abort, out, err); });
}

bool pg_model_decode_mask(pg_model & m, const int32_t codes[16], std::vector<float> & out, pg_error & err) {
    return on_compute_thread([&] {
        if (!m.mask_ready) {
            if (!pg_mask_decoder_init(m.vision, m.mask, err)) return false;
            m.mask_ready = true;
        }
        return pg_mask_decode(m.mask, codes, out, err);
    });
}

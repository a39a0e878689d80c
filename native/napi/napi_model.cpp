// NativeModel, the N-API face of native/core/pg_model.h, and loadModel. Each method converts its
// arguments (strictly: see napi_options.h), runs one pg_model function in a worker and converts
// the result; the pipeline itself lives in the core. lib/model/ owns the public API.
#include "napi_abort_token.h"
#include "napi_addon_data.h"
#include "napi_exports.h"
#include "napi_options.h"
#include "napi_progress_worker.h"
#include "napi_worker.h"
#include "pg_model.h"

#include <cstring>
#include <memory>

namespace {

using model_ptr = std::shared_ptr<pg_model>;

// An image as JS handed it over, copied for the worker (the JS buffers may change or go away).
struct owned_image {
    pg_image_kind        kind = PG_IMAGE_NONE;
    std::vector<uint8_t> bytes;
    std::vector<float>   embedding;
    int                  width = 0, height = 0, channels = 0, tokens = 0, dim = 0;
    std::string          cache_key, label;

    pg_image_input view() const {
        pg_image_input in;
        in.kind      = kind;
        in.data      = bytes.data();
        in.size      = bytes.size();
        in.width     = width;
        in.height    = height;
        in.channels  = channels;
        in.embedding = embedding.empty() ? nullptr : embedding.data();
        in.tokens    = tokens;
        in.dim       = dim;
        in.cache_key = cache_key;
        in.label     = label;
        return in;
    }
};

// { bytes, cacheKey?, label? } | { pixels, width, height, channels, cacheKey?, label? } | { embedding, tokens, dim }
owned_image read_image(Napi::Env env, Napi::Value v, const char * what) {
    pg_js_options o(env, v, what);
    owned_image   img;
    if (o.has("embedding")) {
        img.kind      = PG_IMAGE_EMBEDDING;
        img.embedding = o.typed<float>("embedding", napi_float32_array, "a Float32Array");
        img.tokens    = (int) o.required_integer("tokens", 0, 1 << 24);
        img.dim       = (int) o.required_integer("dim", 0, 1 << 24);
    } else {
        const bool pixels = o.has("pixels");
        if (!pixels && !o.has("bytes"))
            throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, std::string(what) + ": expected bytes, pixels or embedding");
        img.kind  = pixels ? PG_IMAGE_PIXELS : PG_IMAGE_ENCODED;
        img.bytes = o.typed<uint8_t>(pixels ? "pixels" : "bytes", napi_uint8_array, "a Uint8Array");
        if (pixels) {
            img.width    = (int) o.required_integer("width", 1, 1 << 30);
            img.height   = (int) o.required_integer("height", 1, 1 << 30);
            img.channels = (int) o.required_integer("channels", 1, 4);
        }
        img.cache_key = o.str("cacheKey");
        img.label     = o.str("label");
    }
    o.finish();
    return img;
}

Napi::Float32Array to_f32(Napi::Env env, const float * v, size_t n) {
    Napi::Float32Array a = Napi::Float32Array::New(env, n);
    if (n) memcpy(a.Data(), v, n * sizeof(float));
    return a;
}

Napi::Int32Array to_i32(Napi::Env env, const std::vector<int32_t> & v) {
    Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
    if (!v.empty()) memcpy(a.Data(), v.data(), v.size() * sizeof(int32_t));
    return a;
}

// [{ id, scale }]: the adapters one call applies.
std::vector<pg_adapter_use> read_adapters(Napi::Env env, Napi::Value v, const char * what) {
    std::vector<pg_adapter_use> out;
    if (v.IsUndefined()) return out;
    if (!v.IsArray()) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, std::string(what) + ": expected an array");
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
        const std::string name = std::string(what) + "[" + std::to_string(i) + "]";
        pg_js_options     o(env, a.Get(i), name.c_str());
        pg_adapter_use    u;
        u.id    = (int) o.required_integer("id", 1, INT32_MAX);
        u.scale = (float) o.num("scale", 1.0);
        o.finish();
        out.push_back(u);
    }
    return out;
}

Napi::Function optional_function(const Napi::CallbackInfo & info, size_t i) {
    return info.Length() > i && info[i].IsFunction() ? info[i].As<Napi::Function>() : Napi::Function();
}

Napi::Value arg(const Napi::CallbackInfo & info, size_t i) {
    return info.Length() > i ? info[i] : info.Env().Undefined();
}

// ---- NativeModel ----

class NativeModel : public Napi::ObjectWrap<NativeModel> {
  public:
    static Napi::Function Define(Napi::Env env);
    explicit NativeModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeModel>(info) {}
    model_ptr model;

  private:
    model_ptr Get(Napi::Env env) {
        if (!model) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "model is disposed");
        return model;
    }
    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Tokenize(const Napi::CallbackInfo & info);
    Napi::Value Detokenize(const Napi::CallbackInfo & info);
    Napi::Value Preprocess(const Napi::CallbackInfo & info);
    Napi::Value EncodeImage(const Napi::CallbackInfo & info);
    Napi::Value Generate(const Napi::CallbackInfo & info);
    Napi::Value DecodeMask(const Napi::CallbackInfo & info);
    Napi::Value LoadAdapter(const Napi::CallbackInfo & info);
    Napi::Value FreeAdapter(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);
};

class LoadWorker : public PgProgressWorker<float> {
  public:
    LoadWorker(Napi::Env env, pg_model_params params, pg_flag_ptr abort, Napi::Function on_progress)
        : PgProgressWorker<float>(env, "paligemma:load", on_progress), params_(std::move(params)), abort_(std::move(abort)) {}

  protected:
    bool Run(const Progress & progress) override {
        if (abort_->raised()) return err_.set(PG_ERR_ABORTED, "loading aborted");
        float          last_sent = -1.0f;
        pg_progress_fn fn        = [&](float f) {
            if (f - last_sent >= 0.01f || f >= 1.0f) {
                last_sent = f;
                progress.Send(&f, 1);
            }
            return !abort_->raised();
        };
        pg_model_ptr m;
        if (!pg_model_load(params_, fn, m, err_)) {
            if (abort_->raised()) err_ = pg_error(), err_.set(PG_ERR_ABORTED, "loading aborted");
            return false;
        }
        model_ = model_ptr(std::move(m));
        return true;
    }
    std::vector<napi_value> EventArgs(Napi::Env env, const float & f) override { return { Napi::Number::New(env, f) }; }
    Napi::Value             Result(Napi::Env env) override {
        napi_value obj;
        // Raw call: in an environment that is shutting down, constructing fails; report, don't crash.
        if (napi_new_instance(env, pg_addon(env)->model_ctor.Value(), 0, nullptr, &obj) != napi_ok) {
                        throw pg_make_error(env, PG_ERR_INTERNAL, "cannot create the model object");
        }
        NativeModel::Unwrap(Napi::Object(env, obj))->model = std::move(model_);
        return Napi::Object(env, obj);
    }
    void OnJsGone() override { abort_->raise(); }

  private:
    pg_model_params params_;
    pg_flag_ptr     abort_;
    model_ptr       model_;
};

// loadModel(options: NativeLoadOptions, token, onProgress)
Napi::Value Load(const Napi::CallbackInfo & info) {
    Napi::Env       env = info.Env();
    pg_js_options   o(env, arg(info, 0), "loadModel options");
    pg_model_params p;
    p.model_path  = o.str("model");
    p.mmproj_path = o.str("mmproj");
    p.gpu         = o.str("gpu", "auto");
    p.gpu_layers  = (int) o.integer("gpuLayers", -1, 0, 100000);
    p.threads     = (int) o.integer("threads", 0, 1, 1024);
    p.n_ctx       = (int) o.integer("contextSize", 0, 16, 1 << 20);
    const int fa  = o.choice("flashAttention", { "auto", "on", "off" }, 0);
    p.flash_attn  = fa == 1 ? LLAMA_FLASH_ATTN_TYPE_ENABLED : fa == 2 ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_AUTO;
    p.kv_type     = o.choice("kvCacheType", { "f16", "f32" }, 0) == 1 ? GGML_TYPE_F32 : GGML_TYPE_F16;
    p.mmap        = o.has("mmap") ? (o.boolean("mmap", false) ? 1 : 0) : -1;
    p.vision_attention =
        (pg_vision_attention) o.choice("visionAttention", { "auto", "fused", "separate", "tiled", "tiled-avx2", "int16-avx2", "int16" }, 0);
    p.vision_matmul     = (pg_vision_matmul) o.choice("visionMatmul", { "auto", "ggml", "int8", "int8-avxvnni", "int8-avx2", "int16-avx2" }, 0);
    p.text_matmul       = (pg_vision_matmul) o.choice("textMatmul", { "auto", "ggml", "int8", "int8-avxvnni", "int8-avx2", "int16-avx2" }, 0);
    p.image_cache_bytes = (size_t) o.integer("imageCacheBytes", (int64_t) p.image_cache_bytes, 0, (int64_t) 1 << 50);
    o.finish();
    if (p.model_path.empty() || p.mmproj_path.empty())
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "loadModel options: model and mmproj are required");
    return (new LoadWorker(env, std::move(p), pg_abort_flag(arg(info, 1)), optional_function(info, 2)))->Start();
}

Napi::Value NativeModel::Info(const Napi::CallbackInfo & info) {
    Napi::Env             env = info.Env();
    const pg_model_info & i   = pg_model_get_info(*Get(env));
    Napi::Object          o   = Napi::Object::New(env);
    o.Set("family", i.family);
    o.Set("imageSize", i.image_size);
    o.Set("patchSize", i.patch_size);
    o.Set("imageTokens", i.image_tokens);
    o.Set("imageTokenId", i.image_token_id);
    o.Set("visionWidth", i.vision_width);
    o.Set("visionLayers", i.vision_layers);
    o.Set("textArchitecture", i.text_arch);
    o.Set("textDescription", i.text_description);
    o.Set("textParams", Napi::Number::New(env, (double) i.text_params));
    o.Set("textWidth", i.text_width);
    o.Set("textLayers", i.text_layers);
    o.Set("vocabSize", i.vocab_size);
    o.Set("contextSize", i.context_size);
    o.Set("trainedContextSize", i.trained_context_size);
    o.Set("backend", i.backend);
    o.Set("threads", i.threads);
    o.Set("visionAttention", i.vision_attention);
    o.Set("visionMatmul", i.vision_matmul);
    o.Set("textMatmul", i.text_matmul);
    o.Set("hasSegDecoder", i.has_seg_decoder);
    o.Set("bosId", i.bos_id);
    o.Set("eosId", i.eos_id);
    return o;
}

class TokenizeWorker : public PgPromiseWorker {
  public:
    TokenizeWorker(Napi::Env env, model_ptr m, std::string text, bool special)
        : PgPromiseWorker(env, "paligemma:tokenize"), m_(std::move(m)), text_(std::move(text)), special_(special) {}

  protected:
    bool        Run() override { return pg_model_tokenize(*m_, text_, special_, ids_, err_); }
    Napi::Value Result(Napi::Env env) override { return to_i32(env, ids_); }

  private:
    model_ptr            m_;
    std::string          text_;
    bool                 special_;
    std::vector<int32_t> ids_;
};

// tokenize(text, special)
Napi::Value NativeModel::Tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!arg(info, 0).IsString() || !arg(info, 1).IsBoolean())
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "tokenize(text: string, special: boolean)");
    return (new TokenizeWorker(env, Get(env), info[0].As<Napi::String>(), info[1].As<Napi::Boolean>()))->Start();
}

class DetokenizeWorker : public PgPromiseWorker {
  public:
    DetokenizeWorker(Napi::Env env, model_ptr m, std::vector<int32_t> ids)
        : PgPromiseWorker(env, "paligemma:detokenize"), m_(std::move(m)), ids_(std::move(ids)) {}

  protected:
    bool        Run() override { return pg_model_detokenize(*m_, ids_.data(), ids_.size(), text_, err_); }
    Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, text_); }

  private:
    model_ptr            m_;
    std::vector<int32_t> ids_;
    std::string          text_;
};

bool is_i32_array(Napi::Value v) {
    return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array;
}

// detokenize(ids: Int32Array)
Napi::Value NativeModel::Detokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!is_i32_array(arg(info, 0))) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "detokenize(ids: Int32Array)");
    Napi::Int32Array a = info[0].As<Napi::Int32Array>();
    return (new DetokenizeWorker(env, Get(env), std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength())))->Start();
}

class PreprocessWorker : public PgPromiseWorker {
  public:
    PreprocessWorker(Napi::Env env, model_ptr m, owned_image in)
        : PgPromiseWorker(env, "paligemma:preprocess"), m_(std::move(m)), in_(std::move(in)) {}

  protected:
    bool        Run() override { return pg_model_preprocess(*m_, in_.view(), pixels_, err_); }
    Napi::Value Result(Napi::Env env) override { return to_f32(env, pixels_.data(), pixels_.size()); }

  private:
    model_ptr          m_;
    owned_image        in_;
    std::vector<float> pixels_;
};

// preprocess(image: NativeImage)
Napi::Value NativeModel::Preprocess(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    return (new PreprocessWorker(env, Get(env), read_image(env, arg(info, 0), "preprocess image")))->Start();
}

class EncodeWorker : public PgPromiseWorker {
  public:
    EncodeWorker(Napi::Env env, model_ptr m, owned_image in, std::vector<pg_adapter_use> adapters, pg_flag_ptr abort)
        : PgPromiseWorker(env, "paligemma:encodeImage"),
          m_(std::move(m)),
          in_(std::move(in)),
          adapters_(std::move(adapters)),
          abort_(std::move(abort)) {}

  protected:
    bool        Run() override { return pg_model_encode(*m_, in_.view(), adapters_, &abort_->flag, res_, err_); }
    Napi::Value Result(Napi::Env env) override {
        const pg_image_embedding & e = *res_.embedding;
        Napi::Object               o = Napi::Object::New(env);
        o.Set("data", to_f32(env, e.data.data(), e.data.size()));
        o.Set("tokens", e.tokens);
        o.Set("dim", e.dim);
        o.Set("preprocessMs", res_.preprocess_ms);
        o.Set("encodeMs", res_.encode_ms);
        o.Set("cached", res_.cached);
        return o;
    }

  private:
    model_ptr                   m_;
    owned_image                 in_;
    std::vector<pg_adapter_use> adapters_;
    pg_flag_ptr                 abort_;
    pg_encode_result            res_;
};

// encodeImage(image: NativeImage, token, adapters?: NativeAdapterUse[])
Napi::Value NativeModel::EncodeImage(const Napi::CallbackInfo & info) {
    Napi::Env   env   = info.Env();
    owned_image image = read_image(env, arg(info, 0), "encodeImage image");
    auto        uses  = read_adapters(env, arg(info, 2), "encodeImage adapters");
    return (new EncodeWorker(env, Get(env), std::move(image), std::move(uses), pg_abort_flag(arg(info, 1))))->Start();
}

// A token (id >= 0), the held-back end of the text (id -1), or a phase starting (id -2, its name in piece).
struct token_event {
    int32_t     id;
    std::string piece;
    std::string text;
};

class GenerateWorker : public PgProgressWorker<token_event> {
  public:
    GenerateWorker(Napi::Env env, model_ptr m, owned_image image, pg_generate_request req, pg_flag_ptr abort, Napi::Function on_event)
        : PgProgressWorker<token_event>(env, "paligemma:generate", on_event),
          m_(std::move(m)),
          image_(std::move(image)),
          req_(std::move(req)),
          abort_(std::move(abort)),
          has_listener_(!on_event.IsEmpty()) {}

  protected:
    bool Run(const Progress & progress) override {
        req_.image = image_.view();
        pg_generate_callbacks cb;
        // Without a JS listener, no per-token hop to the JS thread at all.
        if (has_listener_) {
            cb.on_token = [&](int32_t id, const std::string & piece, const std::string & text) {
                token_event e{ id, piece, text };
                progress.Send(&e, 1);
            };
            cb.on_phase = [&](pg_phase phase) {
                token_event e{ -2, PG_PHASE_NAMES[phase], std::string() };
                progress.Send(&e, 1);
            };
        }
        const bool ok     = pg_model_generate(*m_, req_, cb, &abort_->flag, res_, err_);
        abort_latency_ms_ = res_.reason == PG_STOP_ABORT ? abort_->ms_since_raised() : 0.0;
        return ok;
    }

    void OnJsGone() override { abort_->raise(); }

    std::vector<napi_value> EventArgs(Napi::Env env, const token_event & e) override {
        return { Napi::Number::New(env, e.id), Napi::String::New(env, e.piece), Napi::String::New(env, e.text) };
    }

    Napi::Value Result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("text", Napi::String::New(env, res_.text));
        o.Set("tokens", to_i32(env, res_.tokens));
        o.Set("stopReason", PG_STOP_REASON_NAMES[res_.reason]);
        if (req_.decoding.want_logits) o.Set("logits", to_f32(env, res_.logits.data(), res_.logits.size()));
        Napi::Object t = Napi::Object::New(env);
        t.Set("preprocessMs", res_.preprocess_ms);
        t.Set("encodeMs", res_.encode_ms);
        t.Set("imageCached", res_.image_cached);
        t.Set("prefillMs", res_.prefill_ms);
        t.Set("decodeMs", res_.decode_ms);
        t.Set("firstTokenMs", res_.first_token_ms);
        t.Set("promptTokens", res_.prompt_tokens);
        t.Set("generatedTokens", (double) res_.tokens.size());
        o.Set("timings", t);
        if (res_.reason == PG_STOP_ABORT) {
            Napi::Object a = Napi::Object::New(env);
            a.Set("phase", PG_PHASE_NAMES[res_.aborted_in]);
            a.Set("latencyMs", abort_latency_ms_);
            o.Set("abort", a);
        }
        return o;
    }

  private:
    model_ptr           m_;
    owned_image         image_;
    pg_generate_request req_;
    pg_flag_ptr         abort_;
    pg_generate_result  res_;
    double              abort_latency_ms_ = 0;
    bool                has_listener_;
};

// generate(options: NativeGenerateOptions, token, onEvent)
Napi::Value NativeModel::Generate(const Napi::CallbackInfo & info) {
    Napi::Env           env = info.Env();
    pg_js_options       o(env, arg(info, 0), "generate options");
    pg_generate_request req;
    pg_decoding &       d     = req.decoding;
    owned_image         image = read_image(env, o.raw("image"), "generate options.image");
    req.prompt                = o.str("prompt");
    req.special_tokens        = o.boolean("specialTokens", false);
    d.max_tokens              = (int) o.integer("maxTokens", 32, 0, 1 << 20);
    d.want_logits             = o.boolean("logits", false);
    d.sampling.temperature    = (float) o.num("temperature", 0);
    d.sampling.top_k          = (int) o.integer("topK", 0, 0, 1 << 20);
    d.sampling.top_p          = (float) o.num("topP", 1);
    d.sampling.min_p          = (float) o.num("minP", 0);
    d.sampling.seed           = (uint32_t) o.integer("seed", 0xFFFFFFFF, 0, 0xFFFFFFFF);
    d.sampling.repeat_penalty = (float) o.num("repeatPenalty", 1);
    d.sampling.grammar        = o.str("grammar");
    d.stop                    = o.strings("stop");
    d.forced                  = o.typed<int32_t>("forceTokens", napi_int32_array, "an Int32Array");
    req.adapters              = read_adapters(env, o.raw("adapters"), "generate options.adapters");
    o.finish();
    return (new GenerateWorker(env, Get(env), std::move(image), std::move(req), pg_abort_flag(arg(info, 1)), optional_function(info, 2)))->Start();
}

class DecodeMaskWorker : public PgPromiseWorker {
  public:
    DecodeMaskWorker(Napi::Env env, model_ptr m, std::vector<int32_t> codes)
        : PgPromiseWorker(env, "paligemma:decodeMask"), m_(std::move(m)), codes_(std::move(codes)) {}

  protected:
    bool        Run() override { return pg_model_decode_mask(*m_, codes_.data(), out_, err_); }
    Napi::Value Result(Napi::Env env) override { return to_f32(env, out_.data(), out_.size()); }

  private:
    model_ptr            m_;
    std::vector<int32_t> codes_;
    std::vector<float>   out_;
};

// decodeMask(codes: Int32Array of 16)
Napi::Value NativeModel::DecodeMask(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!is_i32_array(arg(info, 0)) || info[0].As<Napi::TypedArray>().ElementLength() != 16) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "decodeMask(codes: Int32Array of 16)");
    }
    Napi::Int32Array a = info[0].As<Napi::Int32Array>();
    return (new DecodeMaskWorker(env, Get(env), std::vector<int32_t>(a.Data(), a.Data() + 16)))->Start();
}

class LoadAdapterWorker : public PgPromiseWorker {
  public:
    LoadAdapterWorker(Napi::Env env, model_ptr m, std::string path, std::string vision_path)
        : PgPromiseWorker(env, "paligemma:loadAdapter"), m_(std::move(m)), path_(std::move(path)), vision_path_(std::move(vision_path)) {}

  protected:
    bool        Run() override { return pg_model_load_adapter(*m_, path_, vision_path_, id_, info_, err_); }
    Napi::Value Result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", id_);
        o.Set("path", info_.path);
        o.Set("visionPath", info_.vision_path);
        o.Set("name", info_.name);
        o.Set("baseName", info_.base_name);
        o.Set("family", info_.family);
        o.Set("trainedOn", info_.trained_on);
        o.Set("rank", info_.rank);
        o.Set("alpha", info_.alpha);
        o.Set("rslora", info_.rslora);
        Napi::Array t = Napi::Array::New(env, info_.targets.size());
        for (size_t i = 0; i < info_.targets.size(); ++i) t.Set((uint32_t) i, info_.targets[i]);
        o.Set("targets", t);
        o.Set("bytes", (double) info_.bytes);
        o.Set("hasText", info_.has_text);
        o.Set("hasVision", info_.has_vision);
        return o;
    }

  private:
    model_ptr       m_;
    std::string     path_, vision_path_;
    int             id_ = 0;
    pg_adapter_info info_;
};

// loadAdapter(path: string, visionPath: string)
Napi::Value NativeModel::LoadAdapter(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!arg(info, 0).IsString() || !arg(info, 1).IsString())
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "loadAdapter(path, visionPath): expected two strings");
    return (new LoadAdapterWorker(env, Get(env), info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value()))->Start();
}

class FreeAdapterWorker : public PgPromiseWorker {
  public:
    FreeAdapterWorker(Napi::Env env, model_ptr m, int id) : PgPromiseWorker(env, "paligemma:freeAdapter"), m_(std::move(m)), id_(id) {}

  protected:
    bool Run() override {
        return pg_model_free_adapter(*m_, id_) || err_.set(PG_ERR_INVALID_ARGUMENT, "freeAdapter: no adapter " + std::to_string(id_));
    }
    Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

  private:
    model_ptr m_;
    int       id_;
};

// freeAdapter(id: number)
Napi::Value NativeModel::FreeAdapter(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!arg(info, 0).IsNumber()) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "freeAdapter(id): expected a number");
    return (new FreeAdapterWorker(env, Get(env), info[0].As<Napi::Number>().Int32Value()))->Start();
}

// Drops the model off the JS thread: freeing a large model takes time. lib/ calls this after its
// queue has drained, so nothing else holds the model and it is freed here.
class DisposeWorker : public PgPromiseWorker {
  public:
    DisposeWorker(Napi::Env env, model_ptr m) : PgPromiseWorker(env, "paligemma:dispose"), m_(std::move(m)) {}

  protected:
    bool Run() override {
        m_.reset();
        return true;
    }
    Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

  private:
    model_ptr m_;
};

Napi::Value NativeModel::Dispose(const Napi::CallbackInfo & info) {
    return (new DisposeWorker(info.Env(), std::move(model)))->Start();
}

Napi::Function NativeModel::Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {
                           InstanceMethod("info", &NativeModel::Info),
                           InstanceMethod("tokenize", &NativeModel::Tokenize),
                           InstanceMethod("detokenize", &NativeModel::Detokenize),
                           InstanceMethod("preprocess", &NativeModel::Preprocess),
                           InstanceMethod("encodeImage", &NativeModel::EncodeImage),
                           InstanceMethod("generate", &NativeModel::Generate),
                           InstanceMethod("decodeMask", &NativeModel::DecodeMask),
                           InstanceMethod("loadAdapter", &NativeModel::LoadAdapter),
                           InstanceMethod("freeAdapter", &NativeModel::FreeAdapter),
                           InstanceMethod("dispose", &NativeModel::Dispose),
                       });
}

}  // namespace

void pg_register_model(Napi::Env env, Napi::Object exports) {
    Napi::Function  model = NativeModel::Define(env);
    Napi::Function  token = AbortToken::Define(env);
    pg_addon_data * data  = pg_addon(env);
    data->model_ctor      = Napi::Persistent(model);
    data->token_ctor      = Napi::Persistent(token);
    exports.Set("NativeModel", model);
    exports.Set("AbortToken", token);
    exports.Set("loadModel", Napi::Function::New(env, Load, "loadModel"));
}

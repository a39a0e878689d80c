// NativeModel (a loaded PaliGemma) and AbortToken, the N-API face of native/core/pg_model.h.
// Every method that touches the model runs in a worker and holds the model's mutex; the JS side
// (lib/model.ts) validates arguments, queues calls and owns the public API.
#include "napi_exports.h"
#include "napi_progress_worker.h"
#include "napi_worker.h"
#include "pg_executor.h"
#include "pg_image.h"
#include "pg_model.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>

namespace {

using model_ptr = std::shared_ptr<pg_model>;
using flag_ptr  = std::shared_ptr<std::atomic<bool>>;

struct AddonData {
    Napi::FunctionReference model_ctor;
    Napi::FunctionReference token_ctor;
    // Every abort flag handed to a worker: set when this environment shuts down (worker thread exit),
    // so native work stops instead of running on for nobody.
    std::mutex                                   flags_mu;
    std::vector<std::weak_ptr<std::atomic<bool>>> flags;

    flag_ptr track(flag_ptr f) {
        std::lock_guard<std::mutex> lock(flags_mu);
        flags.erase(std::remove_if(flags.begin(), flags.end(), [](const std::weak_ptr<std::atomic<bool>> & w) { return w.expired(); }), flags.end());
        flags.push_back(f);
        return f;
    }
    void abort_all() {
        std::lock_guard<std::mutex> lock(flags_mu);
        for (auto & w : flags) {
            if (auto f = w.lock()) f->store(true);
        }
    }
};

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// ---- AbortToken ----

class AbortToken : public Napi::ObjectWrap<AbortToken> {
  public:
    static Napi::Function Define(Napi::Env env) {
        return DefineClass(env, "AbortToken", { InstanceMethod("abort", &AbortToken::Abort), InstanceAccessor("aborted", &AbortToken::Aborted, nullptr) });
    }
    explicit AbortToken(const Napi::CallbackInfo & info)
        : Napi::ObjectWrap<AbortToken>(info), flag(info.Env().GetInstanceData<AddonData>()->track(std::make_shared<std::atomic<bool>>(false))) {}
    flag_ptr flag;

  private:
    Napi::Value Abort(const Napi::CallbackInfo & info) {
        flag->store(true);
        return info.Env().Undefined();
    }
    Napi::Value Aborted(const Napi::CallbackInfo & info) { return Napi::Boolean::New(info.Env(), flag->load()); }
};

flag_ptr token_flag(Napi::Value v) {
    if (v.IsObject()) {
        Napi::Object o = v.As<Napi::Object>();
        AddonData *  d = v.Env().GetInstanceData<AddonData>();
        if (o.InstanceOf(d->token_ctor.Value())) return AbortToken::Unwrap(o)->flag;
    }
    return v.Env().GetInstanceData<AddonData>()->track(std::make_shared<std::atomic<bool>>(false));
}

// ---- option readers (lib/ validated the values; these only convert) ----

std::string opt_str(Napi::Object o, const char * key, const std::string & fallback = "") {
    Napi::Value v = o.Get(key);
    return v.IsString() ? v.As<Napi::String>().Utf8Value() : fallback;
}
double opt_num(Napi::Object o, const char * key, double fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}
bool opt_bool(Napi::Object o, const char * key, bool fallback) {
    Napi::Value v = o.Get(key);
    return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

// An image as JS gives it: encoded bytes, raw pixels, or an embedding from encodeImage.
struct image_input {
    enum { NONE, ENCODED, PIXELS, EMBEDDING } kind = NONE;
    std::vector<uint8_t> bytes;
    int                  width = 0, height = 0, channels = 0;
    std::vector<float>   embedding;
    int                  tokens = 0, dim = 0;
};

image_input read_image(Napi::Env env, Napi::Value v) {
    image_input in;
    if (!v.IsObject()) return in;
    Napi::Object o = v.As<Napi::Object>();
    auto copy_u8 = [&](Napi::Value x) {
        if (!x.IsTypedArray()) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "image data must be a Uint8Array");
        Napi::TypedArray t = x.As<Napi::TypedArray>();
        const uint8_t *  p = (const uint8_t *) t.ArrayBuffer().Data() + t.ByteOffset();
        in.bytes.assign(p, p + t.ByteLength());
    };
    if (o.Has("embedding")) {
        Napi::Value e = o.Get("embedding");
        if (!e.IsTypedArray() || e.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
            throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "image embedding data must be a Float32Array");
        }
        Napi::Float32Array f = e.As<Napi::Float32Array>();
        in.kind = image_input::EMBEDDING;
        in.embedding.assign(f.Data(), f.Data() + f.ElementLength());
        in.tokens = (int) opt_num(o, "tokens", 0);
        in.dim    = (int) opt_num(o, "dim", 0);
    } else if (o.Has("pixels")) {
        copy_u8(o.Get("pixels"));
        in.kind     = image_input::PIXELS;
        in.width    = (int) opt_num(o, "width", 0);
        in.height   = (int) opt_num(o, "height", 0);
        in.channels = (int) opt_num(o, "channels", 0);
    } else if (o.Has("bytes")) {
        copy_u8(o.Get("bytes"));
        in.kind = image_input::ENCODED;
    }
    return in;
}

// Decoded, resized, normalized pixels.
bool preprocess_image(pg_model & m, const image_input & in, std::vector<float> & pixels, pg_error & err) {
    pg_image_rgb img;
    if (in.kind == image_input::ENCODED) {
        if (!pg_image_decode(in.bytes.data(), in.bytes.size(), img, err)) return false;
    } else if (in.kind == image_input::PIXELS) {
        if (!pg_image_from_pixels(in.bytes.data(), in.bytes.size(), in.width, in.height, in.channels, img, err)) return false;
    } else {
        return err.set(PG_ERR_INVALID_ARGUMENT, "no image given");
    }
    pg_image_preprocess(img, m.vision.hp.image_size, m.vision.hp.mean, m.vision.hp.std, pixels);
    return true;
}

// The projector output for an image input: computed, or taken from an embedding (after checks).
bool image_embedding(pg_model & m, const image_input & in, const std::atomic<bool> * abort, std::vector<float> & out, double & pre_ms,
                     double & enc_ms, pg_error & err) {
    if (in.kind == image_input::EMBEDDING) {
        if (in.tokens != m.vision.hp.image_tokens || in.dim != m.text.n_embd || in.embedding.size() != (size_t) in.tokens * in.dim) {
            return err.set(PG_ERR_INVALID_ARGUMENT, "image embedding is " + std::to_string(in.tokens) + " x " + std::to_string(in.dim) +
                                                        ", this model needs " + std::to_string(m.vision.hp.image_tokens) + " x " +
                                                        std::to_string(m.text.n_embd));
        }
        for (float v : in.embedding) {
            if (!std::isfinite(v)) return err.set(PG_ERR_INVALID_ARGUMENT, "image embedding holds NaN or infinite values");
        }
        out = in.embedding;
        return true;
    }
    auto               t0 = std::chrono::steady_clock::now();
    std::vector<float> pixels;
    if (!preprocess_image(m, in, pixels, err)) return false;
    pre_ms  = ms_since(t0);
    auto t1 = std::chrono::steady_clock::now();
    if (!pg_vision_encode(m.vision, pixels.data(), out, abort, err)) return false;
    enc_ms = ms_since(t1);
    return true;
}

Napi::Float32Array to_f32(Napi::Env env, const std::vector<float> & v) {
    Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
    if (!v.empty()) memcpy(a.Data(), v.data(), v.size() * sizeof(float));
    return a;
}

Napi::Int32Array to_i32(Napi::Env env, const std::vector<int32_t> & v) {
    Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
    if (!v.empty()) memcpy(a.Data(), v.data(), v.size() * sizeof(int32_t));
    return a;
}

// ---- NativeModel ----

class NativeModel : public Napi::ObjectWrap<NativeModel> {
  public:
    static Napi::Function Define(Napi::Env env);
    explicit NativeModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeModel>(info) {}
    model_ptr model;

  private:
    model_ptr   Get(Napi::Env env) {
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
    Napi::Value Dispose(const Napi::CallbackInfo & info);
};

class LoadWorker : public PgProgressWorker<float> {
  public:
    LoadWorker(Napi::Env env, pg_model_params params, flag_ptr abort, Napi::Function on_progress)
        : PgProgressWorker<float>(env, "paligemma:load", on_progress), params_(std::move(params)), abort_(std::move(abort)) {}

  protected:
    bool Run(const Progress & progress) override {
        model_          = std::make_shared<pg_model>();
        float last_sent = -1.0f;
        pg_progress_fn fn = [&](float f) {
            if (f - last_sent >= 0.01f || f >= 1.0f) {
                last_sent = f;
                progress.Send(&f, 1);
            }
            return !abort_->load();
        };
        if (abort_->load()) return err_.set(PG_ERR_ABORTED, "loading aborted");
        bool ok = false;
        pg_run_on_compute_thread([&] { ok = pg_model_load(params_, *model_, fn, err_); });
        if (!ok) {
            model_.reset();
            if (abort_->load()) err_ = pg_error(), err_.set(PG_ERR_ABORTED, "loading aborted");
            return false;
        }
        return true;
    }
    std::vector<napi_value> EventArgs(Napi::Env env, const float & f) override { return { Napi::Number::New(env, f) }; }
    Napi::Value Result(Napi::Env env) override {
        AddonData * d = env.GetInstanceData<AddonData>();
        napi_value  obj;
        // Raw call: in an environment that is shutting down, constructing fails; report, don't crash.
        if (napi_new_instance(env, d->model_ctor.Value(), 0, nullptr, &obj) != napi_ok) {
            throw pg_make_error(env, PG_ERR_INTERNAL, "cannot create the model object");
        }
        NativeModel::Unwrap(Napi::Object(env, obj))->model = std::move(model_);
        return Napi::Object(env, obj);
    }
    void OnJsGone() override { abort_->store(true); }

  private:
    pg_model_params params_;
    flag_ptr        abort_;
    model_ptr       model_;
};

Napi::Value Load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "loadModel(options, abortToken, onProgress)");
    Napi::Object    o = info[0].As<Napi::Object>();
    pg_model_params p;
    p.model_path  = opt_str(o, "model");
    p.mmproj_path = opt_str(o, "mmproj");
    p.gpu         = opt_str(o, "gpu", "auto");
    p.gpu_layers  = (int) opt_num(o, "gpuLayers", -1);
    p.threads     = (int) opt_num(o, "threads", 0);
    p.n_ctx       = (int) opt_num(o, "contextSize", 0);
    std::string fa = opt_str(o, "flashAttention", "auto");
    p.flash_attn  = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED : fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_AUTO;
    p.kv_type     = opt_str(o, "kvCacheType", "f16") == "f32" ? GGML_TYPE_F32 : GGML_TYPE_F16;
    Napi::Value mm = o.Get("mmap");
    p.mmap        = mm.IsBoolean() ? (mm.As<Napi::Boolean>().Value() ? 1 : 0) : -1;
    Napi::Function cb = info.Length() > 2 && info[2].IsFunction() ? info[2].As<Napi::Function>() : Napi::Function();
    return (new LoadWorker(env, std::move(p), token_flag(info.Length() > 1 ? info[1] : env.Undefined()), cb))->Start();
}

Napi::Value NativeModel::Info(const Napi::CallbackInfo & info) {
    Napi::Env          env = info.Env();
    model_ptr          m   = Get(env);
    const auto &       hp  = m->vision.hp;
    Napi::Object       o   = Napi::Object::New(env);
    o.Set("family", hp.family);
    o.Set("imageSize", hp.image_size);
    o.Set("patchSize", hp.patch_size);
    o.Set("imageTokens", hp.image_tokens);
    o.Set("imageTokenId", hp.image_token_id);
    o.Set("visionWidth", hp.hidden);
    o.Set("visionLayers", hp.layers);
    o.Set("textArchitecture", m->text.arch);
    o.Set("textWidth", m->text.n_embd);
    o.Set("textLayers", llama_model_n_layer(m->text.model));
    o.Set("vocabSize", m->text.n_vocab);
    o.Set("contextSize", m->text.n_ctx);
    o.Set("trainedContextSize", m->text.n_ctx_train);
    o.Set("backend", m->backend);
    o.Set("threads", m->threads);
    o.Set("hasSegDecoder", hp.has_seg_decoder);
    o.Set("bosId", llama_vocab_bos(m->text.vocab));
    o.Set("eosId", llama_vocab_eos(m->text.vocab));
    char desc[256];
    llama_model_desc(m->text.model, desc, sizeof(desc));
    o.Set("textDescription", desc);
    o.Set("textParams", Napi::Number::New(env, (double) llama_model_n_params(m->text.model)));
    return o;
}

class TokenizeWorker : public PgPromiseWorker {
  public:
    TokenizeWorker(Napi::Env env, model_ptr m, std::string text, bool special)
        : PgPromiseWorker(env, "paligemma:tokenize"), m_(std::move(m)), text_(std::move(text)), special_(special) {}

  protected:
    bool Run() override {
        std::lock_guard<std::mutex> lock(m_->mu);
        return pg_text_tokenize(m_->text, text_, special_, ids_, err_);
    }
    Napi::Value Result(Napi::Env env) override { return to_i32(env, ids_); }

  private:
    model_ptr            m_;
    std::string          text_;
    bool                 special_;
    std::vector<int32_t> ids_;
};

Napi::Value NativeModel::Tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "tokenize(text)");
    bool special = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    return (new TokenizeWorker(env, Get(env), info[0].As<Napi::String>(), special))->Start();
}

class DetokenizeWorker : public PgPromiseWorker {
  public:
    DetokenizeWorker(Napi::Env env, model_ptr m, std::vector<int32_t> ids)
        : PgPromiseWorker(env, "paligemma:detokenize"), m_(std::move(m)), ids_(std::move(ids)) {}

  protected:
    bool Run() override {
        for (int32_t id : ids_) {
            if (id < 0 || id >= m_->text.n_vocab) return err_.set(PG_ERR_INVALID_ARGUMENT, "detokenize: token id " + std::to_string(id) + " is out of range");
            text_ += pg_text_piece(m_->text, id);
        }
        return true;
    }
    Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, text_); }

  private:
    model_ptr            m_;
    std::vector<int32_t> ids_;
    std::string          text_;
};

Napi::Value NativeModel::Detokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "detokenize(Int32Array)");
    }
    Napi::Int32Array a = info[0].As<Napi::Int32Array>();
    return (new DetokenizeWorker(env, Get(env), std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength())))->Start();
}

class PreprocessWorker : public PgPromiseWorker {
  public:
    PreprocessWorker(Napi::Env env, model_ptr m, image_input in)
        : PgPromiseWorker(env, "paligemma:preprocess"), m_(std::move(m)), in_(std::move(in)) {}

  protected:
    bool        Run() override { return preprocess_image(*m_, in_, pixels_, err_); }
    Napi::Value Result(Napi::Env env) override { return to_f32(env, pixels_); }

  private:
    model_ptr          m_;
    image_input        in_;
    std::vector<float> pixels_;
};

Napi::Value NativeModel::Preprocess(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    return (new PreprocessWorker(env, Get(env), read_image(env, info.Length() ? info[0] : env.Undefined())))->Start();
}

class EncodeWorker : public PgPromiseWorker {
  public:
    EncodeWorker(Napi::Env env, model_ptr m, image_input in, flag_ptr abort)
        : PgPromiseWorker(env, "paligemma:encodeImage"), m_(std::move(m)), in_(std::move(in)), abort_(std::move(abort)) {}

  protected:
    bool Run() override {
        std::lock_guard<std::mutex> lock(m_->mu);
        if (abort_->load()) return err_.set(PG_ERR_ABORTED, "encodeImage aborted");
        bool ok = false;
        pg_run_on_compute_thread([&] { ok = image_embedding(*m_, in_, abort_.get(), embd_, pre_ms_, enc_ms_, err_); });
        return ok;
    }
    Napi::Value Result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("data", to_f32(env, embd_));
        o.Set("tokens", m_->vision.hp.image_tokens);
        o.Set("dim", m_->text.n_embd);
        o.Set("preprocessMs", pre_ms_);
        o.Set("encodeMs", enc_ms_);
        return o;
    }

  private:
    model_ptr          m_;
    image_input        in_;
    flag_ptr           abort_;
    std::vector<float> embd_;
    double             pre_ms_ = 0, enc_ms_ = 0;
};

Napi::Value NativeModel::EncodeImage(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    return (new EncodeWorker(env, Get(env), read_image(env, info.Length() ? info[0] : env.Undefined()),
                             token_flag(info.Length() > 1 ? info[1] : env.Undefined())))->Start();
}

struct token_event {
    int32_t     id;
    std::string piece;
    std::string text;
};

class GenerateWorker : public PgProgressWorker<token_event> {
  public:
    GenerateWorker(Napi::Env env, model_ptr m, image_input in, std::string prompt, bool special, pg_generate_params gp, flag_ptr abort,
                   Napi::Function on_event)
        : PgProgressWorker<token_event>(env, "paligemma:generate", on_event), m_(std::move(m)), in_(std::move(in)),
          prompt_(std::move(prompt)), special_(special), gp_(std::move(gp)), abort_(std::move(abort)), has_listener_(!on_event.IsEmpty()) {}

  protected:
    bool Run(const Progress & progress) override {
        std::lock_guard<std::mutex> lock(m_->mu);
        bool ok = false;
        pg_run_on_compute_thread([&] { ok = RunLocked(progress); });
        return ok;
    }

    bool RunLocked(const Progress & progress) {
        if (abort_->load()) {
            res_.reason = PG_STOP_ABORT;
            return true;
        }
        std::vector<float> embd;
        if (!image_embedding(*m_, in_, abort_.get(), embd, pre_ms_, enc_ms_, err_)) {
            if (err_.code == PG_ERR_ABORTED) {
                err_        = pg_error();
                res_.reason = PG_STOP_ABORT;
                return true;
            }
            return false;
        }
        std::vector<int32_t> ids;
        if (!pg_text_tokenize(m_->text, prompt_ + "\n", special_, ids, err_)) return false;
        gp_.prefix_ids.clear();
        gp_.prefix_ids.push_back(llama_vocab_bos(m_->text.vocab));
        gp_.prefix_ids.insert(gp_.prefix_ids.end(), ids.begin(), ids.end());
        gp_.image_embd = embd.data();
        gp_.n_image    = m_->vision.hp.image_tokens;
        auto on_token  = [&](int32_t id, const std::string & piece, const std::string & text) {
            token_event e{ id, piece, text };
            progress.Send(&e, 1);
        };
        // Without a JS listener, no per-token hop to the JS thread at all.
        return pg_generate(m_->text, gp_, has_listener_ ? pg_token_fn(on_token) : pg_token_fn(), abort_.get(), res_, err_);
    }

    void OnJsGone() override { abort_->store(true); }

    std::vector<napi_value> EventArgs(Napi::Env env, const token_event & e) override {
        return { Napi::Number::New(env, e.id), Napi::String::New(env, e.piece), Napi::String::New(env, e.text) };
    }

    Napi::Value Result(Napi::Env env) override {
        static const char * reasons[] = { "eos", "maxTokens", "stop", "abort" };
        Napi::Object o = Napi::Object::New(env);
        o.Set("text", Napi::String::New(env, res_.text));
        o.Set("tokens", to_i32(env, res_.tokens));
        o.Set("stopReason", reasons[res_.reason]);
        if (gp_.want_logits) o.Set("logits", to_f32(env, res_.logits));
        Napi::Object t = Napi::Object::New(env);
        t.Set("preprocessMs", pre_ms_);
        t.Set("encodeMs", enc_ms_);
        t.Set("prefillMs", res_.prefill_ms);
        t.Set("decodeMs", res_.decode_ms);
        t.Set("promptTokens", res_.prompt_tokens);
        t.Set("generatedTokens", (double) res_.tokens.size());
        // Image work happens before pg_generate starts: count it in the time to the first token.
        t.Set("firstTokenMs", res_.tokens.empty() ? 0.0 : pre_ms_ + enc_ms_ + res_.first_token_ms);
        o.Set("timings", t);
        return o;
    }

  private:
    model_ptr          m_;
    image_input        in_;
    std::string        prompt_;
    bool               special_;
    pg_generate_params gp_;
    flag_ptr           abort_;
    pg_generate_result res_;
    double             pre_ms_ = 0, enc_ms_ = 0;
    bool               has_listener_;
};

Napi::Value NativeModel::Generate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "generate(options, abortToken, onEvent)");
    Napi::Object       o = info[0].As<Napi::Object>();
    pg_generate_params gp;
    gp.max_tokens              = (int) opt_num(o, "maxTokens", 32);
    gp.want_logits             = opt_bool(o, "logits", false);
    gp.sampling.temperature    = (float) opt_num(o, "temperature", 0);
    gp.sampling.top_k          = (int) opt_num(o, "topK", 0);
    gp.sampling.top_p          = (float) opt_num(o, "topP", 1);
    gp.sampling.min_p          = (float) opt_num(o, "minP", 0);
    gp.sampling.seed           = (uint32_t) opt_num(o, "seed", 0xFFFFFFFF);
    gp.sampling.repeat_penalty = (float) opt_num(o, "repeatPenalty", 1);
    gp.sampling.grammar        = opt_str(o, "grammar");
    Napi::Value stop = o.Get("stop");
    if (stop.IsArray()) {
        Napi::Array a = stop.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
            Napi::Value s = a.Get(i);
            if (s.IsString()) gp.stop.push_back(s.As<Napi::String>());
        }
    }
    Napi::Value forced = o.Get("forceTokens");
    if (forced.IsTypedArray() && forced.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
        Napi::Int32Array f = forced.As<Napi::Int32Array>();
        gp.forced.assign(f.Data(), f.Data() + f.ElementLength());
    }
    image_input    in = read_image(env, o.Get("image"));
    Napi::Function cb = info.Length() > 2 && info[2].IsFunction() ? info[2].As<Napi::Function>() : Napi::Function();
    return (new GenerateWorker(env, Get(env), std::move(in), opt_str(o, "prompt"), opt_bool(o, "specialTokens", false), std::move(gp),
                               token_flag(info.Length() > 1 ? info[1] : env.Undefined()), cb))->Start();
}

class DecodeMaskWorker : public PgPromiseWorker {
  public:
    DecodeMaskWorker(Napi::Env env, model_ptr m, std::vector<int> codes)
        : PgPromiseWorker(env, "paligemma:decodeMask"), m_(std::move(m)), codes_(std::move(codes)) {}

  protected:
    bool Run() override {
        std::lock_guard<std::mutex> lock(m_->mu);
        if (!m_->mask_ready) {
            if (!pg_mask_decoder_init(m_->vision, m_->mask, err_)) return false;
            m_->mask_ready = true;
        }
        return pg_mask_decode(m_->mask, codes_.data(), out_, err_);
    }
    Napi::Value Result(Napi::Env env) override { return to_f32(env, out_); }

  private:
    model_ptr          m_;
    std::vector<int>   codes_;
    std::vector<float> out_;
};

Napi::Value NativeModel::DecodeMask(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        info[0].As<Napi::TypedArray>().ElementLength() != 16) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "decodeMask(Int32Array of 16 codes)");
    }
    Napi::Int32Array a = info[0].As<Napi::Int32Array>();
    return (new DecodeMaskWorker(env, Get(env), std::vector<int>(a.Data(), a.Data() + 16)))->Start();
}

// Frees the native model in a worker: the mutex waits for any operation still running.
class DisposeWorker : public PgPromiseWorker {
  public:
    DisposeWorker(Napi::Env env, model_ptr m) : PgPromiseWorker(env, "paligemma:dispose"), m_(std::move(m)) {}

  protected:
    bool Run() override {
        if (m_) {
            { std::lock_guard<std::mutex> lock(m_->mu); }
            m_.reset();
        }
        return true;
    }
    Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

  private:
    model_ptr m_;
};

Napi::Value NativeModel::Dispose(const Napi::CallbackInfo & info) {
    model_ptr m = std::move(model);
    return (new DisposeWorker(info.Env(), std::move(m)))->Start();
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
                           InstanceMethod("dispose", &NativeModel::Dispose),
                       });
}

}  // namespace

void pg_register_model(Napi::Env env, Napi::Object exports) {
    auto *         data  = new AddonData();
    Napi::Function model = NativeModel::Define(env);
    Napi::Function token = AbortToken::Define(env);
    data->model_ctor     = Napi::Persistent(model);
    data->token_ctor     = Napi::Persistent(token);
    env.SetInstanceData<AddonData>(data);
    env.AddCleanupHook([data]() { data->abort_all(); });
    exports.Set("NativeModel", model);
    exports.Set("AbortToken", token);
    exports.Set("loadModel", Napi::Function::New(env, Load, "loadModel"));
}

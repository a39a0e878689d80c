// Converter support: quantizeModel (llama.cpp's quantizer), quantizeRows (ggml's, for vision
// tensors), inspectTextModel (llama.cpp's loader and tokenizer, for checks).
#include "napi_exports.h"
#include "napi_worker.h"
#include "pg_quantize.h"
#include "pg_text_inspect.h"

#include <cstring>

namespace {

class QuantizeModelWorker : public PgPromiseWorker {
  public:
    QuantizeModelWorker(Napi::Env env, std::string in, std::string out, std::string type, int threads)
        : PgPromiseWorker(env, "paligemma:quantizeModel"), in_(std::move(in)), out_(std::move(out)), type_(std::move(type)), threads_(threads) {}

  protected:
    bool        Run() override { return pg_quantize_model(in_, out_, type_, threads_, err_); }
    Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

  private:
    std::string in_, out_, type_;
    int         threads_;
};

Napi::Value QuantizeModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 4 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString() || !info[3].IsNumber()) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "quantizeModel(in, out, type, threads)");
    }
    return (new QuantizeModelWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::String>(), info[2].As<Napi::String>(),
                                    info[3].As<Napi::Number>().Int32Value()))
        ->Start();
}

// Reads the caller's Float32Array in place on the worker thread; a reference keeps it alive.
class QuantizeRowsWorker : public PgPromiseWorker {
  public:
    QuantizeRowsWorker(Napi::Env env, Napi::Float32Array src, int64_t cols, ggml_type type)
        : PgPromiseWorker(env, "paligemma:quantizeRows"),
          src_ref_(Napi::Persistent(src.As<Napi::Object>())),
          data_(src.Data()),
          n_(src.ElementLength()),
          cols_(cols),
          type_(type) {}

  protected:
    bool Run() override {
        if (cols_ <= 0 || n_ % cols_ != 0) return err_.set(PG_ERR_INVALID_ARGUMENT, "quantizeRows: length is not a multiple of the row width");
        return pg_quantize_rows(data_, (int64_t) (n_ / cols_), cols_, type_, out_, err_);
    }
    Napi::Value Result(Napi::Env env) override {
        Napi::Uint8Array arr = Napi::Uint8Array::New(env, out_.size());
        if (!out_.empty()) memcpy(arr.Data(), out_.data(), out_.size());
        return arr;
    }

  private:
    Napi::ObjectReference src_ref_;
    const float *         data_;
    size_t                n_;
    int64_t               cols_;
    ggml_type             type_;
    std::vector<uint8_t>  out_;
};

Napi::Value QuantizeRows(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        !info[1].IsNumber() || !info[2].IsString()) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "quantizeRows(Float32Array, cols, type)");
    }
    std::string name = info[2].As<Napi::String>();
    ggml_type   type = pg_ggml_type_from_name(name);
    if (type == GGML_TYPE_COUNT) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "quantizeRows: unknown ggml type '" + name + "'");
    return (new QuantizeRowsWorker(env, info[0].As<Napi::Float32Array>(), info[1].As<Napi::Number>().Int64Value(), type))->Start();
}

class InspectTextWorker : public PgPromiseWorker {
  public:
    InspectTextWorker(Napi::Env env, std::string path, std::vector<std::string> texts, bool vocab_only)
        : PgPromiseWorker(env, "paligemma:inspectTextModel"), path_(std::move(path)), texts_(std::move(texts)), vocab_only_(vocab_only) {}

  protected:
    bool        Run() override { return pg_text_inspect(path_, texts_, vocab_only_, out_, err_); }
    Napi::Value Result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("description", out_.description);
        o.Set("architecture", out_.architecture);
        o.Set("nParams", Napi::Number::New(env, (double) out_.n_params));
        o.Set("sizeBytes", Napi::Number::New(env, (double) out_.size_bytes));
        o.Set("nEmbd", out_.n_embd);
        o.Set("nLayer", out_.n_layer);
        o.Set("nHead", out_.n_head);
        o.Set("nHeadKv", out_.n_head_kv);
        o.Set("nVocab", out_.n_vocab);
        o.Set("nCtxTrain", out_.n_ctx_train);
        o.Set("nSwa", out_.n_swa);
        Napi::Array tokens = Napi::Array::New(env, out_.tokens.size());
        for (size_t i = 0; i < out_.tokens.size(); ++i) {
            Napi::Int32Array ids = Napi::Int32Array::New(env, out_.tokens[i].size());
            if (!out_.tokens[i].empty()) memcpy(ids.Data(), out_.tokens[i].data(), out_.tokens[i].size() * sizeof(int32_t));
            tokens.Set(i, ids);
        }
        o.Set("tokens", tokens);
        return o;
    }

  private:
    std::string              path_;
    std::vector<std::string> texts_;
    bool                     vocab_only_;
    pg_text_inspection       out_;
};

Napi::Value InspectTextModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsBoolean()) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "inspectTextModel(path, texts, vocabOnly)");
    }
    Napi::Array              arr = info[1].As<Napi::Array>();
    std::vector<std::string> texts;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Value v = arr.Get(i);
        if (!v.IsString()) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "inspectTextModel: texts must be strings");
        texts.push_back(v.As<Napi::String>());
    }
    return (new InspectTextWorker(env, info[0].As<Napi::String>(), std::move(texts), info[2].As<Napi::Boolean>()))->Start();
}

}  // namespace

void pg_register_convert(Napi::Env env, Napi::Object exports) {
    exports.Set("quantizeModel", Napi::Function::New(env, QuantizeModel, "quantizeModel"));
    exports.Set("quantizeRows", Napi::Function::New(env, QuantizeRows, "quantizeRows"));
    exports.Set("inspectTextModel", Napi::Function::New(env, InspectTextModel, "inspectTextModel"));
}

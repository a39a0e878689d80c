// Image helpers for the task layer: imageSize (header only, synchronous: microseconds) and
// decodeImage (RGB pixels, in a worker) for annotated pictures.
#include "napi_exports.h"
#include "napi_worker.h"
#include "pg_image.h"

#include <cstring>

namespace {

std::vector<uint8_t> bytes_of(Napi::Env env, Napi::Value v, const char * what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, std::string(what) + ": expected a Uint8Array");
    }
    Napi::Uint8Array a = v.As<Napi::Uint8Array>();
    return std::vector<uint8_t>(a.Data(), a.Data() + a.ByteLength());
}

// The optional second argument names the image in error messages.
std::string label_of(const Napi::CallbackInfo & info) {
    return info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : std::string();
}

// imageSize(bytes: Uint8Array, label?: string)
Napi::Value ImageSize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "imageSize: expected a Uint8Array");
    }
    Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();  // read in place: synchronous, header only
    int              w = 0, h = 0;
    pg_error         err;
    if (!pg_image_size(a.Data(), a.ByteLength(), label_of(info), w, h, err)) throw pg_make_error(env, err);
    Napi::Object o = Napi::Object::New(env);
    o.Set("width", w);
    o.Set("height", h);
    return o;
}

class DecodeImageWorker : public PgPromiseWorker {
  public:
    DecodeImageWorker(Napi::Env env, std::vector<uint8_t> bytes, std::string label)
        : PgPromiseWorker(env, "paligemma:decodeImage"), bytes_(std::move(bytes)), label_(std::move(label)) {}

  protected:
    bool        Run() override { return pg_image_decode(bytes_.data(), bytes_.size(), label_, img_, err_); }
    Napi::Value Result(Napi::Env env) override {
        Napi::Object     o = Napi::Object::New(env);
        Napi::Uint8Array d = Napi::Uint8Array::New(env, img_.rgb.size());
        memcpy(d.Data(), img_.rgb.data(), img_.rgb.size());
        o.Set("width", img_.width);
        o.Set("height", img_.height);
        o.Set("channels", 3);
        o.Set("data", d);
        return o;
    }

  private:
    std::vector<uint8_t> bytes_;
    std::string          label_;
    pg_image_rgb         img_;
};

// decodeImage(bytes: Uint8Array, label?: string)
Napi::Value DecodeImage(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    return (new DecodeImageWorker(env, bytes_of(env, info.Length() ? info[0] : env.Undefined(), "decodeImage"), label_of(info)))->Start();
}

}  // namespace

void pg_register_image(Napi::Env env, Napi::Object exports) {
    exports.Set("imageSize", Napi::Function::New(env, ImageSize, "imageSize"));
    exports.Set("decodeImage", Napi::Function::New(env, DecodeImage, "decodeImage"));
}

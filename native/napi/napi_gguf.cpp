// readGGUF(path, { maxArrayLength }) -> Promise<{ version, alignment, dataOffset, fileSize, metadata, tensors, truncatedKeys }>
#include "napi_exports.h"
#include "napi_worker.h"
#include "pg_gguf.h"

#include "ggml.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace {

// 64-bit integers become Numbers when exact, BigInts otherwise.
Napi::Value int64_value(Napi::Env env, int64_t v) {
    if (v >= -(int64_t(1) << 53) && v <= (int64_t(1) << 53)) return Napi::Number::New(env, (double) v);
    return Napi::BigInt::New(env, v);
}

Napi::Value uint64_value(Napi::Env env, uint64_t v) {
    if (v <= (uint64_t(1) << 53)) return Napi::Number::New(env, (double) v);
    return Napi::BigInt::New(env, v);
}

template <typename T, typename TypedArray>
Napi::Value typed_copy(Napi::Env env, const void * data, size_t n) {
    TypedArray arr = TypedArray::New(env, n);
    if (n) memcpy(arr.Data(), data, n * sizeof(T));
    return arr;
}

Napi::Value array_value(Napi::Env env, const gguf_context * ctx, int64_t key, size_t n) {
    const gguf_type t    = gguf_get_arr_type(ctx, key);
    const void *    data = t == GGUF_TYPE_STRING ? nullptr : gguf_get_arr_data(ctx, key);
    switch (t) {
        case GGUF_TYPE_UINT8: return typed_copy<uint8_t, Napi::Uint8Array>(env, data, n);
        case GGUF_TYPE_INT8: return typed_copy<int8_t, Napi::Int8Array>(env, data, n);
        case GGUF_TYPE_UINT16: return typed_copy<uint16_t, Napi::Uint16Array>(env, data, n);
        case GGUF_TYPE_INT16: return typed_copy<int16_t, Napi::Int16Array>(env, data, n);
        case GGUF_TYPE_UINT32: return typed_copy<uint32_t, Napi::Uint32Array>(env, data, n);
        case GGUF_TYPE_INT32: return typed_copy<int32_t, Napi::Int32Array>(env, data, n);
        case GGUF_TYPE_FLOAT32: return typed_copy<float, Napi::Float32Array>(env, data, n);
        case GGUF_TYPE_FLOAT64: return typed_copy<double, Napi::Float64Array>(env, data, n);
        case GGUF_TYPE_UINT64: return typed_copy<uint64_t, Napi::TypedArrayOf<uint64_t>>(env, data, n);
        case GGUF_TYPE_INT64: return typed_copy<int64_t, Napi::TypedArrayOf<int64_t>>(env, data, n);
        case GGUF_TYPE_BOOL: {
            Napi::Array arr = Napi::Array::New(env, n);
            for (size_t i = 0; i < n; ++i) arr.Set(i, Napi::Boolean::New(env, ((const int8_t *) data)[i] != 0));
            return arr;
        }
        case GGUF_TYPE_STRING: {
            Napi::Array arr = Napi::Array::New(env, n);
            for (size_t i = 0; i < n; ++i) arr.Set(i, Napi::String::New(env, gguf_get_arr_str(ctx, key, i)));
            return arr;
        }
        default: return env.Null();
    }
}

Napi::Value kv_value(Napi::Env env, const gguf_context * ctx, int64_t key, size_t max_array, bool & truncated) {
    switch (gguf_get_kv_type(ctx, key)) {
        case GGUF_TYPE_UINT8: return Napi::Number::New(env, gguf_get_val_u8(ctx, key));
        case GGUF_TYPE_INT8: return Napi::Number::New(env, gguf_get_val_i8(ctx, key));
        case GGUF_TYPE_UINT16: return Napi::Number::New(env, gguf_get_val_u16(ctx, key));
        case GGUF_TYPE_INT16: return Napi::Number::New(env, gguf_get_val_i16(ctx, key));
        case GGUF_TYPE_UINT32: return Napi::Number::New(env, gguf_get_val_u32(ctx, key));
        case GGUF_TYPE_INT32: return Napi::Number::New(env, gguf_get_val_i32(ctx, key));
        case GGUF_TYPE_FLOAT32: return Napi::Number::New(env, gguf_get_val_f32(ctx, key));
        case GGUF_TYPE_FLOAT64: return Napi::Number::New(env, gguf_get_val_f64(ctx, key));
        case GGUF_TYPE_UINT64: return uint64_value(env, gguf_get_val_u64(ctx, key));
        case GGUF_TYPE_INT64: return int64_value(env, gguf_get_val_i64(ctx, key));
        case GGUF_TYPE_BOOL: return Napi::Boolean::New(env, gguf_get_val_bool(ctx, key));
        case GGUF_TYPE_STRING: return Napi::String::New(env, gguf_get_val_str(ctx, key));
        case GGUF_TYPE_ARRAY: {
            size_t n  = gguf_get_arr_n(ctx, key);
            truncated = n > max_array;
            return array_value(env, ctx, key, truncated ? max_array : n);
        }
        default: return env.Null();
    }
}

class ReadGgufWorker : public PgPromiseWorker {
  public:
    ReadGgufWorker(Napi::Env env, std::string path, size_t max_array)
        : PgPromiseWorker(env, "paligemma:readGGUF"), path_(std::move(path)), max_array_(max_array) {}

  protected:
    bool Run() override { return pg_gguf_open(path_, file_, err_) && pg_gguf_check_data_bounds(file_, err_); }

    Napi::Value Result(Napi::Env env) override {
        const gguf_context * ctx = file_.ctx.get();
        Napi::Object         out = Napi::Object::New(env);
        out.Set("version", gguf_get_version(ctx));
        out.Set("alignment", Napi::Number::New(env, (double) gguf_get_alignment(ctx)));
        out.Set("dataOffset", Napi::Number::New(env, (double) gguf_get_data_offset(ctx)));
        out.Set("fileSize", Napi::Number::New(env, (double) file_.file_size));

        Napi::Object metadata  = Napi::Object::New(env);
        Napi::Array  truncated = Napi::Array::New(env);
        for (int64_t i = 0; i < gguf_get_n_kv(ctx); ++i) {
            bool was_truncated = false;
            metadata.Set(gguf_get_key(ctx, i), kv_value(env, ctx, i, max_array_, was_truncated));
            if (was_truncated) truncated.Set(truncated.Length(), gguf_get_key(ctx, i));
        }
        out.Set("metadata", metadata);
        out.Set("truncatedKeys", truncated);

        const size_t  base    = gguf_get_data_offset(ctx);
        const int64_t n       = gguf_get_n_tensors(ctx);
        Napi::Array   tensors = Napi::Array::New(env, n);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t * ne     = gguf_get_tensor_ne(ctx, i);
            int             n_dims = GGML_MAX_DIMS;
            while (n_dims > 1 && ne[n_dims - 1] == 1) --n_dims;
            Napi::Array shape = Napi::Array::New(env, n_dims);
            for (int d = 0; d < n_dims; ++d) shape.Set(d, Napi::Number::New(env, (double) ne[d]));
            Napi::Object t = Napi::Object::New(env);
            t.Set("name", gguf_get_tensor_name(ctx, i));
            t.Set("type", ggml_type_name(gguf_get_tensor_type(ctx, i)));
            t.Set("shape", shape);
            t.Set("offset", Napi::Number::New(env, (double) (base + gguf_get_tensor_offset(ctx, i))));
            t.Set("size", Napi::Number::New(env, (double) gguf_get_tensor_size(ctx, i)));
            tensors.Set(i, t);
        }
        out.Set("tensors", tensors);
        return out;
    }

  private:
    std::string  path_;
    size_t       max_array_;
    pg_gguf_file file_;
};

Napi::Value ReadGGUF(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) {
        throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "readGGUF: path must be a string");
    }
    size_t max_array = std::numeric_limits<size_t>::max();
    if (info.Length() > 1 && info[1].IsNumber()) {
        double v = info[1].As<Napi::Number>().DoubleValue();
        if (!(v >= 0)) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, "readGGUF: maxArrayLength must be >= 0");
        if (std::isfinite(v)) max_array = (size_t) v;
    }
    return (new ReadGgufWorker(env, info[0].As<Napi::String>().Utf8Value(), max_array))->Start();
}

}  // namespace

void pg_register_gguf(Napi::Env env, Napi::Object exports) {
    exports.Set("readGGUF", Napi::Function::New(env, ReadGGUF, "readGGUF"));
}

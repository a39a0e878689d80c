// Reading option objects from JavaScript strictly: lib/ validates what users pass and hands the
// addon exactly the keys of its contract (lib/native/contract.ts). A key the addon does not know,
// or a value of the wrong type, is a contract violation and throws ERR_INVALID_ARGUMENT instead of
// falling back to a default. `undefined` counts as absent.
#pragma once
#include "napi_worker.h"

#include <napi.h>

#include <initializer_list>
#include <string>
#include <vector>

class pg_js_options {
  public:
    // `what` names the object in messages, e.g. "loadModel options".
    pg_js_options(Napi::Env env, Napi::Value v, const char * what) : env_(env), what_(what) {
        if (!v.IsObject() || v.IsArray()) throw pg_make_error(env, PG_ERR_INVALID_ARGUMENT, what_ + ": expected an object");
        obj_ = v.As<Napi::Object>();
    }

    bool has(const char * key) { return !get(key).IsUndefined(); }

    std::string str(const char * key, const std::string & fallback = "") {
        Napi::Value v = get(key);
        if (v.IsUndefined()) return fallback;
        if (!v.IsString()) bad(key, "a string");
        return v.As<Napi::String>().Utf8Value();
    }

    double num(const char * key, double fallback) {
        Napi::Value v = get(key);
        if (v.IsUndefined()) return fallback;
        if (!v.IsNumber()) bad(key, "a number");
        return v.As<Napi::Number>().DoubleValue();
    }

    // An integer in [lo, hi].
    int64_t integer(const char * key, int64_t fallback, int64_t lo, int64_t hi) {
        Napi::Value v = get(key);
        if (v.IsUndefined()) return fallback;
        const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0.5;
        if (!v.IsNumber() || d != (double) (int64_t) d || d < (double) lo || d > (double) hi) {
            bad(key, ("an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]").c_str());
        }
        return (int64_t) d;
    }

    // An integer in [lo, hi] that must be present.
    int64_t required_integer(const char * key, int64_t lo, int64_t hi) {
        if (!has(key)) bad(key, ("an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]").c_str());
        return integer(key, 0, lo, hi);
    }

    bool boolean(const char * key, bool fallback) {
        Napi::Value v = get(key);
        if (v.IsUndefined()) return fallback;
        if (!v.IsBoolean()) bad(key, "a boolean");
        return v.As<Napi::Boolean>().Value();
    }

    // One of `choices`; returns its index (fallback when absent).
    int choice(const char * key, std::initializer_list<const char *> choices, int fallback) {
        Napi::Value v = get(key);
        if (v.IsUndefined()) return fallback;
        if (v.IsString()) {
            const std::string s = v.As<Napi::String>().Utf8Value();
            int               i = 0;
            for (const char * c : choices) {
                if (s == c) return i;
                ++i;
            }
        }
        std::string list;
        for (const char * c : choices) list += (list.empty() ? "'" : ", '") + std::string(c) + "'";
        bad(key, ("one of " + list).c_str());
    }

    std::vector<std::string> strings(const char * key) {
        std::vector<std::string> out;
        Napi::Value              v = get(key);
        if (v.IsUndefined()) return out;
        if (!v.IsArray()) bad(key, "an array of strings");
        Napi::Array a = v.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
            Napi::Value s = a.Get(i);
            if (!s.IsString()) bad(key, "an array of strings");
            out.push_back(s.As<Napi::String>().Utf8Value());
        }
        return out;
    }

    template <typename T>
    std::vector<T> typed(const char * key, napi_typedarray_type type, const char * expected) {
        Napi::Value v = get(key);
        if (v.IsUndefined()) return {};
        if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) bad(key, expected);
        Napi::TypedArray a = v.As<Napi::TypedArray>();
        const T *        p = (const T *) ((const uint8_t *) a.ArrayBuffer().Data() + a.ByteOffset());
        return std::vector<T>(p, p + a.ElementLength());
    }

    // A nested object, read with its own reader by the caller.
    Napi::Value raw(const char * key) { return get(key); }

    // Every key of the object must have been read.
    void finish() {
        Napi::Array names = obj_.GetPropertyNames();
        for (uint32_t i = 0; i < names.Length(); ++i) {
            const std::string k  = names.Get(i).ToString().Utf8Value();
            bool              ok = false;
            for (const auto & r : read_) ok = ok || r == k;
            if (!ok && !obj_.Get(k).IsUndefined()) throw pg_make_error(env_, PG_ERR_INVALID_ARGUMENT, what_ + ": unknown key '" + k + "'");
        }
    }

  private:
    Napi::Value get(const char * key) {
        read_.push_back(key);
        return obj_.Get(key);
    }

    [[noreturn]] void bad(const char * key, const char * expected) {
        throw pg_make_error(env_, PG_ERR_INVALID_ARGUMENT, what_ + "." + key + ": expected " + expected);
    }

    Napi::Env                env_;
    Napi::Object             obj_;
    std::string              what_;
    std::vector<std::string> read_;
};

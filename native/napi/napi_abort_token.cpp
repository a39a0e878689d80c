#include "napi_abort_token.h"

Napi::Function AbortToken::Define(Napi::Env env) {
    return DefineClass(env, "AbortToken",
                       { InstanceMethod("abort", &AbortToken::Abort), InstanceAccessor("aborted", &AbortToken::Aborted, nullptr) });
}

AbortToken::AbortToken(const Napi::CallbackInfo & info)
    : Napi::ObjectWrap<AbortToken>(info), flag(pg_addon(info.Env())->track(std::make_shared<pg_abort_signal>())) {}

Napi::Value AbortToken::Abort(const Napi::CallbackInfo & info) {
    flag->raise();
    return info.Env().Undefined();
}

Napi::Value AbortToken::Aborted(const Napi::CallbackInfo & info) {
    return Napi::Boolean::New(info.Env(), flag->raised());
}

pg_flag_ptr pg_abort_flag(Napi::Value v) {
    pg_addon_data * d = pg_addon(v.Env());
    if (v.IsObject() && v.As<Napi::Object>().InstanceOf(d->token_ctor.Value())) return AbortToken::Unwrap(v.As<Napi::Object>())->flag;
    return d->track(std::make_shared<pg_abort_signal>());
}

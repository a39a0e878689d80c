// AbortToken: the JS handle of one operation's abort flag (lib/ links an AbortSignal to it).
#pragma once
#include "napi_addon_data.h"

#include <napi.h>

class AbortToken : public Napi::ObjectWrap<AbortToken> {
  public:
    static Napi::Function Define(Napi::Env env);
    explicit AbortToken(const Napi::CallbackInfo & info);

    pg_flag_ptr flag;

  private:
    Napi::Value Abort(const Napi::CallbackInfo & info);
    Napi::Value Aborted(const Napi::CallbackInfo & info);
};

// The flag of an AbortToken, or a fresh one nobody can set but the environment's shutdown.
pg_flag_ptr pg_abort_flag(Napi::Value v);

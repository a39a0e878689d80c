// Promise-returning AsyncWorker: heavy work runs on a libuv worker thread, results and errors come
// back on the JS thread. Exceptions never cross into Node: Run() reports through a pg_error, and
// anything thrown anyway is caught in Execute().
#pragma once
#include "pg_error.h"

#include <napi.h>

#include <new>
#include <string>

// A JS Error carrying `code` (e.g. "ERR_INVALID_FILE"), which lib/ turns into a PaliGemmaError.
inline Napi::Error pg_make_error(Napi::Env env, pg_error_code code, const std::string & message) {
    Napi::Error e = Napi::Error::New(env, message);
    e.Set("code", Napi::String::New(env, pg_error_code_name(code)));
    return e;
}

inline Napi::Error pg_make_error(Napi::Env env, const pg_error & err) {
    return pg_make_error(env, err.code == PG_OK ? PG_ERR_INTERNAL : err.code, err.message);
}

// False while the environment is shutting down (a worker thread exiting): node-addon-api calls that
// need JS would then fail, and its error path can abort the process, so callers skip all JS work.
inline bool pg_env_can_run_js(napi_env env) {
    napi_value obj, val;
    if (napi_create_object(env, &obj) != napi_ok || napi_get_boolean(env, true, &val) != napi_ok) return false;
    return napi_set_named_property(env, obj, "probe", val) == napi_ok;
}

// Runs a worker's body, turning exceptions into a pg_error (nothing may escape into Node).
template <typename F>
void pg_run_guarded(pg_error & err, F && body) {
    try {
        if (!body() && err.ok()) err.set(PG_ERR_INTERNAL, "operation failed without a message");
    } catch (const std::bad_alloc &) {
        err.set(PG_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception & e) {
        err.set(PG_ERR_INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        err.set(PG_ERR_INTERNAL, "internal error: unknown exception");
    }
}

// Settles a worker's promise on the JS thread: rejected with err, or resolved with make_result().
// Skipped entirely while the environment shuts down.
template <typename F>
void pg_settle(Napi::Env env, Napi::Promise::Deferred & deferred, const pg_error & err, F && make_result) {
    if (!pg_env_can_run_js(env)) return;
    Napi::HandleScope scope(env);
    if (!err.ok()) {
        deferred.Reject(pg_make_error(env, err).Value());
        return;
    }
    try {
        deferred.Resolve(make_result());
    } catch (const Napi::Error & e) {
        deferred.Reject(e.Value());
    } catch (const std::exception & e) {
        deferred.Reject(pg_make_error(env, PG_ERR_INTERNAL, e.what()).Value());
    }
}

class PgPromiseWorker : public Napi::AsyncWorker {
  public:
    explicit PgPromiseWorker(Napi::Env env, const char * name) : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

    // Queues the worker and returns its promise.
    Napi::Promise Start() {
        Napi::Promise p = deferred_.Promise();
        Queue();
        return p;
    }

  protected:
    // Runs off the JS thread. Return false and fill err_ on failure.
    virtual bool Run() = 0;
    // Runs on the JS thread after Run() succeeded; builds the resolved value.
    virtual Napi::Value Result(Napi::Env env) = 0;

    pg_error err_;

  private:
    void Execute() final {
        pg_run_guarded(err_, [this] { return Run(); });
    }
    void OnOK() final {
        pg_settle(Env(), deferred_, err_, [this] { return Result(Env()); });
    }
    void OnError(const Napi::Error & e) final {
        if (pg_env_can_run_js(Env())) deferred_.Reject(e.Value());
    }

    Napi::Promise::Deferred deferred_;
};

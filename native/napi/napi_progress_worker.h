// Promise-returning worker that also streams events (load progress, generated tokens) to the JS
// thread while it runs: node-addon-api's AsyncProgressQueueWorker delivers every Send(), in order.
#pragma once
#include "napi_worker.h"

template <typename Event>
class PgProgressWorker : public Napi::AsyncProgressQueueWorker<Event> {
  public:
    using Progress = typename Napi::AsyncProgressQueueWorker<Event>::ExecutionProgress;

    PgProgressWorker(Napi::Env env, const char * name, Napi::Function on_event)
        : Napi::AsyncProgressQueueWorker<Event>(env, name), deferred_(Napi::Promise::Deferred::New(env)) {
        if (!on_event.IsEmpty()) on_event_ = Napi::Persistent(on_event);
    }

    Napi::Promise Start() {
        Napi::Promise p = deferred_.Promise();
        this->Queue();
        return p;
    }

  protected:
    virtual bool        Run(const Progress & progress) = 0;
    virtual Napi::Value Result(Napi::Env env)          = 0;
    // Converts one event into the arguments of the JS callback.
    virtual std::vector<napi_value> EventArgs(Napi::Env env, const Event & e) = 0;

    pg_error err_;

  private:
    void Execute(const Progress & progress) final {
        pg_run_guarded(err_, [&] { return Run(progress); });
    }

    // Raw napi_call_function: when the environment is going away (a worker thread exiting), calling
    // JS fails, and node-addon-api's exception path would itself fail fatally. Here a failed call
    // only stops further events and lets the subclass stop its work.
    void OnProgress(const Event * events, size_t count) final {
        if (on_event_.IsEmpty() || js_gone_) return;
        Napi::Env env = this->Env();
        if (!pg_env_can_run_js(env)) {
            js_gone_ = true;
            OnJsGone();
            return;
        }
        Napi::HandleScope scope(env);
        for (size_t i = 0; i < count && !js_gone_; ++i) {
            std::vector<napi_value> args = EventArgs(env, events[i]);
            napi_value              result;
            napi_status             st = napi_call_function(env, env.Undefined(), on_event_.Value(), args.size(), args.data(), &result);
            if (st != napi_ok) {
                bool pending = false;
                if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
                    napi_value ignored;
                    napi_get_and_clear_last_exception(env, &ignored);
                }
                js_gone_ = true;
                OnJsGone();
            }
        }
    }

    // The JS callback can no longer be called: stop early.
    virtual void OnJsGone() {}

    void OnOK() final {
        pg_settle(this->Env(), deferred_, err_, [this] { return Result(this->Env()); });
    }

    void OnError(const Napi::Error & e) final {
        if (pg_env_can_run_js(this->Env())) deferred_.Reject(e.Value());
    }

    Napi::Promise::Deferred deferred_;
    Napi::FunctionReference on_event_;
    bool                    js_gone_ = false;
};

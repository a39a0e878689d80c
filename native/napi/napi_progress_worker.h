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
        try {
            if (!Run(progress) && err_.ok()) err_.set(PG_ERR_INTERNAL, "operation failed without a message");
        } catch (const std::bad_alloc &) {
            err_.set(PG_ERR_OUT_OF_MEMORY, "out of memory");
        } catch (const std::exception & e) {
            err_.set(PG_ERR_INTERNAL, std::string("internal error: ") + e.what());
        } catch (...) {
            err_.set(PG_ERR_INTERNAL, "internal error: unknown exception");
        }
    }

    void OnProgress(const Event * events, size_t count) final {
        if (on_event_.IsEmpty()) return;
        Napi::Env         env = this->Env();
        Napi::HandleScope scope(env);
        for (size_t i = 0; i < count; ++i) {
            try {
                on_event_.Call(EventArgs(env, events[i]));
            } catch (const Napi::Error &) {
                // The JS side wraps user callbacks and never throws here; nothing to do if it did.
            }
        }
    }

    void OnOK() final {
        Napi::Env         env = this->Env();
        Napi::HandleScope scope(env);
        if (!err_.ok()) {
            deferred_.Reject(pg_make_error(env, err_).Value());
            return;
        }
        try {
            deferred_.Resolve(Result(env));
        } catch (const Napi::Error & e) {
            deferred_.Reject(e.Value());
        }
    }

    void OnError(const Napi::Error & e) final { deferred_.Reject(e.Value()); }

    Napi::Promise::Deferred deferred_;
    Napi::FunctionReference on_event_;
};

// Per-environment state of the addon (one per Node.js main thread or worker_thread).
#pragma once
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

using pg_flag_ptr = std::shared_ptr<std::atomic<bool>>;

struct pg_addon_data {
    Napi::FunctionReference model_ctor;
    Napi::FunctionReference token_ctor;

    // Every abort flag handed to a worker: set when this environment shuts down (a worker thread
    // exiting), so native work stops instead of running on for nobody.
    pg_flag_ptr track(pg_flag_ptr f) {
        std::lock_guard<std::mutex> lock(flags_mu_);
        flags_.erase(std::remove_if(flags_.begin(), flags_.end(), [](const std::weak_ptr<std::atomic<bool>> & w) { return w.expired(); }),
                     flags_.end());
        flags_.push_back(f);
        return f;
    }

    void abort_all() {
        std::lock_guard<std::mutex> lock(flags_mu_);
        for (auto & w : flags_) {
            if (auto f = w.lock()) f->store(true);
        }
    }

  private:
    std::mutex                                    flags_mu_;
    std::vector<std::weak_ptr<std::atomic<bool>>> flags_;
};

inline pg_addon_data * pg_addon(Napi::Env env) {
    return env.GetInstanceData<pg_addon_data>();
}

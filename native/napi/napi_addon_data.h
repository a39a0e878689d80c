// Per-environment state of the addon (one per Node.js main thread or worker_thread).
#pragma once
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

// One operation's abort request: the flag the core polls, and when it was raised (to report how
// long the native side ran on after it).
struct pg_abort_signal {
    std::atomic<bool>    flag{ false };
    std::atomic<int64_t> raised_us{ 0 };

    void raise() {
        if (!flag.exchange(true)) raised_us.store(now_us());
    }
    bool raised() const { return flag.load(); }
    // Milliseconds from the abort request until now (0 when none was made).
    double ms_since_raised() const { return raised() ? (double) (now_us() - raised_us.load()) / 1000.0 : 0.0; }

    static int64_t now_us() {
        return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
    }
};

using pg_flag_ptr = std::shared_ptr<pg_abort_signal>;

struct pg_addon_data {
    Napi::FunctionReference model_ctor;
    Napi::FunctionReference token_ctor;

    // Every abort flag handed to a worker: set when this environment shuts down (a worker thread
    // exiting), so native work stops instead of running on for nobody.
    pg_flag_ptr track(pg_flag_ptr f) {
        std::lock_guard<std::mutex> lock(flags_mu_);
        flags_.erase(std::remove_if(flags_.begin(), flags_.end(), [](const std::weak_ptr<pg_abort_signal> & w) { return w.expired(); }),
                     flags_.end());
        flags_.push_back(f);
        return f;
    }

    void abort_all() {
        std::lock_guard<std::mutex> lock(flags_mu_);
        for (auto & w : flags_) {
            if (auto f = w.lock()) f->raise();
        }
    }

  private:
    std::mutex                                  flags_mu_;
    std::vector<std::weak_ptr<pg_abort_signal>> flags_;
};

inline pg_addon_data * pg_addon(Napi::Env env) {
    return env.GetInstanceData<pg_addon_data>();
}

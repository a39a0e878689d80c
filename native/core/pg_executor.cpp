#include "pg_executor.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

namespace {

struct job {
    const std::function<void()> * fn;
    bool                          done = false;
    std::exception_ptr            error;  // rethrown on the caller's thread
};

struct executor {
    std::mutex              mu;
    std::condition_variable cv_work, cv_done;
    std::deque<job *>       queue;
    std::thread::id         id;

    executor() {
        std::thread t([this] { loop(); });
        id = t.get_id();
        // Never joined: it lives as long as the process (jobs end when their callers abort them).
        t.detach();
    }

    void loop() {
        for (;;) {
            job * j;
            {
                std::unique_lock<std::mutex> lock(mu);
                cv_work.wait(lock, [this] { return !queue.empty(); });
                j = queue.front();
                queue.pop_front();
            }
            try {
                (*j->fn)();
            } catch (...) {
                j->error = std::current_exception();
            }
            {
                std::lock_guard<std::mutex> lock(mu);
                j->done = true;
            }
            cv_done.notify_all();
        }
    }
};

executor & instance() {
    // Leaked on purpose: a static destructor must not run while the thread may still use it.
    static executor * e = new executor();
    return *e;
}

}  // namespace

void pg_run_on_compute_thread(const std::function<void()> & fn) {
    executor & e = instance();
    if (std::this_thread::get_id() == e.id) {
        fn();
        return;
    }
    job j;
    j.fn = &fn;
    {
        std::lock_guard<std::mutex> lock(e.mu);
        e.queue.push_back(&j);
    }
    e.cv_work.notify_one();
    {
        std::unique_lock<std::mutex> lock(e.mu);
        e.cv_done.wait(lock, [&] { return j.done; });
    }
    if (j.error) std::rethrow_exception(j.error);
}

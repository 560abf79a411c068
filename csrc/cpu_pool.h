// A small persistent thread pool for the CPU model ops.
//
// Why not OpenMP: torch ships its own libgomp, and a second OpenMP runtime in the process would run a
// second set of spinning workers beside torch's (oversubscription on every core). Why not torch's
// intra-op pool: it is not reachable without torch headers, and the extension is built without torch.
// So: `threads - 1` workers that sleep on a condition variable between calls (they never spin, so
// they cost nothing while oneDNN's matmuls run), plus the calling thread. Work is handed out as task
// indices from an atomic counter, so a worker that loses its core to another process simply takes
// fewer tasks. Which thread runs a task never changes its result: every task writes its own outputs.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace zk {
namespace cpu {

class Pool {
public:
    // fn(task, thread) for every task in [0, n_tasks), on up to n_threads threads (the caller is
    // thread 0). Tasks are claimed `chunk` at a time. If another call is running (two Python threads
    // using the ops at once), this one runs on the calling thread alone: same results, no deadlock.
    void run(int n_threads, int64_t n_tasks, int64_t chunk, const std::function<void(int64_t, int)>& fn) {
        if (n_tasks <= 0) return;
        n_threads = (int)std::max<int64_t>(1, std::min<int64_t>(n_threads, (n_tasks + chunk - 1) / chunk));
        std::unique_lock<std::mutex> busy(call_mu_, std::try_to_lock);
        if (n_threads == 1 || !busy.owns_lock()) {
            for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
            return;
        }
        ensure_workers(n_threads - 1);
        std::atomic<int64_t> next{0};
        std::exception_ptr error;
        std::mutex error_mu;
        std::function<void(int)> body = [&](int tid) {
            try {
                for (int64_t t0; (t0 = next.fetch_add(chunk)) < n_tasks;)
                    for (int64_t t = t0; t < std::min(n_tasks, t0 + chunk); ++t) fn(t, tid);
            } catch (...) {
                std::lock_guard<std::mutex> g(error_mu);
                if (!error) error = std::current_exception();
                next.store(n_tasks);
            }
        };
        {
            std::lock_guard<std::mutex> g(mu_);
            job_ = &body;
            n_wanted_ = n_threads - 1;
            n_done_ = 0;
            ++generation_;
        }
        cv_.notify_all();
        body(0);
        {
            std::unique_lock<std::mutex> g(mu_);
            done_cv_.wait(g, [&] { return n_done_ == n_wanted_; });
            job_ = nullptr;
        }
        if (error) std::rethrow_exception(error);
    }

    // One pool per process. After a fork the child has none of the parent's threads, so it gets a new
    // pool (the parent's object is abandoned, never destroyed: its threads do not exist there).
    static Pool& instance() {
        static std::mutex mu;
        static Pool* pool = nullptr;
        static pid_t owner = 0;
        std::lock_guard<std::mutex> g(mu);
        if (pool == nullptr || owner != getpid()) {
            pool = new Pool();  // intentionally leaked: workers may outlive static destruction
            owner = getpid();
        }
        return *pool;
    }

private:
    void ensure_workers(int n) {
        while ((int)workers_.size() < n) {
            const int index = (int)workers_.size();
            workers_.emplace_back([this, index] { worker_loop(index); });
            workers_.back().detach();
        }
    }

    void worker_loop(int index) {
        uint64_t seen = 0;
        for (;;) {
            std::function<void(int)>* job = nullptr;
            {
                std::unique_lock<std::mutex> g(mu_);
                cv_.wait(g, [&] { return generation_ != seen; });
                seen = generation_;
                if (index < n_wanted_) job = job_;
            }
            if (job == nullptr) continue;
            (*job)(index + 1);
            {
                std::lock_guard<std::mutex> g(mu_);
                ++n_done_;
            }
            done_cv_.notify_one();
        }
    }

    std::mutex call_mu_;  // one parallel call at a time
    std::mutex mu_;
    std::condition_variable cv_, done_cv_;
    std::vector<std::thread> workers_;
    std::function<void(int)>* job_ = nullptr;
    uint64_t generation_ = 0;
    int n_wanted_ = 0, n_done_ = 0;
};

}  // namespace cpu
}  // namespace zk

// CpuThreadPool: see opt_thread_pool.h.
#include "kernels/cpu/opt_thread_pool.h"

#include <omp.h>

#include <algorithm>

namespace r2::cpu {
namespace {

constexpr int kSpins = 20000;  // polls (with a pause) before sleeping: tens of microseconds

inline void Pause() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

CpuThreadPool& CpuThreadPool::Get() {
  static CpuThreadPool* pool = new CpuThreadPool(std::max(1, omp_get_max_threads()));
  return *pool;
}

CpuThreadPool::CpuThreadPool(int threads) {
  // Each worker starts from the generation of construction, not from whatever it reads when the
  // OS first runs it: a worker scheduled only after the destructor's wake-up would otherwise take
  // that wake-up as already seen and sleep through the join forever.
  const uint32_t start = generation_.load();
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, start] { WorkerLoop(start); });
}

CpuThreadPool::~CpuThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void CpuThreadPool::RunItems(uint32_t gen) {
  const uint64_t tag = static_cast<uint64_t>(gen) << 32;
  uint64_t cur = next_.load();
  while (true) {
    if ((cur & ~uint64_t{0xffffffff}) != tag) return;  // a later job (or none)
    const int64_t i = static_cast<int64_t>(cur & 0xffffffff);
    // items_ may already be the next job's count if this thread slept after loading `cur`; the
    // claim below then fails, because ParallelFor moves next_ off this job's tag before it
    // writes items_ (all sequentially consistent), so a stale index is never claimed.
    const int64_t items = items_.load();
    if (i >= items) return;
    if (!next_.compare_exchange_weak(cur, cur + 1)) continue;
    // Claimed: the job cannot finish (nor fn_ change) before this item is counted done.
    (*fn_.load(std::memory_order_relaxed))(i);
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == items) done_.notify_all();
    cur = next_.load();
  }
}

void CpuThreadPool::WorkerLoop(uint32_t seen) {
  while (true) {
    if (stop_.load()) return;
    uint32_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpins; ++spin) {
      Pause();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      generation_.wait(seen);
      continue;
    }
    if (stop_.load()) return;
    seen = gen;
    RunItems(gen);
  }
}

void CpuThreadPool::ParallelFor(int64_t items, const std::function<void(int64_t)>& fn,
                                bool parallel) {
  std::unique_lock<std::mutex> lock(submit_, std::try_to_lock);
  if (!parallel || items < 2 || workers_.empty() || !lock.owns_lock() || items >= 0xffffffffLL) {
    for (int64_t i = 0; i < items; ++i) fn(i);
    return;
  }
  // Publish the job. First close the previous job's item counter: a worker that loaded it
  // before sleeping must fail its claim rather than pair an old index with the new count (it
  // would run an item twice and count it done, and this call could return while an item of it
  // still runs). Then fn and count, then open the counter, then wake the workers.
  const uint32_t gen = generation_.load() + 1;
  const uint64_t tag = static_cast<uint64_t>(gen) << 32;
  next_.store(tag | 0xffffffff);  // items <= 0xfffffffe: no index claims from here
  fn_.store(&fn, std::memory_order_relaxed);
  items_.store(items);
  done_.store(0, std::memory_order_relaxed);
  next_.store(tag);
  generation_.store(gen, std::memory_order_release);
  generation_.notify_all();
  RunItems(gen);
  int64_t done = done_.load(std::memory_order_acquire);
  for (int spin = 0; done < items && spin < kSpins; ++spin) {
    Pause();
    done = done_.load(std::memory_order_acquire);
  }
  while (done < items) {
    done_.wait(done);
    done = done_.load(std::memory_order_acquire);
  }
}

}  // namespace r2::cpu

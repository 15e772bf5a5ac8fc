#pragma once
// The worker threads of the optimized CPU backend. OpenMP's fork/join barriers make every thread
// of a team wait for the slowest one; on a shared, oversubscribed machine that thread is often
// descheduled and the spinning ones burn the time it needs (measured: 100x slower steps). Here a
// parallel loop hands out items one at a time from an atomic counter: the calling thread always
// works too and finishes alone if the workers do not wake in time; idle workers spin briefly,
// then sleep on a futex (std::atomic::wait).
//
//   CpuThreadPool::Get().ParallelFor(items, [&](int64_t i) { ... });  // returns when all ran
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace r2::cpu {

class CpuThreadPool {
 public:
  // The process-wide pool: omp_get_max_threads() threads in all (OMP_NUM_THREADS is honoured),
  // the caller included.
  static CpuThreadPool& Get();

  explicit CpuThreadPool(int threads);
  ~CpuThreadPool();
  CpuThreadPool(const CpuThreadPool&) = delete;
  CpuThreadPool& operator=(const CpuThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(i) for every i in [0, items), on the calling thread and the workers. Serial when
  // `parallel` is false, when items < 2, or when another thread is already running a loop here.
  void ParallelFor(int64_t items, const std::function<void(int64_t)>& fn, bool parallel = true);

 private:
  // `seen`: the generation the pool had when it was made.
  void WorkerLoop(uint32_t seen);
  // Claims and runs items of job `gen` until none is left.
  void RunItems(uint32_t gen);

  std::vector<std::thread> workers_;
  std::mutex submit_;  // one loop at a time
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint64_t> next_{0};  // (generation << 32) | next item index
  std::atomic<int64_t> done_{0};   // items finished in the current job
  std::atomic<int64_t> items_{0};
  std::atomic<const std::function<void(int64_t)>*> fn_{nullptr};
  std::atomic<bool> stop_{false};
};

}  // namespace r2::cpu

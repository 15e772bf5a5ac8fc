#pragma once
// A few threads that run posted tasks in order of posting. The gRPC front end posts "drain this
// stream" here from the engine's notifier, which must never block the engine thread or run the
// encoding there. Tasks must not block for long. The destructor runs what is queued, then joins.
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace r2::server::grpc_api {

class TaskPool {
 public:
  explicit TaskPool(int threads);
  ~TaskPool();
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  void Post(std::function<void()> task);

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace r2::server::grpc_api

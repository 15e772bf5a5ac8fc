#include "tests/unit/http/fake_engine.h"

#include "absl/strings/str_cat.h"

namespace r2::server::testing {

class FakeHandle : public engine::RequestHandle {
 public:
  FakeHandle(uint64_t id, engine::Request request) : id_(id), request_(std::move(request)) {
    generated_.assign(request_.params.n, 0);
  }

  bool Next(engine::RequestOutput* out, absl::Time deadline) override {
    std::unique_lock<std::mutex> lock(mu_);
    while (!has_output_) {
      if (read_all_) return false;
      if (cv_.wait_until(lock, absl::ToChronoTime(deadline)) == std::cv_status::timeout &&
          !has_output_) {
        return false;
      }
    }
    return TakeLocked(out);
  }

  bool TryNext(engine::RequestOutput* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!has_output_) return false;
    return TakeLocked(out);
  }

  void SetNotifier(std::function<void()> notify) override {
    std::lock_guard<std::mutex> lock(mu_);
    notify_ = std::move(notify);
  }
  void Close() override { closed_.store(true); }
  uint64_t request_id() const override { return id_; }

  // Engine side. Returns false when the request has ended.
  bool Step(int32_t vocab, bool* aborted) {
    engine::RequestOutput out;
    const int32_t max_tokens = request_.params.max_tokens.value_or(8);
    bool ended = closed_.load();
    for (int32_t i = 0; i < request_.params.n; ++i) {
      engine::ChoiceDelta d;
      d.index = i;
      if (ended) {
        d.finish_reason = engine::FinishReason::kAbort;
      } else {
        const int32_t k = generated_[i]++;
        d.token_ids = {static_cast<int32_t>((request_.prompt.size() + k) % vocab)};
        d.text = absl::StrCat("t", k, " ");
        if (request_.params.logprobs) {
          sampling::Logprobs lp;
          lp.logprob = -0.5f;
          lp.rank = 1;
          lp.num_top = request_.params.top_logprobs;
          for (int32_t t = 0; t < lp.num_top; ++t) lp.top[t] = {t, -0.5f - t};
          d.logprobs.push_back(lp);
        }
        if (generated_[i] >= max_tokens) d.finish_reason = engine::FinishReason::kLength;
      }
      out.choices.push_back(std::move(d));
    }
    const bool finished = ended || generated_[0] >= max_tokens;
    if (finished) {
      engine::Usage usage;
      usage.prompt_tokens = static_cast<int32_t>(request_.prompt.size());
      for (int32_t g : generated_) usage.completion_tokens += g;
      out.usage = usage;
    }
    *aborted = ended;
    Push(std::move(out), finished);
    return !finished;
  }

 private:
  bool TakeLocked(engine::RequestOutput* out) {
    *out = std::move(pending_);
    pending_ = engine::RequestOutput();
    has_output_ = false;
    if (finished_) read_all_ = true;
    return true;
  }

  void Push(engine::RequestOutput out, bool finished) {
    std::function<void()> notify;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (engine::ChoiceDelta& d : out.choices) pending_.choices.push_back(std::move(d));
      if (out.usage) pending_.usage = out.usage;
      has_output_ = true;
      finished_ = finished;
      notify = notify_;
    }
    cv_.notify_all();
    if (notify) notify();
  }

  const uint64_t id_;
  engine::Request request_;
  std::vector<int32_t> generated_;
  std::atomic<bool> closed_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  engine::RequestOutput pending_;
  bool has_output_ = false;
  bool finished_ = false;
  bool read_all_ = false;
  std::function<void()> notify_;
};

FakeEngine::FakeEngine(std::chrono::milliseconds step) : step_(step) {
  model_config_.vocab_size = 1024;
  model_config_.max_position_embeddings = 1024;
  config_.max_model_len = 1024;
  thread_ = std::thread([this] { Loop(); });
}

FakeEngine::~FakeEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::shared_ptr<engine::RequestHandle>> FakeEngine::Submit(engine::Request request) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!reject_.ok()) return reject_;
  if (stop_) return absl::UnavailableError("shutting down");
  last_request_ = request;
  auto handle = std::make_shared<FakeHandle>(++submitted_, std::move(request));
  live_.push_back(handle);
  return handle;
}

void FakeEngine::Shutdown(absl::Duration) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

engine::EngineStats FakeEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  engine::EngineStats s;
  s.num_running = static_cast<int32_t>(live_.size());
  s.kv_blocks_total = 100;
  s.kv_blocks_used = static_cast<int32_t>(live_.size());
  return s;
}

void FakeEngine::set_reject(absl::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  reject_ = std::move(status);
}

int FakeEngine::live_requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(live_.size());
}

engine::Request FakeEngine::last_request() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_request_;
}

bool FakeEngine::Step() {
  std::vector<std::shared_ptr<FakeHandle>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return false;
    live = live_;
  }
  std::vector<FakeHandle*> ended;
  for (const std::shared_ptr<FakeHandle>& h : live) {
    bool aborted = false;
    if (!h->Step(static_cast<int32_t>(model_config_.vocab_size), &aborted)) {
      ended.push_back(h.get());
      if (aborted) aborted_.fetch_add(1);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(live_, [&](const std::shared_ptr<FakeHandle>& h) {
    return std::find(ended.begin(), ended.end(), h.get()) != ended.end();
  });
  return true;
}

void FakeEngine::Loop() {
  while (Step()) std::this_thread::sleep_for(step_);
}

}  // namespace r2::server::testing

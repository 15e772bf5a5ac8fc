// Seeded property test: random arrivals, prompt and output lengths, shared prefixes, aborts, n > 1
// forks, priorities, small pools and budgets; about 100,000 steps across seeds. Every step is
// checked by the Harness (budgets, one chunk per sequence, integrity after Schedule and after
// Postprocess, each sequence ends exactly once) and by the FakeRunner's KV oracle (no sequence
// ever reads KV through a wrong block). Runs in a few seconds; CI runs it with the other tests.
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "engine/scheduler/scheduler.h"
#include "gtest/gtest.h"
#include "tests/unit/scheduler/harness.h"

namespace r2::scheduler {
namespace {

using testing::Harness;
using testing::Mix;
using testing::StepRecord;

// Situations the test must have produced at least once across all seeds.
struct Coverage {
  int64_t preemptions = 0;
  int64_t preempted_mid_prefill = 0;  // preempted after a chunk without logits
  int64_t hit_after_preemption = 0;   // re-admitted with a prefix-cache hit
  int64_t chunked_after_hit = 0;      // ... and the rest did not fit in one step
  int64_t full_prompt_hits = 0;       // every full block before the last token hit
  int64_t evictions = 0;
  int64_t block_copies = 0;
  int64_t forks = 0;
  int64_t aborts_running = 0;
  int64_t rejected = 0;
  int64_t steps = 0;
};

struct SeedParams {
  SchedulerConfig config;
  int32_t num_blocks;
  int32_t block_size;
  bool fcfs_only;  // all priorities 0: admission order must equal arrival order
};

SeedParams DrawParams(std::mt19937_64& rng) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  SeedParams p;
  p.block_size = std::vector<int>{1, 2, 4, 4, 8}[uniform(0, 4)];
  p.num_blocks = uniform(96, 192) / p.block_size + uniform(0, 8);
  p.config.max_num_seqs = uniform(1, 12);
  p.config.max_num_batched_tokens = p.config.max_num_seqs + uniform(0, 40);
  p.config.max_model_len = 96;
  p.config.admission_watermark_blocks = uniform(0, 2);
  p.config.enable_prefix_caching = uniform(0, 9) != 0;
  p.fcfs_only = uniform(0, 3) != 0;
  return p;
}

class PropertyRun {
 public:
  PropertyRun(uint64_t seed, Coverage& coverage)
      : rng_(seed),
        params_(DrawParams(rng_)),
        coverage_(coverage),
        h_(params_.config, params_.num_blocks, params_.block_size) {
    for (auto& base : bases_) {
      base.resize(60);
      for (int32_t& t : base) t = Uniform(0, 50000);
    }
    h_.runner.stop_rule = [this](int64_t seq_id, int32_t num_outputs) {
      return num_outputs == stop_at_[seq_id];
    };
  }

  void Run(int32_t arrival_steps) {
    for (int32_t i = 0; i < arrival_steps && !::testing::Test::HasFailure(); ++i) {
      if (Uniform(0, 99) < 30) Arrive();
      if (Uniform(0, 99) < 2) AbortOne();
      Step();
    }
    // Drain: everything admitted ends in bounded time (nothing starves or loops).
    int32_t drain = 0;
    while (!h_.scheduler->idle() && drain < 20000 && !::testing::Test::HasFailure()) {
      Step();
      ++drain;
    }
    ASSERT_TRUE(h_.scheduler->idle()) << "not idle after draining";
    EXPECT_TRUE(h_.live.empty());
    EXPECT_EQ(h_.scheduler->pool().num_in_use(), 0);
    EXPECT_TRUE(h_.scheduler->CheckIntegrity().ok());
    coverage_.evictions += h_.scheduler->pool().num_evictions();
    coverage_.block_copies += static_cast<int64_t>(h_.scheduler->counters().block_copies);
    coverage_.preemptions += static_cast<int64_t>(h_.scheduler->counters().preemptions);
  }

 private:
  int32_t Uniform(int32_t lo, int32_t hi) {
    return std::uniform_int_distribution<int32_t>(lo, hi)(rng_);
  }

  void Arrive() {
    SchedulerRequest r;
    const auto& base = bases_[Uniform(0, 3)];
    r.prompt.assign(base.begin(), base.begin() + Uniform(0, 40));
    const int32_t suffix = Uniform(r.prompt.empty() ? 1 : 0, 12);
    for (int32_t i = 0; i < suffix; ++i) r.prompt.push_back(Uniform(0, 50000));
    r.max_tokens = Uniform(1, 24);
    if (Uniform(0, 99) < 3) r.max_tokens = Uniform(50, 120);  // often too long for the context
    r.n = Uniform(0, 3) == 0 ? Uniform(2, 3) : 1;
    r.priority = params_.fcfs_only ? 0 : Uniform(0, 2);
    const int64_t kv_tokens = static_cast<int64_t>(r.prompt.size()) + r.max_tokens - 1;
    const bool fits =
        static_cast<int64_t>(r.prompt.size()) + r.max_tokens <= params_.config.max_model_len &&
        (kv_tokens + params_.block_size - 1) / params_.block_size <= params_.num_blocks &&
        r.n <= params_.config.max_num_seqs;
    const int32_t n = r.n;
    const int32_t max_tokens = r.max_tokens;
    const int64_t first = h_.Add(r);
    ASSERT_EQ(first >= 0, fits) << h_.last_add_status;
    if (first < 0) {
      ++coverage_.rejected;
      return;
    }
    arrival_order_.push_back(first);
    for (int32_t c = 0; c < n; ++c) {
      // Some sequences stop early (the caller's stop rule), the rest run to max_tokens.
      stop_at_[first + c] = static_cast<int32_t>(Mix(first * 7 + c) % (max_tokens + 4)) + 1;
      max_tokens_[first + c] = max_tokens;
    }
    prompt_len_[first] = static_cast<int32_t>(r.prompt.size());
    n_[first] = n;
  }

  // Whether any choice of the request whose first sequence is first is still live.
  bool RequestLive(int64_t first) const {
    for (int32_t c = 0; c < n_.at(first); ++c) {
      if (h_.live.contains(first + c)) return true;
    }
    return false;
  }

  void AbortOne() {
    if (arrival_order_.empty()) return;
    const int64_t first =
        arrival_order_[Uniform(0, static_cast<int32_t>(arrival_order_.size()) - 1)];
    if (!RequestLive(first)) return;
    if (started_.contains(first)) ++coverage_.aborts_running;
    EXPECT_TRUE(h_.scheduler->Abort(h_.request_of.at(first)).ok());
  }

  void Step() {
    const StepRecord s = h_.Step();
    ++coverage_.steps;
    for (int64_t id : s.preempted) {
      preempted_.insert(id);
      if (!last_had_logits_[id]) ++coverage_.preempted_mid_prefill;
    }
    for (const auto& c : s.chunks) ObserveChunk(c);
    for (const FinishedSequence& f : s.finished) {
      EXPECT_LE(f.num_output_tokens, max_tokens_.at(f.seq_id));
      if (f.reason == FinishReason::kStop) {
        EXPECT_EQ(f.num_output_tokens, stop_at_.at(f.seq_id));
      } else {
        EXPECT_EQ(f.reason, FinishReason::kLength);
        EXPECT_EQ(f.num_output_tokens, max_tokens_.at(f.seq_id));
      }
    }
  }

  void ObserveChunk(const testing::ChunkRecord& c) {
    if (preempted_.erase(c.seq_id) > 0 && c.start > 0) {
      ++coverage_.hit_after_preemption;
      if (!c.needs_logits) ++coverage_.chunked_after_hit;
    }
    last_had_logits_[c.seq_id] = c.needs_logits;
    if (prompt_len_.contains(c.seq_id) && !started_.contains(c.seq_id)) {
      CheckFcfs(c.seq_id);
      started_.insert(c.seq_id);
      const int32_t len = prompt_len_[c.seq_id];
      const int32_t full = (len - 1) / params_.block_size * params_.block_size;
      if (full > 0 && c.start == full) ++coverage_.full_prompt_hits;
    }
    if (c.seq_id != 0 && prompt_len_.contains(c.seq_id) == false && !forked_.contains(c.seq_id)) {
      forked_.insert(c.seq_id);
      ++coverage_.forks;
    }
  }

  // Admission is first come, first served: when a request first runs, every request that arrived
  // before it has been admitted (a forking leader may be admitted without a chunk) or has ended.
  void CheckFcfs(int64_t first) {
    if (!params_.fcfs_only) return;
    while (resolved_ < arrival_order_.size() && Admitted(arrival_order_[resolved_])) ++resolved_;
    for (size_t i = resolved_; i < arrival_order_.size() && arrival_order_[i] < first; ++i) {
      EXPECT_TRUE(Admitted(arrival_order_[i]))
          << "request of sequence " << first << " ran before earlier " << arrival_order_[i];
    }
  }

  bool Admitted(int64_t first) const {
    if (started_.contains(first) || !RequestLive(first)) return true;
    const Sequence* leader = h_.scheduler->FindSequence(first);
    return leader == nullptr || leader->num_cached_tokens >= 0;
  }

  std::mt19937_64 rng_;
  SeedParams params_;
  Coverage& coverage_;
  Harness h_;
  std::vector<int32_t> bases_[4];
  std::vector<int64_t> arrival_order_;  // first sequence id of each accepted request (ascending)
  size_t resolved_ = 0;                 // arrival_order_[0, resolved_) are admitted or ended
  std::map<int64_t, int32_t> stop_at_, max_tokens_, prompt_len_, n_;
  std::map<int64_t, bool> last_had_logits_;
  std::set<int64_t> preempted_, started_, forked_;
};

TEST(SchedulerPropertyTest, RandomWorkloadsKeepEveryInvariant) {
  Coverage coverage;
  constexpr int kSeeds = 25;
  constexpr int kArrivalSteps = 3600;
  for (uint64_t seed = 1; seed <= kSeeds && !HasFailure(); ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    PropertyRun(seed, coverage).Run(kArrivalSteps);
  }
  EXPECT_GE(coverage.steps, 100000);
  EXPECT_GT(coverage.preemptions, 0);
  EXPECT_GT(coverage.preempted_mid_prefill, 0);
  EXPECT_GT(coverage.hit_after_preemption, 0);
  EXPECT_GT(coverage.chunked_after_hit, 0);
  EXPECT_GT(coverage.full_prompt_hits, 0);
  EXPECT_GT(coverage.evictions, 0);
  EXPECT_GT(coverage.block_copies, 0);
  EXPECT_GT(coverage.forks, 0);
  EXPECT_GT(coverage.aborts_running, 0);
  EXPECT_GT(coverage.rejected, 0);
  RecordProperty("steps", static_cast<int>(coverage.steps));
  std::printf(
      "steps %lld, preemptions %lld (mid-prefill %lld), hits after preemption %lld "
      "(chunked %lld), full-prompt hits %lld, evictions %lld, copies %lld, forks %lld, "
      "running aborts %lld, rejected %lld\n",
      (long long)coverage.steps, (long long)coverage.preemptions,
      (long long)coverage.preempted_mid_prefill, (long long)coverage.hit_after_preemption,
      (long long)coverage.chunked_after_hit, (long long)coverage.full_prompt_hits,
      (long long)coverage.evictions, (long long)coverage.block_copies, (long long)coverage.forks,
      (long long)coverage.aborts_running, (long long)coverage.rejected);
}

// Aborting half of 100 running requests at random steps returns the pool to where it was: nothing
// in use, every block free or cached, every reference count zero.
TEST(SchedulerPropertyTest, AbortingHalfOfAHundredRunningRequestsLeaksNothing) {
  SchedulerConfig config;
  config.max_num_seqs = 128;
  config.max_num_batched_tokens = 4096;
  config.max_model_len = 256;
  Harness h(config, /*num_blocks=*/1200, /*block_size=*/4);
  std::mt19937_64 rng(7);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<int32_t> shared(24);
  for (int32_t& t : shared) t = uniform(0, 1000);
  ASSERT_EQ(h.scheduler->pool().num_free(), 1200);
  std::vector<uint64_t> requests;
  for (int i = 0; i < 100; ++i) {
    std::vector<int32_t> prompt(shared.begin(), shared.begin() + uniform(0, 24));
    for (int k = uniform(1, 16); k > 0; --k) prompt.push_back(uniform(0, 1000));
    const int64_t first = h.Add(prompt, uniform(20, 60), i % 10 == 0 ? 2 : 1);
    ASSERT_GE(first, 0);
    requests.push_back(h.request_of.at(first));
  }
  h.Step();
  EXPECT_EQ(h.scheduler->num_waiting(), 0);
  std::shuffle(requests.begin(), requests.end(), rng);
  requests.resize(50);
  std::vector<int> abort_step(50);
  for (int& s : abort_step) s = uniform(0, 18);  // all still running (max_tokens >= 20)
  for (int step = 0; step <= 18; ++step) {
    for (size_t i = 0; i < requests.size(); ++i) {
      if (abort_step[i] == step) EXPECT_TRUE(h.scheduler->Abort(requests[i]).ok());
    }
    h.Step();
  }
  h.RunUntilIdle();
  EXPECT_TRUE(h.live.empty());
  const cache::BlockPool& pool = h.scheduler->pool();
  EXPECT_EQ(pool.num_in_use(), 0);
  EXPECT_EQ(pool.num_free() + pool.num_cached(), pool.num_blocks());
  for (int32_t b = 0; b < pool.num_blocks(); ++b) EXPECT_EQ(pool.ref_count(b), 0);
  EXPECT_TRUE(h.scheduler->CheckIntegrity().ok());
}

}  // namespace
}  // namespace r2::scheduler

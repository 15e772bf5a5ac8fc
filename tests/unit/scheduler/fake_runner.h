#pragma once
// FakeRunner: a model runner stand-in for scheduler tests. It keeps a fake KV cache (one 64-bit
// value per block slot) and "computes" each scheduled chunk the way attention would: the value at
// position p mixes the value read back at p - 1 (through the block table) with token p. A test-side
// oracle computes the same chain from each sequence's true tokens, so any wrong block mapping (a
// bad prefix hit, a missing copy-on-write, a block reused while still referenced) shows up as a
// mismatch. Sampled tokens are a function of the prefix and the choice index, so outputs do not
// depend on batching, chunking or preemption.
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/scheduler/scheduler.h"
#include "gtest/gtest.h"

namespace r2::scheduler::testing {

inline uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class FakeRunner {
 public:
  static constexpr uint64_t kPoison = 0xdeadbeefdeadbeefULL;
  static constexpr uint64_t kSeed = 0x1234;

  FakeRunner(int32_t num_blocks, int32_t block_size, int32_t vocab = 1000)
      : block_size_(block_size), vocab_(vocab), kv_(size_t(num_blocks) * block_size, kPoison) {}

  // Decides whether a sampled token stops its sequence: (seq id, output tokens including it).
  std::function<bool(int64_t, int32_t)> stop_rule = [](int64_t, int32_t) { return false; };

  void AddRequest(const SchedulerRequest& request, int64_t first_seq_id) {
    for (int32_t c = 0; c < request.n; ++c) {
      Oracle& o = oracle_[first_seq_id + c];
      o.tokens = request.prompt;
      o.num_prompt = static_cast<int32_t>(request.prompt.size());
    }
  }

  // Applies the copies, checks and computes every chunk, and samples. Fails the test (gtest
  // non-fatal) on any mismatch.
  std::vector<SampledToken> Run(const SchedulerOutput& out) {
    // In reverse: the scheduler promises the copies are independent, so order must not matter.
    for (auto it = out.block_copies.rbegin(); it != out.block_copies.rend(); ++it) {
      const BlockCopy& copy = *it;
      std::copy_n(kv_.begin() + size_t(copy.src) * block_size_, block_size_,
                  kv_.begin() + size_t(copy.dst) * block_size_);
    }
    std::vector<SampledToken> sampled;
    for (const ScheduledChunk& chunk : out.chunks) {
      Oracle& o = oracle_.at(chunk.seq_id);
      ComputeChunk(chunk, o);
      if (chunk.needs_logits) {
        const uint64_t last = o.kv[chunk.end - 1];
        SampledToken s;
        s.seq_id = chunk.seq_id;
        s.token = static_cast<int32_t>(Mix(last ^ (uint64_t(chunk.choice_index) << 40)) % vocab_);
        o.tokens.push_back(s.token);
        s.stop = stop_rule(chunk.seq_id, static_cast<int32_t>(o.tokens.size()) - o.num_prompt);
        sampled.push_back(s);
      }
    }
    return sampled;
  }

  const std::vector<int32_t>& tokens(int64_t seq_id) const { return oracle_.at(seq_id).tokens; }
  int32_t num_outputs(int64_t seq_id) const {
    const Oracle& o = oracle_.at(seq_id);
    return static_cast<int32_t>(o.tokens.size()) - o.num_prompt;
  }

 private:
  struct Oracle {
    std::vector<int32_t> tokens;
    std::vector<uint64_t> kv;  // oracle KV chain for tokens[0 .. kv.size())
    int32_t num_prompt = 0;
  };

  uint64_t& Slot(absl::Span<const int32_t> table, int32_t pos) {
    return kv_[size_t(table[pos / block_size_]) * block_size_ + pos % block_size_];
  }

  void ComputeChunk(const ScheduledChunk& chunk, Oracle& o) {
    ASSERT_LE(chunk.end, static_cast<int32_t>(o.tokens.size())) << "seq " << chunk.seq_id;
    ASSERT_GE(static_cast<int64_t>(chunk.block_table.size()) * block_size_, chunk.end);
    ASSERT_EQ(chunk.tokens.size(), static_cast<size_t>(chunk.end - chunk.start));
    for (int32_t p = 0; p < chunk.end - chunk.start; ++p) {
      ASSERT_EQ(chunk.tokens[p], o.tokens[chunk.start + p]) << "seq " << chunk.seq_id;
    }
    while (o.kv.size() < static_cast<size_t>(chunk.end)) {
      const size_t p = o.kv.size();
      const uint64_t prev = p == 0 ? kSeed : o.kv[p - 1];
      o.kv.push_back(Mix(prev * 31 + static_cast<uint64_t>(o.tokens[p])));
    }
    // "Attention" reads every earlier position through the block table.
    for (int32_t p = 0; p < chunk.start; ++p) {
      ASSERT_EQ(Slot(chunk.block_table, p), o.kv[p])
          << "seq " << chunk.seq_id << " reads wrong KV at position " << p;
    }
    for (int32_t p = chunk.start; p < chunk.end; ++p) {
      const uint64_t prev = p == 0 ? kSeed : Slot(chunk.block_table, p - 1);
      Slot(chunk.block_table, p) = Mix(prev * 31 + static_cast<uint64_t>(o.tokens[p]));
      ASSERT_EQ(Slot(chunk.block_table, p), o.kv[p]) << "seq " << chunk.seq_id << " pos " << p;
    }
  }

  int32_t block_size_;
  int32_t vocab_;
  std::vector<uint64_t> kv_;
  std::unordered_map<int64_t, Oracle> oracle_;
};

}  // namespace r2::scheduler::testing

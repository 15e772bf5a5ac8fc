#pragma once
// Harness: a Scheduler, a FakeRunner and the per-step checks every scheduler test wants
// (budgets, one chunk per sequence, integrity after each call, each sequence ends once).
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "engine/cache/block_pool.h"
#include "engine/scheduler/scheduler.h"
#include "gtest/gtest.h"
#include "tests/unit/scheduler/fake_runner.h"

namespace r2::scheduler::testing {

// A chunk as plain values (the output's spans die at Postprocess).
struct ChunkRecord {
  int64_t seq_id;
  int32_t start;
  int32_t end;
  bool needs_logits;
  bool is_decode;
  std::vector<int32_t> block_table;
};

struct StepRecord {
  std::vector<ChunkRecord> chunks;
  int32_t num_batched_tokens = 0;
  std::vector<BlockCopy> block_copies;
  std::vector<int64_t> preempted;
  std::vector<int64_t> aborted;
  std::vector<FinishedSequence> finished;

  const ChunkRecord* Find(int64_t seq_id) const {
    for (const ChunkRecord& c : chunks) {
      if (c.seq_id == seq_id) return &c;
    }
    return nullptr;
  }
};

class Harness {
 public:
  Harness(const SchedulerConfig& config, int32_t num_blocks, int32_t block_size)
      : runner(num_blocks, block_size) {
    absl::StatusOr<cache::BlockPool> pool = cache::BlockPool::Create(num_blocks, block_size);
    EXPECT_TRUE(pool.ok()) << pool.status();
    absl::StatusOr<std::unique_ptr<Scheduler>> s = Scheduler::Create(config, *std::move(pool));
    EXPECT_TRUE(s.ok()) << s.status();
    scheduler = *std::move(s);
  }

  // Adds a request; returns its first sequence id (or -1 and records the status on rejection).
  int64_t Add(SchedulerRequest request) {
    request.request_id = next_request_id++;
    SchedulerRequest copy = request;
    absl::StatusOr<int64_t> id = scheduler->AddRequest(std::move(request));
    last_add_status = id.status();
    if (!id.ok()) return -1;
    runner.AddRequest(copy, *id);
    for (int32_t c = 0; c < copy.n; ++c) live.insert(*id + c);
    request_of[*id] = copy.request_id;
    return *id;
  }
  int64_t Add(std::vector<int32_t> prompt, int32_t max_tokens, int32_t n = 1,
              int32_t priority = 0) {
    SchedulerRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.n = n;
    r.priority = priority;
    return Add(std::move(r));
  }

  StepRecord Step() {
    StepRecord rec;
    SchedulerOutput out;
    absl::Status s = scheduler->Schedule(&out);
    EXPECT_TRUE(s.ok()) << s;
    CheckOutput(out);
    EXPECT_TRUE(scheduler->CheckIntegrity().ok()) << scheduler->CheckIntegrity();
    for (const ScheduledChunk& c : out.chunks) {
      rec.chunks.push_back(ChunkRecord{c.seq_id,
                                       c.start,
                                       c.end,
                                       c.needs_logits,
                                       c.is_decode,
                                       {c.block_table.begin(), c.block_table.end()}});
    }
    rec.num_batched_tokens = out.num_batched_tokens;
    rec.block_copies = out.block_copies;
    rec.preempted = out.preempted;
    rec.aborted = out.aborted;
    for (int64_t id : out.aborted) End(id);
    std::vector<SampledToken> sampled = runner.Run(out);
    s = scheduler->Postprocess(sampled, &rec.finished);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_TRUE(scheduler->CheckIntegrity().ok()) << scheduler->CheckIntegrity();
    for (const FinishedSequence& f : rec.finished) End(f.seq_id);
    ++steps;
    return rec;
  }

  // Steps until idle (at most max_steps); returns the number of steps taken.
  int32_t RunUntilIdle(int32_t max_steps = 10000) {
    int32_t n = 0;
    while (!scheduler->idle() && n < max_steps) {
      Step();
      ++n;
    }
    EXPECT_TRUE(scheduler->idle()) << "not idle after " << max_steps << " steps";
    return n;
  }

  void CheckOutput(const SchedulerOutput& out) {
    const SchedulerConfig& config = scheduler->config();
    EXPECT_LE(out.num_batched_tokens, config.max_num_batched_tokens);
    EXPECT_LE(static_cast<int32_t>(out.chunks.size()), config.max_num_seqs);
    EXPECT_LE(scheduler->num_running(), config.max_num_seqs);
    int32_t total = 0;
    std::set<int64_t> ids;
    for (const ScheduledChunk& c : out.chunks) {
      EXPECT_TRUE(ids.insert(c.seq_id).second) << "sequence " << c.seq_id << " scheduled twice";
      EXPECT_LT(c.start, c.end);
      total += c.end - c.start;
    }
    EXPECT_EQ(total, out.num_batched_tokens);
    // Copies must be independent (runnable in any order): no block is both a source and a
    // destination, and no destination repeats.
    std::set<int32_t> sources, destinations;
    for (const BlockCopy& copy : out.block_copies) sources.insert(copy.src);
    for (const BlockCopy& copy : out.block_copies) {
      EXPECT_TRUE(destinations.insert(copy.dst).second)
          << "block " << copy.dst << " copied to twice";
      EXPECT_FALSE(sources.contains(copy.dst))
          << "block " << copy.dst << " is source and destination";
    }
  }

  void End(int64_t seq_id) {
    EXPECT_EQ(live.erase(seq_id), 1u) << "sequence " << seq_id << " ended twice or never began";
    EXPECT_TRUE(ended.insert(seq_id).second);
  }

  std::unique_ptr<Scheduler> scheduler;
  FakeRunner runner;
  std::set<int64_t> live;                  // accepted, not ended
  std::set<int64_t> ended;                 // each exactly once
  std::map<int64_t, uint64_t> request_of;  // first seq id -> request id
  absl::Status last_add_status;
  uint64_t next_request_id = 1;
  int64_t steps = 0;
};

inline std::vector<int32_t> Range(int32_t first, int32_t count) {
  std::vector<int32_t> v(count);
  for (int32_t i = 0; i < count; ++i) v[i] = first + i;
  return v;
}

}  // namespace r2::scheduler::testing

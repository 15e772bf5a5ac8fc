#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_format.h"

namespace r2::scheduler {
namespace {

int32_t CeilDiv(int64_t a, int32_t b) { return static_cast<int32_t>((a + b - 1) / b); }

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerConfig& config,
                                                             cache::BlockPool pool) {
  if (config.max_num_seqs < 1) return absl::InvalidArgumentError("max_num_seqs must be >= 1");
  if (config.max_num_batched_tokens < config.max_num_seqs) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_num_batched_tokens (%d) must be >= max_num_seqs (%d) so every running sequence can "
        "decode in one step",
        config.max_num_batched_tokens, config.max_num_seqs));
  }
  if (config.max_model_len < 2) return absl::InvalidArgumentError("max_model_len must be >= 2");
  if (config.admission_watermark_blocks < 0 ||
      config.admission_watermark_blocks >= pool.num_blocks()) {
    return absl::InvalidArgumentError(
        "admission_watermark_blocks must be in [0, number of KV blocks)");
  }
  return std::unique_ptr<Scheduler>(new Scheduler(config, std::move(pool)));
}

Scheduler::Scheduler(const SchedulerConfig& config, cache::BlockPool pool)
    : config_(config), pool_(std::move(pool)) {
  running_.reserve(config_.max_num_seqs);
  pending_.reserve(config_.max_num_seqs);
}

absl::Status Scheduler::ValidateRequest(const SchedulerRequest& request) const {
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len == 0) return absl::InvalidArgumentError("prompt must not be empty");
  for (int32_t token : request.prompt) {
    if (token < 0) return absl::InvalidArgumentError("prompt token ids must be >= 0");
  }
  if (request.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be >= 1");
  if (request.n < 1 || request.n > config_.max_num_seqs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("n must be in [1, %d] (max_num_seqs)", config_.max_num_seqs));
  }
  if (prompt_len + request.max_tokens > config_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "context length exceeded: prompt (%d tokens) + max_tokens (%d) > max_model_len (%d)",
        prompt_len, request.max_tokens, config_.max_model_len));
  }
  // The last sampled token is never computed, so a choice holds KV for prompt + max_tokens - 1.
  const int32_t blocks = CeilDiv(prompt_len + request.max_tokens - 1, pool_.block_size());
  if (blocks > pool_.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "request needs %d KV blocks (prompt %d + max_tokens %d) but the pool has %d", blocks,
        prompt_len, request.max_tokens, pool_.num_blocks()));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Scheduler::AddRequest(SchedulerRequest request) {
  if (absl::Status s = ValidateRequest(request); !s.ok()) return s;
  if (requests_.contains(request.request_id)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("request %d is already live", request.request_id));
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = next_seq_id_;
  seq->request_id = request.request_id;
  seq->priority = request.priority;
  seq->arrival = next_arrival_++;
  seq->max_tokens = request.max_tokens;
  seq->num_prompt_tokens = static_cast<int32_t>(request.prompt.size());
  seq->tokens = std::move(request.prompt);
  seq->root_hash = cache::RootBlockHash(request.cache_salt);
  seq->ExtendBlockHashes(pool_.block_size());
  seq->fork_width = request.n;
  next_seq_id_ += request.n;
  requests_[request.request_id] = RequestRecord{seq->id, request.n, 0};
  InsertWaiting(seq.get());
  const int64_t id = seq->id;
  sequences_.emplace(id, std::move(seq));
  return id;
}

absl::Status Scheduler::Schedule(SchedulerOutput* out) {
  if (awaiting_postprocess_) {
    return absl::FailedPreconditionError("Schedule called twice without Postprocess");
  }
  out->Clear();
  out->step = ++counters_.steps;
  preempted_this_step_ = false;
  pending_.clear();
  ProcessAborts(out);
  StepBudget budget(config_.max_num_batched_tokens, config_.max_num_seqs);
  ScheduleRunning(budget, out);
  AdmitWaiting(budget, out);
  counters_.block_copies += out->block_copies.size();
  awaiting_postprocess_ = true;
  return idle() ? IdleCheck() : absl::OkStatus();
}

void Scheduler::ProcessAborts(SchedulerOutput* out) {
  for (int64_t id : pending_aborts_) {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) continue;  // finished before the abort took effect
    Sequence* seq = it->second.get();
    if (seq->state == SequenceState::kWaiting) {
      RemoveFromWaiting(seq);
    } else {
      RemoveFromRunning(seq);
    }
    seq->table.ReleaseAll(pool_);
    seq->SetState(SequenceState::kAborted);
    // A leader that had not forked yet ends its unborn choices too.
    for (int32_t c = 0; c < seq->fork_width; ++c) out->aborted.push_back(seq->id + c);
    EndRequestSequences(seq->request_id, seq->fork_width);
    DropSequence(seq);
  }
  pending_aborts_.clear();
}

void Scheduler::ScheduleRunning(StepBudget& budget, SchedulerOutput* out) {
  // One pass in admission order, so blocks go to the oldest first and every preemption victim
  // (always newer) is still unvisited. Tokens go to decodes first: a prefill chunk leaves room for
  // each decode still to come.
  unvisited_decodes_ =
      static_cast<int32_t>(std::count_if(running_.begin(), running_.end(), [](const Sequence* s) {
        return s->state == SequenceState::kDecoding;
      }));
  decided_.clear();
  for (int32_t i = 0; i < static_cast<int32_t>(running_.size()); ++i) {
    Sequence& seq = *running_[i];
    const bool decode = seq.state == SequenceState::kDecoding;
    if (decode) --unvisited_decodes_;
    const int32_t want = budget.Available(seq.compute_target() - seq.num_computed,
                                          /*reserved=*/decode ? 0 : unvisited_decodes_);
    if (want <= 0) continue;
    SlotRequest request{.num_tokens = want, .allow_partial = !decode, .allow_preempt = true};
    const int32_t granted = ReserveSlots(seq, request, out);
    if (granted == 0) {  // no block even after preempting every newer sequence: yield
      Preempt(seq, out);
      --i;
      continue;
    }
    budget.Take(granted);
    seq.scheduled_step = counters_.steps;
    decided_.push_back(RunningChunk{&seq, seq.num_computed + granted, decode});
  }
  for (const bool decode : {true, false}) {  // the output lists decodes first
    for (const RunningChunk& chunk : decided_) {
      if (chunk.is_decode == decode) EmitChunk(*chunk.seq, chunk.end, decode, out);
    }
  }
}

void Scheduler::AdmitWaiting(StepBudget& budget, SchedulerOutput* out) {
  if (preempted_this_step_) return;  // blocks are short; let the running sequences drain first
  const int32_t block_size = pool_.block_size();
  while (!waiting_.empty() && !budget.exhausted()) {
    Sequence& seq = *waiting_.back();
    if (running_weight_ + seq.fork_width > config_.max_num_seqs) return;
    const int32_t num_matched = MatchPrefix(seq);
    // Acquire the matched blocks before allocating, so allocation cannot evict them.
    for (int32_t block : matched_) {
      pool_.Acquire(block);
      seq.table.Append(block);
    }
    seq.table.set_num_registered(num_matched);
    seq.num_computed = num_matched * block_size;
    const int32_t remaining = seq.compute_target() - seq.num_computed;
    int32_t granted = 0;
    if (remaining > 0) {
      SlotRequest request{
          .num_tokens = budget.Available(remaining),
          .allow_partial = true,
          .keep_available = running_.empty() ? 0 : config_.admission_watermark_blocks};
      granted = ReserveSlots(seq, request, out);
      if (granted == 0) {  // does not fit: admission stops here (FCFS)
        seq.table.ReleaseAll(pool_);
        seq.num_computed = 0;
        return;
      }
    }
    waiting_.pop_back();
    seq.SetState(SequenceState::kPrefilling);
    seq.admitted_order = next_admission_++;
    running_.push_back(&seq);
    running_weight_ += seq.fork_width;
    counters_.prefix_cache_queries += seq.num_tokens();
    counters_.prefix_cache_hits += seq.num_computed;
    if (seq.num_cached_tokens < 0) seq.num_cached_tokens = seq.num_computed;
    if (granted > 0) {
      budget.Take(granted);
      seq.scheduled_step = counters_.steps;
      EmitChunk(seq, seq.num_computed + granted, /*is_decode=*/false, out);
    } else {
      Fork(seq);  // a leader whose prompt (but the last token) was all cached
    }
  }
}

int32_t Scheduler::MatchPrefix(const Sequence& seq) {
  matched_.clear();
  if (!config_.enable_prefix_caching) return 0;
  const int32_t block_size = pool_.block_size();
  // Never the whole sequence: its last token must be computed to get logits.
  const int32_t max_blocks = (seq.num_tokens() - 1) / block_size;
  for (int32_t b = 0; b < max_blocks; ++b) {
    const int32_t block = pool_.Lookup(seq.block_hashes[b], seq.block_tokens(b, block_size));
    if (block == cache::kNoBlock) break;
    matched_.push_back(block);
  }
  return static_cast<int32_t>(matched_.size());
}

int32_t Scheduler::ReserveSlots(Sequence& seq, const SlotRequest& request, SchedulerOutput* out) {
  const int32_t block_size = pool_.block_size();
  const int32_t start = seq.num_computed;
  int32_t end = start + request.num_tokens;
  int32_t cow = 0;
  for (;;) {
    end = start + request.num_tokens;
    // Writing into a partly filled block that another table shares: copy it first.
    cow = (start % block_size != 0 && IsShared(seq.table.blocks()[start / block_size])) ? 1 : 0;
    const int32_t need = CeilDiv(end, block_size) - seq.table.size() + cow;
    const int32_t available = pool_.num_available() - request.keep_available;
    if (need <= available) break;
    if (request.allow_partial && available >= cow) {
      const int32_t fit_end = (seq.table.size() + available - cow) * block_size;
      if (fit_end > start) {
        end = std::min(end, fit_end);
        break;
      }
    }
    if (!request.allow_preempt || !PreemptNewestUnscheduled(seq, out)) return 0;
  }
  if (cow) CopyOnWrite(seq, out);
  while (seq.table.size() < CeilDiv(end, block_size)) {
    const int32_t block = pool_.Allocate();
    assert(block != cache::kNoBlock);
    seq.table.Append(block);
  }
  return end - start;
}

bool Scheduler::IsShared(int32_t block) const {
  // References held by tables, not counting this step's pins on copy-on-write sources.
  const auto pins = std::count(pinned_cow_sources_.begin(), pinned_cow_sources_.end(), block);
  return pool_.ref_count(block) - pins > 1;
}

void Scheduler::CopyOnWrite(Sequence& seq, SchedulerOutput* out) {
  const int32_t index = seq.num_computed / pool_.block_size();
  const int32_t fresh = pool_.Allocate();
  assert(fresh != cache::kNoBlock);
  const int32_t shared = seq.table.Exchange(index, fresh);
  // Keep the source allocated until the copy has run (Postprocess), so no later allocation in
  // this step can hand it out as another copy's destination.
  pinned_cow_sources_.push_back(shared);
  out->block_copies.push_back(BlockCopy{shared, fresh});
}

bool Scheduler::PreemptNewestUnscheduled(const Sequence& requester, SchedulerOutput* out) {
  // running_ is in admission order: newer than the requester means later in the vector.
  for (int32_t i = static_cast<int32_t>(running_.size()) - 1; i >= 0; --i) {
    Sequence& victim = *running_[i];
    if (victim.admitted_order <= requester.admitted_order) return false;
    if (victim.scheduled_step == counters_.steps) continue;
    if (victim.state == SequenceState::kDecoding) --unvisited_decodes_;
    Preempt(victim, out);
    return true;
  }
  return false;
}

void Scheduler::Preempt(Sequence& seq, SchedulerOutput* out) {
  RemoveFromRunning(&seq);
  seq.table.ReleaseAll(pool_);  // registered full blocks stay in the prefix cache
  seq.num_computed = 0;
  seq.SetState(SequenceState::kWaiting);
  ++seq.num_preemptions;
  ++counters_.preemptions;
  InsertWaiting(&seq);
  out->preempted.push_back(seq.id);
  preempted_this_step_ = true;
}

void Scheduler::EmitChunk(Sequence& seq, int32_t end, bool is_decode, SchedulerOutput* out) {
  const int32_t start = seq.num_computed;
  ScheduledChunk chunk;
  chunk.seq_id = seq.id;
  chunk.request_id = seq.request_id;
  chunk.choice_index = seq.choice_index;
  chunk.start = start;
  chunk.end = end;
  chunk.needs_logits = end == seq.num_tokens();
  chunk.is_decode = is_decode;
  chunk.tokens = absl::MakeConstSpan(seq.tokens).subspan(start, end - start);
  chunk.block_table = seq.table.blocks();
  out->chunks.push_back(chunk);
  out->num_batched_tokens += end - start;
  pending_.push_back(PendingChunk{&seq, end, chunk.needs_logits});
}

}  // namespace r2::scheduler

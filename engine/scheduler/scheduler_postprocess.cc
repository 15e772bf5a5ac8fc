// Scheduler: Postprocess, aborts, queue bookkeeping and the integrity check. The policy of
// Schedule lives in scheduler.cc.
#include <algorithm>
#include <cassert>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/scheduler/scheduler.h"

namespace r2::scheduler {
namespace {

// Queue order: lower priority value, then earlier arrival, then lower choice index.
auto QueueKey(const Sequence* seq) {
  return std::make_tuple(seq->priority, seq->arrival, seq->choice_index);
}

}  // namespace

absl::Status Scheduler::Abort(uint64_t request_id) {
  auto it = requests_.find(request_id);
  if (it == requests_.end()) {
    return absl::NotFoundError(absl::StrFormat("request %d is not live", request_id));
  }
  for (int32_t c = 0; c < it->second.n; ++c) {
    auto seq_it = sequences_.find(it->second.first_seq_id + c);
    if (seq_it == sequences_.end() || seq_it->second->abort_requested) continue;
    seq_it->second->abort_requested = true;
    pending_aborts_.push_back(seq_it->first);
  }
  return absl::OkStatus();
}

void Scheduler::AbortAll() {
  for (const auto& [request_id, record] : requests_) {
    for (int32_t c = 0; c < record.n; ++c) {
      auto it = sequences_.find(record.first_seq_id + c);
      if (it == sequences_.end() || it->second->abort_requested) continue;
      it->second->abort_requested = true;
      pending_aborts_.push_back(it->first);
    }
  }
}

absl::Status Scheduler::ValidateSampled(absl::Span<const SampledToken> sampled) const {
  size_t next = 0;
  for (const PendingChunk& chunk : pending_) {
    if (!chunk.needs_logits) continue;
    if (next >= sampled.size()) break;
    if (sampled[next].seq_id != chunk.seq->id) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sampled token %d is for sequence %d but the chunk is sequence %d", next,
                          sampled[next].seq_id, chunk.seq->id));
    }
    if (sampled[next].token < 0) return absl::InvalidArgumentError("sampled token id < 0");
    ++next;
  }
  const size_t expected = std::count_if(pending_.begin(), pending_.end(),
                                        [](const PendingChunk& c) { return c.needs_logits; });
  if (sampled.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrFormat("expected %d sampled tokens (one per needs_logits chunk), got %d", expected,
                        sampled.size()));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::Postprocess(absl::Span<const SampledToken> sampled,
                                    std::vector<FinishedSequence>* finished) {
  if (!awaiting_postprocess_) {
    return absl::FailedPreconditionError("Postprocess called without a Schedule");
  }
  if (absl::Status s = ValidateSampled(sampled); !s.ok()) return s;
  finished->clear();
  for (int32_t block : pinned_cow_sources_) pool_.Release(block);
  pinned_cow_sources_.clear();
  size_t next = 0;
  for (const PendingChunk& chunk : pending_) {
    Sequence& seq = *chunk.seq;
    seq.num_computed = chunk.end;
    RegisterFullBlocks(seq);
    if (chunk.needs_logits) {
      ApplyToken(seq, sampled[next++], finished);
    } else if (seq.fork_width > 1 && seq.num_computed == seq.compute_target()) {
      Fork(seq);
    }
  }
  pending_.clear();
  if (!finished->empty()) {
    std::erase_if(running_, [](const Sequence* s) { return s->state == SequenceState::kFinished; });
    for (const FinishedSequence& f : *finished) {
      EndRequestSequences(f.request_id, 1);
      sequences_.erase(f.seq_id);
    }
  }
  awaiting_postprocess_ = false;
  return idle() ? IdleCheck() : absl::OkStatus();
}

void Scheduler::RegisterFullBlocks(Sequence& seq) {
  const int32_t block_size = pool_.block_size();
  const int32_t full = seq.num_computed / block_size;
  if (!config_.enable_prefix_caching || full <= seq.table.num_registered()) return;
  for (int32_t b = seq.table.num_registered(); b < full; ++b) {
    pool_.Register(seq.table.blocks()[b], seq.block_hashes[b], seq.block_tokens(b, block_size));
  }
  seq.table.set_num_registered(full);
}

bool Scheduler::ApplyToken(Sequence& seq, const SampledToken& sampled,
                           std::vector<FinishedSequence>* out) {
  seq.AppendToken(sampled.token, pool_.block_size());
  FinishReason reason = FinishReason::kNone;
  if (sampled.stop) {
    reason = FinishReason::kStop;
  } else if (seq.num_output_tokens() >= seq.max_tokens ||
             seq.num_tokens() >= config_.max_model_len) {
    reason = FinishReason::kLength;
  }
  if (reason == FinishReason::kNone) {
    if (seq.state == SequenceState::kPrefilling) seq.SetState(SequenceState::kDecoding);
    return false;
  }
  seq.table.ReleaseAll(pool_);
  running_weight_ -= seq.fork_width;
  seq.SetState(SequenceState::kFinished);
  out->push_back(FinishedSequence{.seq_id = seq.id,
                                  .request_id = seq.request_id,
                                  .choice_index = seq.choice_index,
                                  .reason = reason,
                                  .num_prompt_tokens = seq.num_prompt_tokens,
                                  .num_output_tokens = seq.num_output_tokens(),
                                  .num_cached_tokens = std::max(seq.num_cached_tokens, 0)});
  return true;
}

void Scheduler::Fork(Sequence& leader) {
  const int32_t width = leader.fork_width;
  leader.fork_width = 1;  // running_weight_ is unchanged: the leader reserved all n slots
  for (int32_t c = 1; c < width; ++c) {
    auto child = std::make_unique<Sequence>();
    child->id = leader.id + c;
    child->request_id = leader.request_id;
    child->choice_index = c;
    child->priority = leader.priority;
    child->arrival = leader.arrival;
    child->max_tokens = leader.max_tokens;
    child->num_prompt_tokens = leader.num_prompt_tokens;
    child->tokens = leader.tokens;
    child->block_hashes = leader.block_hashes;
    child->root_hash = leader.root_hash;
    child->table.ForkFrom(leader.table, pool_);
    child->num_computed = leader.num_computed;
    child->num_cached_tokens = leader.num_cached_tokens;
    child->SetState(SequenceState::kPrefilling);
    child->admitted_order = next_admission_++;
    if (leader.abort_requested) {  // the request was aborted while the leader's step ran
      child->abort_requested = true;
      pending_aborts_.push_back(child->id);
    }
    running_.push_back(child.get());
    sequences_.emplace(child->id, std::move(child));
  }
}

void Scheduler::InsertWaiting(Sequence* seq) {
  // Sorted worst first, so the best is at the back and leaves with pop_back.
  auto pos = std::lower_bound(
      waiting_.begin(), waiting_.end(), seq,
      [](const Sequence* a, const Sequence* b) { return QueueKey(a) > QueueKey(b); });
  waiting_.insert(pos, seq);
}

void Scheduler::RemoveFromWaiting(const Sequence* seq) {
  auto it = std::find(waiting_.begin(), waiting_.end(), seq);
  assert(it != waiting_.end());
  waiting_.erase(it);
}

void Scheduler::RemoveFromRunning(const Sequence* seq) {
  auto it = std::find(running_.begin(), running_.end(), seq);
  assert(it != running_.end());
  running_.erase(it);
  running_weight_ -= seq->fork_width;
}

void Scheduler::DropSequence(const Sequence* seq) { sequences_.erase(seq->id); }

void Scheduler::EndRequestSequences(uint64_t request_id, int32_t count) {
  auto it = requests_.find(request_id);
  assert(it != requests_.end());
  it->second.num_ended += count;
  assert(it->second.num_ended <= it->second.n);
  if (it->second.num_ended == it->second.n) requests_.erase(it);
}

const Sequence* Scheduler::FindSequence(int64_t seq_id) const {
  auto it = sequences_.find(seq_id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

absl::Status Scheduler::IdleCheck() const {
  if (absl::Status s = CheckIntegrity(); !s.ok()) {
    return absl::InternalError(
        absl::StrCat("KV cache integrity check at idle failed: ", s.message()));
  }
  if (pool_.num_in_use() != 0) {
    return absl::InternalError(
        absl::StrFormat("%d KV blocks still in use while idle", pool_.num_in_use()));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::CheckSequence(const Sequence& seq) const {
  const int32_t block_size = pool_.block_size();
  const int32_t table_size = seq.table.size();
  const bool ok = seq.num_computed <= seq.compute_target() &&
                  static_cast<int64_t>(table_size) * block_size >= seq.num_computed &&
                  table_size <= (seq.num_tokens() + block_size - 1) / block_size &&
                  seq.table.num_registered() <= table_size &&
                  seq.block_hashes.size() == static_cast<size_t>(seq.num_tokens() / block_size);
  if (!ok) {
    return absl::InternalError(
        absl::StrFormat("sequence %d: %d tokens, %d computed, %d blocks, %d registered, %d hashes",
                        seq.id, seq.num_tokens(), seq.num_computed, table_size,
                        seq.table.num_registered(), seq.block_hashes.size()));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::CheckIntegrity() const {
  std::vector<int32_t> refs(pool_.num_blocks(), 0);
  for (int32_t block : pinned_cow_sources_) ++refs[block];
  int32_t weight = 0;
  for (size_t i = 0; i < running_.size(); ++i) {
    const Sequence& seq = *running_[i];
    if (!seq.is_running() || (i > 0 && running_[i - 1]->admitted_order >= seq.admitted_order)) {
      return absl::InternalError(absl::StrFormat("running sequence %d is %s or out of order",
                                                 seq.id, SequenceStateName(seq.state)));
    }
    if (absl::Status s = CheckSequence(seq); !s.ok()) return s;
    for (int32_t block : seq.table.blocks()) ++refs[block];
    weight += seq.fork_width;
  }
  for (size_t i = 0; i < waiting_.size(); ++i) {
    const Sequence& seq = *waiting_[i];
    if (seq.state != SequenceState::kWaiting || !seq.table.empty() || seq.num_computed != 0 ||
        (i > 0 && !(QueueKey(waiting_[i - 1]) > QueueKey(&seq)))) {
      return absl::InternalError(
          absl::StrFormat("waiting sequence %d holds blocks or is out of order", seq.id));
    }
    if (absl::Status s = CheckSequence(seq); !s.ok()) return s;
  }
  if (waiting_.size() + running_.size() != sequences_.size()) {
    return absl::InternalError(absl::StrFormat("%d waiting + %d running != %d live sequences",
                                               waiting_.size(), running_.size(),
                                               sequences_.size()));
  }
  if (weight != running_weight_ || weight > config_.max_num_seqs) {
    return absl::InternalError(absl::StrFormat("running weight %d (tracked %d, max_num_seqs %d)",
                                               weight, running_weight_, config_.max_num_seqs));
  }
  return pool_.CheckIntegrity(refs);
}

}  // namespace r2::scheduler

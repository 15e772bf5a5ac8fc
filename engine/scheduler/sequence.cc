#include "engine/scheduler/sequence.h"

#include <cassert>

namespace r2::scheduler {

std::string_view SequenceStateName(SequenceState state) {
  switch (state) {
    case SequenceState::kWaiting:
      return "waiting";
    case SequenceState::kPrefilling:
      return "prefilling";
    case SequenceState::kDecoding:
      return "decoding";
    case SequenceState::kFinished:
      return "finished";
    case SequenceState::kAborted:
      return "aborted";
  }
  return "unknown";
}

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "unknown";
}

bool IsAllowedTransition(SequenceState from, SequenceState to) {
  using S = SequenceState;
  switch (from) {
    case S::kWaiting:
      return to == S::kPrefilling || to == S::kAborted;
    case S::kPrefilling:
      return to == S::kWaiting || to == S::kDecoding || to == S::kFinished || to == S::kAborted;
    case S::kDecoding:
      return to == S::kWaiting || to == S::kFinished || to == S::kAborted;
    case S::kFinished:
    case S::kAborted:
      return false;
  }
  return false;
}

void Sequence::SetState(SequenceState next) {
  assert(IsAllowedTransition(state, next));
  state = next;
}

void Sequence::AppendToken(int32_t token, int32_t block_size) {
  tokens.push_back(token);
  ExtendBlockHashes(block_size);
}

void Sequence::ExtendBlockHashes(int32_t block_size) {
  const size_t full_blocks = tokens.size() / block_size;
  while (block_hashes.size() < full_blocks) {
    const int32_t b = static_cast<int32_t>(block_hashes.size());
    const cache::BlockHash& parent = b == 0 ? root_hash : block_hashes[b - 1];
    block_hashes.push_back(cache::ChainBlockHash(parent, block_tokens(b, block_size)));
  }
}

}  // namespace r2::scheduler

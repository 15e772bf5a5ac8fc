#pragma once
// StepPlan: the per-step metadata of a forward pass, built once on the host from the batch and
// handed unchanged to every layer (positions, cache slots, cu_seqlens, block tables).
//
// Tokens are reordered internally: sequences without cached context (start_pos 0) come first and
// run the plain MLA formulation over rows [0, prefill_rows); sequences with cached context follow
// and run the absorbed formulation against the paged cache over rows [prefill_rows, rows). Every
// op outside attention is row-wise, so the order only matters when mapping rows back.
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/forward_batch.h"

namespace r2::model {

struct StepPlanLimits {
  int64_t vocab_size = 0;
  int64_t max_positions = 0;  // RoPE table length
  int64_t num_blocks = 0;     // cache blocks
  int64_t block_size = 0;
};

struct StepPlan {
  int64_t rows = 0;
  std::vector<int32_t> token_ids;     // [rows], internal order
  std::vector<int32_t> positions;     // [rows]
  std::vector<int64_t> slots;         // [rows] cache slot of each token
  std::vector<int32_t> batch_row;     // [rows] internal row -> row in batch order
  std::vector<int32_t> internal_row;  // [rows] batch row -> internal row

  // Plain prefill group: rows [0, prefill_rows).
  int64_t prefill_rows = 0;
  std::vector<int32_t> prefill_cu_seqlens;  // [prefill seqs + 1]

  // Absorbed group: rows [prefill_rows, rows), offsets relative to prefill_rows.
  std::vector<int32_t> decode_cu_seqlens;    // [decode seqs + 1]
  std::vector<int32_t> decode_kv_lens;       // [decode seqs]
  std::vector<int32_t> decode_block_tables;  // [decode seqs][decode_block_table_stride]
  int64_t decode_block_table_stride = 0;
  int64_t decode_seqs() const { return static_cast<int64_t>(decode_kv_lens.size()); }

  // Internal rows whose logits are wanted, in output order.
  std::vector<int32_t> logit_rows;
};

// Validates the batch (ids in the vocabulary, positions within the RoPE table, block tables long
// enough and inside the cache) and builds the plan; InvalidArgument naming the sequence otherwise.
absl::StatusOr<StepPlan> BuildStepPlan(absl::Span<const SequenceInput> batch, LogitsMode logits,
                                       const StepPlanLimits& limits);

}  // namespace r2::model

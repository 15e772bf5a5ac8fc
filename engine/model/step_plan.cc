#include "engine/model/step_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace r2::model {
namespace {

absl::Status CheckSequence(const SequenceInput& s, int64_t index, const StepPlanLimits& limits) {
  auto error = [index](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", index, ": ", what));
  };
  const int64_t n = static_cast<int64_t>(s.token_ids.size());
  if (n == 0) return error("no new tokens");
  if (s.start_pos < 0) return error("negative start position");
  const int64_t end = s.start_pos + n;
  if (end > limits.max_positions) {
    return error(absl::StrCat("positions up to ", end, " exceed max_position_embeddings ",
                              limits.max_positions));
  }
  for (int32_t id : s.token_ids) {
    if (id < 0 || id >= limits.vocab_size) {
      return error(absl::StrCat("token id ", id, " not in [0, ", limits.vocab_size, ")"));
    }
  }
  const int64_t blocks = (end + limits.block_size - 1) / limits.block_size;
  if (static_cast<int64_t>(s.block_table.size()) < blocks) {
    return error(absl::StrCat(end, " positions need ", blocks, " blocks, the table has ",
                              s.block_table.size()));
  }
  for (int64_t i = 0; i < blocks; ++i) {
    if (s.block_table[i] < 0 || s.block_table[i] >= limits.num_blocks) {
      return error(absl::StrCat("block ", s.block_table[i], " not in the cache (",
                                limits.num_blocks, " blocks)"));
    }
  }
  return absl::OkStatus();
}

// Appends the rows of sequence `s` (batch rows from `batch_offset`) to the plan.
void AppendRows(const SequenceInput& s, int64_t batch_offset, int64_t block_size, StepPlan& plan) {
  for (size_t i = 0; i < s.token_ids.size(); ++i) {
    const int64_t pos = s.start_pos + static_cast<int64_t>(i);
    plan.token_ids.push_back(s.token_ids[i]);
    plan.positions.push_back(static_cast<int32_t>(pos));
    plan.slots.push_back(int64_t{s.block_table[pos / block_size]} * block_size + pos % block_size);
    plan.batch_row.push_back(static_cast<int32_t>(batch_offset + i));
  }
}

}  // namespace

absl::StatusOr<StepPlan> BuildStepPlan(absl::Span<const SequenceInput> batch, LogitsMode logits,
                                       const StepPlanLimits& limits) {
  std::vector<int64_t> offsets;  // first batch row of each sequence
  int64_t rows = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    if (absl::Status s = CheckSequence(batch[b], b, limits); !s.ok()) return s;
    offsets.push_back(rows);
    rows += static_cast<int64_t>(batch[b].token_ids.size());
  }
  StepPlan plan;
  plan.rows = rows;
  plan.prefill_cu_seqlens = {0};
  for (size_t b = 0; b < batch.size(); ++b) {
    if (batch[b].start_pos != 0) continue;
    AppendRows(batch[b], offsets[b], limits.block_size, plan);
    plan.prefill_cu_seqlens.push_back(static_cast<int32_t>(plan.token_ids.size()));
  }
  plan.prefill_rows = static_cast<int64_t>(plan.token_ids.size());
  plan.decode_cu_seqlens = {0};
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t kv_len = batch[b].start_pos + static_cast<int64_t>(batch[b].token_ids.size());
    plan.decode_block_table_stride = std::max(plan.decode_block_table_stride,
                                              (kv_len + limits.block_size - 1) / limits.block_size);
  }
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceInput& s = batch[b];
    if (s.start_pos == 0) continue;
    AppendRows(s, offsets[b], limits.block_size, plan);
    plan.decode_cu_seqlens.push_back(
        static_cast<int32_t>(plan.token_ids.size() - plan.prefill_rows));
    plan.decode_kv_lens.push_back(static_cast<int32_t>(s.start_pos + s.token_ids.size()));
    const size_t first = plan.decode_block_tables.size();
    plan.decode_block_tables.resize(first + plan.decode_block_table_stride, -1);
    const size_t used = std::min<size_t>(s.block_table.size(), plan.decode_block_table_stride);
    std::copy(s.block_table.begin(), s.block_table.begin() + used,
              plan.decode_block_tables.begin() + first);
  }
  plan.internal_row.resize(rows);
  for (int64_t r = 0; r < rows; ++r) plan.internal_row[plan.batch_row[r]] = static_cast<int32_t>(r);
  if (logits == LogitsMode::kAll) {
    plan.logit_rows = plan.internal_row;
  } else if (logits == LogitsMode::kLastPerSequence) {
    for (size_t b = 0; b < batch.size(); ++b) {
      plan.logit_rows.push_back(plan.internal_row[offsets[b] + batch[b].token_ids.size() - 1]);
    }
  }
  return plan;
}

}  // namespace r2::model

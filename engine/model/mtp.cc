// The multi-token-prediction module (spec 4.2): u = eh_proj [enorm(Emb(t_{i+1})); hnorm(h_i)],
// one decoder block at cache layer num_hidden_layers + k, shared_head.norm, head -> t_{i+2}.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/forward_scratch.h"

namespace r2::model {

absl::StatusOr<ForwardOutput> DeepseekModel::ForwardMtp(absl::Span<const SequenceInput> batch,
                                                        absl::Span<const float> hidden,
                                                        LogitsMode logits, PagedKvCache& cache,
                                                        int64_t mtp_index) {
  const ModelConfig& c = config();
  if (mtp_index < 0 || mtp_index >= static_cast<int64_t>(weights_->mtp.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("MTP module ", mtp_index, " not in [0, ", weights_->mtp.size(), ")"));
  }
  auto plan = Plan(batch, logits, cache);
  if (!plan.ok()) return plan.status();
  const int64_t rows = plan->rows, d = c.hidden_size;
  if (static_cast<int64_t>(hidden.size()) != rows * d) {
    return absl::InvalidArgumentError(absl::StrCat("MTP: ", hidden.size() / std::max<int64_t>(d, 1),
                                                   " hidden rows for ", rows, " tokens"));
  }
  const MtpWeights& w = weights_->mtp[mtp_index];
  Scratch& s = *scratch_;
  R2_RETURN_IF_ERROR(BeginStep(*plan));
  const float eps = static_cast<float>(c.rms_norm_eps);
  // cat = [enorm(Emb(t)); hnorm(h)] per row, in internal row order.
  R2_RETURN_IF_ERROR(backend_->Embedding({.table = w.embed,
                                          .ids = s.plan.token_ids,
                                          .rows = rows,
                                          .out = s.cat.data(),
                                          .out_stride = 2 * d}));
  R2_RETURN_IF_ERROR(backend_->RmsNorm({.x = s.cat.data(),
                                        .x_stride = 2 * d,
                                        .y = s.cat.data(),
                                        .y_stride = 2 * d,
                                        .rows = rows,
                                        .dim = d,
                                        .weight = w.enorm,
                                        .eps = eps}));
  // The main model's hidden states come from the host: a device backend gets them uploaded.
  const float* h_in = hidden.data();
  if (!backend_->host_memory()) {
    R2_RETURN_IF_ERROR(
        backend_->CopyToBackend(s.mtp_hidden.data(), hidden.data(), hidden.size() * sizeof(float)));
    h_in = s.mtp_hidden.data();
  }
  R2_RETURN_IF_ERROR(backend_->GatherRows({.x = h_in,
                                           .x_rows = rows,
                                           .index = s.plan.batch_row,
                                           .rows = rows,
                                           .dim = d,
                                           .out = s.cat.data() + d,
                                           .out_stride = 2 * d}));
  R2_RETURN_IF_ERROR(backend_->RmsNorm({.x = s.cat.data() + d,
                                        .x_stride = 2 * d,
                                        .y = s.cat.data() + d,
                                        .y_stride = 2 * d,
                                        .rows = rows,
                                        .dim = d,
                                        .weight = w.hnorm,
                                        .eps = eps}));
  R2_RETURN_IF_ERROR(
      backend_->Linear({.x = s.cat.data(), .rows = rows, .weight = w.eh_proj, .y = s.h.data()}));
  R2_RETURN_IF_ERROR(DecoderLayer(c.num_hidden_layers + mtp_index, w.block, *plan, cache));
  ForwardOutput out;
  R2_RETURN_IF_ERROR(Finish(w.head_norm, w.head, *plan, out));
  return out;
}

}  // namespace r2::model

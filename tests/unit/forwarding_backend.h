#pragma once
// ForwardingBackend: a Backend that hands every call, memory and ops alike, to an inner backend.
// Test doubles derive from it and override only what they observe or change (counting calls,
// refusing an op or a KV cache format, timing one op), so each states just its difference.
#include <memory>
#include <span>
#include <string_view>
#include <utility>

#include "kernels/backend.h"

namespace r2::testing {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  std::string_view name() const override { return inner_->name(); }

  bool host_memory() const override { return inner_->host_memory(); }
  absl::StatusOr<void*> Allocate(size_t bytes) override { return inner_->Allocate(bytes); }
  void Free(void* ptr) override { inner_->Free(ptr); }
  absl::Status CopyToBackend(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyToBackend(dst, src, bytes);
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyToHost(dst, src, bytes);
  }
  absl::Status CopyWithin(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyWithin(dst, src, bytes);
  }
  absl::Status Zero(void* dst, size_t bytes) override { return inner_->Zero(dst, bytes); }
  absl::Status Synchronize() override { return inner_->Synchronize(); }
  absl::StatusOr<MemoryInfo> QueryMemory() override { return inner_->QueryMemory(); }

  absl::Status Embedding(const EmbeddingParams& p) override { return inner_->Embedding(p); }
  absl::Status RmsNorm(const RmsNormParams& p) override { return inner_->RmsNorm(p); }
  absl::Status Linear(const LinearParams& p) override { return inner_->Linear(p); }
  absl::Status LinearGroup(std::span<const LinearParams> products) override {
    return inner_->LinearGroup(products);
  }
  absl::Status Rope(const RopeParams& p) override { return inner_->Rope(p); }
  absl::Status SiluMul(const SiluMulParams& p) override { return inner_->SiluMul(p); }
  absl::Status Add(const AddParams& p) override { return inner_->Add(p); }
  absl::Status GatherRows(const GatherRowsParams& p) override { return inner_->GatherRows(p); }
  absl::Status ScatterAddRows(const ScatterAddRowsParams& p) override {
    return inner_->ScatterAddRows(p);
  }
  absl::Status MoeRoute(const MoeRouteParams& p) override { return inner_->MoeRoute(p); }
  absl::Status MlaPrefillAttention(const MlaPrefillParams& p) override {
    return inner_->MlaPrefillAttention(p);
  }
  absl::Status KvCacheWrite(const KvCacheWriteParams& p) override {
    return inner_->KvCacheWrite(p);
  }
  absl::Status MlaDecodeAttention(const MlaDecodeParams& p) override {
    return inner_->MlaDecodeAttention(p);
  }
  absl::Status MoeExperts(const MoeExpertsParams& p) override { return inner_->MoeExperts(p); }
  absl::Status SampleRows(const SampleRowsParams& p) override { return inner_->SampleRows(p); }
  bool SupportsKvCacheDType(KvCacheDType dtype) const override {
    return inner_->SupportsKvCacheDType(dtype);
  }
  bool SupportsTransposedLinear() const override { return inner_->SupportsTransposedLinear(); }

 protected:
  Backend& inner() { return *inner_; }

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace r2::testing

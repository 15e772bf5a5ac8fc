// The checked-memory backend: reference results over its own allocations, and an InvalidArgument
// naming the op and field for every pointer that is not inside one of them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;
using testing::Store;
using testing::StoredTensor;

class CheckedMemoryBackendTest : public ::testing::Test {
 protected:
  // A backend allocation holding `values` (uploaded through CopyToBackend).
  template <typename T>
  T* Upload(const std::vector<T>& values) {
    auto ptr = backend_->Allocate(values.size() * sizeof(T));
    EXPECT_TRUE(ptr.ok()) << ptr.status();
    EXPECT_TRUE(backend_->CopyToBackend(*ptr, values.data(), values.size() * sizeof(T)).ok());
    owned_.push_back(*ptr);
    return static_cast<T*>(*ptr);
  }
  float* AllocateFloats(size_t n) {
    auto ptr = backend_->Allocate(n * sizeof(float));
    EXPECT_TRUE(ptr.ok()) << ptr.status();
    owned_.push_back(*ptr);
    return static_cast<float*>(*ptr);
  }
  std::vector<float> Download(const float* src, size_t n) {
    std::vector<float> out(n);
    EXPECT_TRUE(backend_->CopyToHost(out.data(), src, n * sizeof(float)).ok());
    return out;
  }
  void TearDown() override {
    for (void* p : owned_) backend_->Free(p);
  }

  std::unique_ptr<Backend> backend_ = MakeCheckedMemoryBackend();
  std::unique_ptr<Backend> reference_ = MakeCpuReferenceBackend();
  std::mt19937 rng_{7};
  std::vector<void*> owned_;
};

void ExpectNotBackendMemory(const absl::Status& st, const std::string& message) {
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(st.message(), message);
}

TEST_F(CheckedMemoryBackendTest, IsADeviceBackendFromTheRegistry) {
  auto made = MakeBackend("checked-memory");
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_FALSE((*made)->host_memory());
  EXPECT_EQ((*made)->name(), "checked-memory");
}

TEST_F(CheckedMemoryBackendTest, FreshAllocationsAreNaNAndFreeMemoryIsTracked) {
  auto before = backend_->QueryMemory();
  ASSERT_TRUE(before.ok());
  float* p = AllocateFloats(1000);
  auto after = backend_->QueryMemory();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(before->free_bytes - after->free_bytes, 4000);
  for (float v : Download(p, 1000)) ASSERT_TRUE(std::isnan(v));
  ASSERT_TRUE(backend_->Zero(p, 4000).ok());
  for (float v : Download(p, 1000)) ASSERT_EQ(v, 0.0f);
  EXPECT_EQ(backend_->Allocate(size_t{8} << 30).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(CheckedMemoryBackendTest, CopiesCheckTheirBackendSide) {
  std::vector<float> host(16, 1.0f);
  float* dev = AllocateFloats(16);
  ExpectNotBackendMemory(backend_->CopyToBackend(host.data(), dev, 64),
                         "CopyToBackend: dst is not backend memory");
  ExpectNotBackendMemory(backend_->CopyToHost(dev, host.data(), 64),
                         "CopyToHost: src is not backend memory");
  // One float past the end of the allocation.
  ExpectNotBackendMemory(backend_->CopyToBackend(dev + 1, host.data(), 64),
                         "CopyToBackend: dst is not backend memory");
  ExpectNotBackendMemory(backend_->CopyWithin(dev, host.data(), 64),
                         "CopyWithin: src is not backend memory");
  EXPECT_TRUE(backend_->CopyWithin(dev + 8, dev, 32).ok());
}

TEST_F(CheckedMemoryBackendTest, LinearMatchesReferenceAndNamesHostPointers) {
  const int64_t rows = 3, in = 20, out = 9;
  std::vector<float> x = RandomFloats(rng_, rows * in);
  StoredTensor w = Store(RandomFloats(rng_, out * in), DType::kBF16, {out, in});
  std::vector<float> expect(rows * out);
  WeightView host_weight{w.view, {}, 128, 128};
  ASSERT_TRUE(
      reference_->Linear({.x = x.data(), .rows = rows, .weight = host_weight, .y = expect.data()})
          .ok());

  float* dx = Upload(x);
  float* dy = AllocateFloats(rows * out);
  WeightView dev_weight = host_weight;
  dev_weight.weight.data = Upload(w.bytes);
  ASSERT_TRUE(backend_->Linear({.x = dx, .rows = rows, .weight = dev_weight, .y = dy}).ok());
  EXPECT_EQ(Download(dy, rows * out), expect);

  ExpectNotBackendMemory(
      backend_->Linear({.x = x.data(), .rows = rows, .weight = dev_weight, .y = dy}),
      "Linear: x is not backend memory");
  ExpectNotBackendMemory(backend_->Linear({.x = dx, .rows = rows, .weight = host_weight, .y = dy}),
                         "Linear: weight is not backend memory");
  // y one row too short for the rows asked for.
  ExpectNotBackendMemory(
      backend_->Linear({.x = dx, .rows = rows, .weight = dev_weight, .y = dy + out}),
      "Linear: y is not backend memory");
  // Like the CUDA backend it stands in for, it keeps weights [out, in]: the transposed layout is
  // refused by name.
  EXPECT_FALSE(backend_->SupportsTransposedLinear());
  const absl::Status st = backend_->Linear(
      {.x = dx, .rows = rows, .weight = dev_weight, .y = dy, .weight_transposed = true});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  EXPECT_NE(st.message().find("transposed"), std::string::npos) << st;
}

TEST_F(CheckedMemoryBackendTest, IndexArraysAndTablesMustBeBackendMemory) {
  const int64_t vocab = 10, dim = 4;
  StoredTensor table = Store(RandomFloats(rng_, vocab * dim), DType::kF32, {vocab, dim});
  TensorView dev_table = table.view;
  dev_table.data = Upload(table.bytes);
  const std::vector<int32_t> ids = {3, 9};
  int32_t* dev_ids = Upload(ids);
  float* out = AllocateFloats(2 * dim);
  ASSERT_TRUE(
      backend_->Embedding({.table = dev_table, .ids = dev_ids, .rows = 2, .out = out}).ok());
  std::vector<float> got = Download(out, 2 * dim);
  EXPECT_EQ(got[dim], table.decoded[9 * dim]);
  ExpectNotBackendMemory(
      backend_->Embedding({.table = dev_table, .ids = ids.data(), .rows = 2, .out = out}),
      "Embedding: ids is not backend memory");
  ExpectNotBackendMemory(
      backend_->Embedding({.table = table.view, .ids = dev_ids, .rows = 2, .out = out}),
      "Embedding: table data is not backend memory");
  ExpectNotBackendMemory(
      backend_->GatherRows(
          {.x = out, .x_rows = 2, .index = ids.data(), .rows = 1, .dim = dim, .out = out + dim}),
      "GatherRows: index is not backend memory");
  const std::vector<int32_t> positions = {0, 1};
  std::vector<float> cos(8, 1.0f), sin(8, 0.0f);
  float* dev_cos = Upload(cos);
  float* dev_sin = Upload(sin);
  ExpectNotBackendMemory(backend_->Rope({.x = out,
                                         .rows = 2,
                                         .token_stride = dim,
                                         .rope_dim = dim,
                                         .positions = Upload(positions),
                                         .cos = cos.data(),
                                         .sin = dev_sin,
                                         .max_positions = 4}),
                         "Rope: cos is not backend memory");
  EXPECT_TRUE(backend_
                  ->Rope({.x = out,
                          .rows = 2,
                          .token_stride = dim,
                          .rope_dim = dim,
                          .positions = Upload(positions),
                          .cos = dev_cos,
                          .sin = dev_sin,
                          .max_positions = 4})
                  .ok());
}

// Every other op names the one host pointer among otherwise valid backend arguments.
TEST_F(CheckedMemoryBackendTest, EveryOpNamesTheHostPointer) {
  float* buf = AllocateFloats(4096);  // room for every activation below
  std::vector<float> host(4096, 0.0f);
  const std::vector<float> ones(64, 1.0f);
  StoredTensor norm = Store(ones, DType::kF32, {8});
  TensorView dev_norm = norm.view;
  dev_norm.data = Upload(norm.bytes);
  ExpectNotBackendMemory(
      backend_->RmsNorm({.x = buf, .y = buf, .rows = 2, .dim = 8, .weight = norm.view}),
      "RmsNorm: weight data is not backend memory");
  ExpectNotBackendMemory(
      backend_->RmsNorm({.x = host.data(), .y = buf, .rows = 2, .dim = 8, .weight = dev_norm}),
      "RmsNorm: x is not backend memory");
  ExpectNotBackendMemory(
      backend_->SiluMul({.gate = buf, .up = host.data(), .out = buf, .rows = 2, .dim = 8}),
      "SiluMul: up is not backend memory");
  ExpectNotBackendMemory(
      backend_->Add({.a = buf, .b = host.data(), .out = buf, .rows = 2, .dim = 8}),
      "Add: b is not backend memory");
  int32_t* dev_index = Upload(std::vector<int32_t>{0, 1});
  const std::vector<float> scale = {1.0f, 2.0f};
  ExpectNotBackendMemory(backend_->ScatterAddRows({.x = buf,
                                                   .index = dev_index,
                                                   .scale = scale.data(),
                                                   .rows = 2,
                                                   .dim = 8,
                                                   .out = buf + 64,
                                                   .out_rows = 2}),
                         "ScatterAddRows: scale is not backend memory");
  const std::vector<float> bias(8, 0.0f);
  ExpectNotBackendMemory(backend_->MoeRoute({.logits = buf,
                                             .rows = 2,
                                             .num_experts = 8,
                                             .bias = bias.data(),
                                             .top_k = 2,
                                             .expert_ids = reinterpret_cast<int32_t*>(buf + 64),
                                             .expert_weights = buf + 128}),
                         "MoeRoute: bias is not backend memory");
  // A 2-block cache of rows 4 + 2 wide, block size 4.
  const PagedLatentCache cache{.data = buf + 1024,
                               .num_blocks = 2,
                               .block_size = 4,
                               .block_stride = 24,
                               .kv_lora_rank = 4,
                               .rope_dim = 2};
  const std::vector<int64_t> slots = {0, 5};
  ExpectNotBackendMemory(backend_->KvCacheWrite({.latent = buf,
                                                 .latent_stride = 6,
                                                 .k_pe = buf + 4,
                                                 .k_pe_stride = 6,
                                                 .slot_mapping = slots.data(),
                                                 .rows = 2,
                                                 .cache = cache}),
                         "KvCacheWrite: slot_mapping is not backend memory");
  PagedLatentCache host_cache = cache;
  host_cache.data = host.data();
  ExpectNotBackendMemory(backend_->KvCacheWrite({.latent = buf,
                                                 .latent_stride = 6,
                                                 .k_pe = buf + 4,
                                                 .k_pe_stride = 6,
                                                 .slot_mapping = Upload(slots),
                                                 .rows = 2,
                                                 .cache = host_cache}),
                         "KvCacheWrite: cache is not backend memory");
  const std::vector<int32_t> tables = {1, 0};
  ExpectNotBackendMemory(
      backend_->MlaDecodeAttention({.q = buf,
                                    .q_token_stride = 6,
                                    .q_head_stride = 6,
                                    .cache = cache,
                                    .block_tables = tables.data(),
                                    .block_table_stride = 2,
                                    .kv_lens = Upload(std::vector<int32_t>{5}),
                                    .cu_seqlens_q = Upload(std::vector<int32_t>{0, 1}),
                                    .num_seqs = 1,
                                    .heads = 1,
                                    .out = buf + 512,
                                    .out_token_stride = 4,
                                    .out_head_stride = 4}),
      "MlaDecodeAttention: block_tables is not backend memory");
  const std::vector<int32_t> cu = {0, 2};
  ExpectNotBackendMemory(backend_->MlaPrefillAttention({.q = buf,
                                                        .q_token_stride = 6,
                                                        .q_head_stride = 6,
                                                        .k_nope = buf,
                                                        .k_nope_token_stride = 4,
                                                        .k_nope_head_stride = 4,
                                                        .k_pe = buf,
                                                        .k_pe_token_stride = 2,
                                                        .v = buf,
                                                        .v_token_stride = 4,
                                                        .v_head_stride = 4,
                                                        .out = buf + 512,
                                                        .out_token_stride = 4,
                                                        .out_head_stride = 4,
                                                        .cu_seqlens_q = Upload(cu),
                                                        .cu_seqlens_k = cu.data(),
                                                        .num_seqs = 1,
                                                        .heads = 1,
                                                        .nope_dim = 4,
                                                        .rope_dim = 2,
                                                        .v_dim = 4}),
                         "MlaPrefillAttention: cu_seqlens_k is not backend memory");
}

TEST_F(CheckedMemoryBackendTest, FreedMemoryIsNoLongerBackendMemory) {
  auto ptr = backend_->Allocate(64);
  ASSERT_TRUE(ptr.ok());
  backend_->Free(*ptr);
  float host = 0;
  ExpectNotBackendMemory(backend_->CopyToHost(&host, *ptr, 4),
                         "CopyToHost: src is not backend memory");
}

}  // namespace
}  // namespace r2

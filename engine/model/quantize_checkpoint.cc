#include "engine/model/quantize_checkpoint.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"
#include "engine/model/quantization_config.h"
#include "engine/model/safetensors.h"
#include "kernels/numeric.h"
#include "kernels/quant_format.h"
#include "nlohmann/json.hpp"

namespace r2::model {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kScaleInvSuffix[] = "_scale_inv";
// Mapped input pages are released once this many bytes of a tensor have been converted.
constexpr size_t kReleaseWindow = size_t{32} << 20;

enum class Action { kCopy, kDequantizeToBF16, kQuantize };

struct OutTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
};

// One input tensor (with its FP8 block scales) and the output tensors it becomes, in file order.
struct Job {
  std::string name;
  TensorView src;
  TensorView scale_inv;  // FP8 sources only
  Action action = Action::kCopy;
  // Smoothing (QuantizeOptions::smooth_attention_output): each decoded row o is multiplied by
  // row_scale[o] and each column j by col_scale[j] before quantizing (empty: none).
  std::vector<float> row_scale, col_scale;
  std::vector<OutTensor> outputs;
  uint64_t input_bytes = 0;
};

struct Shard {
  std::string file_name;
  std::unique_ptr<SafetensorsFile> file;
  std::vector<Job> jobs;
};

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

uint64_t TensorBytes(const TensorView& t) {
  return static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype);
}

// Drops the whole pages inside [begin, end) of a read-only file mapping from memory (they are
// read again from the file if touched).
void ReleasePages(const void* begin, const void* end) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t b = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
  const uintptr_t e = reinterpret_cast<uintptr_t>(end) / page * page;
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

// Row o of a 2-d source as float32 (FP8 with its block_out x block_in block scales).
void DecodeSourceRow(const Job& job, int64_t o, int64_t block_out, int64_t block_in, float* row) {
  const int64_t in = job.src.shape[1];
  if (job.src.dtype != DType::kF8E4M3) {
    for (int64_t j = 0; j < in; ++j) row[j] = ElementAsFloat(job.src, o * in + j);
    return;
  }
  const int64_t scale_cols = job.scale_inv.shape[1];
  for (int64_t j = 0; j < in; ++j) {
    const float s = ElementAsFloat(job.scale_inv, (o / block_out) * scale_cols + j / block_in);
    row[j] = ElementAsFloat(job.src, o * in + j) * s;
  }
}

// Converts jobs into one output file, tracking progress over the whole checkpoint.
class Converter {
 public:
  Converter(const QuantizeOptions& options, int64_t total_bytes, int64_t block_out,
            int64_t block_in)
      : options_(options),
        search_(SearchesScales(options)),
        total_(total_bytes),
        block_out_(block_out),
        block_in_(block_in) {}

  absl::Status WriteShard(const Shard& shard, const std::string& path) {
    Json header = Json::object();
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const Job& job : shard.jobs) {
      for (const OutTensor& t : job.outputs) {
        header[t.name] = {{"dtype", DTypeToSafetensors(t.dtype)},
                          {"shape", t.shape},
                          {"data_offsets", {offset, offset + t.bytes}}};
        offset += t.bytes;
      }
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const std::string tmp = path + ".tmp";
    file_ = std::fopen(tmp.c_str(), "wb");
    if (file_ == nullptr) {
      return absl::PermissionDeniedError(
          absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
    }
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));
    ok_ = std::fwrite(len, 1, 8, file_) == 8 &&
          std::fwrite(text.data(), 1, text.size(), file_) == text.size();
    for (const Job& job : shard.jobs) {
      if (ok_) Run(job);
    }
    ok_ = (std::fclose(file_) == 0) && ok_;
    file_ = nullptr;
    if (!ok_ || std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

  int64_t output_bytes() const { return written_; }

 private:
  void Write(const void* data, size_t bytes) {
    if (bytes == 0 || !ok_) return;
    ok_ = std::fwrite(data, 1, bytes, file_) == bytes;
    written_ += static_cast<int64_t>(bytes);
  }

  // Marks input up to `upto` (inside job.src) as converted: releases pages, reports progress.
  void Consumed(const Job& job, const uint8_t* upto, bool last) {
    if (!last && static_cast<size_t>(upto - released_) < kReleaseWindow) return;
    ReleasePages(released_, upto);
    done_ += upto - released_;
    released_ = upto;
    if (last && !job.scale_inv.empty()) {
      const auto* s = static_cast<const uint8_t*>(job.scale_inv.data);
      ReleasePages(s, s + TensorBytes(job.scale_inv));
      done_ += static_cast<int64_t>(TensorBytes(job.scale_inv));
    }
    if (options_.progress) options_.progress(done_, total_, job.name);
  }

  // Row o of a 2-d source as float32 (FP8 with its block scales), smoothed when the job says so.
  void DecodeRow(const Job& job, int64_t o, float* row) const {
    DecodeSourceRow(job, o, block_out_, block_in_, row);
    const int64_t in = job.src.shape[1];
    if (!job.row_scale.empty()) {
      for (int64_t j = 0; j < in; ++j) row[j] *= job.row_scale[o];
    }
    if (!job.col_scale.empty()) {
      for (int64_t j = 0; j < in; ++j) row[j] *= job.col_scale[j];
    }
  }

  void Run(const Job& job) {
    released_ = static_cast<const uint8_t*>(job.src.data);
    if (job.action == Action::kCopy) {
      const auto* p = static_cast<const uint8_t*>(job.src.data);
      const size_t total = TensorBytes(job.src);
      for (size_t at = 0; at < total && ok_; at += kReleaseWindow) {
        const size_t n = std::min(kReleaseWindow, total - at);
        Write(p + at, n);
        Consumed(job, p + at + n, at + n == total);
      }
      if (total == 0) Consumed(job, p, true);
      return;
    }
    const int64_t out = job.src.shape[0], in = job.src.shape[1];
    const size_t src_row_bytes = static_cast<size_t>(in) * DTypeSize(job.src.dtype);
    const auto* src = static_cast<const uint8_t*>(job.src.data);
    if (job.action == Action::kDequantizeToBF16) {
      std::vector<float> row(in);
      std::vector<uint16_t> bf16(in);
      for (int64_t o = 0; o < out && ok_; ++o) {
        DecodeRow(job, o, row.data());
        for (int64_t j = 0; j < in; ++j) bf16[j] = FloatToBF16(row[j]);
        Write(bf16.data(), bf16.size() * 2);
        Consumed(job, src + (o + 1) * src_row_bytes, o + 1 == out);
      }
      return;
    }
    if (options_.format == QuantFormat::kInt8) {
      QuantizeInt8(job, src, src_row_bytes);
    } else {
      QuantizeInt4(job, src, src_row_bytes);
    }
  }

  // Runs fn(r) for r in [0, n) on up to options_.threads threads (0: one per core). Workers take
  // rows from a shared counter and are joined (no spinning), so a thread descheduled on a busy
  // machine delays only the rows it holds.
  template <typename Fn>
  void ParallelRows(int64_t n, const Fn& fn) const {
    const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
    const int64_t threads = std::min(n, options_.threads > 0 ? int64_t{options_.threads} : hw);
    std::atomic<int64_t> next{0};
    auto work = [&] {
      for (int64_t r = next++; r < n; r = next++) fn(r);
    };
    std::vector<std::thread> helpers;
    for (int64_t t = 1; t < threads; ++t) {
      try {
        helpers.emplace_back(work);
      } catch (const std::system_error&) {
        break;  // no more threads to be had: the ones started (and this one) take all the rows
      }
    }
    work();
    for (std::thread& h : helpers) h.join();
  }

  // Rows per chunk (about 4 MB of float32 rows, 8 to 256 rows): each chunk's rows are decoded and
  // quantized in parallel (the scale search costs ~30 passes over each row), then written in order.
  static int64_t RowChunk(int64_t in) {
    return std::clamp<int64_t>((int64_t{1} << 20) / std::max<int64_t>(in, 1), 8, 256);
  }

  void QuantizeInt8(const Job& job, const uint8_t* src, size_t src_row_bytes) {
    const int64_t out = job.src.shape[0], in = job.src.shape[1], chunk = RowChunk(in);
    std::vector<float> rows(chunk * in);
    std::vector<int8_t> q(chunk * in);
    std::vector<float> scales(out);
    for (int64_t o0 = 0; o0 < out && ok_; o0 += chunk) {
      const int64_t n = std::min(chunk, out - o0);
      ParallelRows(n, [&](int64_t r) {
        float* row = rows.data() + r * in;
        DecodeRow(job, o0 + r, row);
        scales[o0 + r] = search_ ? QuantizeInt8WeightRow(row, in, q.data() + r * in)
                                 : QuantizeInt8Row(row, in, q.data() + r * in);
      });
      Write(q.data(), static_cast<size_t>(n * in));
      Consumed(job, src + (o0 + n) * src_row_bytes, o0 + n == out);
    }
    Write(scales.data(), scales.size() * sizeof(float));
  }

  void QuantizeInt4(const Job& job, const uint8_t* src, size_t src_row_bytes) {
    const int64_t out = job.src.shape[0], in = job.src.shape[1], chunk = RowChunk(in);
    const int64_t group = options_.group_size, groups = QuantGroups(in, group);
    const int64_t row_bytes = PackedU4RowBytes(in);
    std::vector<float> rows(chunk * in);
    std::vector<uint8_t> packed(chunk * row_bytes);
    std::vector<uint16_t> scales(out * groups);
    std::vector<int8_t> row_zeros(out * groups);
    for (int64_t o0 = 0; o0 < out && ok_; o0 += chunk) {
      const int64_t n = std::min(chunk, out - o0);
      std::fill(packed.begin(), packed.end(), 0);
      ParallelRows(n, [&](int64_t r) {
        const int64_t o = o0 + r;
        float* row = rows.data() + r * in;
        uint8_t* packed_row = packed.data() + r * row_bytes;
        std::vector<int32_t> q(group);
        DecodeRow(job, o, row);
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t begin = g * group, m = std::min(group, in - begin);
          const Int4Group result =
              search_ ? QuantizeInt4GroupMinError(row + begin, m, options_.symmetric, q.data())
                      : QuantizeInt4Group(row + begin, m, options_.symmetric, q.data());
          for (int64_t j = 0; j < m; ++j) PackU4(packed_row, begin + j, q[j]);
          scales[o * groups + g] = FloatToBF16(result.scale);
          row_zeros[o * groups + g] = static_cast<int8_t>(result.zero);
        }
      });
      Write(packed.data(), static_cast<size_t>(n * row_bytes));
      Consumed(job, src + (o0 + n) * src_row_bytes, o0 + n == out);
    }
    Write(scales.data(), scales.size() * 2);
    const int64_t shape[2] = {out, in};
    Write(shape, sizeof shape);
    if (!options_.symmetric) {  // packed eight rows per word, down the output dimension
      std::vector<uint32_t> zeros(((out + 7) / 8) * groups, 0);
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t g = 0; g < groups; ++g) {
          zeros[(o / 8) * groups + g] |=
              static_cast<uint32_t>((row_zeros[o * groups + g] + 8) & 0xf) << (4 * (o % 8));
        }
      }
      Write(zeros.data(), zeros.size() * 4);
    }
  }

  const QuantizeOptions& options_;
  const bool search_;
  const int64_t total_;
  const int64_t block_out_, block_in_;
  FILE* file_ = nullptr;
  bool ok_ = true;
  int64_t done_ = 0;
  int64_t written_ = 0;
  const uint8_t* released_ = nullptr;
};

// The output tensors a quantized [out, in] weight "X.weight" becomes.
std::vector<OutTensor> QuantizedOutputs(const std::string& name, int64_t out, int64_t in,
                                        const QuantizeOptions& o) {
  const std::string base = name.substr(0, name.size() - std::string(".weight").size());
  const uint64_t u_out = static_cast<uint64_t>(out), u_in = static_cast<uint64_t>(in);
  if (o.format == QuantFormat::kInt8) {
    return {{name, DType::kI8, {out, in}, u_out * u_in},
            {base + ".weight_scale", DType::kF32, {out, 1}, u_out * 4}};
  }
  const int64_t groups = QuantGroups(in, o.group_size), words = (in + 7) / 8;
  std::vector<OutTensor> result = {
      {base + ".weight_packed", DType::kI32, {out, words}, u_out * words * 4},
      {base + ".weight_scale", DType::kBF16, {out, groups}, u_out * groups * 2},
      {base + ".weight_shape", DType::kI64, {2}, 16}};
  if (!o.symmetric) {
    const int64_t zrows = (out + 7) / 8;
    result.push_back({base + ".weight_zero_point",
                      DType::kI32,
                      {zrows, groups},
                      static_cast<uint64_t>(zrows * groups * 4)});
  }
  return result;
}

// Shard file names of the input, in order.
absl::StatusOr<std::vector<std::string>> ShardNames(const std::string& dir, bool* indexed) {
  const std::string index = dir + "/" + kIndexFile;
  std::error_code ec;
  *indexed = fs::exists(index, ec);
  if (!*indexed) return std::vector<std::string>{kSingleFile};
  auto text = ReadText(index);
  if (!text.ok()) return text.status();
  std::set<std::string> names;
  try {
    const Json index_json = Json::parse(*text);
    for (const auto& [tensor, shard] : index_json.at("weight_map").items()) {
      names.insert(shard.get<std::string>());
    }
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(index, ": ", absl::CHexEscape(e.what())));
  }
  return std::vector<std::string>(names.begin(), names.end());
}

// The modules ("model.layers.L.mlp.X_proj") of the dense (non-MoE) MLP layers, in order.
std::vector<std::string> DenseMlpModules(const ModelConfig& config) {
  std::vector<std::string> modules;
  for (int64_t l = 0; l < config.num_hidden_layers + config.num_nextn_predict_layers; ++l) {
    if (config.is_moe_layer(l)) continue;
    for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
      modules.push_back(absl::StrCat("model.layers.", l, ".mlp.", proj));
    }
  }
  return modules;
}

// Which weights become integers: the linear layers the forward pass reads (MTP eh_proj stays,
// and the dense MLPs unless asked).
std::set<std::string> QuantizedNames(const ModelConfig& config, const QuantizeOptions& o) {
  std::set<std::string> kept;
  if (!o.quantize_dense_mlp) {
    for (const std::string& m : DenseMlpModules(config)) kept.insert(m + ".weight");
  }
  const bool keep_o_proj = KeepsAttentionOutputBF16(o);
  std::set<std::string> names;
  for (const ExpectedTensor& t : ExpectedTensors(config)) {
    if (t.kind == TensorKind::kLinear && !absl::EndsWith(t.name, ".eh_proj.weight") &&
        !kept.count(t.name) &&
        !(keep_o_proj && absl::EndsWith(t.name, ".self_attn.o_proj.weight")) &&
        (!o.filter || o.filter(t.name))) {
      names.insert(t.name);
    }
  }
  if (o.quantize_lm_head && !config.tie_word_embeddings) names.insert("lm_head.weight");
  return names;
}

CompressedTensorsScheme OutputScheme(const ModelConfig& config, const QuantizeOptions& o) {
  CompressedTensorsScheme s;
  s.format = o.format == QuantFormat::kInt8 ? "int-quantized" : "pack-quantized";
  s.num_bits = o.format == QuantFormat::kInt8 ? 8 : 4;
  s.group_size = o.format == QuantFormat::kInt4 ? o.group_size : 0;
  s.symmetric = o.format == QuantFormat::kInt8 || o.symmetric;
  if (!o.quantize_lm_head) s.ignore.push_back("lm_head");
  s.ignore.push_back("re:.*mlp\\.gate$");
  s.ignore.push_back("re:.*eh_proj$");
  if (!o.quantize_dense_mlp) {
    for (const std::string& m : DenseMlpModules(config)) s.ignore.push_back(m);
  }
  if (KeepsAttentionOutputBF16(o)) s.ignore.push_back("re:.*self_attn\\.o_proj$");
  s.observer = SearchesScales(o) ? "mse" : "minmax";
  return s;
}

absl::Status PlanShards(const std::string& in_dir, const ModelConfig& config,
                        const QuantizeOptions& o, std::vector<Shard>& shards) {
  bool indexed = false;
  auto names = ShardNames(in_dir, &indexed);
  if (!names.ok()) return names.status();
  std::map<std::string, TensorView> all;  // every input tensor, for FP8 scales in other shards
  for (const std::string& name : *names) {
    auto file = SafetensorsFile::Open(in_dir + "/" + name);
    if (!file.ok()) return file.status();
    for (const auto& [tensor, entry] : (*file)->entries()) {
      auto view = (*file)->Get(tensor);
      if (!view.ok()) return view.status();
      all[tensor] = *view;
    }
    shards.push_back(Shard{name, *std::move(file), {}});
  }
  const std::set<std::string> quantized = QuantizedNames(config, o);
  for (Shard& shard : shards) {
    std::vector<std::pair<uint64_t, std::string>> order;  // by data offset: sequential reads
    for (const auto& [tensor, entry] : shard.file->entries())
      order.emplace_back(entry.begin, tensor);
    std::sort(order.begin(), order.end());
    for (const auto& [begin, name] : order) {
      const TensorView& view = all[name];
      if (absl::EndsWith(name, kScaleInvSuffix)) {
        auto w = all.find(name.substr(0, name.size() - std::string(kScaleInvSuffix).size()));
        if (w != all.end() && w->second.dtype == DType::kF8E4M3) continue;  // used with it
      }
      Job job{name, view};
      job.input_bytes = TensorBytes(view);
      if (view.dtype == DType::kF8E4M3) {
        auto s = all.find(name + kScaleInvSuffix);
        if (s == all.end()) {
          return absl::NotFoundError(absl::StrCat(in_dir, ": F8_E4M3 tensor '", name, "' has no '",
                                                  name, kScaleInvSuffix, "'"));
        }
        job.scale_inv = s->second;
        job.input_bytes += TensorBytes(s->second);
      }
      const bool two_d = view.shape.size() == 2;
      if (quantized.count(name) && two_d) {
        job.action = Action::kQuantize;
        job.outputs = QuantizedOutputs(name, view.shape[0], view.shape[1], o);
      } else if (view.dtype == DType::kF8E4M3 && two_d) {
        job.action = Action::kDequantizeToBF16;
        job.outputs = {{name, DType::kBF16, view.shape, TensorBytes(view) * 2}};
      } else {
        job.outputs = {{name, view.dtype, view.shape, TensorBytes(view)}};
      }
      shard.jobs.push_back(std::move(job));
    }
  }
  return absl::OkStatus();
}

// The smoothing factors of one attention layer (QuantizeOptions::smooth_attention_output):
// s_c = sqrt(a_c / w_c) for value channel c = h * v_head_dim + d, a_c the L2 norm of kv_b_proj's
// row h * (qk_nope + v) + qk_nope + d, w_c the largest |w| of o_proj's column c, divided by their
// geometric mean; 1 for a channel whose row or column is all zero (or not finite). Reads both
// weights once, releasing their pages as it goes.
absl::Status SmoothAttentionLayer(const ModelConfig& config, Job& kv_b, Job& o_proj,
                                  int64_t block_out, int64_t block_in) {
  const int64_t heads = config.num_attention_heads, nope = config.qk_nope_head_dim,
                dv = config.v_head_dim, channels = heads * dv;
  if (kv_b.src.shape.size() != 2 || o_proj.src.shape.size() != 2 ||
      kv_b.src.shape[0] != heads * (nope + dv) || o_proj.src.shape[1] != channels) {
    return absl::InvalidArgumentError(absl::StrCat(
        kv_b.name, " / ", o_proj.name, ": shapes do not match the config's ", heads,
        " heads of qk_nope_head_dim ", nope, " and v_head_dim ", dv, " (cannot smooth)"));
  }
  std::vector<double> a(channels, 0.0), w(channels, 0.0);
  std::vector<float> row(std::max(kv_b.src.shape[1], o_proj.src.shape[1]));
  for (int64_t c = 0; c < channels; ++c) {
    DecodeSourceRow(kv_b, (c / dv) * (nope + dv) + nope + c % dv, block_out, block_in, row.data());
    double sum = 0;
    for (int64_t j = 0; j < kv_b.src.shape[1]; ++j) sum += double{row[j]} * row[j];
    a[c] = std::sqrt(sum);
  }
  const auto* o_data = static_cast<const uint8_t*>(o_proj.src.data);
  const size_t o_row_bytes = static_cast<size_t>(channels) * DTypeSize(o_proj.src.dtype);
  const uint8_t* released = o_data;
  for (int64_t o = 0; o < o_proj.src.shape[0]; ++o) {
    DecodeSourceRow(o_proj, o, block_out, block_in, row.data());
    for (int64_t c = 0; c < channels; ++c) w[c] = std::max(w[c], double{std::fabs(row[c])});
    const uint8_t* upto = o_data + (o + 1) * o_row_bytes;
    if (static_cast<size_t>(upto - released) >= kReleaseWindow) {
      ReleasePages(released, upto);
      released = upto;
    }
  }
  ReleasePages(released, o_data + o_proj.src.shape[0] * o_row_bytes);
  const auto* kv_data = static_cast<const uint8_t*>(kv_b.src.data);
  ReleasePages(kv_data, kv_data + TensorBytes(kv_b.src));
  std::vector<double> s(channels, 0.0);  // 0: channel left as it is
  double log_sum = 0;
  int64_t used = 0;
  for (int64_t c = 0; c < channels; ++c) {
    const double v = std::sqrt(a[c] / w[c]);
    if (a[c] > 0 && w[c] > 0 && std::isfinite(v) && v > 0) {
      s[c] = v;
      log_sum += std::log(v);
      ++used;
    }
  }
  const double mean = used > 0 ? std::exp(log_sum / used) : 1.0;
  kv_b.row_scale.assign(kv_b.src.shape[0], 1.0f);
  o_proj.col_scale.assign(channels, 1.0f);
  for (int64_t c = 0; c < channels; ++c) {
    const double sc = s[c] > 0 ? s[c] / mean : 1.0;
    kv_b.row_scale[(c / dv) * (nope + dv) + nope + c % dv] = static_cast<float>(1.0 / sc);
    o_proj.col_scale[c] = static_cast<float>(sc);
  }
  return absl::OkStatus();
}

// Sets the smoothing factors of every attention layer whose kv_b_proj and o_proj are both
// quantized (int8 with smooth_attention_output only).
absl::Status PlanSmoothing(const ModelConfig& config, const QuantizeOptions& o, int64_t block_out,
                           int64_t block_in, std::vector<Shard>& shards) {
  if (o.format != QuantFormat::kInt8 || !o.smooth_attention_output) return absl::OkStatus();
  std::map<std::string, Job*> jobs;
  for (Shard& shard : shards) {
    for (Job& job : shard.jobs) {
      if (job.action == Action::kQuantize) jobs[job.name] = &job;
    }
  }
  for (int64_t l = 0; l < config.num_hidden_layers + config.num_nextn_predict_layers; ++l) {
    const std::string prefix = absl::StrCat("model.layers.", l, ".self_attn.");
    auto kv_b = jobs.find(prefix + "kv_b_proj.weight");
    auto o_proj = jobs.find(prefix + "o_proj.weight");
    if (kv_b == jobs.end() || o_proj == jobs.end()) continue;
    if (absl::Status s =
            SmoothAttentionLayer(config, *kv_b->second, *o_proj->second, block_out, block_in);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status WriteConfig(const std::string& in_dir, const std::string& out_dir,
                         const ModelConfig& model_config, const QuantizeOptions& o) {
  auto text = ReadText(in_dir + "/config.json");
  if (!text.ok()) return text.status();
  Json config;
  try {
    config = Json::parse(*text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(in_dir, "/config.json: ", absl::CHexEscape(e.what())));
  }
  config["quantization_config"] = CompressedTensorsConfigJson(OutputScheme(model_config, o));
  return WriteText(out_dir + "/config.json", config.dump(2) + "\n");
}

// Copies the small files beside the weights (tokenizer, generation config, ...).
absl::Status CopyOtherFiles(const std::string& in_dir, const std::string& out_dir) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(in_dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const std::string name = e.path().filename().string();
    if (name == "config.json" || name == kIndexFile || absl::StrContains(name, ".safetensors") ||
        absl::EndsWith(name, ".bin") || absl::EndsWith(name, ".pt") ||
        absl::EndsWith(name, ".pth") || absl::EndsWith(name, ".tmp")) {
      continue;
    }
    fs::copy_file(e.path(), fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::DataLossError(absl::StrCat(name, ": copy failed: ", ec.message()));
  }
  if (ec) return absl::NotFoundError(absl::StrCat(in_dir, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

bool SearchesScales(const QuantizeOptions& options) {
  switch (options.scales) {
    case ScaleChoice::kMaxAbs:
      return false;
    case ScaleChoice::kMinSquaredError:
      return true;
    case ScaleChoice::kAuto:
      break;
  }
  return options.format == QuantFormat::kInt4;
}

bool KeepsAttentionOutputBF16(const QuantizeOptions& options) {
  switch (options.attention_output) {
    case AttentionOutput::kQuantize:
      return false;
    case AttentionOutput::kBF16:
      return true;
    case AttentionOutput::kAuto:
      break;
  }
  return options.format == QuantFormat::kInt8;
}

absl::StatusOr<QuantizeSummary> QuantizeCheckpoint(const std::string& in_dir,
                                                   const std::string& out_dir,
                                                   const QuantizeOptions& options) {
  if (options.format == QuantFormat::kInt4 && options.group_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("int4 group size must be positive, got ", options.group_size));
  }
  std::error_code ec;
  if (fs::exists(out_dir, ec) && fs::equivalent(in_dir, out_dir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the output directory must differ from the input ", in_dir));
  }
  // Validates the whole input (config, headers, every expected tensor) before writing anything.
  auto checkpoint = Checkpoint::Open(in_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  const ModelConfig config = (*checkpoint)->config();
  checkpoint->reset();
  int64_t block_out = 128, block_in = 128;
  if (config.quantization.has_value()) {
    if (config.quantization->quant_method != "fp8") {
      return absl::InvalidArgumentError(absl::StrCat(in_dir, ": already quantized (quant_method \"",
                                                     config.quantization->quant_method,
                                                     "\"); convert a BF16 or FP8 checkpoint"));
    }
    block_out = config.quantization->block_out;
    block_in = config.quantization->block_in;
  }
  std::vector<Shard> shards;
  if (absl::Status s = PlanShards(in_dir, config, options, shards); !s.ok()) return s;
  if (absl::Status s = PlanSmoothing(config, options, block_out, block_in, shards); !s.ok()) {
    return s;
  }
  fs::create_directories(out_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(out_dir, ": ", ec.message()));

  QuantizeSummary summary;
  Json weight_map = Json::object();
  uint64_t total_output = 0;
  for (const Shard& shard : shards) {
    for (const Job& job : shard.jobs) {
      summary.input_bytes += static_cast<int64_t>(job.input_bytes);
      (job.action == Action::kQuantize ? summary.quantized_tensors : summary.kept_tensors)++;
      for (const OutTensor& t : job.outputs) {
        weight_map[t.name] = shard.file_name;
        total_output += t.bytes;
      }
    }
  }
  Converter converter(options, summary.input_bytes, block_out, block_in);
  for (const Shard& shard : shards) {
    absl::Status s = converter.WriteShard(shard, out_dir + "/" + shard.file_name);
    if (!s.ok()) return s;
  }
  summary.output_bytes = converter.output_bytes();
  fs::remove(out_dir + "/" + kIndexFile, ec);  // a stale index would shadow model.safetensors
  if (shards.size() > 1 || shards[0].file_name != kSingleFile) {
    Json index = {{"metadata", {{"total_size", total_output}}}, {"weight_map", weight_map}};
    if (absl::Status s = WriteText(out_dir + "/" + kIndexFile, index.dump(2) + "\n"); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = WriteConfig(in_dir, out_dir, config, options); !s.ok()) return s;
  if (absl::Status s = CopyOtherFiles(in_dir, out_dir); !s.ok()) return s;
  return summary;
}

}  // namespace r2::model

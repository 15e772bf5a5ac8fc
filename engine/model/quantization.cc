#include "engine/model/quantization.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/quant_format.h"

namespace r2::model {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// "X.weight" -> "X".
std::string Base(const std::string& weight_name) {
  return absl::EndsWith(weight_name, ".weight")
             ? weight_name.substr(0, weight_name.size() - std::string(".weight").size())
             : weight_name;
}

absl::Status TensorError(const Checkpoint& c, const std::string& name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(c.dir(), ": tensor '", name, "' ", what));
}

bool IsFloat(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

// A required tensor: NotFound naming what needs it.
absl::StatusOr<TensorView> Required(const Checkpoint& c, const std::string& name,
                                    const std::string& needed_by) {
  if (!c.Has(name)) {
    return absl::NotFoundError(
        absl::StrCat(c.dir(), ": tensor '", name, "' is missing (", needed_by, ")"));
  }
  return c.Tensor(name);
}

int64_t LoadInt(const TensorView& t, int64_t i) {
  const auto* bytes = static_cast<const uint8_t*>(t.data);
  if (t.dtype == DType::kI64) {
    int64_t v;
    std::memcpy(&v, bytes + 8 * i, 8);
    return v;
  }
  int32_t v;
  std::memcpy(&v, bytes + 4 * i, 4);
  return v;
}

// The scheme of config.json, or an error saying the file has integer weights without one, or
// that its ignore list leaves `module` unquantized.
absl::StatusOr<CompressedTensorsScheme> Scheme(const Checkpoint& c, const std::string& tensor,
                                               const std::string& module, int64_t bits) {
  const auto& q = c.config().quantization;
  if (!q.has_value() || q->quant_method != "compressed-tensors") {
    return TensorError(c, tensor,
                       absl::StrCat("holds int", bits,
                                    " weights but config.json has no quantization_config with "
                                    "quant_method \"compressed-tensors\""));
  }
  if (q->compressed.num_bits != bits) {
    return TensorError(
        c, tensor,
        absl::StrCat("holds int", bits, " weights but config.json's ", q->compressed.format,
                     " scheme has num_bits ", q->compressed.num_bits));
  }
  if (IgnoresModule(q->compressed, module)) {
    return TensorError(
        c, tensor,
        absl::StrCat("holds int", bits,
                     " weights but config.json's "
                     "quantization_config.ignore leaves module '",
                     module, "' unquantized (expected a float '", module, ".weight')"));
  }
  return q->compressed;
}

absl::Status CheckScale(const Checkpoint& c, const std::string& name, const TensorView& scale,
                        const WeightView& w) {
  if (!IsFloat(scale.dtype)) {
    return TensorError(c, name,
                       absl::StrCat("has dtype ", std::string(DTypeName(scale.dtype)),
                                    ", expected F32, BF16 or F16"));
  }
  const std::vector<int64_t> want = {w.out_features(), QuantGroups(w.in_features(), w.group_size)};
  if (scale.shape != want) {
    return TensorError(
        c, name,
        absl::StrCat("has shape ", ShapeString(scale.shape), ", expected ", ShapeString(want),
                     " (one scale per output row and group of ", w.group_size, " columns of ",
                     ShapeString(w.weight.shape), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<WeightView> BindInt4(const Checkpoint& c, const std::string& base) {
  const std::string packed_name = base + ".weight_packed";
  auto scheme = Scheme(c, packed_name, base, 4);
  if (!scheme.ok()) return scheme.status();
  auto packed = c.Tensor(packed_name);
  if (!packed.ok()) return packed.status();
  if (packed->dtype != DType::kI32 || packed->shape.size() != 2) {
    return TensorError(
        c, packed_name,
        absl::StrCat("must be a 2-d I32 tensor, got ", std::string(DTypeName(packed->dtype)), " ",
                     ShapeString(packed->shape)));
  }
  const std::string shape_name = base + ".weight_shape";
  auto shape = Required(c, shape_name, "the logical [out, in] of " + packed_name);
  if (!shape.ok()) return shape.status();
  if ((shape->dtype != DType::kI32 && shape->dtype != DType::kI64) ||
      shape->shape != std::vector<int64_t>{2}) {
    return TensorError(c, shape_name, "must be an I32 or I64 tensor of shape [2]");
  }
  const int64_t out = LoadInt(*shape, 0), in = LoadInt(*shape, 1);
  if (out <= 0 || in <= 0 || packed->shape[0] != out || packed->shape[1] != (in + 7) / 8) {
    return TensorError(c, packed_name,
                       absl::StrCat("has shape ", ShapeString(packed->shape), ", expected [", out,
                                    ", ", (in + 7) / 8, "] for weight_shape [", out, ", ", in,
                                    "] (eight int4 values per I32)"));
  }
  if (c.Has(base + ".weight_g_idx")) {
    return TensorError(c, base + ".weight_g_idx",
                       "is present: activation reordering (group actorder) is not supported");
  }
  WeightView w;
  w.weight = TensorView{DType::kU4, {out, in}, packed->data};
  w.group_size = scheme->group_size > 0 ? scheme->group_size : in;
  auto scale = Required(c, base + ".weight_scale", "the scales of " + packed_name);
  if (!scale.ok()) return scale.status();
  if (absl::Status s = CheckScale(c, base + ".weight_scale", *scale, w); !s.ok()) return s;
  w.scale = *scale;
  const std::string zp_name = base + ".weight_zero_point";
  if (c.Has(zp_name)) {
    auto zp = c.Tensor(zp_name);
    if (!zp.ok()) return zp.status();
    const std::vector<int64_t> want = {(out + 7) / 8, w.scale.shape[1]};
    if (zp->dtype != DType::kI32 || zp->shape != want) {
      return TensorError(
          c, zp_name,
          absl::StrCat("must be I32 ", ShapeString(want),
                       " (zero points packed eight per I32 down the rows), got ",
                       std::string(DTypeName(zp->dtype)), " ", ShapeString(zp->shape)));
    }
    w.zero_point = *zp;
  } else if (!scheme->symmetric) {
    return absl::NotFoundError(absl::StrCat(c.dir(), ": tensor '", zp_name,
                                            "' is missing (the asymmetric int4 scheme needs it)"));
  }
  return w;
}

absl::StatusOr<WeightView> BindInt8(const Checkpoint& c, const std::string& weight_name) {
  auto scheme = Scheme(c, weight_name, Base(weight_name), 8);
  if (!scheme.ok()) return scheme.status();
  auto q = c.Tensor(weight_name);
  if (!q.ok()) return q.status();
  if (q->shape.size() != 2 || q->shape[0] <= 0 || q->shape[1] <= 0) {
    return TensorError(c, weight_name, absl::StrCat("is not a matrix: ", ShapeString(q->shape)));
  }
  WeightView w;
  w.weight = *q;
  w.group_size = q->shape[1];
  const std::string base = Base(weight_name);
  auto scale = Required(c, base + ".weight_scale", "the per-channel scales of " + weight_name);
  if (!scale.ok()) return scale.status();
  if (absl::Status s = CheckScale(c, base + ".weight_scale", *scale, w); !s.ok()) return s;
  w.scale = *scale;
  const std::string zp_name = base + ".weight_zero_point";
  if (c.Has(zp_name)) {  // some writers store the (all-zero) zero points of symmetric int8
    auto zp = c.Tensor(zp_name);
    if (!zp.ok()) return zp.status();
    const size_t bytes = static_cast<size_t>(zp->numel()) * DTypeSize(zp->dtype);
    const auto* data = static_cast<const uint8_t*>(zp->data);
    for (size_t i = 0; i < bytes; ++i) {
      if (data[i] != 0) {
        return TensorError(c, zp_name, "is not zero: asymmetric int8 weights are not supported");
      }
    }
  }
  return w;
}

}  // namespace

bool StoredAsIntegerWeight(const Checkpoint& checkpoint, const std::string& weight_name) {
  if (checkpoint.Has(Base(weight_name) + ".weight_packed")) return true;
  if (!checkpoint.Has(weight_name)) return false;
  auto t = checkpoint.Tensor(weight_name);
  return t.ok() && t->dtype == DType::kI8;
}

absl::StatusOr<WeightView> BindIntegerLinear(const Checkpoint& checkpoint,
                                             const std::string& weight_name) {
  const std::string base = Base(weight_name);
  absl::StatusOr<WeightView> w = checkpoint.Has(base + ".weight_packed")
                                     ? BindInt4(checkpoint, base)
                                     : BindInt8(checkpoint, weight_name);
  if (!w.ok()) return w.status();
  if (absl::Status s = CheckIntegerWeight(*w, absl::StrCat(checkpoint.dir(), ": ", weight_name));
      !s.ok()) {
    return s;
  }
  return w;
}

absl::Status ValidateIntegerLinear(const Checkpoint& checkpoint, const std::string& weight_name,
                                   const std::vector<int64_t>& expected_shape) {
  auto w = BindIntegerLinear(checkpoint, weight_name);
  if (!w.ok()) return w.status();
  if (w->weight.shape != expected_shape) {
    return TensorError(checkpoint, weight_name,
                       absl::StrCat("is an integer weight of shape ", ShapeString(w->weight.shape),
                                    ", expected ", ShapeString(expected_shape)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> DequantizeIntegerToFloat(const WeightView& w) {
  if (absl::Status s = CheckIntegerWeight(w, "dequantize"); !s.ok()) return s;
  const int64_t out = w.out_features(), in = w.in_features();
  std::vector<float> result(out * in);
  for (int64_t o = 0; o < out; ++o) DequantizeIntegerRow(w, o, result.data() + o * in);
  return result;
}

}  // namespace r2::model

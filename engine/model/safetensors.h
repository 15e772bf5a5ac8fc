#pragma once
// The safetensors format: [u64 little-endian header length N][N bytes of JSON][data]. The header
// maps tensor names to {dtype, shape, data_offsets: [begin, end)} relative to the data section.
// SafetensorsFile maps the file read-only and validates the whole header before handing out views:
// header length sane, every dtype known, offsets in bounds and non-overlapping, byte size equal to
// shape x dtype (with overflow checks). Errors name the file and the tensor.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace r2::model {

struct SafetensorsEntry {
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section, end exclusive
  uint64_t end = 0;
};

// Validates a whole file image (header and the data section's size). Pure: no I/O; also the
// fuzzing entry point. `source` names the file in messages.
absl::StatusOr<std::map<std::string, SafetensorsEntry>> ParseSafetensors(
    absl::Span<const uint8_t> file, const std::string& source);

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  bool Has(const std::string& name) const { return entries_.count(name) != 0; }
  // A view into the mapping; NotFound naming the file when absent. Data may be unaligned.
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  // The whole file's read-only mapping (starts on a 2 MiB boundary when the system allowed it).
  absl::Span<const uint8_t> mapping() const { return {map_, map_size_}; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, SafetensorsEntry> entries_;
};

// Builds a safetensors file (used by make-tiny-model, quantize and tests). Tensors are written in
// insertion order; the header is padded with spaces to a multiple of 8 bytes.
class SafetensorsWriter {
 public:
  void Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
           std::vector<uint8_t> bytes);
  void SetMetadata(const std::string& key, const std::string& value);
  // Total bytes of tensor data added so far.
  uint64_t data_size() const;
  absl::Status Write(const std::string& path) const;

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Safetensors dtype strings ("BF16", "F8_E4M3", ...) of the dtypes r2serve reads.
absl::StatusOr<DType> DTypeFromSafetensors(const std::string& name);
std::string DTypeToSafetensors(DType dtype);

}  // namespace r2::model

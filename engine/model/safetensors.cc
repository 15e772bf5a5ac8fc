#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace r2::model {
namespace {

using Json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status FileError(const std::string& source, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
}

absl::Status TensorError(const std::string& source, const std::string& name,
                         absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": tensor '", name, "': ", message));
}

// A non-negative JSON integer that fits in uint64 (and int64 when `signed64`).
bool ReadUnsigned(const Json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

absl::Status ParseShape(const Json& v, const std::string& source, const std::string& name,
                        std::vector<int64_t>* shape) {
  if (!v.is_array()) return TensorError(source, name, "'shape' is not a list");
  for (const Json& d : v) {
    uint64_t dim = 0;
    if (!ReadUnsigned(d, &dim) || dim > static_cast<uint64_t>(INT64_MAX)) {
      return TensorError(source, name,
                         absl::StrCat("'shape' has ", d.dump(), ", not a non-negative integer"));
    }
    shape->push_back(static_cast<int64_t>(dim));
  }
  return absl::OkStatus();
}

// Bytes of a tensor of `shape` x `dtype`; false on overflow.
bool ByteSize(const std::vector<int64_t>& shape, DType dtype, uint64_t* bytes) {
  uint64_t n = DTypeSize(dtype);
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *bytes = n;
  return true;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const Json& v, const std::string& source,
                                            const std::string& name, uint64_t data_size) {
  if (!v.is_object()) return TensorError(source, name, "entry is not a JSON object");
  SafetensorsEntry e;
  auto dtype_it = v.find("dtype");
  if (dtype_it == v.end() || !dtype_it->is_string()) {
    return TensorError(source, name, "'dtype' missing or not a string");
  }
  absl::StatusOr<DType> dtype = DTypeFromSafetensors(dtype_it->get<std::string>());
  if (!dtype.ok()) return TensorError(source, name, dtype.status().message());
  e.dtype = *dtype;
  auto shape_it = v.find("shape");
  if (shape_it == v.end()) return TensorError(source, name, "'shape' missing");
  if (absl::Status s = ParseShape(*shape_it, source, name, &e.shape); !s.ok()) return s;
  auto off_it = v.find("data_offsets");
  if (off_it == v.end() || !off_it->is_array() || off_it->size() != 2 ||
      !ReadUnsigned((*off_it)[0], &e.begin) || !ReadUnsigned((*off_it)[1], &e.end)) {
    return TensorError(source, name,
                       "'data_offsets' must be [begin, end] of non-negative integers");
  }
  if (e.end < e.begin) {
    return TensorError(source, name,
                       absl::StrCat("data_offsets end ", e.end, " < begin ", e.begin));
  }
  if (e.end > data_size) {
    return TensorError(source, name,
                       absl::StrCat("data_offsets [", e.begin, ", ", e.end,
                                    ") run past the data section of ", data_size, " bytes"));
  }
  uint64_t bytes = 0;
  if (!ByteSize(e.shape, e.dtype, &bytes)) {
    return TensorError(source, name, "shape x dtype size overflows 64 bits");
  }
  if (e.end - e.begin != bytes) {
    return TensorError(source, name,
                       absl::StrCat("data_offsets span ", e.end - e.begin, " bytes but shape [",
                                    absl::StrJoin(e.shape, ", "), "] x ",
                                    DTypeToSafetensors(e.dtype), " needs ", bytes));
  }
  return e;
}

absl::Status CheckMetadata(const Json& v, const std::string& source) {
  if (!v.is_object()) return FileError(source, "'__metadata__' is not a JSON object");
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_string()) {
      return FileError(source,
                       absl::StrCat("'__metadata__' value of '", it.key(), "' is not a string"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckNoOverlap(const std::map<std::string, SafetensorsEntry>& entries,
                            const std::string& source) {
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> sorted;
  for (const auto& [name, e] : entries) {
    if (e.end > e.begin) sorted.emplace_back(&name, &e);  // empty tensors occupy no bytes
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].second->begin < sorted[i - 1].second->end) {
      return TensorError(source, *sorted[i].first,
                         absl::StrCat("data overlaps tensor '", *sorted[i - 1].first, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DType> DTypeFromSafetensors(const std::string& name) {
  static const std::pair<const char*, DType> kTable[] = {
      {"BF16", DType::kBF16},      {"F16", DType::kF16}, {"F32", DType::kF32},
      {"F8_E4M3", DType::kF8E4M3}, {"I8", DType::kI8},   {"U8", DType::kU8},
      {"I32", DType::kI32},        {"I64", DType::kI64},
  };
  for (const auto& [text, dtype] : kTable) {
    if (name == text) return dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported dtype '", name, "' (supported: BF16, F16, F32, F8_E4M3, I8, U8, I32, I64)"));
}

std::string DTypeToSafetensors(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF32:
      return "F32";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

absl::StatusOr<std::map<std::string, SafetensorsEntry>> ParseSafetensors(
    absl::Span<const uint8_t> file, const std::string& source) {
  if (file.size() < 8) {
    return FileError(source, absl::StrCat("file is ", file.size(),
                                          " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file[i];
  if (header_len > kMaxHeaderBytes) {
    return FileError(source, absl::StrCat("header length ", header_len, " exceeds the ",
                                          kMaxHeaderBytes, "-byte limit"));
  }
  if (header_len > file.size() - 8) {
    return FileError(source,
                     absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                  file.size(), " bytes): truncated?"));
  }
  const char* header = reinterpret_cast<const char*>(file.data() + 8);
  Json root;
  try {
    root = Json::parse(header, header + header_len);
  } catch (const Json::parse_error& e) {
    return FileError(source, absl::StrCat("header is not valid JSON (at byte ", e.byte,
                                          " of the header): ", absl::CHexEscape(e.what())));
  } catch (const Json::exception& e) {
    return FileError(source,
                     absl::StrCat("header is not valid JSON: ", absl::CHexEscape(e.what())));
  }
  if (!root.is_object()) {
    return FileError(source,
                     absl::StrCat("header is a JSON ", root.type_name(), ", not an object"));
  }
  const uint64_t data_size = file.size() - 8 - header_len;
  std::map<std::string, SafetensorsEntry> entries;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (absl::Status s = CheckMetadata(it.value(), source); !s.ok()) return s;
      continue;
    }
    absl::StatusOr<SafetensorsEntry> e = ParseEntry(it.value(), source, it.key(), data_size);
    if (!e.ok()) return e.status();
    entries.emplace(it.key(), *std::move(e));
  }
  if (absl::Status s = CheckNoOverlap(entries, source); !s.ok()) return s;
  return entries;
}

// ---- SafetensorsFile -------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* map = nullptr;
  if (size > 0) {
    // On a 2 MiB boundary, so that the weights can later move into huge pages in place
    // (huge_page_weights.h): reserve the span plus 2 MiB, map the file at its aligned start.
    const size_t align = size_t{2} << 20;
    void* reserve = ::mmap(nullptr, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reserve != MAP_FAILED) {
      const auto lo = reinterpret_cast<uintptr_t>(reserve), hi = lo + size + align;
      const uintptr_t at = (lo + align - 1) & ~(uintptr_t{align} - 1);
      map = ::mmap(reinterpret_cast<void*>(at), size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
      const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
      const uintptr_t end = at + (size + page - 1) / page * page;
      if (map == MAP_FAILED) {
        const int err = errno;
        ::munmap(reserve, size + align);
        errno = err;
      } else {
        if (at > lo) ::munmap(reserve, at - lo);
        if (hi > end) ::munmap(reinterpret_cast<void*>(end), hi - end);
      }
    } else {
      map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    }
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
    }
  }
  ::close(fd);
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = static_cast<const uint8_t*>(map);
  file->map_size_ = size;
  auto entries = ParseSafetensors(absl::MakeConstSpan(file->map_, size), path);
  if (!entries.ok()) return entries.status();  // the destructor unmaps
  file->entries_ = *std::move(entries);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file->map_[i];
  file->data_ = file->map_ + 8 + header_len;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

absl::StatusOr<TensorView> SafetensorsFile::Get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  }
  TensorView view;
  view.dtype = it->second.dtype;
  view.shape = it->second.shape;
  view.data = data_ + it->second.begin;
  return view;
}

// ---- SafetensorsWriter -----------------------------------------------------------------------

void SafetensorsWriter::Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            std::vector<uint8_t> bytes) {
  tensors_.push_back({name, dtype, std::move(shape), std::move(bytes)});
}

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

uint64_t SafetensorsWriter::data_size() const {
  uint64_t total = 0;
  for (const Pending& t : tensors_) total += t.bytes.size();
  return total;
}

namespace {

std::string Dump(const Json& v) { return v.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string HeaderJson(const std::map<std::string, std::string>& metadata,
                       const std::vector<std::pair<std::string, std::string>>& tensors) {
  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + Dump(Json(metadata));
  for (const auto& [name, body] : tensors) {
    if (header.size() > 1) header += ",";
    header += Dump(Json(name)) + ":" + body;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  return header;
}

}  // namespace

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  std::vector<std::pair<std::string, std::string>> bodies;
  uint64_t offset = 0;
  for (const Pending& t : tensors_) {
    uint64_t bytes = 0;
    if (!ByteSize(t.shape, t.dtype, &bytes) || bytes != t.bytes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", t.name, "': ", t.bytes.size(),
                       " bytes of data do not match its shape and dtype"));
    }
    Json body = {{"dtype", DTypeToSafetensors(t.dtype)},
                 {"shape", t.shape},
                 {"data_offsets", {offset, offset + bytes}}};
    bodies.emplace_back(t.name, body.dump());
    offset += bytes;
  }
  const std::string header = HeaderJson(metadata_, bodies);
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size();
  for (const Pending& t : tensors_) {
    if (t.bytes.empty()) continue;  // fwrite of a null buffer is undefined, even for 0 bytes
    ok = ok && std::fwrite(t.bytes.data(), 1, t.bytes.size(), f) == t.bytes.size();
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace r2::model

#pragma once
// SHA-256 (FIPS 180-4), the prefix cache's block hash. Written here because the dependency list has
// no crypto library; checked against the FIPS 180-4 example vectors in
// tests/unit/cache/sha256_test.cc.
//
// Usage:
//   Sha256 h;
//   h.Update(bytes_a);
//   h.Update(bytes_b);
//   Sha256::Digest d = h.Finish();  // the object must not be updated again afterwards
//
// Not thread-safe per object; objects are independent.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace r2::cache {

class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256();
  void Update(const void* data, size_t size);
  void Update(std::string_view bytes) { Update(bytes.data(), bytes.size()); }
  Digest Finish();

  // One-shot convenience.
  static Digest Hash(std::string_view bytes);

 private:
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace r2::cache

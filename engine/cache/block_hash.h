#pragma once
// BlockHash: the prefix cache's key for one full KV block. The hash of block i chains the hash of
// block i-1 (its parent) with the block's token ids, so equal hashes mean equal whole prefixes:
//
//   hash[0] = SHA-256(root  || tokens[0 .. B))          root = RootBlockHash(salt)
//   hash[i] = SHA-256(hash[i-1] || tokens[i*B .. (i+1)*B))
//
// Token ids enter as 4-byte little-endian integers. The root is all zeros without a salt and
// SHA-256("r2serve-cache-salt" || salt) with one, so tenants with different salts never share
// blocks. SHA-256 is collision-resistant; BlockPool still compares the stored token ids on a hit
// (cheap, and it makes a wrong-KV hit impossible even if the hash were not).
#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/types/span.h"

namespace r2::cache {

struct BlockHash {
  std::array<uint8_t, 32> bytes{};

  bool operator==(const BlockHash& other) const = default;
};

// For hash tables: the digest's first 8 bytes are already uniformly distributed.
struct BlockHashHasher {
  size_t operator()(const BlockHash& h) const {
    uint64_t v;
    std::memcpy(&v, h.bytes.data(), sizeof(v));
    return static_cast<size_t>(v);
  }
};

BlockHash RootBlockHash(std::string_view salt);
BlockHash ChainBlockHash(const BlockHash& parent, absl::Span<const int32_t> tokens);

}  // namespace r2::cache

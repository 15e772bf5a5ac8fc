#include "engine/cache/block_hash.h"

#include <bit>

#include "engine/cache/sha256.h"

namespace r2::cache {

BlockHash RootBlockHash(std::string_view salt) {
  BlockHash root;
  if (salt.empty()) return root;
  Sha256 h;
  h.Update("r2serve-cache-salt");
  h.Update(salt);
  root.bytes = h.Finish();
  return root;
}

BlockHash ChainBlockHash(const BlockHash& parent, absl::Span<const int32_t> tokens) {
  Sha256 h;
  h.Update(parent.bytes.data(), parent.bytes.size());
  // Little-endian bytes: on little-endian hosts (all we build for) the array is already in order.
  static_assert(std::endian::native == std::endian::little, "token bytes are hashed little-endian");
  h.Update(tokens.data(), tokens.size() * sizeof(int32_t));
  BlockHash out;
  out.bytes = h.Finish();
  return out;
}

}  // namespace r2::cache

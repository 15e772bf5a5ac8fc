#pragma once
// A small open-addressing hash map from uint64_t keys (never ~0) to trivially copyable values:
// the BPE merge table and the added-token trie, where lookups are the hot path.
#include <cstdint>
#include <utility>
#include <vector>

namespace r2::tokenizer {

template <typename V>
class U64Map {
 public:
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  const V* Find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].first == key) return &slots_[i].second;
      if (slots_[i].first == kEmpty) return nullptr;
    }
  }

  // Inserts or overwrites; returns the stored value and whether the key was new.
  std::pair<V*, bool> Insert(uint64_t key, const V& value, bool overwrite) {
    if ((size_ + 1) * 2 > slots_.size()) Grow();
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].first == key) {
        if (overwrite) slots_[i].second = value;
        return {&slots_[i].second, false};
      }
      if (slots_[i].first == kEmpty) {
        slots_[i] = {key, value};
        ++size_;
        return {&slots_[i].second, true};
      }
    }
  }

  void Reserve(size_t n) {
    while (slots_.size() < n * 2) Grow();
  }
  size_t size() const { return size_; }

 private:
  static size_t Hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xFF51AFD7ED558CCDULL;
    key ^= key >> 33;
    return static_cast<size_t>(key);
  }
  void Grow() {
    std::vector<std::pair<uint64_t, V>> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, {kEmpty, V{}});
    mask_ = slots_.size() - 1;
    size_ = 0;
    for (const auto& [key, value] : old) {
      if (key != kEmpty) Insert(key, value, true);
    }
  }

  std::vector<std::pair<uint64_t, V>> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace r2::tokenizer

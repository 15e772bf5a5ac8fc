#pragma once
// Splits a text into deltas: at one position, at every byte, or at random positions.

#include <algorithm>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace r2::chat::testing {

inline std::vector<std::string> SplitAt(std::string_view text, std::vector<size_t> cuts) {
  std::sort(cuts.begin(), cuts.end());
  std::vector<std::string> parts;
  size_t prev = 0;
  for (size_t c : cuts) {
    parts.emplace_back(text.substr(prev, c - prev));
    prev = c;
  }
  parts.emplace_back(text.substr(prev));
  return parts;
}

// All the ways to cut the text into deltas that the property tests use: each single cut
// position, one delta per byte, and `random_splits` random multi-cuts (deterministic seed).
inline std::vector<std::vector<std::string>> AllSplits(std::string_view text,
                                                       int random_splits = 40) {
  std::vector<std::vector<std::string>> splits;
  for (size_t i = 0; i <= text.size(); ++i) splits.push_back(SplitAt(text, {i}));
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  splits.push_back(bytes);
  std::mt19937 rng(1234 + static_cast<unsigned>(text.size()));
  for (int r = 0; r < random_splits && !text.empty(); ++r) {
    std::uniform_int_distribution<size_t> count(1, std::min<size_t>(12, text.size()));
    std::uniform_int_distribution<size_t> pos(0, text.size());
    std::vector<size_t> cuts;
    for (size_t k = count(rng); k > 0; --k) cuts.push_back(pos(rng));
    splits.push_back(SplitAt(text, cuts));
  }
  return splits;
}

}  // namespace r2::chat::testing

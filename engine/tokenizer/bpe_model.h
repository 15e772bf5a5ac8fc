#pragma once
// The BPE model of a byte-level tokenizer.json: vocabulary, merges by rank, and the merge loop
// that Hugging Face's BPE runs on each pre-tokenized word (always the lowest-ranked adjacent pair,
// leftmost first), with ignore_merges (Llama-3: a word that is itself in the vocabulary is one
// token) and a per-thread word cache.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/string_map.h"
#include "engine/tokenizer/u64_map.h"
#include "nlohmann/json_fwd.hpp"

namespace r2::tokenizer {

class BpeModel {
 public:
  // `spec` is tokenizer.json's "model" value; `source` names the file in errors.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& spec,
                                                            std::string_view source);

  // Appends the ids of one pre-tokenized word, given as raw bytes.
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;
  // The same without the cache, choosing the merge loop explicitly (for tests).
  void EncodeWordUncached(std::string_view word, bool use_heap, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string ("Ġhello"); nullptr for an id the vocabulary does not have.
  const std::string* IdToToken(int32_t id) const;
  // One more than the largest id in the vocabulary.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Merge {
    int32_t rank = 0;
    int32_t new_id = 0;
  };
  BpeModel();
  absl::Status LoadVocab(const nlohmann::json& vocab);
  absl::Status LoadMerges(const nlohmann::json& merges);
  absl::Status AddMerge(std::string_view left, std::string_view right, int32_t rank);
  const Merge* FindMerge(int32_t left, int32_t right) const;
  // Initial symbols of a word: one per byte (unknown bytes dropped or mapped to unk).
  void InitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const;
  void MergeSmall(std::vector<int32_t>* symbols) const;
  void MergeWithHeap(std::vector<int32_t>* symbols) const;

  StringMap<int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  int32_t byte_ids_[256];  // id of each single-byte token, -1 if absent
  U64Map<Merge> merges_;
  StringMap<int32_t> whole_words_;  // ignore_merges: raw bytes -> id
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  uint64_t serial_;  // identifies this model to the per-thread word caches
};

}  // namespace r2::tokenizer

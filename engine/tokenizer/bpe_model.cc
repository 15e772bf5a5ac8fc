#include "engine/tokenizer/bpe_model.h"

#include <array>
#include <atomic>
#include <climits>
#include <queue>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace r2::tokenizer {
namespace {

using nlohmann::json;

constexpr int64_t kMaxId = (1 << 24) - 1;  // ids beyond this are refused (memory bound)
constexpr size_t kSmallWord = 48;          // words up to this many symbols use MergeSmall
constexpr size_t kCachedWordBytes = 32;    // longer words are not cached
constexpr size_t kCacheEntries = 1 << 16;  // a full cache is cleared
constexpr int kCacheSlots = 4;             // models with a cache per thread

std::atomic<uint64_t> next_serial{1};

struct WordCache {
  uint64_t serial = 0;
  StringMap<absl::InlinedVector<int32_t, 3>> words;
};

// This thread's cache for model `serial`.
WordCache& CacheFor(uint64_t serial) {
  thread_local std::array<WordCache, kCacheSlots> slots;
  thread_local int next_victim = 0;
  for (WordCache& slot : slots) {
    if (slot.serial == serial) return slot;
  }
  WordCache& slot = slots[next_victim];
  next_victim = (next_victim + 1) % kCacheSlots;
  slot.serial = serial;
  slot.words.clear();
  return slot;
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

bool IsNullOrEmptyString(const json& spec, const char* key) {
  if (!spec.contains(key) || spec[key].is_null()) return true;
  return spec[key].is_string() && spec[key].get<std::string>().empty();
}

absl::Status CheckUnsupportedOptions(const json& spec) {
  if (spec.contains("type") && spec["type"] != "BPE") {
    return absl::InvalidArgumentError("unsupported model type " + spec["type"].dump() +
                                      " (only BPE)");
  }
  if (spec.value("byte_fallback", json(false)) != json(false)) {
    return absl::InvalidArgumentError("unsupported model: byte_fallback true");
  }
  if (spec.contains("dropout") && !spec["dropout"].is_null() &&
      !(spec["dropout"].is_number() && spec["dropout"].get<double>() == 0.0)) {
    return absl::InvalidArgumentError("unsupported model: BPE dropout " + spec["dropout"].dump());
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!IsNullOrEmptyString(spec, key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported model: ", key, " ", spec[key].dump()));
    }
  }
  for (const char* key : {"fuse_unk", "ignore_merges"}) {
    if (spec.contains(key) && !spec[key].is_boolean() && !spec[key].is_null()) {
      return absl::InvalidArgumentError(absl::StrCat("model: '", key, "' must be a bool"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

BpeModel::BpeModel() : serial_(next_serial.fetch_add(1)) {}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const json& spec,
                                                             std::string_view source) {
  if (!spec.is_object()) return absl::InvalidArgumentError("'model' must be an object");
  if (absl::Status s = CheckUnsupportedOptions(spec); !s.ok()) return s;
  if (!spec.contains("vocab") || !spec.contains("merges")) {
    return absl::InvalidArgumentError("unsupported model: no 'vocab' and 'merges' (not BPE)");
  }
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  if (absl::Status s = model->LoadVocab(spec["vocab"]); !s.ok()) return s;
  model->ignore_merges_ = spec.value("ignore_merges", json(false)) == json(true);
  model->fuse_unk_ = spec.value("fuse_unk", json(false)) == json(true);
  if (spec.contains("unk_token") && !spec["unk_token"].is_null()) {
    if (!spec["unk_token"].is_string()) return absl::InvalidArgumentError("bad unk_token");
    model->unk_id_ = model->TokenToId(spec["unk_token"].get<std::string>());
    if (!model->unk_id_) return absl::InvalidArgumentError("unk_token is not in the vocabulary");
  }
  if (absl::Status s = model->LoadMerges(spec["merges"]); !s.ok()) return s;
  return model;
}

absl::Status BpeModel::LoadVocab(const json& vocab) {
  if (!vocab.is_object()) return absl::InvalidArgumentError("model.vocab must be an object");
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxId) {
      return absl::InvalidArgumentError("model.vocab: bad id for token '" + token + "'");
    }
    max_id = std::max(max_id, id.get<int64_t>());
  }
  id_to_token_.resize(static_cast<size_t>(max_id + 1));
  has_id_.resize(static_cast<size_t>(max_id + 1));
  token_to_id_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    const auto id = static_cast<int32_t>(id_json.get<int64_t>());
    if (has_id_[id]) {
      return absl::InvalidArgumentError(absl::StrCat("model.vocab: id ", id, " is used twice"));
    }
    has_id_[id] = true;
    id_to_token_[id] = token;
    token_to_id_[token] = id;
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    AppendUtf8(ByteToChar(static_cast<uint8_t>(b)), &ch);
    byte_ids_[b] = TokenToId(ch).value_or(-1);
  }
  return absl::OkStatus();
}

absl::Status BpeModel::LoadMerges(const json& merges) {
  if (!merges.is_array()) return absl::InvalidArgumentError("model.merges must be a list");
  merges_.Reserve(merges.size());
  int32_t rank = 0;
  for (const json& merge : merges) {
    absl::Status status;
    if (merge.is_string()) {
      const std::string& text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError("model.merges: bad merge '" + text + "'");
      }
      status = AddMerge(std::string_view(text).substr(0, space),
                        std::string_view(text).substr(space + 1), rank);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      status = AddMerge(merge[0].get_ref<const std::string&>(),
                        merge[1].get_ref<const std::string&>(), rank);
    } else {
      return absl::InvalidArgumentError("model.merges: bad merge " + merge.dump());
    }
    if (!status.ok()) return status;
    ++rank;
  }
  if (ignore_merges_) {
    for (const auto& [token, id] : token_to_id_) {
      if (std::optional<std::string> bytes = ByteLevelToBytes(token)) whole_words_[*bytes] = id;
    }
  }
  return absl::OkStatus();
}

absl::Status BpeModel::AddMerge(std::string_view left, std::string_view right, int32_t rank) {
  const std::optional<int32_t> a = TokenToId(left), b = TokenToId(right);
  const std::string joined = absl::StrCat(Sv(left), Sv(right));
  const std::optional<int32_t> merged = TokenToId(joined);
  if (!a || !b || !merged) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.merges: merge '", Sv(left), " ", Sv(right), "' uses a token not in the vocabulary"));
  }
  merges_.Insert(PairKey(*a, *b), Merge{rank, *merged},
                 /*overwrite=*/true);  // a repeat: the last wins
  return absl::OkStatus();
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= id_limit() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  return merges_.Find(PairKey(left, right));
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const {
  bool last_was_unk = false;
  for (char c : word) {
    const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
    if (id >= 0) {
      symbols->push_back(id);
      last_was_unk = false;
    } else if (unk_id_) {
      if (!(fuse_unk_ && last_was_unk)) symbols->push_back(*unk_id_);
      last_was_unk = true;
    }  // else: Hugging Face drops a character that is not in the vocabulary
  }
}

void BpeModel::MergeSmall(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  if (s.size() < 2) return;
  absl::InlinedVector<int32_t, kSmallWord> ranks(s.size() - 1);
  auto rank_at = [&](size_t i) {
    const Merge* m = FindMerge(s[i], s[i + 1]);
    return m == nullptr ? INT_MAX : m->rank;
  };
  for (size_t i = 0; i + 1 < s.size(); ++i) ranks[i] = rank_at(i);
  while (!ranks.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < ranks.size(); ++i) {
      if (ranks[i] < ranks[best]) best = i;
    }
    if (ranks[best] == INT_MAX) break;
    s[best] = FindMerge(s[best], s[best + 1])->new_id;
    s.erase(s.begin() + best + 1);
    ranks.erase(ranks.begin() + best);
    if (best > 0) ranks[best - 1] = rank_at(best - 1);
    if (best < ranks.size()) ranks[best] = rank_at(best);
  }
}

void BpeModel::MergeWithHeap(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  const int n = static_cast<int>(s.size());
  std::vector<int> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    if (const Merge* m = FindMerge(s[pos], s[next[pos]])) queue.push({m->rank, pos, m->new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    if (!alive[top.pos] || next[top.pos] < 0) continue;
    const int right = next[top.pos];
    const Merge* m = FindMerge(s[top.pos], s[right]);
    if (m == nullptr || m->new_id != top.new_id || m->rank != top.rank) continue;  // stale
    s[top.pos] = top.new_id;
    alive[right] = false;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    push(prev[top.pos]);
    push(top.pos);
  }
  int out = 0;
  for (int i = 0; i < n; ++i) {
    if (alive[i]) s[out++] = s[i];
  }
  s.resize(out);
}

void BpeModel::EncodeWordUncached(std::string_view word, bool use_heap,
                                  std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    auto it = whole_words_.find(word);
    if (it != whole_words_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  InitialSymbols(word, &symbols);
  if (use_heap) {
    MergeWithHeap(&symbols);
  } else {
    MergeSmall(&symbols);
  }
  ids->insert(ids->end(), symbols.begin(), symbols.end());
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.size() > kCachedWordBytes) {
    EncodeWordUncached(word, word.size() > kSmallWord, ids);
    return;
  }
  WordCache& cache = CacheFor(serial_);
  auto it = cache.words.find(word);
  if (it != cache.words.end()) {
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t first = ids->size();
  EncodeWordUncached(word, false, ids);
  if (cache.words.size() >= kCacheEntries) cache.words.clear();
  cache.words.emplace(std::string(word),
                      absl::InlinedVector<int32_t, 3>(ids->begin() + first, ids->end()));
}

}  // namespace r2::tokenizer

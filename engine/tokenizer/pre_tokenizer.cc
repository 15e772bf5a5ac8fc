#include "engine/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"
#include "nlohmann/json.hpp"

namespace r2::tokenizer {
namespace {

using nlohmann::json;

// GPT-2's word pattern, used by ByteLevel when use_regex is true.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::StatusOr<SplitBehavior> ParseBehavior(const json& value) {
  static const std::pair<const char*, SplitBehavior> kNames[] = {
      {"Removed", SplitBehavior::kRemoved},
      {"Isolated", SplitBehavior::kIsolated},
      {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
      {"MergedWithNext", SplitBehavior::kMergedWithNext},
      {"Contiguous", SplitBehavior::kContiguous}};
  if (value.is_string()) {
    for (const auto& [name, behavior] : kNames) {
      if (value.get<std::string>() == name) return behavior;
    }
  }
  return absl::InvalidArgumentError("pre_tokenizer Split: unknown behavior " + value.dump());
}

absl::StatusOr<bool> OptionalBool(const json& spec, const char* key, bool fallback) {
  if (!spec.contains(key) || spec[key].is_null()) return fallback;
  if (!spec[key].is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat("pre_tokenizer: '", key, "' must be a bool"));
  }
  return spec[key].get<bool>();
}

absl::StatusOr<std::unique_ptr<Regex>> ParseSplitPattern(const json& pattern) {
  if (pattern.is_object() && pattern.size() == 1) {
    if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      return Regex::Compile(pattern["Regex"].get<std::string>());
    }
    if (pattern.contains("String") && pattern["String"].is_string()) {
      return Regex::CompileLiteral(pattern["String"].get<std::string>());
    }
  }
  return absl::InvalidArgumentError("pre_tokenizer Split: bad pattern " + pattern.dump());
}

struct Event {
  ByteRange range;
  bool is_match;
};

std::vector<Event> MatchEvents(size_t length, const std::vector<ByteRange>& matches, bool invert) {
  std::vector<Event> events;
  events.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const ByteRange& m : matches) {
    if (prev != m.begin) events.push_back({{prev, m.begin}, invert});
    events.push_back({m, !invert});
    prev = m.end;
  }
  if (prev != length) events.push_back({{prev, length}, invert});
  if (length == 0 && events.empty()) events.push_back({{0, 0}, invert});
  return events;
}

// Merges events per `behavior`; `is_match` of the result means "remove".
std::vector<Event> ApplyBehavior(const std::vector<Event>& events, SplitBehavior behavior) {
  std::vector<Event> out;
  out.reserve(events.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Event& e : events) out.push_back({e.range, false});
      return out;
    case SplitBehavior::kRemoved:
      return events;
    case SplitBehavior::kContiguous:
      for (const Event& e : events) {
        if (e.is_match == previous_match && !out.empty()) {
          out.back().range.end = e.range.end;
        } else {
          out.push_back({e.range, false});
        }
        previous_match = e.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const Event& e : events) {
        if (e.is_match && !previous_match && !out.empty()) {
          out.back().range.end = e.range.end;
        } else {
          out.push_back({e.range, false});
        }
        previous_match = e.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = events.rbegin(); it != events.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().range.begin = it->range.begin;
        } else {
          out.push_back({it->range, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      return out;
  }
  return out;
}

}  // namespace

void SplitByMatches(std::string_view piece, const std::vector<ByteRange>& matches,
                    SplitBehavior behavior, bool invert, std::vector<std::string_view>* out) {
  if (behavior == SplitBehavior::kIsolated) {  // the common case, without temporaries
    size_t prev = 0;
    for (const ByteRange& m : matches) {
      if (prev != m.begin) out->push_back(piece.substr(prev, m.begin - prev));
      if (m.begin != m.end) out->push_back(piece.substr(m.begin, m.end - m.begin));
      prev = m.end;
    }
    if (prev != piece.size()) out->push_back(piece.substr(prev));
    return;
  }
  for (const Event& e : ApplyBehavior(MatchEvents(piece.size(), matches, invert), behavior)) {
    if (!e.is_match && e.range.end > e.range.begin) {
      out->push_back(piece.substr(e.range.begin, e.range.end - e.range.begin));
    }
  }
}

PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const json& spec) {
  auto pre = std::unique_ptr<PreTokenizer>(new PreTokenizer());
  if (spec.is_null()) {
    return absl::InvalidArgumentError(
        "unsupported pre_tokenizer null: a byte-level BPE needs a ByteLevel pre-tokenizer");
  }
  if (absl::Status s = pre->AddStep(spec, 0); !s.ok()) return s;
  const auto byte_level = std::find_if(pre->steps_.begin(), pre->steps_.end(),
                                       [](const Step& s) { return s.kind == Step::kByteLevel; });
  if (byte_level == pre->steps_.end()) {
    return absl::InvalidArgumentError(
        "unsupported pre_tokenizer: no ByteLevel step (only byte-level BPE is supported)");
  }
  if (byte_level + 1 != pre->steps_.end()) {
    return absl::InvalidArgumentError("unsupported pre_tokenizer: ByteLevel must be the last step");
  }
  return pre;
}

absl::Status PreTokenizer::AddStep(const json& spec, int depth) {
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    return absl::InvalidArgumentError("pre_tokenizer: expected an object with a 'type'");
  }
  if (depth > 16) return absl::InvalidArgumentError("pre_tokenizer: Sequences nested too deeply");
  const std::string type = spec["type"].get<std::string>();
  Step step;
  if (type == "Sequence") {
    if (!spec.contains("pretokenizers") || !spec["pretokenizers"].is_array()) {
      return absl::InvalidArgumentError("pre_tokenizer Sequence: 'pretokenizers' must be a list");
    }
    for (const json& inner : spec["pretokenizers"]) {
      if (absl::Status s = AddStep(inner, depth + 1); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "Split") {
    auto regex = ParseSplitPattern(spec.value("pattern", json()));
    if (!regex.ok()) return regex.status();
    auto behavior = ParseBehavior(spec.value("behavior", json()));
    if (!behavior.ok()) return behavior.status();
    auto invert = OptionalBool(spec, "invert", false);
    if (!invert.ok()) return invert.status();
    step.regex = *std::move(regex);
    step.behavior = *behavior;
    step.invert = *invert;
  } else if (type == "Digits") {
    auto individual = OptionalBool(spec, "individual_digits", false);
    if (!individual.ok()) return individual.status();
    auto regex = Regex::Compile(R"(\p{N})");  // one match per numeric character
    if (!regex.ok()) return regex.status();
    step.regex = *std::move(regex);
    step.behavior = *individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else if (type == "ByteLevel") {
    auto add_prefix_space = OptionalBool(spec, "add_prefix_space", true);
    auto use_regex = OptionalBool(spec, "use_regex", true);
    if (!add_prefix_space.ok()) return add_prefix_space.status();
    if (!use_regex.ok()) return use_regex.status();
    step.kind = Step::kByteLevel;
    step.add_prefix_space = *add_prefix_space;
    if (*use_regex) {
      auto regex = Regex::Compile(kGpt2Pattern);
      if (!regex.ok()) return regex.status();
      step.regex = *std::move(regex);
    }
  } else {
    return absl::InvalidArgumentError("unsupported pre_tokenizer " + type);
  }
  steps_.push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status PreTokenizer::ApplyStep(const Step& step, std::string_view piece,
                                     std::vector<std::string_view>* out,
                                     std::forward_list<std::string>* storage,
                                     std::vector<ByteRange>* matches) const {
  if (step.kind == Step::kByteLevel && step.add_prefix_space && piece.front() != ' ') {
    storage->push_front(absl::StrCat(" ", Sv(piece)));
    piece = storage->front();
  }
  if (step.regex == nullptr) {
    out->push_back(piece);
    return absl::OkStatus();
  }
  matches->clear();
  if (absl::Status s = step.regex->FindAll(piece, matches); !s.ok()) return s;
  SplitByMatches(piece, *matches, step.behavior, step.invert, out);
  return absl::OkStatus();
}

absl::Status PreTokenizer::Split(std::string_view text, std::vector<std::string_view>* pieces,
                                 std::forward_list<std::string>* storage) const {
  if (text.empty()) return absl::OkStatus();
  std::vector<std::string_view> current = {text};
  std::vector<std::string_view> next;
  std::vector<ByteRange> matches;
  for (const Step& step : steps_) {
    next.clear();
    for (std::string_view piece : current) {
      if (absl::Status s = ApplyStep(step, piece, &next, storage, &matches); !s.ok()) return s;
    }
    std::swap(current, next);
  }
  pieces->insert(pieces->end(), current.begin(), current.end());
  return absl::OkStatus();
}

}  // namespace r2::tokenizer

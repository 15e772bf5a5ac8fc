#pragma once
// The pre-tokenizer of tokenizer.json: Split, Digits and ByteLevel steps (flattened from
// Sequences), each splitting every piece the previous step produced, as Hugging Face does.
// ByteLevel must be the last step; its byte-to-character mapping is left to the BPE model, so the
// pieces here are raw bytes.
#include <forward_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/regex.h"
#include "nlohmann/json_fwd.hpp"

namespace r2::tokenizer {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits `piece` around `matches` (from Regex::FindAll) as NormalizedString::split does with the
// given behaviour, appending the non-empty pieces to *out.
void SplitByMatches(std::string_view piece, const std::vector<ByteRange>& matches,
                    SplitBehavior behavior, bool invert, std::vector<std::string_view>* out);

class PreTokenizer {
 public:
  // `spec` is tokenizer.json's "pre_tokenizer" value.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const nlohmann::json& spec);
  ~PreTokenizer();

  // Appends the pieces of `text` to *pieces. A piece views `text`, or a string appended to
  // *storage when ByteLevel's add_prefix_space prepended a space.
  absl::Status Split(std::string_view text, std::vector<std::string_view>* pieces,
                     std::forward_list<std::string>* storage) const;

 private:
  struct Step {
    enum Kind { kRegexSplit, kByteLevel } kind = kRegexSplit;
    std::unique_ptr<Regex> regex;  // kRegexSplit; kByteLevel with use_regex
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // kByteLevel
  };
  PreTokenizer() = default;
  absl::Status AddStep(const nlohmann::json& spec, int depth);
  absl::Status ApplyStep(const Step& step, std::string_view piece,
                         std::vector<std::string_view>* out,
                         std::forward_list<std::string>* storage,
                         std::vector<ByteRange>* matches) const;

  std::vector<Step> steps_;
};

}  // namespace r2::tokenizer

#pragma once
// Unicode general categories as Hugging Face's regex engine (Oniguruma) has them, from the table
// unicode_categories.inc that tests/golden/gen_tokenizer_goldens.py measures. Used instead of
// PCRE2's own property tables, which follow an older Unicode version.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace r2::tokenizer {

struct CodePointRange {
  char32_t lo;
  char32_t hi;  // inclusive
};
using CodePointSet = std::vector<CodePointRange>;  // sorted, disjoint, not adjacent

// The set of a general category: a two-letter one ("Lu") or a one-letter union ("L"); nullopt for
// any other name.
std::optional<CodePointSet> GeneralCategory(std::string_view name);

CodePointSet Union(const CodePointSet& a, const CodePointSet& b);
CodePointSet Complement(const CodePointSet& set);

// The set as PCRE2 class items ("\x{41}-\x{5A}\x{61}-\x{7A}..."), without brackets.
std::string ClassItems(const CodePointSet& set);

}  // namespace r2::tokenizer

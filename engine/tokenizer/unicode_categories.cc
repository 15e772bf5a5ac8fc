#include "engine/tokenizer/unicode_categories.h"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace r2::tokenizer {
namespace {

struct CategoryTable {
  const char* name;
  std::vector<CodePointRange> ranges;
};

const std::vector<CategoryTable>& Tables() {
  static const auto* tables = new std::vector<CategoryTable>{
#include "engine/tokenizer/unicode_categories.inc"
  };
  return *tables;
}

CodePointSet Normalize(CodePointSet set) {
  std::sort(set.begin(), set.end(),
            [](const CodePointRange& a, const CodePointRange& b) { return a.lo < b.lo; });
  CodePointSet out;
  for (const CodePointRange& r : set) {
    if (!out.empty() && r.lo <= out.back().hi + 1) {
      out.back().hi = std::max(out.back().hi, r.hi);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

}  // namespace

std::optional<CodePointSet> GeneralCategory(std::string_view name) {
  if (name.empty() || name.size() > 2) return std::nullopt;
  CodePointSet set;
  bool found = false;
  for (const CategoryTable& table : Tables()) {
    const std::string_view table_name(table.name);
    if (table_name == name || (name.size() == 1 && table_name[0] == name[0])) {
      set.insert(set.end(), table.ranges.begin(), table.ranges.end());
      found = true;
    }
  }
  if (!found) return std::nullopt;
  return Normalize(std::move(set));
}

CodePointSet Union(const CodePointSet& a, const CodePointSet& b) {
  CodePointSet all = a;
  all.insert(all.end(), b.begin(), b.end());
  return Normalize(std::move(all));
}

CodePointSet Complement(const CodePointSet& set) {
  CodePointSet out;
  char32_t next = 0;
  for (const CodePointRange& r : set) {
    if (r.lo > next) out.push_back({next, r.lo - 1});
    next = r.hi + 1;
  }
  if (next <= 0x10FFFF) out.push_back({next, 0x10FFFF});
  return out;
}

std::string ClassItems(const CodePointSet& set) {
  std::string out;
  char buf[32];
  for (const CodePointRange& r : set) {
    // Surrogates cannot occur in UTF-8 text and PCRE2 refuses them in UTF mode.
    char32_t lo = r.lo, hi = r.hi;
    if (lo >= 0xD800 && hi <= 0xDFFF) continue;
    if (lo < 0xD800 && hi >= 0xD800 && hi <= 0xDFFF) hi = 0xD7FF;
    if (lo >= 0xD800 && lo <= 0xDFFF) lo = 0xE000;
    if (lo < 0xD800 && hi > 0xDFFF) {  // split around the surrogates
      snprintf(buf, sizeof(buf), "\\x{%X}-\\x{D7FF}\\x{E000}-\\x{%X}", static_cast<unsigned>(lo),
               static_cast<unsigned>(hi));
    } else if (lo == hi) {
      snprintf(buf, sizeof(buf), "\\x{%X}", static_cast<unsigned>(lo));
    } else {
      snprintf(buf, sizeof(buf), "\\x{%X}-\\x{%X}", static_cast<unsigned>(lo),
               static_cast<unsigned>(hi));
    }
    out += buf;
  }
  return out;
}

}  // namespace r2::tokenizer

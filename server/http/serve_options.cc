#include "server/http/serve_options.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/http/absl_sv.h"

namespace r2::server::http {

absl::StatusOr<int64_t> ParseByteSize(std::string_view text, std::string_view flag) {
  std::string s = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(Sv(text)));
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", Sv(flag), ": '", Sv(text), "' is not a size (bytes, or a number with K, M or G)"));
  };
  if (s.size() > 2 && s.substr(s.size() - 2) == "IB")
    s.resize(s.size() - 2);
  else if (s.size() > 1 && s.back() == 'B')
    s.pop_back();
  double multiplier = 1;
  if (!s.empty() && (s.back() == 'K' || s.back() == 'M' || s.back() == 'G' || s.back() == 'T')) {
    const char unit = s.back();
    multiplier = unit == 'K'   ? 1024.0
                 : unit == 'M' ? 1048576.0
                 : unit == 'G' ? 1073741824.0
                               : 1099511627776.0;
    s.pop_back();
  }
  double value = 0;
  if (s.empty() || !absl::SimpleAtod(s, &value) || !std::isfinite(value) || value < 0) {
    return bad();
  }
  const double bytes = value * multiplier;
  if (bytes > 9.0e18) return bad();
  return static_cast<int64_t>(bytes);
}

std::vector<std::string> RepeatedFlagValues(int argc, char** argv, std::string_view name) {
  std::string dashed(name), underscored(name);
  std::replace(dashed.begin(), dashed.end(), '_', '-');
  std::replace(underscored.begin(), underscored.end(), '-', '_');
  std::vector<std::string> values;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") break;
    for (const std::string& n : {dashed, underscored}) {
      for (const std::string& prefix : {"--" + n, "-" + n}) {
        if (a == prefix && i + 1 < argc) {
          values.emplace_back(argv[i + 1]);
        } else if (a.size() > prefix.size() && a.substr(0, prefix.size() + 1) == prefix + "=") {
          values.emplace_back(a.substr(prefix.size() + 1));
        }
      }
    }
  }
  return values;
}

}  // namespace r2::server::http

#include "engine/sampling/utf8.h"

#include <cstdint>

namespace r2::sampling {
namespace {

// The length of the sequence a lead byte starts, or 0 for a byte that cannot start one.
size_t SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

bool IsContinuation(uint8_t byte) { return (byte & 0xC0) == 0x80; }

// The allowed range of the second byte after `lead` (RFC 3629 table 4).
bool SecondByteOk(uint8_t lead, uint8_t second) {
  switch (lead) {
    case 0xE0:
      return second >= 0xA0 && second <= 0xBF;
    case 0xED:
      return second >= 0x80 && second <= 0x9F;
    case 0xF0:
      return second >= 0x90 && second <= 0xBF;
    case 0xF4:
      return second >= 0x80 && second <= 0x8F;
    default:
      return IsContinuation(second);
  }
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<uint8_t>(text[i]);
    const size_t len = SequenceLength(lead);
    if (len == 0 || i + len > text.size()) return false;
    if (len > 1 && !SecondByteOk(lead, static_cast<uint8_t>(text[i + 1]))) return false;
    for (size_t k = 2; k < len; ++k) {
      if (!IsContinuation(static_cast<uint8_t>(text[i + k]))) return false;
    }
    i += len;
  }
  return true;
}

size_t CompleteUtf8PrefixLength(std::string_view text) {
  // A sequence is at most 4 bytes, so only a lead byte among the last 3 can be incomplete.
  const size_t n = text.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto byte = static_cast<uint8_t>(text[n - back]);
    if (IsContinuation(byte)) continue;
    const size_t len = SequenceLength(byte);
    if (len <= back) return n;  // complete (or a byte that no continuation can fix)
    if (back >= 2 && !SecondByteOk(byte, static_cast<uint8_t>(text[n - back + 1]))) return n;
    return n - back;
  }
  return n;
}

}  // namespace r2::sampling

#include "engine/tokenizer/utf8.h"

#include <algorithm>
#include <cstring>

namespace r2::tokenizer {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

bool InRange(unsigned char b, unsigned char lo, unsigned char hi) { return b >= lo && b <= hi; }

// The allowed range of the second byte after `lead` (Unicode Table 3-7); false for bad leads.
bool SecondByteRange(unsigned char lead, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (lead == 0xE0) *lo = 0xA0;
  if (lead == 0xED) *hi = 0x9F;
  if (lead == 0xF0) *lo = 0x90;
  if (lead == 0xF4) *hi = 0x8F;
  return InRange(lead, 0xC2, 0xF4);
}

}  // namespace

Utf8Char ReadUtf8Char(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  const unsigned char lead = p[0];
  if (lead < 0x80) return {Utf8Char::kValid, 1, lead};
  unsigned char lo, hi;
  if (!SecondByteRange(lead, &lo, &hi)) return {Utf8Char::kInvalid, 1, 0};
  const size_t need = Utf8Length(lead);
  char32_t cp = lead & (need == 2 ? 0x1F : need == 3 ? 0x0F : 0x07);
  for (size_t i = 1; i < need; ++i) {
    if (i >= n) return {Utf8Char::kIncomplete, static_cast<uint8_t>(i), 0};
    const bool ok = i == 1 ? InRange(p[i], lo, hi) : InRange(p[i], 0x80, 0xBF);
    if (!ok) return {Utf8Char::kInvalid, static_cast<uint8_t>(i), 0};
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  return {Utf8Char::kValid, static_cast<uint8_t>(need), cp};
}

bool IsValidUtf8(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    const Utf8Char c = ReadUtf8Char(bytes.substr(i));
    if (c.kind != Utf8Char::kValid) return false;
    i += c.length;
  }
  return true;
}

void AppendUtf8Lossy(std::string_view bytes, std::string* out) {
  Utf8LossyDecoder decoder;
  decoder.Feed(bytes, out);
  decoder.Flush(out);
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsWhiteSpace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

void Utf8LossyDecoder::Feed(std::string_view bytes, std::string* out) {
  // First complete (or reject) a character held from the previous call.
  while (pending_len_ > 0 && !bytes.empty()) {
    const size_t take = std::min<size_t>(4 - pending_len_, bytes.size());
    char buf[4];
    std::memcpy(buf, pending_, pending_len_);
    std::memcpy(buf + pending_len_, bytes.data(), take);
    const Utf8Char c = ReadUtf8Char(std::string_view(buf, pending_len_ + take));
    if (c.kind == Utf8Char::kIncomplete) {  // still incomplete: everything given was used
      std::memcpy(pending_ + pending_len_, bytes.data(), take);
      pending_len_ += take;
      return;
    }
    if (c.kind == Utf8Char::kValid) {
      out->append(buf, c.length);
    } else {
      out->append(kReplacement);
    }
    // c.length >= pending_len_ always: the held bytes were a valid prefix.
    bytes.remove_prefix(c.length - pending_len_);
    pending_len_ = 0;
  }
  size_t i = 0;
  size_t run = 0;  // start of the current run of valid bytes, copied in one append
  while (i < bytes.size()) {
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    const Utf8Char c = ReadUtf8Char(bytes.substr(i));
    if (c.kind == Utf8Char::kValid) {
      i += c.length;
      continue;
    }
    out->append(bytes.data() + run, i - run);
    if (c.kind == Utf8Char::kIncomplete) {
      std::memcpy(pending_, bytes.data() + i, c.length);
      pending_len_ = c.length;
      return;
    }
    out->append(kReplacement);
    i += c.length;
    run = i;
  }
  out->append(bytes.data() + run, i - run);
}

void Utf8LossyDecoder::Flush(std::string* out) {
  if (pending_len_ > 0) out->append(kReplacement);
  pending_len_ = 0;
}

}  // namespace r2::tokenizer

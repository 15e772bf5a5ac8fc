#pragma once
// UTF-8 boundaries for stop-string handling: text is only ever cut or held back at code point
// boundaries, so every piece streamed to a client is valid UTF-8 when its input was.
#include <cstddef>
#include <string_view>

namespace r2::sampling {

// True when `text` is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(std::string_view text);

// The length of the longest prefix of `text` that does not end inside a multi-byte sequence:
// `text` minus a trailing lead byte and the continuation bytes that follow it, when they do not
// yet form the whole sequence. Bytes that can never become valid are not held back.
size_t CompleteUtf8PrefixLength(std::string_view text);

}  // namespace r2::sampling

#pragma once
// GPT-2's byte-level alphabet: each of the 256 byte values is written as one printable Unicode
// character ('!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves; the other 68 bytes map to U+0100
// onwards in byte order, so ' ' is 'Ġ' and '\n' is 'Ċ'). Vocabularies and merges are spelled in it.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace r2::tokenizer {

// The character standing for `byte`.
char32_t ByteToChar(uint8_t byte);
// The byte a character stands for, or nullopt if it is not in the alphabet.
std::optional<uint8_t> CharToByte(char32_t ch);

// Raw bytes -> byte-level string (UTF-8 of the mapped characters).
std::string BytesToByteLevel(std::string_view bytes);
// Byte-level string -> raw bytes; nullopt if it has a character outside the alphabet or is not
// valid UTF-8.
std::optional<std::string> ByteLevelToBytes(std::string_view text);

}  // namespace r2::tokenizer

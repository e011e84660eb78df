// The message-slot rule for text, kept free of any link dependency: cut a UTF-8 string to at
// most N bytes without splitting a code point. The xshm-text crate implements the same rule;
// tests/vectors/utf8.tsv keeps the two from drifting apart.
#pragma once

#include <cstddef>
#include <string_view>

namespace xshm::utf8 {

/// Length of the longest prefix of `s` of at most `max_bytes` bytes that does not end inside
/// a multi-byte sequence. Continuation bytes (10xxxxxx) are never a cut point.
inline std::size_t cut_length(std::string_view s, std::size_t max_bytes) noexcept {
  if (s.size() <= max_bytes) return s.size();
  std::size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace xshm::utf8

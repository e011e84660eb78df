// The message-slot rules for text, kept free of any link dependency: cut a UTF-8 string to at
// most N bytes without splitting a code point, and find where a byte string stops being valid
// UTF-8. Pure functions over bytes the caller owns. The xshm-text crate implements the same
// rules; tests/vectors/utf8.tsv keeps the two from drifting apart.
#pragma once

#include <cstddef>
#include <string_view>

namespace xshm::utf8 {

/// Length of the longest prefix of `s` of at most `max_bytes` bytes that does not end inside
/// a multi-byte sequence. Continuation bytes (10xxxxxx) are never a cut point.
inline std::size_t cut(std::string_view s, std::size_t max_bytes) noexcept {
  if (s.size() <= max_bytes) return s.size();
  std::size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

/// The length of the longest valid UTF-8 prefix of `s` (Unicode 15, table 3-7: no overlong
/// forms, no surrogates, nothing above U+10FFFF, no truncated sequence): `s.size()` exactly
/// when all of `s` is valid, else the offset of the first invalid sequence. The same name and
/// answer as the xshm-text crate's `valid_up_to` (and Rust's Utf8Error::valid_up_to, Python's
/// UnicodeDecodeError.start). A length, not a verdict: compare it with `s.size()`.
inline std::size_t valid_up_to(std::string_view s) noexcept {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = b[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + 1 >= n || b[i + 1] < lo || b[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if (i + k >= n || (b[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return n;
}

/// Deprecated name of cut(), kept for callers of the first release.
[[deprecated("use utf8::cut")]] inline std::size_t cut_length(std::string_view s,
                                                              std::size_t max_bytes) noexcept {
  return cut(s, max_bytes);
}

}  // namespace xshm::utf8

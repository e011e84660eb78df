// The C++ element type of each dtype, for the typed entry points (Snapshot::values<T>(),
// WriteTransaction::values_as<T>(), publish(std::vector<T>), read_into(std::vector<T>&)):
// dtype_of<T> ties a type to its dtype at compile time (a type with none does not compile), and
// check_dtype<T>() compares it with a segment's at run time, one compare, throwing DtypeError
// that names both. float16 has no C++ type: its values are reached as raw bytes (std::byte, or
// the void* calls). Process-local; touches no shared memory.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "errors.hpp"
#include "layout.hpp"

namespace xshm {

namespace detail {

template <class T>
constexpr bool kIsComplex = false;
template <class T>
constexpr bool kIsComplex<std::complex<T>> = true;

template <class T>
constexpr Dtype integer_dtype() noexcept {
  if constexpr (std::is_signed_v<T>) {
    if constexpr (sizeof(T) == 1) return Dtype::Int8;
    if constexpr (sizeof(T) == 2) return Dtype::Int16;
    if constexpr (sizeof(T) == 4) return Dtype::Int32;
    return Dtype::Int64;
  } else {
    if constexpr (sizeof(T) == 1) return Dtype::UInt8;
    if constexpr (sizeof(T) == 2) return Dtype::UInt16;
    if constexpr (sizeof(T) == 4) return Dtype::UInt32;
    return Dtype::UInt64;
  }
}

}  // namespace detail

/// True for std::byte: the raw bytes of the values, whatever their dtype.
template <class T>
inline constexpr bool kIsRawBytes = std::is_same_v<std::remove_cv_t<T>, std::byte>;

/// True when T is the element type of some dtype: bool, a 1-, 2-, 4- or 8-byte integer
/// (std::int8_t ... std::uint64_t, long long included; not plain char, whose signedness is the
/// platform's), float, double, std::complex<float>, std::complex<double>.
template <class T, class U = std::remove_cv_t<T>>
inline constexpr bool kHasDtype =
    std::is_same_v<U, bool> ||
    (std::is_integral_v<U> && !std::is_same_v<U, char> && !std::is_same_v<U, wchar_t> &&
     !std::is_same_v<U, char16_t> && !std::is_same_v<U, char32_t> &&
     (sizeof(U) == 1 || sizeof(U) == 2 || sizeof(U) == 4 || sizeof(U) == 8)) ||
    std::is_same_v<U, float> || std::is_same_v<U, double> || std::is_same_v<U, std::complex<float>> ||
    std::is_same_v<U, std::complex<double>>;

/// The dtype whose elements are T.
template <class T>
constexpr Dtype dtype_of() noexcept {
  using U = std::remove_cv_t<T>;
  static_assert(kHasDtype<U>,
                "T has no xshm dtype: use bool, std::int8_t ... std::uint64_t, float, double, "
                "std::complex<float> or std::complex<double> (std::byte for the raw bytes).");
  if constexpr (std::is_same_v<U, bool>)
    return Dtype::Bool;
  else if constexpr (std::is_integral_v<U>)
    return detail::integer_dtype<U>();
  else if constexpr (std::is_same_v<U, float>)
    return Dtype::Float32;
  else if constexpr (std::is_same_v<U, double>)
    return Dtype::Float64;
  else if constexpr (std::is_same_v<U, std::complex<float>>)
    return Dtype::Complex64;
  else
    return Dtype::Complex128;
}

template <class T>
inline constexpr Dtype dtype_of_v = dtype_of<T>();

static_assert(sizeof(std::complex<float>) == 8 && sizeof(std::complex<double>) == 16,
              "std::complex is two parts, real then imaginary, as numpy's complex64/128 are.");

/// How C++ spells the element type of `d`; nullptr for float16, which has none.
inline const char* cpp_type_name(Dtype d) noexcept {
  switch (d) {
    case Dtype::Bool:
      return "bool";
    case Dtype::Int8:
      return "std::int8_t";
    case Dtype::UInt8:
      return "std::uint8_t";
    case Dtype::Int16:
      return "std::int16_t";
    case Dtype::UInt16:
      return "std::uint16_t";
    case Dtype::Int32:
      return "std::int32_t";
    case Dtype::UInt32:
      return "std::uint32_t";
    case Dtype::Int64:
      return "std::int64_t";
    case Dtype::UInt64:
      return "std::uint64_t";
    case Dtype::Float16:
      return nullptr;
    case Dtype::Float32:
      return "float";
    case Dtype::Float64:
      return "double";
    case Dtype::Complex64:
      return "std::complex<float>";
    case Dtype::Complex128:
      return "std::complex<double>";
  }
  return nullptr;
}

namespace detail {

/// `pattern` with its "{}" replaced by `type`.
inline std::string spell_call(const char* pattern, const char* type) {
  std::string out = pattern;
  const std::size_t at = out.find("{}");
  if (at != std::string::npos) out.replace(at, 2, type);
  return out;
}

/// "values<double>() on a float32 segment: use values<float>()".
[[noreturn]] inline void throw_dtype_mismatch(const char* call, Dtype asked, Dtype segment) {
  const DtypeInfo* seg = find_dtype(static_cast<std::uint32_t>(segment));
  const std::string seg_name =
      seg != nullptr ? seg->name : "dtype-code-" + std::to_string(static_cast<unsigned>(segment));
  const char* want = cpp_type_name(segment);
  const char* article = seg_name.rfind("int", 0) == 0 ? " on an " : " on a ";  // an int8, a uint8
  std::string text = spell_call(call, cpp_type_name(asked)) + article + seg_name + " segment: ";
  if (want != nullptr)
    text += "use " + spell_call(call, want);
  else
    text += seg_name + " has no C++ type; use " + spell_call(call, "std::byte") + " for the raw bytes";
  throw DtypeError(text);
}

}  // namespace detail

/// Throws DtypeError unless T is the element type of `segment` (std::byte: always fine).
/// `call` spells the entry point with "{}" where T goes: "values<{}>()".
template <class T>
inline void check_dtype(Dtype segment, const char* call) {
  if constexpr (!kIsRawBytes<T>) {
    if (segment != dtype_of_v<T>) detail::throw_dtype_mismatch(call, dtype_of_v<T>, segment);
  }
}

}  // namespace xshm

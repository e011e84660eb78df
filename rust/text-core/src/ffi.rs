//! The C ABI. Every function returns an [`XshmTextStatus`]; results go through out-pointers.
//! Null pointers, invalid input and oversize input return an error status, never undefined
//! behaviour, and no panic crosses the boundary (each body runs under `catch_unwind`).
//!
//! Owned results (`char*` from the decode/transcode functions, `uint16_t*` from
//! [`xshm_text_utf8_to_utf16`]) are allocated by Rust and must be released with
//! [`xshm_text_free`] / [`xshm_text_free_utf16`], never with `free()`. Freeing NULL is a no-op.
use std::alloc::{alloc, dealloc, Layout};
use std::os::raw::c_char;
use std::panic::{catch_unwind, UnwindSafe};
use std::ptr;

/// Status codes of the C ABI.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XshmTextStatus {
    /// Success.
    Ok = 0,
    /// A required pointer was NULL.
    NullPointer = -1,
    /// The input is not valid UTF-8; the error offset is reported.
    InvalidUtf8 = -2,
    /// The input has an unpaired UTF-16 surrogate; its index is reported.
    InvalidUtf16 = -3,
    /// The input is larger than [`XSHM_TEXT_MAX_INPUT`].
    TooLarge = -4,
    /// An internal error (a caught panic or a failed allocation).
    Internal = -99,
}

/// The largest input, in bytes or code units, the C ABI accepts (1 GiB).
pub const XSHM_TEXT_MAX_INPUT: usize = 1 << 30;

/// Each owned buffer starts with a hidden 16-byte header holding its element count, so the
/// free functions need only the pointer the caller got.
const HEADER: usize = 16;

fn guard<F: FnOnce() -> XshmTextStatus + UnwindSafe>(f: F) -> XshmTextStatus {
    catch_unwind(f).unwrap_or(XshmTextStatus::Internal)
}

/// # Safety
/// `p` is NULL (with any `len`) or valid for `len` reads.
unsafe fn input<'a, T>(p: *const T, len: usize) -> Result<&'a [T], XshmTextStatus> {
    if len > XSHM_TEXT_MAX_INPUT {
        return Err(XshmTextStatus::TooLarge);
    }
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(XshmTextStatus::NullPointer)
        };
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// Copies `data` plus a terminating zero into a fresh buffer with the hidden header.
fn into_owned<T: Copy + Default>(data: &[T]) -> Option<*mut T> {
    let bytes = (data.len() + 1)
        .checked_mul(std::mem::size_of::<T>())?
        .checked_add(HEADER)?;
    let layout = Layout::from_size_align(bytes, HEADER).ok()?;
    // SAFETY: layout has non-zero size; the header holds the count; the body is written in full.
    unsafe {
        let base = alloc(layout);
        if base.is_null() {
            return None;
        }
        (base as *mut usize).write(data.len());
        let body = base.add(HEADER) as *mut T;
        ptr::copy_nonoverlapping(data.as_ptr(), body, data.len());
        body.add(data.len()).write(T::default());
        Some(body)
    }
}

/// # Safety
/// `body` came from `into_owned::<T>` and was not freed.
unsafe fn free_owned<T>(body: *mut T) {
    if body.is_null() {
        return;
    }
    let base = (body as *mut u8).sub(HEADER);
    let count = (base as *const usize).read();
    let bytes = (count + 1) * std::mem::size_of::<T>() + HEADER;
    dealloc(base, Layout::from_size_align_unchecked(bytes, HEADER));
}

/// Cuts `s` (`len` bytes) to at most `max_bytes` bytes on a code-point boundary; writes the
/// kept length to `out_len`.
///
/// # Safety
/// `s` is NULL with `len == 0`, or valid for `len` reads; `out_len` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn xshm_text_cut(
    s: *const u8,
    len: usize,
    max_bytes: usize,
    out_len: *mut usize,
) -> XshmTextStatus {
    guard(|| {
        if out_len.is_null() {
            return XshmTextStatus::NullPointer;
        }
        match input(s, len) {
            Ok(bytes) => {
                *out_len = crate::cut(bytes, max_bytes);
                XshmTextStatus::Ok
            }
            Err(e) => e,
        }
    })
}

/// Validates `s` as UTF-8. Returns `Ok`, or `InvalidUtf8` with the offset of the first invalid
/// sequence in `out_error_offset` (which may be NULL when the caller does not need it).
///
/// # Safety
/// `s` is NULL with `len == 0`, or valid for `len` reads; `out_error_offset` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn xshm_text_validate(
    s: *const u8,
    len: usize,
    out_error_offset: *mut usize,
) -> XshmTextStatus {
    guard(|| match input(s, len) {
        Ok(bytes) => match crate::validate(bytes) {
            Ok(()) => XshmTextStatus::Ok,
            Err(off) => {
                if !out_error_offset.is_null() {
                    *out_error_offset = off;
                }
                XshmTextStatus::InvalidUtf8
            }
        },
        Err(e) => e,
    })
}

/// Decodes `s` lossily (invalid sequences become U+FFFD) into an owned, NUL-terminated UTF-8
/// string in `*out` (its length, without the NUL, in `*out_len`). Free it with
/// [`xshm_text_free`].
///
/// # Safety
/// `s` is NULL with `len == 0`, or valid for `len` reads; `out` and `out_len` are valid.
#[no_mangle]
pub unsafe extern "C" fn xshm_text_decode_lossy(
    s: *const u8,
    len: usize,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> XshmTextStatus {
    guard(|| {
        if out.is_null() || out_len.is_null() {
            return XshmTextStatus::NullPointer;
        }
        *out = ptr::null_mut();
        let bytes = match input(s, len) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let text = crate::decode_lossy(bytes);
        match into_owned(text.as_bytes()) {
            Some(p) => {
                *out = p as *mut c_char;
                *out_len = text.len();
                XshmTextStatus::Ok
            }
            None => XshmTextStatus::Internal,
        }
    })
}

/// UTF-16 (`len` native-endian code units) to an owned, NUL-terminated UTF-8 string. An
/// unpaired surrogate returns `InvalidUtf16` with its index in `*out_len`. Free the result
/// with [`xshm_text_free`].
///
/// # Safety
/// `s` is NULL with `len == 0`, or valid for `len` reads; `out` and `out_len` are valid.
#[no_mangle]
pub unsafe extern "C" fn xshm_text_utf16_to_utf8(
    s: *const u16,
    len: usize,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> XshmTextStatus {
    guard(|| {
        if out.is_null() || out_len.is_null() {
            return XshmTextStatus::NullPointer;
        }
        *out = ptr::null_mut();
        let units = match input(s, len) {
            Ok(u) => u,
            Err(e) => return e,
        };
        match crate::utf16_to_utf8(units) {
            Ok(text) => match into_owned(text.as_bytes()) {
                Some(p) => {
                    *out = p as *mut c_char;
                    *out_len = text.len();
                    XshmTextStatus::Ok
                }
                None => XshmTextStatus::Internal,
            },
            Err(index) => {
                *out_len = index;
                XshmTextStatus::InvalidUtf16
            }
        }
    })
}

/// UTF-8 (`len` bytes) to owned, zero-terminated UTF-16 code units in `*out` (count in
/// `*out_len`). Invalid UTF-8 returns `InvalidUtf8` with the offset in `*out_len`. Free the
/// result with [`xshm_text_free_utf16`].
///
/// # Safety
/// `s` is NULL with `len == 0`, or valid for `len` reads; `out` and `out_len` are valid.
#[no_mangle]
pub unsafe extern "C" fn xshm_text_utf8_to_utf16(
    s: *const u8,
    len: usize,
    out: *mut *mut u16,
    out_len: *mut usize,
) -> XshmTextStatus {
    guard(|| {
        if out.is_null() || out_len.is_null() {
            return XshmTextStatus::NullPointer;
        }
        *out = ptr::null_mut();
        let bytes = match input(s, len) {
            Ok(b) => b,
            Err(e) => return e,
        };
        match crate::utf8_to_utf16(bytes) {
            Ok(units) => match into_owned(&units) {
                Some(p) => {
                    *out = p;
                    *out_len = units.len();
                    XshmTextStatus::Ok
                }
                None => XshmTextStatus::Internal,
            },
            Err(off) => {
                *out_len = off;
                XshmTextStatus::InvalidUtf8
            }
        }
    })
}

/// Frees a string returned by this library. NULL is a no-op.
///
/// # Safety
/// `s` is NULL or a pointer this library returned as `char*` and that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn xshm_text_free(s: *mut c_char) {
    free_owned(s as *mut u8);
}

/// Frees UTF-16 units returned by [`xshm_text_utf8_to_utf16`]. NULL is a no-op.
///
/// # Safety
/// `s` is NULL or a pointer this library returned as `uint16_t*` and that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn xshm_text_free_utf16(s: *mut u16) {
    free_owned(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_pointers_are_errors() {
        unsafe {
            let mut n = 0usize;
            assert_eq!(
                xshm_text_cut(ptr::null(), 3, 1, &mut n),
                XshmTextStatus::NullPointer
            );
            assert_eq!(xshm_text_cut(ptr::null(), 0, 1, &mut n), XshmTextStatus::Ok);
            assert_eq!(
                xshm_text_cut(b"ab".as_ptr(), 2, 1, ptr::null_mut()),
                XshmTextStatus::NullPointer
            );
            let mut out: *mut c_char = ptr::null_mut();
            assert_eq!(
                xshm_text_decode_lossy(b"x".as_ptr(), 1, &mut out, ptr::null_mut()),
                XshmTextStatus::NullPointer
            );
            xshm_text_free(ptr::null_mut());
            xshm_text_free_utf16(ptr::null_mut());
        }
    }

    #[test]
    fn oversize_is_refused_before_reading() {
        let mut n = 0usize;
        let st = unsafe { xshm_text_cut(b"a".as_ptr(), XSHM_TEXT_MAX_INPUT + 1, 1, &mut n) };
        assert_eq!(st, XshmTextStatus::TooLarge);
    }

    #[test]
    fn owned_strings_round_trip_with_interior_nul() {
        unsafe {
            let mut out: *mut c_char = ptr::null_mut();
            let mut len = 0usize;
            let src = b"a\0b\xff";
            assert_eq!(
                xshm_text_decode_lossy(src.as_ptr(), src.len(), &mut out, &mut len),
                XshmTextStatus::Ok
            );
            let got = std::slice::from_raw_parts(out as *const u8, len + 1);
            assert_eq!(got, "a\0b\u{FFFD}\0".as_bytes());
            xshm_text_free(out);
        }
    }
}

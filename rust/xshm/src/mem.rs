//! Loads and stores of shared memory through raw pointers and atomics: the only way the
//! crate touches a mapping. Never `&[u8]` or `&mut` over memory another process writes:
//! every access is an atomic one (relaxed; the protocol adds the fences), so a reader
//! racing a writer is never undefined behaviour. Only relaxed loads are used on memory that
//! may be mapped read-only, as Rust allows ("Atomic accesses to read-only memory").

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// The `AtomicU64` at `p`.
///
/// # Safety
/// `p` is 8-byte aligned and points into a live mapping for as long as the reference is used.
pub(crate) unsafe fn u64_at<'a>(p: *const u8) -> &'a AtomicU64 {
    // SAFETY: by the caller's contract; AtomicU64 has the size and alignment of u64 and
    // allows shared mutation.
    unsafe { &*p.cast::<AtomicU64>() }
}

/// The `AtomicU32` at `p`.
///
/// # Safety
/// `p` is 4-byte aligned and points into a live mapping for as long as the reference is used.
pub(crate) unsafe fn u32_at<'a>(p: *const u8) -> &'a AtomicU32 {
    // SAFETY: as u64_at.
    unsafe { &*p.cast::<AtomicU32>() }
}

/// Copies `dst.len()` bytes out of shared memory: 8-byte words, then bytes for the tail.
///
/// # Safety
/// `src` is 8-byte aligned and valid for `dst.len()` bytes of reads.
#[inline]
pub(crate) unsafe fn load_bytes(dst: &mut [u8], src: *const u8) {
    let words = dst.len() / 8;
    let (head, tail) = dst.split_at_mut(words * 8);
    for (i, chunk) in head.chunks_exact_mut(8).enumerate() {
        // SAFETY: within the caller's range, aligned.
        let v = unsafe { u64_at(src.add(8 * i)) }.load(Relaxed);
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    for (i, b) in tail.iter_mut().enumerate() {
        // SAFETY: within the caller's range.
        *b = unsafe { &*src.add(words * 8 + i).cast::<AtomicU8>() }.load(Relaxed);
    }
}

/// Copies `src` into shared memory: 8-byte words, then bytes for the tail.
///
/// # Safety
/// `dst` is 8-byte aligned, writable and valid for `src.len()` bytes.
#[inline]
pub(crate) unsafe fn store_bytes(dst: *mut u8, src: &[u8]) {
    let words = src.len() / 8;
    let (head, tail) = src.split_at(words * 8);
    for (i, chunk) in head.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // SAFETY: within the caller's range, aligned.
        unsafe { u64_at(dst.add(8 * i)) }.store(v, Relaxed);
    }
    for (i, &b) in tail.iter().enumerate() {
        // SAFETY: within the caller's range.
        unsafe { &*dst.add(words * 8 + i).cast::<AtomicU8>() }.store(b, Relaxed);
    }
}

/// Shared-to-shared copy of `n` bytes (the backup refresh, a recovery).
///
/// # Safety
/// Both 8-byte aligned, valid for `n` bytes, `dst` writable, not overlapping.
#[inline]
pub(crate) unsafe fn copy_shared(dst: *mut u8, src: *const u8, n: usize) {
    let words = n / 8;
    for i in 0..words {
        // SAFETY: within the caller's ranges, aligned.
        unsafe {
            let v = u64_at(src.add(8 * i)).load(Relaxed);
            u64_at(dst.add(8 * i)).store(v, Relaxed);
        }
    }
    for i in words * 8..n {
        // SAFETY: within the caller's ranges.
        unsafe {
            let v = (*src.add(i).cast::<AtomicU8>()).load(Relaxed);
            (*dst.add(i).cast::<AtomicU8>()).store(v, Relaxed);
        }
    }
}

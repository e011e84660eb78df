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

/// At most this many bytes are prefetched per call: beyond it the hardware prefetcher follows
/// the copy.
const PREFETCH_BYTES: usize = 4096;

#[cfg(target_arch = "x86_64")]
fn have_prefetchw() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
    static HAVE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 no, 2 yes
    match HAVE.load(Relaxed) {
        0 => {
            // PREFETCHW: CPUID 0x8000_0001, ECX bit 8 (PRFCHW); every AMD, Intel since Broadwell.
            // SAFETY: CPUID exists on every x86-64 CPU; leaf 0x8000_0001 is always valid there.
            #[allow(unused_unsafe)] // safe since Rust 1.87, unsafe before
            let ecx = unsafe { std::arch::x86_64::__cpuid(0x8000_0001) }.ecx;
            let have = ecx & (1 << 8) != 0;
            HAVE.store(if have { 2 } else { 1 }, Relaxed);
            have
        }
        v => v == 2,
    }
}

/// A hint that this core is about to write the `n` bytes at `p` (at most 4 KiB are
/// prefetched): PREFETCHW asks for the lines' ownership (the readers hold them since their
/// last copy), so the transfers overlap the mutex and the clock instead of following them.
/// Never changes what is read or written.
#[inline]
pub(crate) fn prefetch_for_write(p: *const u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if have_prefetchw() {
        for off in (0..n.min(PREFETCH_BYTES)).step_by(64) {
            // SAFETY: a prefetch never faults and changes no memory; it only hints the cache.
            unsafe {
                std::arch::asm!("prefetchw [{}]", in(reg) p.wrapping_add(off), options(nostack, readonly, preserves_flags));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, n);
}

/// A hint that this core is about to read the line at `p`.
#[inline]
pub(crate) fn prefetch_for_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

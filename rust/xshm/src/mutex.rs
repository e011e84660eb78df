//! The writer mutex: a glibc `pthread_mutex_t` in the segment (offset 384), process-shared,
//! robust (the kernel hands it on with EOWNERDEAD when its owner dies) and error-checking, as
//! the C++ header makes it. Only glibc builds write: on another libc the layout of the mutex
//! is not the creator's, so those builds open segments read-only.

use std::time::Duration;

use crate::clock::Deadline;
use crate::error::{Error, Result};

/// How a lock ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    Acquired,
    /// The last owner died holding it: the caller owns it now, must repair the record, then
    /// call [`consistent`].
    OwnerDied,
    TimedOut,
}

/// Slices of a bounded wait: pthread_mutex_timedlock takes a CLOCK_REALTIME deadline, so a
/// long wait is cut into slices recomputed from the monotonic time left, and a wall-clock
/// jump can stretch only the slice in progress.
const SLICE: Duration = Duration::from_millis(100);

fn check(rc: i32, call: &str) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::os(rc, call))
    }
}

/// Initialises a robust, process-shared, error-checking mutex at `m` (a creator, before the
/// segment is marked ready).
///
/// # Safety
/// `m` points to writable memory of `size_of::<pthread_mutex_t>()` bytes no one else uses yet.
pub(crate) unsafe fn init(m: *mut libc::pthread_mutex_t) -> Result<()> {
    // SAFETY: attr is initialised by pthread_mutexattr_init before any other use.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        check(
            libc::pthread_mutexattr_init(&mut attr),
            "pthread_mutexattr_init",
        )?;
        let mut rc = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        if rc == 0 {
            rc = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        }
        if rc == 0 {
            rc = libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_ERRORCHECK);
        }
        if rc == 0 {
            rc = libc::pthread_mutex_init(m, &attr);
        }
        libc::pthread_mutexattr_destroy(&mut attr);
        check(rc, "pthread_mutex_init")
    }
}

/// Refuses a mutex that is not the kind init() makes, before glibc reads it: its bytes come
/// from the segment, and glibc aborts the process on some kinds it finds there. glibc keeps
/// the kind at byte 16 on every 64-bit ABI, set by pthread_mutex_init and never changed.
pub(crate) fn check_kind(m: *const libc::pthread_mutex_t) -> Result<()> {
    if !cfg!(all(target_env = "gnu", target_pointer_width = "64")) {
        return Ok(());
    }
    static EXPECTED: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    let expected = *EXPECTED.get_or_init(|| {
        let mut probe = std::mem::MaybeUninit::<libc::pthread_mutex_t>::zeroed();
        // SAFETY: probe is private writable memory of the right size.
        let _ = unsafe { init(probe.as_mut_ptr()) };
        // SAFETY: within the probe; it was initialised (or left zero).
        let kind = unsafe {
            probe
                .as_ptr()
                .cast::<u8>()
                .add(16)
                .cast::<i32>()
                .read_unaligned()
        };
        // SAFETY: the probe was initialised by init().
        unsafe { libc::pthread_mutex_destroy(probe.as_mut_ptr()) };
        kind
    });
    // SAFETY: m points into the live mapping; the word is 4-byte aligned and never written
    // after init (other processes' lock operations touch other words).
    let kind = unsafe { crate::mem::u32_at(m.cast::<u8>().add(16)) }
        .load(std::sync::atomic::Ordering::Relaxed) as i32;
    if kind != expected {
        return Err(Error::Layout(format!(
            "a mutex in the segment is not one xshm makes (its kind word is {kind}, not \
             {expected}): the segment is corrupt; re-create it"
        )));
    }
    Ok(())
}

pub(crate) fn result(rc: i32) -> Result<Locked> {
    match rc {
        0 => Ok(Locked::Acquired),
        libc::EOWNERDEAD => Ok(Locked::OwnerDied),
        libc::ETIMEDOUT => Ok(Locked::TimedOut),
        libc::EDEADLK => Err(Error::Argument(
            "this thread already holds the segment's writer lock".into(),
        )),
        libc::ENOTRECOVERABLE => Err(Error::Layout(
            "the segment's writer mutex is not recoverable; re-create the segment".into(),
        )),
        libc::EINVAL => Err(Error::Layout(
            "a mutex in the segment is not a valid mutex (pthread_mutex_lock: EINVAL): the \
             segment is corrupt; re-create it"
                .into(),
        )),
        other => Err(Error::os(other, "pthread_mutex_lock")),
    }
}

fn realtime_after(d: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: now is writable.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    crate::sys::add(now, d)
}

/// Locks, waiting at most `timeout` (`None`: forever; zero: only if it is free).
///
/// # Safety
/// `m` points to a mutex in a live, writable mapping.
pub(crate) unsafe fn lock(
    m: *mut libc::pthread_mutex_t,
    timeout: Option<Duration>,
) -> Result<Locked> {
    check_kind(m)?;
    let Some(timeout) = timeout else {
        // SAFETY: by the caller's contract.
        return result(unsafe { libc::pthread_mutex_lock(m) });
    };
    // First only if it is free: trylock stays in user space. EBUSY: held.
    // SAFETY: by the caller's contract.
    let tried = unsafe { libc::pthread_mutex_trylock(m) };
    if tried != libc::EBUSY {
        return result(tried);
    }
    let deadline = Deadline::after(Some(timeout));
    loop {
        let left = deadline.left().unwrap_or(SLICE);
        if left.is_zero() {
            return Ok(Locked::TimedOut);
        }
        let until = realtime_after(left.min(SLICE));
        // SAFETY: by the caller's contract.
        let r = result(unsafe { libc::pthread_mutex_timedlock(m, &until) })?;
        if r != Locked::TimedOut {
            return Ok(r);
        }
    }
}

/// Marks a mutex taken with EOWNERDEAD consistent again, after the repair.
///
/// # Safety
/// `m` points to a mutex the calling thread holds.
pub(crate) unsafe fn consistent(m: *mut libc::pthread_mutex_t) -> Result<()> {
    // SAFETY: by the caller's contract.
    check(
        unsafe { libc::pthread_mutex_consistent(m) },
        "pthread_mutex_consistent",
    )
}

/// Unlocks: 0, or EPERM when the calling thread does not own the mutex.
///
/// # Safety
/// `m` points to a mutex in a live, writable mapping.
pub(crate) unsafe fn unlock(m: *mut libc::pthread_mutex_t) -> i32 {
    // SAFETY: by the caller's contract.
    unsafe { libc::pthread_mutex_unlock(m) }
}

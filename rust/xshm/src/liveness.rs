//! Whether a stream's reader or writer is still there, asked of the kernel, never of pids
//! (docs/LAYOUT.md section 23): every attached reader and registered writer holds an
//! open-file-description (OFD) read lock on its table entry's first byte, through its handle's
//! lock descriptor. The kernel drops the lock when that open file description goes away, which
//! a process's death does. Anyone else asks with `F_OFD_GETLK` for a write lock on the byte: a
//! conflict means alive. Locks of the asker's own description never conflict, so a handle
//! answers for its own entries from memory.
//!
//! fork(): a child inherits the descriptors, and with them the parent's locks, which would
//! then outlive the parent while the child lives. Every lock descriptor is registered here; in
//! the child the registered descriptors are closed and the handles refuse every call (23.3).

use std::cell::UnsafeCell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Once;

fn flock_at(kind: i32, offset: u64) -> libc::flock {
    // SAFETY: an all-zero flock is a valid value of the plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Takes the read lock on byte `offset` without waiting (23.1). False when the OS refuses
/// (a write lock there: never in a valid segment).
pub(crate) fn hold(fd: RawFd, offset: u64) -> bool {
    let fl = flock_at(libc::F_RDLCK, offset);
    // SAFETY: fd is a descriptor the caller owns; fl is a valid flock.
    unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) == 0 }
}

/// Releases this description's lock on byte `offset`.
pub(crate) fn release(fd: RawFd, offset: u64) {
    let fl = flock_at(libc::F_UNLCK, offset);
    // SAFETY: as hold.
    unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
}

/// True when another open file description holds a lock on byte `offset` (23.2); a failing
/// query counts as held: never reap on a doubt.
pub(crate) fn held_by_other(fd: RawFd, offset: u64) -> bool {
    let mut fl = flock_at(libc::F_WRLCK, offset);
    // SAFETY: as hold; the kernel writes fl.
    if unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) } != 0 {
        return true;
    }
    fl.l_type != libc::F_UNLCK as libc::c_short
}

/// A handle's lock descriptor, closed in a child after fork (then `fd` is -1 and `forked`
/// true). Boxed by its owner: the registry keeps its address.
pub(crate) struct Registered {
    fd: AtomicI32,
    forked: AtomicBool,
}

impl Registered {
    /// The descriptor, or -1 in a forked child.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.load(Ordering::Relaxed)
    }

    /// True in a child that inherited this descriptor across fork.
    pub(crate) fn forked(&self) -> bool {
        self.forked.load(Ordering::Relaxed)
    }
}

/// The registry of lock descriptors, under a pthread mutex that the fork handlers take (a
/// std Mutex cannot be held from the prepare handler to the parent and child handlers).
struct Registry {
    lock: UnsafeCell<libc::pthread_mutex_t>,
    entries: UnsafeCell<Vec<*const Registered>>,
}

// SAFETY: `entries` is only touched with `lock` held; `lock` is a process-private pthread mutex,
// made to be shared between threads.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    lock: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    entries: UnsafeCell::new(Vec::new()),
};

fn lock_registry() {
    // SAFETY: a statically initialised, never destroyed mutex.
    unsafe { libc::pthread_mutex_lock(REGISTRY.lock.get()) };
}

fn unlock_registry() {
    // SAFETY: held by this thread (lock_registry).
    unsafe { libc::pthread_mutex_unlock(REGISTRY.lock.get()) };
}

extern "C" fn before_fork() {
    lock_registry();
}

extern "C" fn after_fork_parent() {
    unlock_registry();
}

extern "C" fn after_fork_child() {
    // The child's only thread, holding the registry since before_fork: nothing allocates here.
    // SAFETY: the registry is locked (by this thread, before the fork).
    let entries = unsafe { &*REGISTRY.entries.get() };
    for &r in entries {
        // SAFETY: registered entries stay alive until withdrawn, which takes the lock.
        let r = unsafe { &*r };
        let fd = r.fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: the inherited copy of a descriptor the registry owns.
            unsafe { libc::close(fd) };
        }
        r.forked.store(true, Ordering::Relaxed);
    }
    unlock_registry();
}

/// Opens the lock descriptor with `open` and registers it in one step, under the registry lock
/// that fork takes first: a fork in another thread between the two would give the child a copy
/// it never closes, and this handle's locks would outlive the process (21.3 step 7).
pub(crate) fn open_registered<E>(
    open: impl FnOnce() -> std::result::Result<RawFd, E>,
) -> std::result::Result<Box<Registered>, E> {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(|| {
        // SAFETY: the three handlers only lock, unlock and close.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            )
        };
    });
    let mut boxed = Box::new(Registered {
        fd: AtomicI32::new(-1),
        forked: AtomicBool::new(false),
    });
    lock_registry();
    let result = open();
    if let Ok(fd) = result {
        *boxed.fd.get_mut() = fd;
        // SAFETY: the registry is locked.
        let entries = unsafe { &mut *REGISTRY.entries.get() };
        entries.push(&*boxed);
    }
    unlock_registry();
    result.map(|_| boxed)
}

/// Withdraws `r` from the registry and closes its descriptor (unless a fork closed it). Drops
/// every liveness lock taken through it.
pub(crate) fn close_registered(r: &Registered) {
    lock_registry();
    // SAFETY: the registry is locked.
    let entries = unsafe { &mut *REGISTRY.entries.get() };
    entries.retain(|&e| !std::ptr::eq(e, r));
    let fd = r.fd.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // Closed before the registry is unlocked: a fork in another thread after the
        // withdrawal and before the close would give the child a copy nobody closes.
        // SAFETY: the descriptor this registration owns, closed once (swapped out above).
        unsafe { libc::close(fd) };
    }
    unlock_registry();
}

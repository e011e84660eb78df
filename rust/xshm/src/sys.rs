//! Every call into the operating system the crate makes, through `libc`: the segment's file
//! under /dev/shm, its mapping, flock with a deadline, the futex, whether a pid is alive, this
//! process's pid and the wall clock. Nothing here knows what the bytes mean.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Where POSIX shared memory lives on Linux: glibc's `shm_open("/x")` is `open("/dev/shm/x")`
/// with O_NOFOLLOW | O_CLOEXEC (and two errno translations, below); this needs no librt.
const SHM_DIR: &str = "/dev/shm";

fn shm_path(canon: &str) -> CString {
    // The name was normalized: no NUL inside.
    CString::new(format!("{SHM_DIR}{canon}")).expect("a normalized name has no NUL")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `shm_open(canon, flags, mode)`: the errno on failure, as glibc's shm_open reports it (it
/// is this `open`, with EISDIR reported as EINVAL).
pub(crate) fn shm_open(canon: &str, flags: i32, mode: u32) -> std::result::Result<OwnedFd, i32> {
    let path = shm_path(canon);
    loop {
        // SAFETY: path is a valid C string; open has no other preconditions.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(if e == libc::EISDIR { libc::EINVAL } else { e });
        }
    }
}

/// `shm_unlink(canon)`, with glibc's errno: EPERM (another user's file in the sticky
/// /dev/shm) is reported as EACCES.
pub(crate) fn shm_unlink(canon: &str) -> Result<()> {
    let path = shm_path(canon);
    // SAFETY: path is a valid C string.
    if unsafe { libc::unlink(path.as_ptr()) } != 0 {
        let e = errno();
        let e = if e == libc::EPERM { libc::EACCES } else { e };
        return Err(Error::os(e, format!("shm_unlink({canon})")));
    }
    Ok(())
}

/// Size, device and inode of an open file.
pub(crate) struct FileStat {
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

pub(crate) fn fstat(fd: &OwnedFd) -> Result<FileStat> {
    // SAFETY: an all-zero stat is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Error::last_os("fstat"));
    }
    Ok(FileStat {
        size: st.st_size as u64,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// flock(LOCK_SH/LOCK_EX) with a deadline: LOCK_NB in a loop, so an opener never waits
/// unboundedly on a creator that is stuck. False when the deadline passed.
pub(crate) fn flock_until(fd: &OwnedFd, op: i32, deadline: Instant) -> Result<bool> {
    let mut pause = Duration::from_micros(50);
    loop {
        // SAFETY: fd is open.
        if unsafe { libc::flock(fd.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = errno();
        if e != libc::EWOULDBLOCK && e != libc::EINTR {
            return Err(Error::os(e, "flock"));
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// flock, blocking (the creator's LOCK_EX: an opener holds LOCK_SH only for a moment).
pub(crate) fn flock(fd: &OwnedFd, op: i32) -> Result<()> {
    // SAFETY: fd is open.
    while unsafe { libc::flock(fd.as_raw_fd(), op) } != 0 {
        let e = errno();
        if e != libc::EINTR {
            return Err(Error::os(e, "flock"));
        }
    }
    Ok(())
}

/// Gives a file just created exclusively `mode` (umask masked it) and `size` bytes, with its
/// pages reserved now: a full /dev/shm fails here with ENOSPC instead of SIGBUS later.
pub(crate) fn reserve(fd: &OwnedFd, canon: &str, size: u64, mode: u32) -> Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: raw is open.
    if unsafe { libc::fchmod(raw, mode as libc::mode_t) } != 0 {
        return Err(Error::last_os("fchmod"));
    }
    let len = libc::off_t::try_from(size)
        .map_err(|_| Error::Argument(format!("segment of {size} bytes is too large")))?;
    // SAFETY: raw is open.
    if unsafe { libc::ftruncate(raw, len) } != 0 {
        return Err(Error::last_os("ftruncate"));
    }
    // SAFETY: raw is open.
    let rc = unsafe { libc::posix_fallocate(raw, 0, len) };
    if rc != 0 {
        return Err(Error::os(
            rc,
            format!("posix_fallocate({canon}, {size} bytes)"),
        ));
    }
    Ok(())
}

/// An owned shared mapping of a whole file; unmapped on drop. Reached only through raw
/// pointers (src/mem.rs): never as `&[u8]`, since other processes write it.
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with other processes anyway; every access goes
// through atomics (src/mem.rs), so sharing the pointer between threads adds no new race.
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared, read-only or read-write.
    pub(crate) fn map(fd: &OwnedFd, len: u64, writable: bool) -> Result<Mapping> {
        Self::map_at(fd, len, 0, writable)
    }

    /// Maps `len` bytes of `fd` from file offset `offset` (page aligned).
    pub(crate) fn map_at(fd: &OwnedFd, len: u64, offset: u64, writable: bool) -> Result<Mapping> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| Error::Layout(format!("offset {offset} cannot be mapped")))?;
        let len = usize::try_from(len)
            .map_err(|_| Error::Layout(format!("segment of {len} bytes cannot be mapped")))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel; fd is open.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os("mmap"));
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in map(), unmapped only here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Sleeps while the u32 at `word` equals `expected`, until woken or `deadline` (absolute
/// CLOCK_MONOTONIC). Spurious returns are possible; callers check their condition again.
/// Not FUTEX_PRIVATE: the wake comes from another process.
pub(crate) fn futex_wait(word: *const u32, expected: u32, deadline: &libc::timespec) {
    // SAFETY: word points into a live shared mapping; the kernel only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT_BITSET,
            expected,
            deadline as *const libc::timespec,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
}

/// Wakes every process sleeping on the u32 at `word`; returns how many it woke (0 also when
/// the call failed).
pub(crate) fn futex_wake_all(word: *const u32) -> i64 {
    // SAFETY: word points into a live shared mapping.
    let woke = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        )
    };
    woke.max(0)
}

/// CLOCK_MONOTONIC now.
pub(crate) fn monotonic_now() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is writable.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

/// CLOCK_REALTIME in nanoseconds since the epoch: a record's timestamp.
pub(crate) fn realtime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is writable.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `t + d`, normalized.
pub(crate) fn add(t: libc::timespec, d: Duration) -> libc::timespec {
    let secs = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX / 2);
    let mut out = libc::timespec {
        tv_sec: t.tv_sec.saturating_add(secs),
        tv_nsec: t.tv_nsec + libc::c_long::from(d.subsec_nanos() as i32),
    };
    if out.tv_nsec >= 1_000_000_000 {
        out.tv_nsec -= 1_000_000_000;
        out.tv_sec = out.tv_sec.saturating_add(1);
    }
    out
}

/// `a < b`.
pub(crate) fn before(a: &libc::timespec, b: &libc::timespec) -> bool {
    (a.tv_sec, a.tv_nsec) < (b.tv_sec, b.tv_nsec)
}

static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn forget_pid() {
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// This process's pid, cached (a publish stamps it every time; getpid() is a system call)
/// and forgotten in the child after fork.
pub(crate) fn current_pid() -> u32 {
    let pid = PID.load(std::sync::atomic::Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: forget_pid is async-signal-safe (one atomic store).
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
    });
    let pid = std::process::id();
    PID.store(pid, std::sync::atomic::Ordering::Relaxed);
    pid
}

/// True when a process with this pid exists (EPERM: it exists, another user's). 0 and
/// anything above i32::MAX are no process: as a pid_t they would name a process group.
pub(crate) fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 || errno() == libc::EPERM }
}

/// 16 random bytes: the creation id that tells re-created segments apart.
pub(crate) fn random_id() -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    // SAFETY: id is writable for 16 bytes.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != 16 {
        return Err(Error::last_os("getrandom"));
    }
    Ok(id)
}

/// Lets another thread or process run (the reader's back-off after 64 failed rounds).
pub(crate) fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}

//! A stream segment (layout version 2): the mapped, validated handle that every stream call
//! reaches the bytes through (the control pages, the ring, and the descriptor whose open file
//! description carries this handle's liveness locks), and its create and open, as
//! docs/LAYOUT.md 21.2 and 21.3 describe them.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{self, HEADER_SIZE};
use crate::liveness::{self, Registered};
use crate::mem;
use crate::name::normalize_name;
use crate::segment::{check_create, copy_page, create_exclusive, open_ready, unlink_if_same};
use crate::stream_layout::{
    group_off, peek_kind, slot_off, soff, stream_header_image, validate_stream_header, SegmentKind,
    StreamGeometry, GROUP_ENTRY_SIZE, READER_ENTRY_SIZE, STREAM_CHECKED_RANGES, WRITER_ENTRY_SIZE,
};
use crate::sys::{self, Mapping};

/// What the handle keeps under its own (process-private) lock: the reader entries it holds
/// and how many of its threads sleep for room.
#[derive(Default)]
pub(crate) struct Local {
    pub own_readers: Vec<u32>,
    pub writer_sleepers: u32,
}

/// The writer's cached view of the reader table and its reap times (25.3 steps 3 to 5), a
/// claim's working copy of [`SharedView`].
#[derive(Clone, Copy)]
pub(crate) struct ClaimView {
    pub scanned: bool,
    pub gen: u32,
    pub any_reader: bool,
    pub gate: u64,
    /// CLOCK_MONOTONIC ns of the last reap for a full claim, and for a claim crossing a lap.
    pub last_reap_ns: i64,
    pub last_lap_reap_ns: i64,
}

/// Where a handle keeps its [`ClaimView`] between claims. Only a holder of the stream mutex
/// reads or writes it; its fields are relaxed atomics all the same, so that a mutex another
/// process corrupted (two holders at once) makes a stale view, never a data race.
pub(crate) struct SharedView {
    scanned: AtomicBool,
    gen: AtomicU32,
    any_reader: AtomicBool,
    gate: AtomicU64,
    last_reap_ns: AtomicI64,
    last_lap_reap_ns: AtomicI64,
}

impl SharedView {
    fn new() -> Self {
        SharedView {
            scanned: AtomicBool::new(false),
            gen: AtomicU32::new(0),
            any_reader: AtomicBool::new(false),
            gate: AtomicU64::new(0),
            last_reap_ns: AtomicI64::new(i64::MIN),
            last_lap_reap_ns: AtomicI64::new(i64::MIN),
        }
    }

    pub(crate) fn load(&self) -> ClaimView {
        ClaimView {
            scanned: self.scanned.load(Ordering::Relaxed),
            gen: self.gen.load(Ordering::Relaxed),
            any_reader: self.any_reader.load(Ordering::Relaxed),
            gate: self.gate.load(Ordering::Relaxed),
            last_reap_ns: self.last_reap_ns.load(Ordering::Relaxed),
            last_lap_reap_ns: self.last_lap_reap_ns.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn store(&self, v: &ClaimView) {
        self.scanned.store(v.scanned, Ordering::Relaxed);
        self.gen.store(v.gen, Ordering::Relaxed);
        self.any_reader.store(v.any_reader, Ordering::Relaxed);
        self.gate.store(v.gate, Ordering::Relaxed);
        self.last_reap_ns.store(v.last_reap_ns, Ordering::Relaxed);
        self.last_lap_reap_ns
            .store(v.last_lap_reap_ns, Ordering::Relaxed);
    }
}

/// A mapped, validated stream.
pub(crate) struct StreamSegment {
    pub name: String,
    pub geo: StreamGeometry,
    /// May receive, may not send.
    pub readonly: bool,
    /// The descriptor is `O_RDWR`: this handle may attach readers.
    pub writable_fd: bool,
    /// Its mutex is this process's kind (`mutex_size`, `mutex_abi`).
    pub mutex_ok: bool,
    ctl: Mapping,
    ring: Mapping,
    dev: u64,
    ino: u64,
    lock: Box<Registered>,
    /// The process that opened it.
    pid: u32,
    /// This handle's writer entry (-1: none yet) and its state, registered at the first send
    /// under the stream mutex.
    pub writer_index: AtomicI64,
    pub writer_state: AtomicU64,
    pub local: Mutex<Local>,
    /// The writer's view of the reader table, used with the stream mutex held (no lock of its
    /// own on the claim path).
    pub view: SharedView,
    /// CLOCK_MONOTONIC of the last sleeper sweep (23.4), in ns.
    pub last_sweep_ns: AtomicI64,
}

impl Drop for StreamSegment {
    fn drop(&mut self) {
        // A clean close frees the writer entry (25.2), then the descriptor goes, dropping
        // every liveness lock of this handle. A forked child's inherited copy frees nothing.
        let w = *self.writer_index.get_mut();
        if w >= 0 && !self.lock.forked() && self.pid == sys::current_pid() {
            let mine = *self.writer_state.get_mut();
            let _ = self
                .writer_u64(w as u32, crate::stream_layout::writer_off::STATE)
                .compare_exchange(mine, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        liveness::close_registered(&self.lock);
    }
}

impl StreamSegment {
    /// Every call that touches the stream starts here: a handle inherited across fork (its
    /// locks are the parent's) is refused.
    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.lock.forked() || self.pid != sys::current_pid() {
            return Err(Error::Other(format!(
                "stream {} was opened by process {} before a fork(); open it again in this \
                 process",
                self.name, self.pid
            )));
        }
        Ok(())
    }

    /// True when this is the process that opened the handle and no fork took its descriptor.
    pub(crate) fn owned_here(&self) -> bool {
        !self.lock.forked() && self.pid == sys::current_pid()
    }

    pub(crate) fn lock_fd(&self) -> i32 {
        self.lock.fd()
    }

    pub(crate) fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A header atomic (one of soff's aligned offsets, inside page 0).
    pub(crate) fn h64(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= HEADER_SIZE);
        // SAFETY: page 0 is mapped for as long as self lives; `at` is aligned.
        unsafe { mem::u64_at(self.ctl.ptr().add(at)) }
    }

    pub(crate) fn h32(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at.is_multiple_of(4) && at + 4 <= HEADER_SIZE);
        // SAFETY: as h64.
        unsafe { mem::u32_at(self.ctl.ptr().add(at)) }
    }

    pub(crate) fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: the mutex slot is within page 0.
        unsafe { self.ctl.ptr().add(soff::MUTEX).cast() }
    }

    fn reader_base(&self, i: u32) -> *mut u8 {
        debug_assert!(i < self.geo.max_readers);
        // SAFETY: the reader table lies inside the control pages (validated geometry).
        unsafe {
            self.ctl
                .ptr()
                .add((self.geo.readers_offset + u64::from(i) * READER_ENTRY_SIZE) as usize)
        }
    }

    fn writer_base(&self, j: u32) -> *mut u8 {
        debug_assert!(j < self.geo.max_writers);
        // SAFETY: the writer table lies inside the control pages.
        unsafe {
            self.ctl
                .ptr()
                .add((self.geo.writers_offset + u64::from(j) * WRITER_ENTRY_SIZE) as usize)
        }
    }

    /// A field of reader entry `i` (reader_off).
    pub(crate) fn reader_u64(&self, i: u32, at: usize) -> &AtomicU64 {
        // SAFETY: an aligned field inside the entry.
        unsafe { mem::u64_at(self.reader_base(i).add(at)) }
    }

    pub(crate) fn reader_u32(&self, i: u32, at: usize) -> &AtomicU32 {
        // SAFETY: as reader_u64.
        unsafe { mem::u32_at(self.reader_base(i).add(at)) }
    }

    /// A field of writer entry `j` (writer_off).
    pub(crate) fn writer_u64(&self, j: u32, at: usize) -> &AtomicU64 {
        // SAFETY: an aligned field inside the entry.
        unsafe { mem::u64_at(self.writer_base(j).add(at)) }
    }

    pub(crate) fn writer_u32(&self, j: u32, at: usize) -> &AtomicU32 {
        // SAFETY: as writer_u64.
        unsafe { mem::u32_at(self.writer_base(j).add(at)) }
    }

    fn group_base(&self, g: u32) -> *mut u8 {
        debug_assert!(g < self.geo.max_groups);
        // SAFETY: the group table lies inside the control pages.
        unsafe {
            self.ctl
                .ptr()
                .add((self.geo.groups_offset + u64::from(g) * GROUP_ENTRY_SIZE) as usize)
        }
    }

    /// A field of group entry `g` (group_off).
    pub(crate) fn group_u64(&self, g: u32, at: usize) -> &AtomicU64 {
        // SAFETY: an aligned field inside the entry.
        unsafe { mem::u64_at(self.group_base(g).add(at)) }
    }

    pub(crate) fn group_u32(&self, g: u32, at: usize) -> &AtomicU32 {
        // SAFETY: as group_u64.
        unsafe { mem::u32_at(self.group_base(g).add(at)) }
    }

    /// Group entry `g`'s mutex.
    pub(crate) fn group_mutex(&self, g: u32) -> *mut libc::pthread_mutex_t {
        // SAFETY: the mutex lies inside the entry.
        unsafe { self.group_base(g).add(group_off::MUTEX).cast() }
    }

    /// Group entry `g`'s name bytes (`min(name_len, 40)` of them), copied.
    pub(crate) fn group_name(&self, g: u32) -> String {
        let len = (self
            .group_u32(g, group_off::NAME_LEN)
            .load(Ordering::Relaxed) as usize)
            .min(40);
        let mut name = vec![0u8; len];
        // SAFETY: 40 bytes of name inside the entry, 8-byte aligned (152).
        unsafe { mem::load_bytes(&mut name, self.group_base(g).add(group_off::NAME)) };
        String::from_utf8_lossy(&name).into_owned()
    }

    /// Stores a group's 40 name bytes (its creator, under the stream mutex).
    pub(crate) fn store_group_name(&self, g: u32, name: &[u8; 40]) {
        // SAFETY: 40 bytes of name inside the entry, 8-byte aligned (152), writable.
        unsafe { mem::store_bytes(self.group_base(g).add(group_off::NAME), name) };
    }

    pub(crate) fn reader_lock_offset(&self, i: u32) -> u64 {
        self.geo.readers_offset + u64::from(i) * READER_ENTRY_SIZE
    }

    pub(crate) fn writer_lock_offset(&self, j: u32) -> u64 {
        self.geo.writers_offset + u64::from(j) * WRITER_ENTRY_SIZE
    }

    /// The slot of sequence number `seq` (one division: keep it for the slot's fields).
    #[inline]
    pub(crate) fn slot(&self, seq: u64) -> Slot<'_> {
        let i = seq % self.geo.capacity;
        Slot {
            // SAFETY: i < capacity, and capacity × slot_size fits the ring mapping.
            p: unsafe { self.ring.ptr().add((i * self.geo.slot_size) as usize) },
            _seg: std::marker::PhantomData,
        }
    }

    /// Removes the name if it still refers to this stream (7.4, by handle).
    pub(crate) fn unlink(&self) -> Result<()> {
        unlink_if_same(
            &self.name,
            (self.dev, self.ino),
            "the name now belongs to another segment",
        )
    }
}

/// One slot of the ring (20.1), for as long as its segment is mapped.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a> {
    p: *mut u8,
    _seg: std::marker::PhantomData<&'a StreamSegment>,
}

impl<'a> Slot<'a> {
    /// A u64 field of the slot header (slot_off).
    #[inline]
    pub(crate) fn u64(self, at: usize) -> &'a AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at < slot_off::PAYLOAD);
        // SAFETY: an aligned field of the 64-byte slot header, inside the mapped ring.
        unsafe { mem::u64_at(self.p.add(at)) }
    }

    /// A u32 field of the slot header.
    #[inline]
    pub(crate) fn u32(self, at: usize) -> &'a AtomicU32 {
        debug_assert!(at.is_multiple_of(4) && at < slot_off::PAYLOAD);
        // SAFETY: as u64.
        unsafe { mem::u32_at(self.p.add(at)) }
    }

    /// The slot word (20.2).
    #[inline]
    pub(crate) fn word(self) -> &'a AtomicU64 {
        self.u64(slot_off::WORD)
    }

    /// The payload: `max_bytes` bytes (rounded up to 64), 64-byte aligned.
    #[inline]
    pub(crate) fn payload(self) -> *mut u8 {
        // SAFETY: the payload follows the 64-byte slot header, inside the slot.
        unsafe { self.p.add(slot_off::PAYLOAD) }
    }
}

/// Maps an opened stream under its LOCK_SH: page 0 alone, validated (S3 to S20), then the
/// control pages and the ring; then the lock descriptor (21.3 steps 4 to 7).
fn map_stream(
    canon: &str,
    fd: &OwnedFd,
    size: u64,
    readonly: bool,
    writable_fd: bool,
) -> Result<StreamSegment> {
    if size < HEADER_SIZE as u64 {
        let zero = Box::new([0u8; HEADER_SIZE]);
        return Err(
            validate_stream_header(&zero, size, canon).expect_err("a short file is refused")
        );
    }
    let (geo, mutex_ok) = {
        let page0 = Mapping::map(fd, HEADER_SIZE as u64, false)?;
        let page = copy_page(&page0, &STREAM_CHECKED_RANGES);
        if peek_kind(&page, size) == SegmentKind::Record {
            return Err(Error::Layout(format!(
                "segment {canon} is a record, not a stream: open it with SharedMemoryManager.open"
            )));
        }
        let geo = validate_stream_header(&page, size, canon)?;
        let u32_of = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().expect("4"));
        let mutex_ok = cfg!(target_env = "gnu")
            && u32_of(soff::MUTEX_SIZE) as usize == std::mem::size_of::<libc::pthread_mutex_t>()
            && u32_of(soff::MUTEX_ABI) == layout::mutex_abi_tag();
        (geo, mutex_ok)
    };
    if !readonly && !mutex_ok {
        return Err(Error::Layout(format!(
            "stream {canon} was created by a process with another C library or architecture; it \
             can only be opened read-only here"
        )));
    }
    let ctl = Mapping::map(fd, geo.slots_offset, writable_fd)?;
    // Readers store slot words too (a dead writer's slot abandoned), so the ring is mapped as
    // the control pages are; `readonly` only forbids sending.
    let ring = Mapping::map_at(
        fd,
        geo.total_size - geo.slots_offset,
        geo.slots_offset,
        writable_fd,
    )?;
    let st = sys::fstat(fd)?;
    // 21.3 step 7: the locks go through a description of their own that nothing maps (a
    // mapping holds its description: locks taken through it would live on in a forked child).
    let flags = if writable_fd {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    let lock =
        liveness::open_registered(|| sys::shm_open(canon, flags, 0).map(|fd| fd.into_raw_fd()))
            .map_err(|e| {
                if e == libc::ENOENT {
                    replaced(canon)
                } else {
                    Error::os(e, format!("shm_open({canon})"))
                }
            })?;
    let seg = StreamSegment {
        name: canon.to_string(),
        geo,
        readonly,
        writable_fd,
        mutex_ok,
        ctl,
        ring,
        dev: st.dev,
        ino: st.ino,
        lock,
        pid: sys::current_pid(),
        writer_index: AtomicI64::new(-1),
        writer_state: AtomicU64::new(0),
        local: Mutex::new(Local::default()),
        view: SharedView::new(),
        last_sweep_ns: AtomicI64::new(i64::MIN / 2),
    };
    // SAFETY: an all-zero stat is a valid value of the plain C struct.
    let mut st2: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the lock descriptor is open; st2 is writable.
    let ok = unsafe { libc::fstat(seg.lock_fd(), &mut st2) } == 0;
    if !ok || st2.st_dev != st.dev || st2.st_ino != st.ino {
        return Err(replaced(canon));
    }
    Ok(seg)
}

fn replaced(canon: &str) -> Error {
    Error::os(
        libc::ENOENT,
        format!("shm_open({canon}): the name was removed or replaced while it was opened"),
    )
}

/// Opens an existing stream (21.3). A reader stores into the segment, so even a read-only
/// handle asks for `O_RDWR` first; after EACCES it falls back to a descriptor that can only
/// look.
pub(crate) fn open(name: &str, readonly: bool, timeout: Option<Duration>) -> Result<StreamSegment> {
    let canon = normalize_name(name)?;
    let (fd, size, writable_fd) = match open_ready(&canon, true, timeout) {
        Ok((fd, size)) => (fd, size, true),
        Err(e) if readonly && e.raw_os_error() == Some(libc::EACCES) => {
            let (fd, size) = open_ready(&canon, false, timeout)?;
            (fd, size, false)
        }
        Err(e) => return Err(e),
    };
    let result = map_stream(&canon, &fd, size, readonly, writable_fd);
    let _ = sys::flock(&fd, libc::LOCK_UN);
    result
}

/// What differs between an existing stream's layout and the one asked for, both sides (21.4).
fn stream_differences(there: &StreamGeometry, asked: &StreamGeometry) -> String {
    let frames = |g: &StreamGeometry| match g.dtype {
        None => "bytes".to_string(),
        Some(d) => format!("{}{}", d.name(), layout::format_shape(&g.shape)),
    };
    let rows = [
        (
            "capacity",
            there.capacity.to_string(),
            asked.capacity.to_string(),
        ),
        (
            "max_bytes",
            there.max_bytes.to_string(),
            asked.max_bytes.to_string(),
        ),
        (
            "backpressure",
            there.backpressure.name().to_string(),
            asked.backpressure.name().to_string(),
        ),
        (
            "max_readers",
            there.max_readers.to_string(),
            asked.max_readers.to_string(),
        ),
        (
            "max_writers",
            there.max_writers.to_string(),
            asked.max_writers.to_string(),
        ),
        (
            "max_groups",
            there.max_groups.to_string(),
            asked.max_groups.to_string(),
        ),
        ("frames", frames(there), frames(asked)),
    ];
    rows.iter()
        .filter(|(_, a, b)| a != b)
        .map(|(f, a, b)| format!("{f} {a} there, {b} asked"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Creates a stream (21.2), or with `exist_ok` opens one of the same layout (21.4).
pub(crate) fn create(
    name: &str,
    geo: &StreamGeometry,
    mode: u32,
    exist_ok: bool,
) -> Result<StreamSegment> {
    let canon = normalize_name(name)?;
    check_create(&canon, mode)?;
    create_exclusive(
        &canon,
        mode,
        exist_ok,
        "Stream::open",
        || {
            let seg = open(&canon, false, Some(Duration::ZERO))?;
            let diff = stream_differences(&seg.geo, geo);
            if !diff.is_empty() {
                return Err(Error::Layout(format!(
                    "stream {canon} exists with another layout: {diff}"
                )));
            }
            Ok(seg)
        },
        |fd| build(&canon, fd, geo, mode),
    )
}

fn build(canon: &str, fd: &OwnedFd, geo: &StreamGeometry, mode: u32) -> Result<StreamSegment> {
    sys::flock(fd, libc::LOCK_EX)?;
    sys::reserve(fd, canon, geo.total_size, mode)?;
    {
        let page = Mapping::map(fd, HEADER_SIZE as u64, true)?;
        let id = layout::Identity {
            mutex_size: std::mem::size_of::<libc::pthread_mutex_t>() as u32,
            mutex_abi: layout::mutex_abi_tag(),
            creation_id: sys::random_id()?,
            created_ns: sys::realtime_ns(),
            creator_pid: sys::current_pid(),
        };
        let image = stream_header_image(geo, &id);
        // A fresh zero page nobody reads before the ready marker (openers wait for LOCK_EX).
        // SAFETY: the identity, [0, 256) of page 0 of a writable mapping.
        unsafe { mem::store_bytes(page.ptr(), &image[..256]) };
        // SAFETY: the mutex slot of a fresh page that nobody else uses yet.
        unsafe { crate::mutex::init(page.ptr().add(soff::MUTEX).cast())? };
        // SAFETY: the state word of page 0.
        let state = unsafe { mem::u32_at(page.ptr().add(layout::off::STATE)) };
        // SYNC POINT: pairs with the opener's acquire of the state (copy_page): the identity
        // and the mutex are visible to whoever sees READY.
        state.store(layout::STATE_READY, Ordering::Release);
    }
    let size = sys::fstat(fd)?.size;
    let seg = map_stream(canon, fd, size, false, true)?;
    let _ = sys::flock(fd, libc::LOCK_UN);
    Ok(seg)
}

//! A record segment: the mapped, validated handle every call reaches the bytes through, and
//! its create (build the header, then mark it ready), open (wait for the name and the ready
//! marker, then check every identity field against the mapping) and removal, as
//! docs/LAYOUT.md sections 3, 4 and 8 describe them and the C++ header does them.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::format_duration;
use crate::error::{Error, Result};
use crate::layout::{self, off, Geometry, HEADER_SIZE};
use crate::mem;
use crate::name::normalize_name;
use crate::protocol::{Meta, RecordMemory};
use crate::sys::{self, Mapping};

/// How long an opener racing the creator waits for the ready marker, beyond its own timeout.
const READY_WAIT: Duration = Duration::from_secs(2);

/// A mapped, validated segment, shared by every handle cloned from one open.
pub(crate) struct Segment {
    pub name: String,
    pub geo: Geometry,
    pub readonly: bool,
    pub stall_timeout: Option<Duration>,
    map: Mapping,
    /// A writable alias of page 0 for a read-only handle, when the OS allows it: through it a
    /// waiter announces that it sleeps.
    header_alias: Option<Mapping>,
    dev: u64,
    ino: u64,
}

impl Segment {
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.ptr()
    }

    pub(crate) fn mapped_size(&self) -> usize {
        self.map.len()
    }

    /// A header atomic at a fixed offset below [`HEADER_SIZE`] (every mapping has page 0).
    pub(crate) fn header_u64(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= HEADER_SIZE);
        // SAFETY: page 0 is mapped (validated: the file has at least HEADER_SIZE bytes) for as
        // long as self lives; `at` is one of the aligned offsets of layout::off.
        unsafe { mem::u64_at(self.base().add(at)) }
    }

    pub(crate) fn header_u32(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at.is_multiple_of(4) && at + 4 <= HEADER_SIZE);
        // SAFETY: as header_u64.
        unsafe { mem::u32_at(self.base().add(at)) }
    }

    /// The header through which this process may store its waiter count, if any.
    pub(crate) fn waiters(&self) -> Option<&AtomicU32> {
        if !self.readonly {
            return Some(self.header_u32(off::WAITERS));
        }
        let alias = self.header_alias.as_ref()?;
        // SAFETY: the alias maps page 0 writable for as long as self lives.
        Some(unsafe { mem::u32_at(alias.ptr().add(off::WAITERS)) })
    }

    fn slot(&self, slot: usize) -> *mut u8 {
        // The offsets were validated against the mapping's size at open.
        // SAFETY: record_offset[slot] + record_size <= total_size <= mapped size.
        unsafe { self.base().add(self.geo.record_offset[slot] as usize) }
    }

    fn values_ptr(&self, slot: usize) -> *mut u8 {
        // SAFETY: values_offset + values_size <= record_size (compute_geometry).
        unsafe { self.slot(slot).add(self.geo.values_offset as usize) }
    }

    fn message_ptr(&self, slot: usize) -> *mut u8 {
        // SAFETY: message_offset + message_capacity <= record_size (compute_geometry).
        unsafe { self.slot(slot).add(self.geo.message_offset as usize) }
    }

    pub(crate) fn lock_word(&self, slot: usize) -> &AtomicU64 {
        // SAFETY: the slot is mapped and 64-byte aligned.
        unsafe { mem::u64_at(self.slot(slot)) }
    }

    pub(crate) fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: the mutex slot is within page 0.
        unsafe { self.base().add(off::MUTEX).cast() }
    }

    /// The values of the live slot, for zero-copy readers.
    pub(crate) fn live_values(&self) -> *const u8 {
        self.values_ptr(0)
    }

    /// Before a publish takes the mutex and the clock: starts the transfers it will wait for,
    /// the ownership of the live slot's lines it is about to write and a copy of the header's
    /// publish line (the spinning readers keep pulling both away).
    pub(crate) fn prefetch_live(&self, values: bool, message_bytes: usize) {
        mem::prefetch_for_write(self.slot(0), 64);
        if values {
            mem::prefetch_for_write(self.values_ptr(0), self.geo.values_size as usize);
        }
        if message_bytes != 0 {
            mem::prefetch_for_write(self.message_ptr(0), message_bytes);
        }
        mem::prefetch_for_read(self.header_u64(off::SEQ).as_ptr().cast());
    }

    /// Removes this segment's name if it still refers to this segment.
    pub(crate) fn unlink(&self) -> Result<()> {
        unlink_if_same(
            &self.name,
            (self.dev, self.ino),
            "this segment was already removed and the name now belongs to another one",
        )
    }
}

/// Removes `canon` if the name still refers to the file of `(dev, ino)`: a name another process
/// re-created is left alone and reported as ENOENT with `replaced` (7.4, by handle).
pub(crate) fn unlink_if_same(canon: &str, (dev, ino): (u64, u64), replaced: &str) -> Result<()> {
    let fd = sys::shm_open(canon, libc::O_RDONLY, 0)
        .map_err(|e| Error::os(e, format!("shm_open({canon})")))?;
    let st = sys::fstat(&fd)?;
    if st.dev != dev || st.ino != ino {
        return Err(Error::os(
            libc::ENOENT,
            format!("shm_unlink({canon}): {replaced}"),
        ));
    }
    sys::shm_unlink(canon)
}

impl RecordMemory for Segment {
    #[inline(always)]
    fn slots(&self) -> usize {
        self.geo.slots()
    }

    #[inline(always)]
    fn message_capacity(&self) -> usize {
        self.geo.message_capacity as usize
    }

    #[inline(always)]
    fn load_lock(&self, slot: usize) -> u64 {
        self.lock_word(slot).load(Ordering::Relaxed)
    }

    fn store_lock(&self, slot: usize, value: u64, order: Ordering) {
        self.lock_word(slot).store(value, order);
    }

    #[inline(always)]
    fn load_meta(&self, slot: usize) -> Meta {
        let p = self.slot(slot);
        // SAFETY: the four meta words at 8..40 of a mapped, aligned slot.
        let w = |i: usize| {
            unsafe { mem::u64_at(p.add(off::SLOT_META + 8 * i)) }.load(Ordering::Relaxed)
        };
        Meta::from_words([w(0), w(1), w(2), w(3)])
    }

    fn store_meta(&self, slot: usize, meta: &Meta) {
        let p = self.slot(slot);
        for (i, v) in meta.to_words().into_iter().enumerate() {
            // SAFETY: as load_meta; only writers (writable mappings) store.
            unsafe { mem::u64_at(p.add(off::SLOT_META + 8 * i)) }.store(v, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn load_payload(&self, slot: usize, values: Option<&mut [u8]>, message: Option<&mut [u8]>) {
        if let Some(v) = values {
            assert_eq!(v.len() as u64, self.geo.values_size);
            // SAFETY: the slot's values array, values_size bytes, 64-byte aligned.
            unsafe { mem::load_bytes(v, self.values_ptr(slot)) };
        }
        if let Some(m) = message {
            assert!(m.len() <= self.message_capacity());
            // SAFETY: a prefix of the slot's message, 64-byte aligned.
            unsafe { mem::load_bytes(m, self.message_ptr(slot)) };
        }
    }

    fn store_payload(&self, slot: usize, values: Option<&[u8]>, message: Option<&[u8]>) {
        if let Some(v) = values {
            assert_eq!(v.len() as u64, self.geo.values_size);
            // SAFETY: as load_payload; only writers store.
            unsafe { mem::store_bytes(self.values_ptr(slot), v) };
        }
        if let Some(m) = message {
            assert!(m.len() <= self.message_capacity());
            // SAFETY: as load_payload.
            unsafe { mem::store_bytes(self.message_ptr(slot), m) };
        }
    }

    fn copy_slot_body(&self, dst: usize, src: usize) {
        // SAFETY: two distinct mapped slots of record_size bytes; [8, record_size) is the body.
        unsafe {
            mem::copy_shared(
                self.slot(dst).add(off::SLOT_META),
                self.slot(src).add(off::SLOT_META),
                self.geo.record_size as usize - off::SLOT_META,
            );
        }
    }

    fn copy_body(&self, dst: usize, src: usize, values: bool, message_bytes: usize) {
        // SAFETY: two distinct mapped slots of the same geometry.
        unsafe {
            mem::copy_shared(
                self.slot(dst).add(off::SLOT_META),
                self.slot(src).add(off::SLOT_META),
                32,
            );
            if values {
                mem::copy_shared(
                    self.values_ptr(dst),
                    self.values_ptr(src),
                    self.geo.values_size as usize,
                );
            }
            let n = message_bytes.min(self.message_capacity());
            if n != 0 {
                mem::copy_shared(self.message_ptr(dst), self.message_ptr(src), n);
            }
        }
    }

    fn load_seq(&self) -> u64 {
        self.header_u64(off::SEQ).load(Ordering::Relaxed)
    }

    fn store_seq(&self, value: u64, order: Ordering) {
        self.header_u64(off::SEQ).store(value, order);
    }

    fn notify(&self) {
        let epoch = self.header_u32(off::EPOCH);
        // SYNC POINT: seq_cst pairs with the waiter's seq_cst waiters increment and epoch load
        // (src/wait.rs): either this load sees the waiter's count, or the waiter sees the new
        // epoch.
        epoch.fetch_add(1, Ordering::SeqCst);
        if self.header_u32(off::WAITERS).load(Ordering::SeqCst) != 0 {
            let _ = sys::futex_wake_all(epoch.as_ptr());
        }
    }

    fn count_recovery(&self) {
        self.header_u32(off::RECOVERIES)
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Opens `canon`: waits up to `timeout` for the name (`None`: forever), then a bounded time
/// for its ready marker. Returns the file under LOCK_SH with its size; the caller maps,
/// validates and unlocks it.
pub(crate) fn open_ready(
    canon: &str,
    write: bool,
    timeout: Option<Duration>,
) -> Result<(OwnedFd, u64)> {
    let start = Instant::now();
    let limit = timeout.unwrap_or(Duration::ZERO);
    let mut pause = Duration::from_micros(100);
    let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
    let fd = loop {
        match sys::shm_open(canon, flags, 0) {
            Ok(fd) => break fd,
            Err(libc::ENOENT) => {
                if timeout.is_some() && start.elapsed() >= limit {
                    let hint = if limit.is_zero() {
                        "no segment of that name (create it first, or give open a timeout to \
                         wait for its creator)"
                            .to_string()
                    } else {
                        format!(
                            "no segment of that name appeared within {}",
                            format_duration(limit)
                        )
                    };
                    return Err(Error::os_hint(
                        libc::ENOENT,
                        &format!("shm_open({canon})"),
                        &hint,
                    ));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(Error::os(e, format!("shm_open({canon})"))),
        }
    };
    // A timeout too long for the clock waits as long as the clock allows (about forever).
    let ready_wait = READY_WAIT.saturating_add(limit);
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    let deadline = now
        .checked_add(ready_wait)
        .unwrap_or_else(|| now + far.min(ready_wait));
    loop {
        if !sys::flock_until(&fd, libc::LOCK_SH, deadline)? {
            return Err(Error::WaitTimeout(format!(
                "segment {canon} is still being created after {} (its creator holds its lock)",
                format_duration(ready_wait)
            )));
        }
        let size = sys::fstat(&fd)?.size;
        if size != 0 {
            return Ok((fd, size));
        }
        let _ = sys::flock(&fd, libc::LOCK_UN); // created, not yet sized
        if Instant::now() >= deadline {
            return Err(Error::Layout(format!(
                "segment {canon} was never made ready: it is still empty (0 bytes) after {} (its \
                 creator stopped before sizing it, or is still creating it); {}",
                format_duration(ready_wait),
                layout::never_ready_removal(canon)
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A private copy of the `ranges` of page 0 an opener checks (the identity fields and the
/// reserved bytes), after an acquire of the ready marker. The control words and the mutex stay
/// zero.
pub(crate) fn copy_page(map: &Mapping, ranges: &[(usize, usize)]) -> Box<[u8; HEADER_SIZE]> {
    let mut page = Box::new([0u8; HEADER_SIZE]);
    // SAFETY: the mapping has at least HEADER_SIZE bytes (checked by the caller).
    let state = unsafe { mem::u32_at(map.ptr().add(off::STATE)) }.load(Ordering::Relaxed);
    // SYNC POINT: with the relaxed load above, an acquire load of the ready marker; pairs with
    // the creator's release store in build(): every identity field copied below was written
    // before it.
    std::sync::atomic::fence(Ordering::Acquire);
    for &(start, end) in ranges {
        debug_assert!(start.is_multiple_of(8) && end <= HEADER_SIZE && map.len() >= HEADER_SIZE);
        // SAFETY: within page 0 (the caller mapped at least HEADER_SIZE bytes); every range
        // starts 8-byte aligned.
        unsafe { mem::load_bytes(&mut page[start..end], map.ptr().add(start)) };
    }
    // The state as acquired (the copy loaded it again, relaxed).
    page[off::STATE..off::STATE + 4].copy_from_slice(&state.to_le_bytes());
    page
}

/// Maps an opened file of `size` bytes and checks it: the ready marker, every identity field,
/// and for a writer the mutex ABI.
fn map_and_validate(canon: &str, fd: &OwnedFd, size: u64, readonly: bool) -> Result<Segment> {
    let prefix = format!("segment {canon}: ");
    if size < HEADER_SIZE as u64 {
        let zero = Box::new([0u8; HEADER_SIZE]);
        return Err(layout::validate_header(&zero, size, canon)
            .expect_err("a short file is refused")
            .prefixed(&prefix));
    }
    let map = Mapping::map(fd, size, !readonly)?;
    let page = copy_page(&map, &layout::CHECKED_RANGES);
    let geo = layout::validate_header(&page, size, canon).map_err(|e| e.prefixed(&prefix))?;
    if !readonly {
        if !cfg!(target_env = "gnu") {
            return Err(Error::Layout(format!(
                "segment {canon}: this build's C library is not glibc, whose robust mutex the \
                 layout holds: it opens segments read-only"
            )));
        }
        let u32_of = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().expect("4"));
        if u32_of(off::MUTEX_SIZE) as usize != std::mem::size_of::<libc::pthread_mutex_t>()
            || u32_of(off::MUTEX_ABI) != layout::mutex_abi_tag()
        {
            return Err(Error::Layout(format!(
                "segment {canon} was created by a process with another C library or \
                 architecture; it can only be opened read-only here"
            )));
        }
    }
    let st = sys::fstat(fd)?;
    let mut header_alias = None;
    if readonly {
        // A writable alias of page 0 lets a read-only handle announce that it sleeps.
        if let Ok(rw) = sys::shm_open(canon, libc::O_RDWR, 0) {
            if let Ok(s2) = sys::fstat(&rw) {
                if s2.dev == st.dev && s2.ino == st.ino {
                    header_alias = Mapping::map(&rw, HEADER_SIZE as u64, true).ok();
                }
            }
        }
    }
    Ok(Segment {
        name: canon.to_string(),
        geo,
        readonly,
        stall_timeout: None,
        map,
        header_alias,
        dev: st.dev,
        ino: st.ino,
    })
}

/// Opens an existing segment: waits up to `timeout` for its name and a bounded time for its
/// ready marker, then maps and validates it.
pub(crate) fn open(
    name: &str,
    readonly: bool,
    timeout: Option<Duration>,
    stall_timeout: Option<Duration>,
) -> Result<Segment> {
    let canon = normalize_name(name)?;
    let (fd, size) = open_ready(&canon, !readonly, timeout)?;
    let result = map_and_validate(&canon, &fd, size, readonly);
    let _ = sys::flock(&fd, libc::LOCK_UN);
    let mut seg = result?;
    seg.stall_timeout = stall_timeout;
    Ok(seg)
}

/// Sizes, fills and marks ready a segment just created exclusively (under LOCK_EX, so
/// openers wait for the ready marker), then maps it as an opener would.
fn build(canon: &str, fd: &OwnedFd, geo: &Geometry, mode: u32) -> Result<Segment> {
    sys::flock(fd, libc::LOCK_EX)?;
    sys::reserve(fd, canon, geo.total_size, mode)?;
    let map = Mapping::map(fd, geo.total_size, true)?;
    let pid = sys::current_pid();
    let id = layout::Identity {
        mutex_size: std::mem::size_of::<libc::pthread_mutex_t>() as u32,
        mutex_abi: layout::mutex_abi_tag(),
        creation_id: sys::random_id()?,
        created_ns: sys::realtime_ns(),
        creator_pid: pid,
    };
    let image = layout::header_image(geo, &id);
    // Fresh zero pages that no one else reads before the ready marker (openers wait for our
    // LOCK_EX): the identity ranges are stored with relaxed atomics, as everything else.
    for (start, end) in layout::CHECKED_RANGES {
        // SAFETY: within page 0 of a writable mapping; ranges 8-byte aligned.
        unsafe { mem::store_bytes(map.ptr().add(start), &image[start..end]) };
    }
    // SAFETY: the mutex slot of a fresh page that nobody else uses yet.
    unsafe { crate::mutex::init(map.ptr().add(off::MUTEX).cast())? };
    let now = sys::realtime_ns();
    let fresh = Meta {
        timestamp_ns: now,
        writer_pid: pid,
        ..Meta::default()
    };
    for slot in 0..geo.slots() {
        // SAFETY: the slot's meta words, inside the mapping.
        let p = unsafe {
            map.ptr()
                .add(geo.record_offset[slot] as usize + off::SLOT_META)
        };
        for (i, v) in fresh.to_words().into_iter().enumerate() {
            // SAFETY: aligned words of the slot.
            unsafe { mem::u64_at(p.add(8 * i)) }.store(v, Ordering::Relaxed);
        }
    }
    // SAFETY: the state word of page 0.
    let state = unsafe { mem::u32_at(map.ptr().add(off::STATE)) };
    // SYNC POINT: pairs with the opener's acquire of the state (copy_page): everything above
    // is visible to whoever sees READY.
    state.store(layout::STATE_READY, Ordering::Release);
    drop(map);
    let size = sys::fstat(fd)?.size;
    let seg = map_and_validate(canon, fd, size, false)?;
    let _ = sys::flock(fd, libc::LOCK_UN);
    Ok(seg)
}

/// Creates a segment: exclusive, `mode` permissions, pages reserved up front, header published
/// last behind the ready marker; with `exist_ok`, attaches to an existing one of the same
/// layout instead. A failure removes the half-built name.
pub(crate) fn create(name: &str, geo: &Geometry, mode: u32, exist_ok: bool) -> Result<Segment> {
    let canon = normalize_name(name)?;
    check_create(&canon, mode)?;
    create_exclusive(
        &canon,
        mode,
        exist_ok,
        "SharedMemoryManager::open",
        || {
            let seg = open(&canon, false, Some(Duration::ZERO), None)?;
            let diff = layout::layout_differences(&seg.geo, geo);
            if !diff.is_empty() {
                return Err(Error::Layout(format!(
                    "segment {canon} exists with another layout: {diff}"
                )));
            }
            Ok(seg)
        },
        |fd| build(&canon, fd, geo, mode),
    )
}

/// What every create refuses before it touches the OS: a `mode` that is not a permission
/// mask, a C library other than glibc.
pub(crate) fn check_create(canon: &str, mode: u32) -> Result<()> {
    if mode > 0o777 {
        return Err(Error::Argument(
            "mode must be a permission mask (at most 0o777)".into(),
        ));
    }
    if !cfg!(target_env = "gnu") {
        return Err(Error::Layout(format!(
            "segment {canon}: this build's C library is not glibc, whose robust mutex the layout \
             holds: it can open segments read-only, not create them"
        )));
    }
    Ok(())
}

/// The creation every kind shares (docs/LAYOUT.md 7.1, 7.3, 21.2): `shm_open` with `O_EXCL`;
/// `build` fills the new file (under its LOCK_EX) and makes the handle; on EEXIST with
/// `exist_ok`, `attach` opens the existing one and compares its layout (the name vanishing
/// meanwhile goes back to the exclusive create, at most 100 times). A failing `build` removes
/// the name if it is still this file.
pub(crate) fn create_exclusive<T>(
    canon: &str,
    mode: u32,
    exist_ok: bool,
    open_with: &str,
    mut attach: impl FnMut() -> Result<T>,
    build: impl FnOnce(&OwnedFd) -> Result<T>,
) -> Result<T> {
    for attempt in 0.. {
        let fd = match sys::shm_open(canon, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, mode) {
            Ok(fd) => fd,
            Err(libc::EEXIST) if !exist_ok => {
                return Err(Error::os_hint(
                    libc::EEXIST,
                    &format!("shm_open({canon})"),
                    &format!(
                        "segment {canon} already exists (a segment outlives the process that \
                         created it): open it with {open_with}, pass exist_ok to attach to it, \
                         or remove it with `xshm rm {}`",
                        &canon[1..]
                    ),
                ))
            }
            Err(libc::EEXIST) => match attach() {
                Ok(seg) => return Ok(seg),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && attempt < 100 => continue,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(Error::os(e, format!("shm_open({canon})"))),
        };
        let mine = sys::fstat(&fd).ok();
        return build(&fd).inspect_err(|_| {
            // Only if it is still ours: another process may have removed it and made its own.
            if let Some(mine) = &mine {
                let _ = unlink_if_same(canon, (mine.dev, mine.ino), "");
            }
        });
    }
    unreachable!("the loop returns")
}

/// Removes a segment name (any kind of segment). Unless `force`, refuses a file that is not
/// an xshm segment; one never made ready (empty, or a zero first page) is removed.
pub(crate) fn unlink_name(name: &str, force: bool) -> Result<()> {
    let canon = normalize_name(name)?;
    if !force {
        let fd = sys::shm_open(&canon, libc::O_RDONLY, 0)
            .map_err(|e| Error::os(e, format!("shm_open({canon})")))?;
        let size = sys::fstat(&fd)?.size;
        // Size 0, or a whole first page that starts with the magic or is all zero (7.4); a
        // file of 1 to 4095 bytes is no segment of any kind.
        let ours = size == 0
            || (size >= HEADER_SIZE as u64 && {
                let map = Mapping::map(&fd, HEADER_SIZE as u64, false)?;
                let mut first = vec![0u8; HEADER_SIZE];
                // SAFETY: HEADER_SIZE bytes of a page-aligned mapping of that size.
                unsafe { mem::load_bytes(&mut first, map.ptr()) };
                first[..8] == layout::MAGIC || first.iter().all(|&b| b == 0)
            });
        if !ours {
            return Err(Error::Layout(format!(
                "segment {canon} is not an xshm segment; refusing to remove it without force"
            )));
        }
    }
    sys::shm_unlink(&canon)
}

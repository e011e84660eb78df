//! Streams (docs/LAYOUT.md Part II): every message, in order. [`Stream`] creates, opens,
//! sends and attaches readers ([`StreamReader`]); [`StreamLook`] opens a stream to look, never
//! to store (a monitor, 21.5); [`segment_kind`] tells a record from a stream by name.

use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::{Dtype, HEADER_SIZE};
use crate::mem;
use crate::name::normalize_name;
use crate::segment::{copy_page, open_ready};
use crate::stream_layout::{
    compute_stream_geometry, entry_generation, peek_kind, soff, validate_stream_header,
    Backpressure, SegmentKind, StreamGeometry, STREAM_CHECKED_RANGES,
};
use crate::stream_proto::{self as proto, Claim, GroupInfo, StreamLock, WriterSleeper};
use crate::stream_reader::{self, Start, StreamReader};
use crate::stream_seg::{self, StreamSegment};
use crate::sys::{self, Mapping};

/// Parameters of [`Stream::create`].
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Messages the ring holds (1 to 2^30).
    pub capacity: u64,
    /// Payload bytes a message may have (1 to 2^30).
    pub max_bytes: u64,
    /// What a writer does when the ring is full.
    pub backpressure: Backpressure,
    /// Reader entries (1 to 1024).
    pub max_readers: u32,
    /// Writer entries (1 to 1024).
    pub max_writers: u32,
    /// Group entries (0 to 1024; 0: no groups).
    pub max_groups: u32,
    /// Permission bits of the file (default owner-only, 0o600).
    pub mode: u32,
    /// Attach to an existing stream of the same layout instead of refusing.
    pub exist_ok: bool,
    /// A frame stream: every message is one array of this dtype and `shape` (`max_bytes` must
    /// be its size). `None`: byte messages of up to `max_bytes`.
    pub dtype: Option<Dtype>,
    /// The frame's extents.
    pub shape: Vec<u64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            capacity: 1024,
            max_bytes: 1024,
            backpressure: Backpressure::Block,
            max_readers: 16,
            max_writers: 64,
            max_groups: 16,
            mode: 0o600,
            exist_ok: false,
            dtype: None,
            shape: Vec::new(),
        }
    }
}

/// Parameters of [`Stream::open`].
#[derive(Clone, Debug)]
pub struct StreamOpenOptions {
    /// May receive, may not send.
    pub readonly: bool,
    /// How long to wait for the name to appear (`None`: forever; default zero).
    pub timeout: Option<Duration>,
}

impl Default for StreamOpenOptions {
    fn default() -> Self {
        StreamOpenOptions {
            readonly: false,
            timeout: Some(Duration::ZERO),
        }
    }
}

/// Why a send stopped before it sent everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    All,
    Full,
    MutexHeld,
    Busy,
}

/// A deadline that reads the clock only when asked for the time left of a finite, non-zero
/// timeout: a send's first attempt costs no clock read.
struct LazyDeadline {
    timeout: Option<Duration>,
    end: Option<Instant>,
}

impl LazyDeadline {
    fn new(timeout: Option<Duration>) -> Self {
        LazyDeadline { timeout, end: None }
    }

    /// The time left; `None`: forever.
    fn left(&mut self) -> Option<Duration> {
        let t = self.timeout?;
        if t.is_zero() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let end = *self.end.get_or_insert_with(|| {
            now.checked_add(t)
                .unwrap_or(now + Duration::from_secs(1 << 40))
        });
        Some(end.saturating_duration_since(now))
    }
}

/// What one send keeps across its attempts: the deadline, the handle's count in
/// `space_waiters`, whether it polled for room.
struct ClaimWait<'a> {
    deadline: LazyDeadline,
    sleeping: WriterSleeper<'a>,
    polled: bool,
}

/// A stream handle: sends messages and attaches readers (docs/LAYOUT.md Part II). Cheap to
/// clone (the clones share one mapping, one writer entry and one lock descriptor) and shared
/// between threads; the readers it attaches keep the mapping alive after it is dropped.
/// Dropping the last clone frees its writer entry.
#[derive(Clone)]
pub struct Stream {
    seg: Arc<StreamSegment>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.seg.name)
            .field("geometry", &self.seg.geo)
            .field("readonly", &self.seg.readonly)
            .finish()
    }
}

impl Stream {
    /// Creates the stream `name`: exclusive, owner-only by default, every page reserved, the
    /// header made ready last (21.2). With `exist_ok`, opens an existing stream of the same
    /// layout instead (21.4; another layout is [`Error::Layout`], naming every difference).
    pub fn create(name: &str, opt: &StreamOptions) -> Result<Stream> {
        let geo = compute_stream_geometry(
            opt.capacity,
            opt.max_bytes,
            opt.backpressure,
            opt.max_readers,
            opt.max_writers,
            opt.max_groups,
            opt.dtype.map_or(0, Dtype::code),
            &opt.shape,
        )?;
        let seg = stream_seg::create(name, &geo, opt.mode, opt.exist_ok)?;
        Ok(Stream { seg: Arc::new(seg) })
    }

    /// Opens the existing stream `name` (21.3), waiting up to `opt.timeout` for its name.
    pub fn open(name: &str, opt: &StreamOpenOptions) -> Result<Stream> {
        let seg = stream_seg::open(name, opt.readonly, opt.timeout)?;
        Ok(Stream { seg: Arc::new(seg) })
    }

    fn seg(&self) -> Result<&StreamSegment> {
        self.seg.check_usable()?;
        Ok(&self.seg)
    }

    /// The canonical name ("/x").
    pub fn name(&self) -> &str {
        &self.seg.name
    }

    /// Sizes, offsets, backpressure and frame.
    pub fn geometry(&self) -> &StreamGeometry {
        &self.seg.geo
    }

    /// Messages the ring holds.
    pub fn capacity(&self) -> u64 {
        self.seg.geo.capacity
    }

    /// Payload bytes a message may have.
    pub fn max_bytes(&self) -> u64 {
        self.seg.geo.max_bytes
    }

    /// What a writer does when the ring is full.
    pub fn backpressure(&self) -> Backpressure {
        self.seg.geo.backpressure
    }

    /// True for a handle opened read-only (it may receive, not send).
    pub fn readonly(&self) -> bool {
        self.seg.readonly
    }

    /// The sequence number the next claim gets: messages claimed so far.
    pub fn head(&self) -> u64 {
        // SYNC POINT: pairs with a claimant's release store of head (25.3 step 9).
        self.seg.h64(soff::HEAD).load(Ordering::Acquire)
    }

    /// Slots overwritten while no reader was attached.
    pub fn dropped(&self) -> u64 {
        self.seg.h64(soff::DROPPED).load(Ordering::Relaxed)
    }

    /// Sequence numbers lost with their writer (or whose claim was dropped).
    pub fn abandoned(&self) -> u64 {
        self.seg.h64(soff::ABANDONED).load(Ordering::Relaxed)
    }

    /// Times a locker recovered the stream after another died holding its mutex.
    pub fn recoveries(&self) -> u32 {
        self.seg.h32(soff::RECOVERIES).load(Ordering::Relaxed)
    }

    /// Dead readers detached and dead writers' entries taken over.
    pub fn reaped(&self) -> u32 {
        self.seg.h32(soff::REAPED).load(Ordering::Relaxed)
    }

    /// Sends one message and returns its sequence number, waiting up to `timeout` (`None`:
    /// forever) for room under block, for the mutex, or for a busy slot; then
    /// [`Error::StreamFull`].
    pub fn send(&self, data: &[u8], timeout: Option<Duration>) -> Result<u64> {
        self.send_many(&[data], timeout)
    }

    /// Sends one message if it can be sent now (a zero timeout: no room, a busy slot or a
    /// held mutex is `Ok(None)`).
    pub fn try_send(&self, data: &[u8]) -> Result<Option<u64>> {
        let (why, _, last) = self.send_some(&[data], Some(Duration::ZERO))?;
        Ok((why == Sent::All).then_some(last))
    }

    /// Sends `items` in order (consecutive sequence numbers within each claim of up to
    /// `capacity` of them) and returns the last one's sequence number. Every item is checked
    /// before anything is claimed. On timeout, [`Error::StreamFull`] says how many were sent.
    pub fn send_many(&self, items: &[&[u8]], timeout: Option<Duration>) -> Result<u64> {
        if items.is_empty() {
            return Err(Error::Argument("send_many: no messages".into()));
        }
        let (why, done, last) = self.send_some(items, timeout)?;
        if why == Sent::All {
            return Ok(last);
        }
        Err(self.full_error(done, why))
    }

    fn check_size(s: &StreamSegment, size: usize) -> Result<()> {
        let max = s.geo.max_bytes;
        if s.geo.dtype.is_some() && size as u64 != max {
            return Err(Error::Argument(format!(
                "a frame of stream {} is {max} bytes, not {size}",
                s.name
            )));
        }
        if size as u64 > max {
            return Err(Error::MessageTooLong(format!(
                "message is {size} bytes; stream {} takes at most {max} (max_bytes)",
                s.name
            )));
        }
        Ok(())
    }

    fn check_writable(s: &StreamSegment) -> Result<()> {
        if s.readonly {
            return Err(Error::ReadOnly(format!(
                "stream {} was opened read-only",
                s.name
            )));
        }
        Ok(())
    }

    /// The send loop (25.5) over `items`: what it did, how many it sent, the last one's number.
    fn send_some(&self, items: &[&[u8]], timeout: Option<Duration>) -> Result<(Sent, usize, u64)> {
        let s = self.seg()?;
        Self::check_writable(s)?;
        for it in items {
            Self::check_size(s, it.len())?;
        }
        let mut wait = ClaimWait {
            deadline: LazyDeadline::new(timeout),
            sleeping: WriterSleeper::default(),
            polled: false,
        };
        let mut lost_commits = 0usize;
        let mut done = 0usize;
        let mut last = 0u64;
        while done < items.len() {
            let rest = &items[done..];
            let mut filled = false;
            let want = (rest.len() as u64).min(s.geo.capacity);
            let (why, first, got) = Self::claim_loop(s, want, &mut wait, |x, k| {
                let batch = &rest[..k as usize];
                if batch.iter().map(|b| b.len()).sum::<usize>() > proto::FILL_UNDER_LOCK {
                    return;
                }
                for (j, b) in batch.iter().enumerate() {
                    lost_commits += usize::from(!proto::fill_and_commit(s, x + j as u64, b));
                }
                filled = true;
            })?;
            if why != Sent::All {
                return Ok((why, done, last));
            }
            if !filled {
                for (j, b) in rest[..got as usize].iter().enumerate() {
                    lost_commits += usize::from(!proto::fill_and_commit(s, first + j as u64, b));
                }
            }
            proto::notify_readers(s);
            done += got as usize;
            last = first + got - 1;
        }
        if lost_commits != 0 {
            return Err(Error::Other(format!(
                "stream {}: {lost_commits} of the messages sent were abandoned by readers that \
                 judged this writer dead (was its handle closed while it sent?)",
                s.name
            )));
        }
        Ok((Sent::All, done, last))
    }

    /// The one claim loop of every send (25.5): claims up to `want` consecutive slots, as many
    /// as there is room for, waiting per the policy while there is none. `under_lock(first, k)`
    /// runs with the mutex still held after a claim. Returns what happened, the first number
    /// claimed and how many.
    fn claim_loop<'a>(
        s: &'a StreamSegment,
        mut want: u64,
        wait: &mut ClaimWait<'a>,
        mut under_lock: impl FnMut(u64, u64),
    ) -> Result<(Sent, u64, u64)> {
        let cap = s.geo.capacity;
        loop {
            // SYNC POINT (once counted): seq_cst, pairs with the reader's notify_writers fence.
            let epoch = s.h32(soff::SPACE_EPOCH).load(Ordering::SeqCst);
            let claimed;
            {
                let Some(lock) = StreamLock::acquire(s, wait.deadline.left())? else {
                    return Ok((Sent::MutexHeld, 0, 0));
                };
                let mut c = proto::claim_locked(s, want)?;
                if c == Claim::Full && want > 1 {
                    // Take the room there is rather than wait for the whole batch.
                    let head = s.h64(soff::HEAD).load(Ordering::Relaxed);
                    let room = proto::view_gate(s).saturating_add(cap).saturating_sub(head);
                    if room > 0 {
                        want = want.min(room);
                        c = proto::claim_locked(s, want)?;
                    }
                }
                if let Claim::Made(first) = c {
                    under_lock(first, want);
                    drop(lock);
                    return Ok((Sent::All, first, want));
                }
                claimed = c;
                if c == Claim::Full && wait.deadline.left() != Some(Duration::ZERO) {
                    if wait.polled && !wait.sleeping.counted() {
                        let entry = s.writer_index.load(Ordering::Relaxed) as u32;
                        let gen = entry_generation(s.writer_state.load(Ordering::Relaxed));
                        wait.sleeping.count_in(s, entry, gen);
                        // SYNC POINT: pairs with the reader's fence in notify_writers: either
                        // it sees this count, or the next claim's scan sees its cursor.
                        fence(Ordering::SeqCst);
                        continue;
                    }
                    if wait.sleeping.counted() && proto::reap_readers(s) {
                        continue;
                    }
                }
            }
            let left = wait.deadline.left();
            if left == Some(Duration::ZERO) {
                let why = if claimed == Claim::Busy {
                    Sent::Busy
                } else {
                    Sent::Full
                };
                return Ok((why, 0, 0));
            }
            if claimed == Claim::Full && !wait.polled {
                // A reader that is taking messages frees a slot within microseconds: poll
                // for it before paying a sleep and the reader's wake.
                wait.polled = true;
                let poll = left.map_or(proto::FULL_POLL, |l| l.min(proto::FULL_POLL));
                let end = Instant::now() + poll;
                let mut i: u32 = 0;
                while !proto::has_room(s, want) {
                    std::hint::spin_loop();
                    i = i.wrapping_add(1);
                    if i.is_multiple_of(16) && Instant::now() >= end {
                        break;
                    }
                }
                continue;
            }
            // Busy: a short nap. Full: sleep until a reader moves, looking at the gates'
            // liveness every GATE_CHECK.
            let nap = if claimed == Claim::Busy {
                Duration::from_micros(50)
            } else {
                proto::GATE_CHECK
            };
            let nap = left.map_or(nap, |l| l.min(nap));
            let until = sys::add(sys::monotonic_now(), nap);
            sys::futex_wait(s.h32(soff::SPACE_EPOCH).as_ptr(), epoch, &until);
        }
    }

    /// The StreamFull error of a send that stopped after `done` messages.
    fn full_error(&self, done: usize, why: Sent) -> Error {
        let s = &self.seg;
        let sent = if done == 0 {
            String::new()
        } else {
            format!(" ({done} of the batch were sent)")
        };
        match why {
            Sent::MutexHeld => Error::StreamFull(format!(
                "stream {}: its mutex stayed held past the timeout{sent}",
                s.name
            )),
            Sent::Busy => Error::StreamFull(format!(
                "stream {}: the next slot's earlier writer was still writing it past the timeout \
                 (a ring lapped within one send){sent}",
                s.name
            )),
            _ => {
                let g = proto::slowest_gate(s);
                let who = if g.group != 0 {
                    format!("group {}", s.group_name(g.group - 1))
                } else {
                    format!("pid {}", g.pid)
                };
                Error::StreamFull(format!(
                    "stream {} is full: the slowest reader ({who}, at message {}) is {} messages \
                     behind{sent}",
                    s.name, g.cursor, s.geo.capacity
                ))
            }
        }
    }

    /// Claims a slot for a message of `nbytes` bytes that the caller writes in place (25.7):
    /// waits as [`Stream::send`] does, then hands out the slot, marked and past `head`, as a
    /// [`StreamClaim`] to fill and [`StreamClaim::commit`] (or drop: nothing is sent).
    ///
    /// An open claim pins its slot: readers wait at it (messages arrive in order), and a
    /// writer that laps the ring onto it waits until it ends, under drop_oldest too.
    pub fn claim(&self, nbytes: usize, timeout: Option<Duration>) -> Result<StreamClaim> {
        match self.claim_some(nbytes, timeout)? {
            Ok(c) => Ok(c),
            Err(why) => Err(self.full_error(0, why)),
        }
    }

    /// A claim if a slot is free now, else `None` (as [`Stream::try_send`]).
    pub fn try_claim(&self, nbytes: usize) -> Result<Option<StreamClaim>> {
        Ok(self.claim_some(nbytes, Some(Duration::ZERO))?.ok())
    }

    fn claim_some(
        &self,
        nbytes: usize,
        timeout: Option<Duration>,
    ) -> Result<std::result::Result<StreamClaim, Sent>> {
        let s = self.seg()?;
        Self::check_writable(s)?;
        Self::check_size(s, nbytes)?;
        let mut wait = ClaimWait {
            deadline: LazyDeadline::new(timeout),
            sleeping: WriterSleeper::default(),
            polled: false,
        };
        let (why, first, _) = Self::claim_loop(s, 1, &mut wait, |_, _| {})?;
        if why != Sent::All {
            return Ok(Err(why));
        }
        Ok(Ok(StreamClaim {
            seg: Some(Arc::clone(&self.seg)),
            seq: first,
            size: nbytes,
        }))
    }

    /// Attaches a reader (26.1) at the oldest message the ring still holds, or at the next
    /// one sent ([`Start::Latest`]). Under block it gates writers at once.
    pub fn reader(&self, start: Start) -> Result<StreamReader> {
        self.seg()?;
        stream_reader::attach(&self.seg, start, None)
    }

    /// Attaches a member of the group named `group` (26.8, a work queue): the members share
    /// the group's cursor, and each message goes to one of them, in order, at most once. The
    /// group is created at `start` by its first member and never freed; a later member joins
    /// where the group is (`start` does not apply).
    pub fn group_reader(&self, group: &str, start: Start) -> Result<StreamReader> {
        self.seg()?;
        stream_reader::attach(&self.seg, start, Some(group))
    }

    /// The groups of the stream with their counters and live members (26.8.5).
    pub fn groups(&self) -> Result<Vec<GroupInfo>> {
        Ok(proto::list_groups(self.seg()?))
    }

    /// Removes the stream's name if it still refers to this stream (7.4). Open handles keep
    /// working; nobody else can open it by name.
    pub fn unlink(&self) -> Result<()> {
        self.seg()?.unlink()
    }
}

/// A slot claimed for a message the caller writes in place ([`Stream::claim`], docs/LAYOUT.md
/// 25.7). [`StreamClaim::write`] stores into the slot's payload; [`StreamClaim::commit`]
/// sends the first `n` bytes. Dropped open, the claim is dropped: readers step over its
/// number and count it `skipped`, never `lost` (nothing was sent). A process that dies with a
/// claim open leaves a hole that readers judge and count lost.
pub struct StreamClaim {
    seg: Option<Arc<StreamSegment>>,
    seq: u64,
    size: usize,
}

impl std::fmt::Debug for StreamClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClaim")
            .field("seq", &self.seq)
            .field("size", &self.size)
            .field("open", &self.seg.is_some())
            .finish()
    }
}

impl StreamClaim {
    fn seg(&self) -> Result<&StreamSegment> {
        let s = self
            .seg
            .as_deref()
            .ok_or_else(|| Error::Closed("the claim was already committed or dropped".into()))?;
        s.check_usable()?;
        Ok(s)
    }

    /// The sequence number the message gets.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The bytes claimed.
    pub fn len(&self) -> usize {
        self.size
    }

    /// True for a claim of 0 bytes.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Stores `bytes` into the slot's payload at `offset` (relaxed atomic stores: a reader of
    /// the slot's previous lap may still be copying it, and discards its copy when it sees
    /// the mark).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        let end = offset.checked_add(bytes.len());
        if end.is_none_or(|e| e > self.size) {
            return Err(Error::Argument(format!(
                "write of {} bytes at {offset}: the claim has {}",
                bytes.len(),
                self.size
            )));
        }
        let s = self.seg()?;
        let dst = s.slot(self.seq).payload();
        if offset.is_multiple_of(8) {
            // SAFETY: [offset, offset + len) lies in the claimed payload (checked above), in a
            // writable mapping (a handle that claims has an O_RDWR descriptor); 8-aligned.
            unsafe { mem::store_bytes(dst.add(offset), bytes) };
        } else {
            for (i, &b) in bytes.iter().enumerate() {
                // SAFETY: as above, one byte at a time.
                unsafe { &*dst.add(offset + i).cast::<std::sync::atomic::AtomicU8>() }
                    .store(b, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The slot's payload in the mapping, `len()` bytes, for callers that fill it themselves
    /// (a codec, a DMA). Valid until the claim is committed or dropped.
    ///
    /// # Safety
    /// The caller writes at most `len()` bytes through it, only while the claim is open, and
    /// knows that a reader of the slot's previous lap may be copying it concurrently (with
    /// atomic loads; its copy is discarded once it sees the mark): plain stores there race
    /// with those loads in Rust's memory model if that reader is a thread of this process.
    pub unsafe fn as_mut_ptr(&mut self) -> Result<*mut u8> {
        Ok(self.seg()?.slot(self.seq).payload())
    }

    /// Sends the first `n` bytes (`n ≤ len()`; a frame stream's frame is whole) and returns
    /// the sequence number; the claim is then closed. A wrong `n` is [`Error::Argument`] and
    /// leaves the claim open (commit again, or drop it). [`Error::Other`] when readers
    /// abandoned the slot first because they judged this writer dead.
    pub fn commit(&mut self, n: usize) -> Result<u64> {
        let s = self.seg()?;
        if n > self.size {
            return Err(Error::Argument(format!(
                "commit of {n} bytes: the claim has {}",
                self.size
            )));
        }
        if s.geo.dtype.is_some() && n as u64 != s.geo.max_bytes {
            return Err(Error::Argument(format!(
                "a frame of stream {} is {} bytes, not {n}",
                s.name, s.geo.max_bytes
            )));
        }
        let seg = self.seg.take().expect("checked open");
        let ok = proto::publish(&seg, self.seq, n as u64);
        proto::notify_readers(&seg);
        if !ok {
            return Err(Error::Other(format!(
                "stream {}: message {} was abandoned by readers that judged its writer dead \
                 before it was committed",
                seg.name, self.seq
            )));
        }
        Ok(self.seq)
    }

    /// Withdraws the claim: nothing is sent (readers count the number `skipped`).
    pub fn drop_claim(mut self) {
        self.cancel();
    }

    fn cancel(&mut self) {
        if let Some(seg) = self.seg.take() {
            if seg.owned_here() {
                proto::cancel_claim(&seg, self.seq);
            }
        }
    }
}

impl Drop for StreamClaim {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A stream opened to look, never to store (docs/LAYOUT.md 21.5): a monitor's handle. Its
/// descriptor and mapping are read-only; it attaches no reader, takes no lock, sends nothing
/// and recovers nothing.
pub struct StreamLook {
    name: String,
    geo: StreamGeometry,
    map: Mapping,
    /// The second descriptor of 21.3 step 7, checked to be the same file; kept for the
    /// liveness queries (F_OFD_GETLK) a look may make.
    _lock_fd: OwnedFd,
}

impl std::fmt::Debug for StreamLook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLook")
            .field("name", &self.name)
            .field("geometry", &self.geo)
            .finish()
    }
}

impl StreamLook {
    /// Opens the stream `name` read-only: waits up to `timeout` for the name (`None`:
    /// forever), a bounded time for its ready marker, validates page 0 (S3 to S19 of
    /// section 22) before mapping anything else, then maps the whole stream `PROT_READ`.
    pub fn open(name: &str, timeout: Option<Duration>) -> Result<StreamLook> {
        let canon = normalize_name(name)?;
        let (fd, size) = open_ready(&canon, false, timeout)?;
        // 21.3 steps 4 to 7 under the ready wait's LOCK_SH, as the reference does them.
        let result = Self::open_locked(canon, &fd, size);
        let _ = sys::flock(&fd, libc::LOCK_UN);
        result
    }

    fn open_locked(canon: String, fd: &OwnedFd, size: u64) -> Result<StreamLook> {
        let (geo, map) = Self::map_and_validate(&canon, fd, size)?;
        let first = sys::fstat(fd)?;
        // 21.3 step 7: the lock descriptor, the same file.
        let replaced = || {
            Error::os(
                libc::ENOENT,
                format!("shm_open({canon}): the name was removed or replaced while it was opened"),
            )
        };
        let lock_fd = sys::shm_open(&canon, libc::O_RDONLY, 0).map_err(|e| {
            if e == libc::ENOENT {
                replaced()
            } else {
                Error::os(e, format!("shm_open({canon})"))
            }
        })?;
        let again = sys::fstat(&lock_fd)?;
        if (again.dev, again.ino) != (first.dev, first.ino) {
            return Err(replaced());
        }
        Ok(StreamLook {
            name: canon,
            geo,
            map,
            _lock_fd: lock_fd,
        })
    }

    fn map_and_validate(canon: &str, fd: &OwnedFd, size: u64) -> Result<(StreamGeometry, Mapping)> {
        if size < HEADER_SIZE as u64 {
            let zero = Box::new([0u8; HEADER_SIZE]);
            return Err(
                validate_stream_header(&zero, size, canon).expect_err("a short file is refused")
            );
        }
        let page0 = Mapping::map(fd, HEADER_SIZE as u64, false)?;
        let page = copy_page(&page0, &STREAM_CHECKED_RANGES);
        // S4 looks at the magic and the version, which copy_page copied with the identity.
        let geo = validate_stream_header(&page, size, canon)?;
        drop(page0);
        let map = Mapping::map(fd, geo.total_size, false)?;
        Ok((geo, map))
    }

    /// The canonical name ("/x").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sizes, offsets, backpressure and frame of the stream.
    pub fn geometry(&self) -> &StreamGeometry {
        &self.geo
    }

    fn u64_at(&self, at: usize) -> u64 {
        // SAFETY: `at` is one of the aligned header offsets of soff, inside page 0, which is
        // mapped for as long as self lives.
        unsafe { mem::u64_at(self.map.ptr().add(at)) }.load(Ordering::Relaxed)
    }

    fn u32_at(&self, at: usize) -> u32 {
        // SAFETY: as u64_at.
        unsafe { mem::u32_at(self.map.ptr().add(at)) }.load(Ordering::Relaxed)
    }

    /// The sequence number the next claim gets: messages claimed so far (an acquire load).
    pub fn head(&self) -> u64 {
        let head = self.u64_at(soff::HEAD);
        // SYNC POINT: with the relaxed load above, an acquire load; pairs with a claimant's
        // release store of head (docs/LAYOUT.md 25.3 step 9).
        fence(Ordering::Acquire);
        head
    }

    /// Slots overwritten while no reader was attached.
    pub fn dropped(&self) -> u64 {
        self.u64_at(soff::DROPPED)
    }

    /// Sequence numbers lost with their writer.
    pub fn abandoned(&self) -> u64 {
        self.u64_at(soff::ABANDONED)
    }

    /// Times a locker recovered the stream after another died holding its mutex.
    pub fn recoveries(&self) -> u32 {
        self.u32_at(soff::RECOVERIES)
    }

    /// Dead readers detached and dead writers' entries taken over.
    pub fn reaped(&self) -> u32 {
        self.u32_at(soff::REAPED)
    }

    /// The pid holding the stream mutex, 0 when free (informational).
    pub fn owner_pid(&self) -> u32 {
        self.u32_at(soff::OWNER_PID)
    }
}

/// The kind of the segment `name`, by a look at its first page (docs/LAYOUT.md section 16):
/// record, stream, or unknown (too short, another magic, version or kind). It looks after the
/// ready wait, under `LOCK_SH` (as section 16 advises and the Python binding does): a segment
/// whose creator still holds its lock after 2 s reads as unknown.
pub fn segment_kind(name: &str) -> Result<SegmentKind> {
    let canon = normalize_name(name)?;
    let fd = sys::shm_open(&canon, libc::O_RDONLY, 0)
        .map_err(|e| Error::os(e, format!("shm_open({canon})")))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    if !sys::flock_until(&fd, libc::LOCK_SH, deadline)? {
        return Ok(SegmentKind::Unknown);
    }
    let kind = peek_fd(&fd);
    let _ = sys::flock(&fd, libc::LOCK_UN);
    kind
}

fn peek_fd(fd: &OwnedFd) -> Result<SegmentKind> {
    let size = sys::fstat(fd)?.size;
    if size < HEADER_SIZE as u64 {
        return Ok(SegmentKind::Unknown);
    }
    let map = Mapping::map(fd, HEADER_SIZE as u64, false)?;
    let mut page = Box::new([0u8; HEADER_SIZE]);
    // Only the magic, the version and the kind are looked at: section 16 allows that before
    // the ready marker.
    // SAFETY: the first 32 bytes of a mapping of HEADER_SIZE bytes, page aligned.
    unsafe { mem::load_bytes(&mut page[..32], map.ptr()) };
    Ok(peek_kind(&page, size))
}

//! A stream reader (docs/LAYOUT.md section 26): attached to one reader entry, it takes every
//! message in order from its cursor, counts what it could not take (lapped under drop_oldest,
//! abandoned with a dead writer, or a dropped claim), judges holes, and sleeps counted in
//! `data_waiters` when there is nothing to take.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::liveness;
use crate::mem;
use crate::stream_layout::{
    entry_generation, entry_state, group_off, next_generation, reader_off, slot_off, soff, word,
    Backpressure,
};
use crate::stream_proto::{
    self as proto, hold_word, GroupLock, GroupStep, ReaderSleeper, StreamLock,
};
use crate::stream_seg::StreamSegment;
use crate::sys;

/// Where a new reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Start {
    /// At the oldest message the ring can still hold (`head − capacity`, or 0).
    #[default]
    Oldest,
    /// At the next message sent (`head`).
    Latest,
}

/// What a receive tells about a message besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageInfo {
    /// Its sequence number.
    pub seq: u64,
    /// Its length in bytes.
    pub size: usize,
    /// `CLOCK_REALTIME` when its writer filled the slot, in ns.
    pub timestamp_ns: i64,
    /// Its writer's pid (informational).
    pub writer_pid: u32,
}

/// One message, copied out of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its sequence number.
    pub seq: u64,
    /// `CLOCK_REALTIME` when its writer filled the slot, in ns.
    pub timestamp_ns: i64,
    /// Its writer's pid (informational).
    pub writer_pid: u32,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What one look at the cursor found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Took {
    Message,
    Empty,
    Hole,
}

/// What a take does with a committed message: copy it (the copy may run more than once when
/// a drop_oldest writer laps the slot meanwhile: only the last run is the message), or only
/// find it (a wait).
trait Visit {
    /// Only looks: a committed message at the cursor is found, not taken.
    const PEEK: bool = false;
    /// Copies `info.size` bytes from `src` (a slot's payload in the mapping).
    fn copy(&mut self, src: *const u8, info: &MessageInfo);
    /// After a copy checked whole (the word `w` unchanged): true to leave the message at the
    /// cursor (a view), false to take it.
    fn found(&mut self, _w: u64) -> bool {
        false
    }
}

struct Peek;

impl Visit for Peek {
    const PEEK: bool = true;
    fn copy(&mut self, _: *const u8, _: &MessageInfo) {}
}

struct IntoMessage(Option<Message>);

impl Visit for IntoMessage {
    fn copy(&mut self, src: *const u8, info: &MessageInfo) {
        let m = self.0.get_or_insert_with(|| Message {
            seq: 0,
            timestamp_ns: 0,
            writer_pid: 0,
            data: Vec::new(),
        });
        m.seq = info.seq;
        m.timestamp_ns = info.timestamp_ns;
        m.writer_pid = info.writer_pid;
        m.data.clear();
        m.data.resize(info.size, 0);
        // SAFETY: src is a slot's payload (64-byte aligned), valid for max_bytes ≥ size bytes.
        unsafe { mem::load_bytes(&mut m.data, src) };
    }
}

struct IntoBuffer<'b> {
    buf: &'b mut [u8],
    info: Option<MessageInfo>,
}

impl Visit for IntoBuffer<'_> {
    fn copy(&mut self, src: *const u8, info: &MessageInfo) {
        // SAFETY: as IntoMessage; the buffer holds max_bytes ≥ size (checked by recv_into).
        unsafe { mem::load_bytes(&mut self.buf[..info.size], src) };
        self.info = Some(*info);
    }
}

/// What a view's take records: the payload, its info and the word it saw.
#[derive(Default)]
struct Grab {
    data: Option<(*const u8, MessageInfo)>,
    word: u64,
}

impl Visit for Grab {
    fn copy(&mut self, src: *const u8, info: &MessageInfo) {
        self.data = Some((src, *info));
    }
    fn found(&mut self, w: u64) -> bool {
        self.word = w;
        true
    }
}

/// A message read in place, in the ring (26.9): [`StreamReader::recv_view`]. The reader's
/// cursor stays on it until the view is released (the view borrows the reader, so nothing
/// else is received meanwhile); under block it gates writers like an unread message. Under
/// drop_oldest a writer may lap the slot while the view is held: [`MessageView::release`] then
/// says so ([`Error::Overwritten`]: what was read may be torn) and the reader counts the
/// message lost. Dropped unreleased, the view is released (the verdict is lost).
pub struct MessageView<'r> {
    reader: &'r mut StreamReader,
    data: *const u8,
    info: MessageInfo,
    word: u64,
    released: bool,
}

impl std::fmt::Debug for MessageView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageView")
            .field("info", &self.info)
            .finish()
    }
}

impl MessageView<'_> {
    /// Its sequence number, length, timestamp and writer.
    pub fn info(&self) -> &MessageInfo {
        &self.info
    }

    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        self.info.seq
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.info.size
    }

    /// True for a message of 0 bytes.
    pub fn is_empty(&self) -> bool {
        self.info.size == 0
    }

    /// Copies its bytes (atomic loads: a lapping writer may be storing into the slot) into
    /// `dst[..len()]`; `dst` must hold `len()` bytes.
    pub fn copy_to(&self, dst: &mut [u8]) -> Result<()> {
        if dst.len() < self.info.size {
            return Err(Error::Argument(format!(
                "copy_to: the buffer holds {} bytes; the message has {}",
                dst.len(),
                self.info.size
            )));
        }
        // SAFETY: the payload of the viewed slot, valid for max_bytes ≥ size bytes while the
        // reader (and its mapping) lives, which the borrow guarantees.
        unsafe { mem::load_bytes(&mut dst[..self.info.size], self.data) };
        Ok(())
    }

    /// The payload in the mapping, `len()` bytes, for callers that read it in place.
    ///
    /// # Safety
    /// Valid while the view lives. The bytes are shared memory another process may write (a
    /// lapping writer under drop_oldest): read them with atomic or volatile loads, or accept
    /// that what was read is only a message if [`MessageView::release`] says so.
    pub unsafe fn as_ptr(&self) -> *const u8 {
        self.data
    }

    /// Ends the view: takes the message if its slot still holds it, else counts it lost and
    /// returns [`Error::Overwritten`] (what was read through the view may be torn).
    pub fn release(mut self) -> Result<()> {
        self.end()
    }

    fn end(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let r = &mut *self.reader;
        let s = Arc::clone(&r.seg);
        let c = self.info.seq;
        // SYNC POINT: as a copy's re-check: pairs with the release fence after a lapping
        // writer's mark, so that reads through the view that saw its bytes see the word changed.
        fence(Ordering::Acquire);
        let kept = s.slot(c).word().load(Ordering::Relaxed) == self.word;
        // A view whose reader was closed, or that a forked child inherited (the entry is its
        // parent's), moves nothing; it only says whether the slot was overwritten (26.9).
        let owned = !r.closed && s.owned_here();
        if kept {
            if owned {
                r.st.advance(&s, c + 1, true);
            }
            return Ok(());
        }
        if owned {
            r.st.count_lost(&s, 1);
            r.st.advance(&s, c + 1, false);
        }
        Err(Error::Overwritten(format!(
            "stream {}: message {c} was overwritten while its view was held (drop_oldest); what \
             was read through the view may be torn",
            s.name
        )))
    }
}

impl Drop for MessageView<'_> {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// Interrupts a receive of one [`StreamReader`] from another thread
/// ([`StreamReader::interrupter`]).
#[derive(Clone)]
pub struct Interrupter {
    seg: Arc<StreamSegment>,
    flag: Arc<AtomicBool>,
}

impl Interrupter {
    /// Makes the reader's receive waiting in another thread fail with [`Error::Closed`] now,
    /// and every later one (26.5, "Interrupting a receive").
    pub fn interrupt(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // The epoch moves too: a reader between its look and its sleep then does not sleep.
        let epoch = self.seg.h32(soff::DATA_EPOCH);
        epoch.fetch_add(1, Ordering::SeqCst);
        let _ = sys::futex_wake_all(epoch.as_ptr());
    }
}

/// A reader attached to a stream ([`crate::Stream::reader`]). Used by one thread at a time
/// (receives take `&mut self`); it may move between threads. Closed on drop: under block,
/// writers stop waiting for it. Every receive of a closed reader, or of one inherited across
/// `fork`, is refused ([`Error::Closed`], [`Error::Other`]); its counters (`received`, `lost`,
/// `skipped`, `cursor`) keep answering with the values it had.
pub struct StreamReader {
    seg: Arc<StreamSegment>,
    st: ReaderState,
    interrupted: Arc<AtomicBool>,
    spin: Duration,
    closed: bool,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("stream", &self.seg.name)
            .field("index", &self.st.index)
            .field("cursor", &self.st.cursor)
            .field("received", &self.st.received)
            .field("lost", &self.st.lost)
            .field("skipped", &self.st.skipped)
            .finish()
    }
}

/// A reader's position and counts, apart from its handle so that a take borrows the segment
/// and the position at once (no reference count touched per look).
struct ReaderState {
    index: u32,
    state: u64,
    cursor: u64,
    lost: u64,
    received: u64,
    skipped: u64,
    /// The hole last found at the cursor, and since when.
    hole: Option<(u64, Instant)>,
    /// A member's group index + 1, else 0.
    group: u32,
}

impl ReaderState {
    /// Advances to `next` (26.2, "Advance"): the counter first, then the cursor (release),
    /// then under block the notify of writers.
    fn advance(&mut self, s: &StreamSegment, next: u64, took: bool) {
        if took {
            self.received += 1;
            s.reader_u64(self.index, reader_off::RECEIVED)
                .store(self.received, Ordering::Relaxed);
        }
        self.cursor = next;
        // SYNC POINT: pairs with the writer's acquire load of cursors (for_each_gate): a
        // writer that sees this cursor may overwrite the slots before it, which were copied.
        s.reader_u64(self.index, reader_off::CURSOR)
            .store(next, Ordering::Release);
        if s.geo.backpressure == Backpressure::Block {
            proto::notify_writers(s);
        }
    }

    fn count_lost(&mut self, s: &StreamSegment, n: u64) {
        self.lost += n;
        s.reader_u64(self.index, reader_off::LOST)
            .store(self.lost, Ordering::Relaxed);
    }

    fn count_skipped(&mut self, s: &StreamSegment) {
        self.skipped += 1;
        s.reader_u64(self.index, reader_off::SKIPPED)
            .store(self.skipped, Ordering::Relaxed);
    }

    /// A member's move of its group's cursor (release: writers gate on it), then under block
    /// the notify of writers (26.8.2).
    fn move_group(&mut self, s: &StreamSegment, gi: u32, next: u64) {
        self.cursor = next;
        // SYNC POINT: pairs with the writer's acquire load of gating cursors (for_each_gate):
        // a writer that sees it may overwrite the slots before it, which were copied.
        s.group_u64(gi, group_off::CURSOR)
            .store(next, Ordering::Release);
        if s.geo.backpressure == Backpressure::Block {
            proto::notify_writers(s);
        }
    }

    /// One step of a member on its group (26.8.2): `hold`, the group's cursor, the group's
    /// counter, `hold` = 0, in this program order; then the member's own share.
    fn group_step(&mut self, seg: &StreamSegment, gi: u32, c: u64, next: u64, step: GroupStep) {
        let hold = seg.reader_u64(self.index, reader_off::HOLD);
        hold.store(hold_word(c, step), Ordering::Relaxed);
        self.move_group(seg, gi, next);
        let (at, n) = match step {
            GroupStep::Copy => (group_off::RECEIVED, 1),
            GroupStep::Lose => (group_off::LOST, next - c),
            GroupStep::Skip => (group_off::SKIPPED, 1),
        };
        let counter = seg.group_u64(gi, at);
        // Only the mutex holder writes it: no read-modify-write needed.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
        // The count before the step's end (the order a kill leaves, 26.8.2).
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        hold.store(0, Ordering::Relaxed);
        match step {
            GroupStep::Copy => {
                self.received += 1;
                seg.reader_u64(self.index, reader_off::RECEIVED)
                    .store(self.received, Ordering::Relaxed);
            }
            GroupStep::Lose => self.count_lost(seg, n),
            GroupStep::Skip => self.count_skipped(seg),
        }
    }

    fn took(&mut self, s: &StreamSegment, member: Option<u32>, c: u64) {
        match member {
            None => self.advance(s, c + 1, true),
            Some(gi) => self.group_step(s, gi, c, c + 1, GroupStep::Copy),
        }
    }

    fn missed(&mut self, s: &StreamSegment, member: Option<u32>, c: u64, next: u64) {
        match member {
            None => {
                self.count_lost(s, next - c);
                self.advance(s, next, false);
            }
            Some(gi) => self.group_step(s, gi, c, next, GroupStep::Lose),
        }
    }

    fn skip(&mut self, s: &StreamSegment, member: Option<u32>, c: u64) {
        match member {
            None => {
                self.count_skipped(s);
                self.advance(s, c + 1, false);
            }
            Some(gi) => self.group_step(s, gi, c, c + 1, GroupStep::Skip),
        }
    }

    /// One look at the cursor: the reader's own, or its group's under the group mutex (a
    /// mutex that stays held, by a stopped member, reads as a hole: look again soon).
    fn take<V: Visit>(&mut self, seg: &StreamSegment, v: &mut V) -> Result<Took> {
        if self.group == 0 {
            return self.take_at(seg, v, None);
        }
        let gi = self.group - 1;
        {
            // Nothing there yet, said without the group mutex (26.8.2 step 0): members waiting
            // for a message do not contend with the one taking it.
            let c = seg.group_u64(gi, group_off::CURSOR).load(Ordering::Acquire);
            let w = seg.slot(c).word().load(Ordering::Acquire);
            if w == 0 || (word::tag(w) != 0 && word::seq(w) < c) {
                return Ok(Took::Empty);
            }
        }
        let Some(lock) = GroupLock::acquire(seg, gi, proto::HOLE_CHECK)? else {
            return Ok(Took::Hole);
        };
        let r = self.take_at(seg, v, Some(gi));
        // hold is 0 on every way out (a refusal after a discarded copy included).
        seg.reader_u64(self.index, reader_off::HOLD)
            .store(0, Ordering::Relaxed);
        drop(lock);
        r
    }

    /// One take (26.2) at the cursor, solo or (`member`) the group's: copies the message
    /// there, steps over laps, abandoned and dropped numbers, judges a hole that is due;
    /// refuses a corrupt word or length without moving.
    fn take_at<V: Visit>(
        &mut self,
        s: &StreamSegment,
        v: &mut V,
        member: Option<u32>,
    ) -> Result<Took> {
        let cap = s.geo.capacity;
        loop {
            let c = match member {
                None => self.cursor,
                // The group mutex orders it.
                Some(gi) => s.group_u64(gi, group_off::CURSOR).load(Ordering::Relaxed),
            };
            if c > word::MAX_SEQ {
                // Only a corrupt head or group cursor gets here: refused, never wrapped.
                return Err(Error::Layout(format!(
                    "stream {}: the cursor {c} is past the last sequence number (corrupt segment)",
                    s.name
                )));
            }
            let sl = s.slot(c); // one division for every field below
                                // SYNC POINT: pairs with the release of the commit CAS (publish).
            let w = sl.word().load(Ordering::Acquire);
            if w == word::make(c, word::COMMITTED) {
                if V::PEEK {
                    return Ok(Took::Message);
                }
                let info = MessageInfo {
                    seq: c,
                    size: 0,
                    timestamp_ns: sl.u64(slot_off::TIMESTAMP_NS).load(Ordering::Relaxed) as i64,
                    writer_pid: sl.u32(slot_off::WRITER_PID).load(Ordering::Relaxed),
                };
                let length = sl.u64(slot_off::LENGTH).load(Ordering::Relaxed);
                let sane = if s.geo.dtype.is_some() {
                    length == s.geo.max_bytes
                } else {
                    length <= s.geo.max_bytes
                };
                let info = MessageInfo {
                    size: length as usize,
                    ..info
                };
                if sane {
                    if member.is_some() {
                        s.reader_u64(self.index, reader_off::HOLD)
                            .store(hold_word(c, GroupStep::Copy), Ordering::Relaxed);
                    }
                    v.copy(sl.payload(), &info);
                }
                // SYNC POINT: pairs with the release fence after a lapping writer's mark
                // (claim_locked): a copy that saw any byte of the next lap sees the word changed.
                fence(Ordering::Acquire);
                if sl.word().load(Ordering::Relaxed) != w {
                    continue; // overwritten meanwhile: look again
                }
                if !sane {
                    let what = if s.geo.dtype.is_some() {
                        "not the frame's"
                    } else {
                        "more than max_bytes"
                    };
                    return Err(Error::Layout(format!(
                        "stream {}: message {c} claims {length} bytes, {what} {} (corrupt segment)",
                        s.name, s.geo.max_bytes
                    )));
                }
                if v.found(w) {
                    return Ok(Took::Message); // left at the cursor: a view's release takes it
                }
                self.took(s, member, c);
                return Ok(Took::Message);
            }
            let ws = word::seq(w);
            if w != 0 && word::tag(w) == 0 {
                return Err(Error::Layout(format!(
                    "stream {}: slot of message {c} holds a word with no tag, for message {ws} \
                     (corrupt segment)",
                    s.name
                )));
            }
            if w != 0 && ws > c {
                // Lapped: a real lap left a later number of the same slot; anything else is
                // a corrupt word, which must not walk the cursor forward.
                if ws % cap != c % cap || ws > word::MAX_SEQ {
                    return Err(Error::Layout(format!(
                        "stream {}: slot of message {c} holds a word for message {ws} (corrupt \
                         segment)",
                        s.name
                    )));
                }
                let head = s.h64(soff::HEAD).load(Ordering::Acquire);
                let mut next = if head >= cap { head - cap + 1 } else { 0 };
                if cap == 1 {
                    next = head;
                }
                // Every number up to ws − capacity has had its slot claimed again.
                let next = next.max(c + 1).max(ws - cap + 1);
                self.missed(s, member, c, next);
                continue;
            }
            if w == word::make(c, word::ABANDONED) {
                let cancelled = sl.u64(slot_off::CANCELLED).load(Ordering::Relaxed) == c + 1;
                // SYNC POINT: as for a copy.
                fence(Ordering::Acquire);
                if sl.word().load(Ordering::Relaxed) != w {
                    continue;
                }
                if cancelled {
                    self.skip(s, member, c);
                } else {
                    self.missed(s, member, c, c + 1);
                }
                continue;
            }
            if w != word::make(c, word::WRITING) {
                return Ok(Took::Empty);
            }
            // A hole: judged once it has stayed WRITING for HOLE_CHECK, across calls.
            let now = Instant::now();
            match self.hole {
                Some((seq, since)) if seq == c => {
                    if now.duration_since(since) < proto::HOLE_CHECK {
                        return Ok(Took::Hole);
                    }
                    self.hole = Some((c, now)); // again after HOLE_CHECK if its writer lives
                    if !judge_hole(s, c) {
                        return Ok(Took::Hole);
                    }
                }
                _ => {
                    self.hole = Some((c, now));
                    return Ok(Took::Hole);
                }
            }
        }
    }
}

/// Attaches a reader to `seg` (26.1): solo, or a member of the group named `group`.
pub(crate) fn attach(
    seg: &Arc<StreamSegment>,
    start: Start,
    group: Option<&str>,
) -> Result<StreamReader> {
    let s: &StreamSegment = seg;
    if let Some(name) = group {
        proto::check_group_name(name)?;
    }
    if !s.writable_fd {
        return Err(Error::ReadOnly(format!(
            "stream {}: a reader writes its cursor into the segment, and this process may only \
             read it",
            s.name
        )));
    }
    if !s.mutex_ok {
        return Err(Error::Layout(format!(
            "stream {} was created by a process with another C library or architecture: \
             attaching a reader takes its mutex, which this process cannot use",
            s.name
        )));
    }
    let Some(_lock) = StreamLock::acquire(s, Some(Duration::from_secs(10)))? else {
        return Err(Error::WaitTimeout(format!(
            "stream {}: its mutex stayed held for 10 s",
            s.name
        )));
    };
    let start_cursor = |head: u64| match start {
        Start::Latest => head,
        Start::Oldest => head.saturating_sub(s.geo.capacity),
    };
    // The group first (before any reader entry): it outlives its members.
    let gi = match group {
        Some(name) => {
            let head = s.h64(soff::HEAD).load(Ordering::Relaxed);
            proto::find_or_create_group(s, name, start_cursor(head))? + 1
        }
        None => 0,
    };
    for pass in 0..2 {
        for i in 0..s.geo.max_readers {
            let state = s.reader_u64(i, reader_off::STATE);
            // A free entry; one still marked asleep is a closed reader's receive that has not
            // returned yet (its count is its own to give back).
            if state.load(Ordering::Acquire) != 0
                || s.reader_u32(i, reader_off::SLEEPING)
                    .load(Ordering::Acquire)
                    != 0
            {
                continue;
            }
            if !liveness::hold(s.lock_fd(), s.reader_lock_offset(i)) {
                continue;
            }
            let head = s.h64(soff::HEAD).load(Ordering::Relaxed);
            let cursor = if gi != 0 {
                s.group_u64(gi - 1, group_off::CURSOR)
                    .load(Ordering::Relaxed)
            } else {
                start_cursor(head)
            };
            // A dead member's step left half done in this entry is finished before the entry
            // is reused: its group's next lock does it (26.1 step 3, 26.8.3).
            let old_group = s.reader_u32(i, reader_off::GROUP).load(Ordering::Relaxed);
            if s.reader_u64(i, reader_off::HOLD).load(Ordering::Relaxed) != 0
                && old_group != 0
                && old_group <= s.geo.max_groups
            {
                // A refusal (a corrupt group mutex) gives the entry's lock back first.
                if let Err(e) = GroupLock::acquire(s, old_group - 1, Duration::from_secs(1)) {
                    liveness::release(s.lock_fd(), s.reader_lock_offset(i));
                    return Err(e);
                }
            }
            s.reader_u64(i, reader_off::HOLD)
                .store(0, Ordering::Relaxed);
            s.reader_u32(i, reader_off::GROUP)
                .store(gi, Ordering::Relaxed);
            let gen_word = s.reader_u32(i, reader_off::GENERATION);
            let gen = next_generation(gen_word.load(Ordering::Relaxed));
            gen_word.store(gen, Ordering::Relaxed);
            let mine = entry_state(gen);
            for (at, v) in [
                (reader_off::START, cursor),
                (reader_off::CURSOR, cursor),
                (reader_off::LOST, 0),
                (reader_off::RECEIVED, 0),
                (reader_off::SKIPPED, 0),
                (reader_off::ATTACHED_NS, sys::realtime_ns() as u64),
            ] {
                s.reader_u64(i, at).store(v, Ordering::Relaxed);
            }
            s.reader_u32(i, reader_off::PID)
                .store(sys::current_pid(), Ordering::Relaxed);
            s.local().own_readers.push(i);
            // SYNC POINT: release, with the fields above; pairs with a writer's scan (acquire
            // load of state) and a monitor's.
            state.store(mine, Ordering::Release);
            s.h32(soff::READERS_GEN).fetch_add(1, Ordering::AcqRel);
            return Ok(StreamReader {
                seg: Arc::clone(seg),
                st: ReaderState {
                    index: i,
                    state: mine,
                    cursor,
                    lost: 0,
                    received: 0,
                    skipped: 0,
                    hole: None,
                    group: gi,
                },
                interrupted: Arc::new(AtomicBool::new(false)),
                spin: Duration::ZERO,
                closed: false,
            });
        }
        if pass == 0 && !proto::reap_readers(s) {
            break;
        }
    }
    Err(Error::Other(format!(
        "stream {} has all {} reader entries in use by live readers (max_readers); close a \
         reader or create the stream with more",
        s.name, s.geo.max_readers
    )))
}

impl StreamReader {
    fn seg(&self) -> Result<&StreamSegment> {
        if self.closed {
            return Err(Error::Closed("the stream reader is closed".into()));
        }
        self.seg.check_usable()?;
        Ok(&self.seg)
    }

    fn check_interrupted(&self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(Error::Closed(format!(
                "stream {}: the reader was interrupted (closed from another thread)",
                self.seg.name
            )));
        }
        Ok(())
    }

    /// The sequence number of the next message this reader takes; a member's is its
    /// group's.
    pub fn cursor(&self) -> u64 {
        if self.st.group != 0 {
            return self
                .seg
                .group_u64(self.st.group - 1, group_off::CURSOR)
                .load(Ordering::Acquire);
        }
        self.st.cursor
    }

    /// The name of the group it is a member of, if any. A member's `received`, `lost` and
    /// `skipped` are its own share of the group's ([`crate::Stream::groups`]).
    pub fn group(&self) -> Option<String> {
        (self.st.group != 0).then(|| self.seg.group_name(self.st.group - 1))
    }

    /// Messages it missed: overwritten before it got to them (drop_oldest), or abandoned by
    /// a writer that died before it committed them.
    pub fn lost(&self) -> u64 {
        self.st.lost
    }

    /// Messages it took.
    pub fn received(&self) -> u64 {
        self.st.received
    }

    /// Claims their writers dropped, stepped over (never sent, so not lost).
    /// `received + lost + skipped = cursor − start` (28.2).
    pub fn skipped(&self) -> u64 {
        self.st.skipped
    }

    /// Messages sent (or being sent) that it has not taken yet.
    pub fn lag(&self) -> u64 {
        let head = self.seg.h64(soff::HEAD).load(Ordering::Acquire);
        head.saturating_sub(self.cursor())
    }

    /// Its reader-table entry.
    pub fn index(&self) -> u32 {
        self.st.index
    }

    /// How long a receive polls before it sleeps (at least 2 µs; default 0: the minimum).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// A handle that interrupts this reader's receive from another thread.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter {
            seg: Arc::clone(&self.seg),
            flag: Arc::clone(&self.interrupted),
        }
    }

    /// The next message if one can be taken now (never waits).
    pub fn try_recv(&mut self) -> Result<Option<Message>> {
        self.seg()?;
        self.check_interrupted()?;
        let mut v = IntoMessage(None);
        Ok(match self.st.take(&self.seg, &mut v)? {
            Took::Message => v.0,
            _ => None,
        })
    }

    /// The next message, waiting up to `timeout` (`None`: forever); [`Error::WaitTimeout`]
    /// when none came.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Message> {
        let mut v = IntoMessage(None);
        if self.visit(&mut v, timeout)? {
            if let Some(m) = v.0 {
                return Ok(m);
            }
        }
        Err(Error::WaitTimeout(format!(
            "no message on stream {} within the timeout",
            self.seg.name
        )))
    }

    /// Receives into `buf` (at least `max_bytes` long, so any message fits); `None` on
    /// timeout.
    pub fn recv_into(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<Option<MessageInfo>> {
        let max = self.seg()?.geo.max_bytes;
        if (buf.len() as u64) < max {
            return Err(Error::Argument(format!(
                "recv_into: the buffer holds {} bytes; a message may have {max}",
                buf.len()
            )));
        }
        let mut v = IntoBuffer { buf, info: None };
        if !self.visit(&mut v, timeout)? {
            return Ok(None);
        }
        Ok(v.info)
    }

    /// Waits up to `timeout` for one message, then takes every message already committed, up
    /// to `max_n`. Empty on timeout.
    pub fn recv_many(&mut self, max_n: usize, timeout: Option<Duration>) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        if max_n == 0 {
            return Ok(out);
        }
        let mut v = IntoMessage(None);
        if !self.visit(&mut v, timeout)? {
            return Ok(out);
        }
        out.extend(v.0.take());
        while out.len() < max_n {
            if self.st.take(&self.seg, &mut v)? != Took::Message {
                break;
            }
            out.extend(v.0.take());
        }
        Ok(out)
    }

    /// The next message read in place, waiting up to `timeout` as [`StreamReader::recv`]
    /// does; `None` on timeout. Not for a group member ([`Error::Argument`]: its messages are
    /// taken under the group's mutex).
    pub fn recv_view(&mut self, timeout: Option<Duration>) -> Result<Option<MessageView<'_>>> {
        self.check_can_view()?;
        let mut g = Grab::default();
        if !self.visit(&mut g, timeout)? {
            return Ok(None);
        }
        Ok(self.make_view(g))
    }

    /// The next message read in place if one is there now.
    pub fn try_recv_view(&mut self) -> Result<Option<MessageView<'_>>> {
        self.check_can_view()?;
        self.seg()?;
        self.check_interrupted()?;
        let mut g = Grab::default();
        if self.st.take(&self.seg, &mut g)? != Took::Message {
            return Ok(None);
        }
        Ok(self.make_view(g))
    }

    fn check_can_view(&self) -> Result<()> {
        self.seg()?;
        if self.st.group != 0 {
            return Err(Error::Argument(format!(
                "recv_view: a member of group {} takes its messages under the group's mutex; \
                 use recv()",
                self.seg.group_name(self.st.group - 1)
            )));
        }
        Ok(())
    }

    fn make_view(&mut self, g: Grab) -> Option<MessageView<'_>> {
        let (data, info) = g.data?;
        Some(MessageView {
            reader: self,
            data,
            info,
            word: g.word,
            released: false,
        })
    }

    /// Waits up to `timeout` until the next message can be taken, and leaves it there; false
    /// on timeout. Slots lapped or abandoned meanwhile are counted on the way.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.visit(&mut Peek, timeout)
    }

    /// Takes the next message with `v`, waiting up to `timeout` (26.5). False on timeout.
    fn visit<V: Visit>(&mut self, v: &mut V, timeout: Option<Duration>) -> Result<bool> {
        self.seg()?;
        self.check_interrupted()?;
        let mut t = self.st.take(&self.seg, v)?;
        if t == Took::Message {
            return Ok(true);
        }
        let start = sys::monotonic_now();
        let deadline = timeout.map(|d| sys::add(start, d));
        let mut spin = self.spin.max(proto::EMPTY_POLL);
        if let Some(d) = timeout {
            spin = spin.min(d);
        }
        if !spin.is_zero() {
            let spin_end = sys::add(start, spin);
            let mut pauses = 1u32;
            let mut i = 0u32;
            loop {
                // Back off between looks (up to 16 pauses): each look takes the slot's line
                // from the writer about to fill it.
                for _ in 0..pauses {
                    std::hint::spin_loop();
                }
                pauses = (pauses * 2).min(16);
                t = self.st.take(&self.seg, v)?;
                if t == Took::Message {
                    return Ok(true);
                }
                i = i.wrapping_add(1);
                if i.is_multiple_of(16) {
                    self.check_interrupted()?;
                    let now = sys::monotonic_now();
                    if deadline.is_some_and(|d| !sys::before(&now, &d)) {
                        return Ok(false);
                    }
                    if !sys::before(&now, &spin_end) {
                        break;
                    }
                }
            }
        }
        let seg = Arc::clone(&self.seg);
        let _sleeping =
            ReaderSleeper::count_in(&seg, self.st.index, entry_generation(self.st.state));
        let epoch = seg.h32(soff::DATA_EPOCH);
        loop {
            // SYNC POINT: seq_cst, pairs with notify_readers (seq_cst on both sides): either
            // this load sees a claim's bump (and the next take its commit), or the writer's
            // waiters load sees this reader's count and wakes it.
            let e = epoch.load(Ordering::SeqCst);
            t = self.st.take(&self.seg, v)?;
            if t == Took::Message {
                return Ok(true);
            }
            self.check_interrupted()?;
            let now = sys::monotonic_now();
            if deadline.is_some_and(|d| !sys::before(&now, &d)) {
                return Ok(false);
            }
            let mut until = sys::add(now, proto::LOST_WAKE_CHECK);
            if let Some(d) = deadline {
                if sys::before(&d, &until) {
                    until = d;
                }
            }
            if t == Took::Hole {
                // Wake to judge it (take does, once it is HOLE_CHECK old).
                let judge = sys::add(now, proto::HOLE_CHECK);
                if sys::before(&judge, &until) {
                    until = judge;
                }
            }
            sys::futex_wait(epoch.as_ptr(), e, &until);
        }
    }

    /// Detaches (26.6): under block, writers stop waiting for it. Idempotent; also on drop.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let s = &*self.seg;
        if !s.owned_here() {
            return; // a forked child's copy: the entry is the parent's
        }
        // Under the mutex if it comes within GATE_CHECK (writers then see the detach at their
        // next claim and no reaper runs meanwhile); without it otherwise.
        let lock = if s.mutex_ok {
            StreamLock::acquire(s, Some(proto::GATE_CHECK))
                .ok()
                .flatten()
        } else {
            None
        };
        // The lock byte first: once the state is 0 another reader of this handle (the same
        // open file description) may take the entry, and a release after that would drop its
        // lock.
        liveness::release(s.lock_fd(), s.reader_lock_offset(self.st.index));
        if s.reader_u64(self.st.index, reader_off::STATE)
            .compare_exchange(self.st.state, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            s.h32(soff::READERS_GEN).fetch_add(1, Ordering::AcqRel);
        }
        {
            let mut local = s.local();
            if let Some(k) = local.own_readers.iter().position(|&i| i == self.st.index) {
                local.own_readers.swap_remove(k);
            }
        }
        drop(lock);
        proto::wake_writers(s);
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.close();
    }
}

/// The slot of `c` has stayed WRITING for HOLE_CHECK: abandons it if its writer died (26.4).
/// True when it is no longer WRITING(c).
fn judge_hole(s: &StreamSegment, c: u64) -> bool {
    let w = s.slot(c).word().load(Ordering::Acquire);
    if w != word::make(c, word::WRITING) {
        return true;
    }
    let index = s
        .slot(c)
        .u32(slot_off::WRITER_INDEX)
        .load(Ordering::Relaxed);
    let state = s
        .slot(c)
        .u64(slot_off::WRITER_STATE)
        .load(Ordering::Relaxed);
    if proto::writer_alive(s, index, state) {
        return false;
    }
    if s.slot(c)
        .word()
        .compare_exchange(
            w,
            word::make(c, word::ABANDONED),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
    {
        s.h64(soff::ABANDONED).fetch_add(1, Ordering::Relaxed);
        proto::notify_readers(s);
    }
    true
}

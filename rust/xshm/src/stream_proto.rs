//! The stream protocol's shared steps, which writers and readers both take (docs/LAYOUT.md
//! 23 to 26): whether a table entry's owner lives, counted sleepers and their sweeps, the two
//! notifies, the stream mutex with its recovery (24.2), the writer's registration (25.2) and
//! claim (25.3), the gates, reaping (26.7), and the fill and commit of a slot (25.4).
//! `stream.rs` builds the public handles from these.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::liveness;
use crate::mem;
use crate::mutex::{self, Locked};
use crate::stream_layout::{
    entry_generation, entry_state, group_off, next_generation, reader_off, slot_off, soff, word,
    writer_off,
};
use crate::stream_seg::{ClaimView, Slot, StreamSegment};
use crate::sys;

/// How long a slot may stay WRITING before a waiting reader asks whether its writer lives.
pub(crate) const HOLE_CHECK: Duration = Duration::from_millis(10);
/// How often a blocked writer asks whether the readers gating it live; the sweeps' period.
pub(crate) const GATE_CHECK: Duration = Duration::from_millis(10);
/// A sleeping reader looks again at least this often (a wake lost with its writer).
pub(crate) const LOST_WAKE_CHECK: Duration = Duration::from_secs(1);
/// How long a held stream mutex is polled before waiting for it.
const LOCK_POLL: Duration = Duration::from_micros(20);
/// How long a writer facing a full ring polls for room before it sleeps.
pub(crate) const FULL_POLL: Duration = Duration::from_micros(50);
/// How long a reader polls for a message before it sleeps (at least).
pub(crate) const EMPTY_POLL: Duration = Duration::from_micros(2);
/// Claims of at most this many payload bytes are filled and committed under the mutex.
pub(crate) const FILL_UNDER_LOCK: usize = 4096;

/// Whether the writer-table entry `index`, seen in a slot with `state`, still belongs to a
/// live writer (23.2).
pub(crate) fn writer_alive(s: &StreamSegment, index: u32, state: u64) -> bool {
    if index >= s.geo.max_writers {
        return false; // a corrupt slot: nobody to wait for
    }
    if i64::from(index) == s.writer_index.load(Ordering::Acquire)
        && state == s.writer_state.load(Ordering::Acquire)
    {
        return true;
    }
    if s.writer_u64(index, writer_off::STATE)
        .load(Ordering::Acquire)
        != state
    {
        return false;
    }
    liveness::held_by_other(s.lock_fd(), s.writer_lock_offset(index))
}

/// Whether reader entry `i`'s reader lives: one of this handle's own, else the kernel's word.
pub(crate) fn reader_alive(s: &StreamSegment, i: u32) -> bool {
    if s.local().own_readers.contains(&i) {
        return true;
    }
    liveness::held_by_other(s.lock_fd(), s.reader_lock_offset(i))
}

/// Gives back the count of a sleeper marked `gen` in `mark`, once: whoever clears the mark
/// decrements (23.4 steps 2 and 3). True if this call did.
pub(crate) fn clear_sleeper(waiters: &AtomicU32, mark: &AtomicU32, gen: u32) -> bool {
    if gen == 0
        || mark
            .compare_exchange(gen, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    {
        return false;
    }
    waiters.fetch_sub(1, Ordering::SeqCst);
    true
}

/// A reader's sleeping phase (26.5 step 3): counted in `data_waiters`, marked in its entry;
/// counted out on every way out.
pub(crate) struct ReaderSleeper<'a> {
    waiters: &'a AtomicU32,
    mark: &'a AtomicU32,
    gen: u32,
}

impl<'a> ReaderSleeper<'a> {
    pub(crate) fn count_in(s: &'a StreamSegment, index: u32, gen: u32) -> Self {
        let waiters = s.h32(soff::DATA_WAITERS);
        let mark = s.reader_u32(index, reader_off::SLEEPING);
        // The count first: a death between the two leaves it one too high, never too low.
        waiters.fetch_add(1, Ordering::SeqCst);
        mark.store(gen, Ordering::SeqCst);
        ReaderSleeper { waiters, mark, gen }
    }
}

impl Drop for ReaderSleeper<'_> {
    fn drop(&mut self) {
        clear_sleeper(self.waiters, self.mark, self.gen);
    }
}

/// A send's count in `space_waiters`: the handle counts once however many of its threads
/// sleep for room (23.4, "A writer handle counts once").
#[derive(Default)]
pub(crate) struct WriterSleeper<'a> {
    s: Option<&'a StreamSegment>,
    entry: u32,
    gen: u32,
}

impl<'a> WriterSleeper<'a> {
    pub(crate) fn counted(&self) -> bool {
        self.s.is_some()
    }

    pub(crate) fn count_in(&mut self, s: &'a StreamSegment, entry: u32, gen: u32) {
        if self.s.is_some() {
            return;
        }
        let mut local = s.local();
        self.s = Some(s);
        self.entry = entry;
        self.gen = gen;
        local.writer_sleepers += 1;
        if local.writer_sleepers == 1 {
            s.h32(soff::SPACE_WAITERS).fetch_add(1, Ordering::SeqCst);
            s.writer_u32(entry, writer_off::SLEEPING)
                .store(gen, Ordering::SeqCst);
        }
    }
}

impl Drop for WriterSleeper<'_> {
    fn drop(&mut self) {
        let Some(s) = self.s else { return };
        let mut local = s.local();
        local.writer_sleepers -= 1;
        if local.writer_sleepers == 0 {
            clear_sleeper(
                s.h32(soff::SPACE_WAITERS),
                s.writer_u32(self.entry, writer_off::SLEEPING),
                self.gen,
            );
        }
    }
}

fn monotonic_ns() -> i64 {
    let t = sys::monotonic_now();
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

/// Whether this handle may sweep now: at most once every GATE_CHECK, across its threads.
fn sweep_due(s: &StreamSegment) -> bool {
    let now = monotonic_ns();
    let last = s.last_sweep_ns.load(Ordering::Relaxed);
    if now - last < GATE_CHECK.as_nanos() as i64 {
        return false;
    }
    s.last_sweep_ns
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

/// A wake of readers woke nobody while `data_waiters` said some sleep: gives back the counts
/// of entries whose reader is gone (23.4 step 4).
fn sweep_sleeping_readers(s: &StreamSegment) {
    if !sweep_due(s) {
        return;
    }
    for i in 0..s.geo.max_readers {
        let mark = s.reader_u32(i, reader_off::SLEEPING);
        let gen = mark.load(Ordering::Acquire);
        if gen != 0 && !reader_alive(s, i) {
            clear_sleeper(s.h32(soff::DATA_WAITERS), mark, gen);
        }
    }
}

/// The same for writer handles sleeping for room.
fn sweep_sleeping_writers(s: &StreamSegment) {
    if !sweep_due(s) {
        return;
    }
    let own = s.writer_index.load(Ordering::Acquire);
    for j in 0..s.geo.max_writers {
        let mark = s.writer_u32(j, writer_off::SLEEPING);
        let gen = mark.load(Ordering::Acquire);
        if gen == 0 || i64::from(j) == own {
            continue;
        }
        if !liveness::held_by_other(s.lock_fd(), s.writer_lock_offset(j)) {
            clear_sleeper(s.h32(soff::SPACE_WAITERS), mark, gen);
        }
    }
}

/// Wakes readers sleeping on `data_epoch` (25.4). SYNC POINT: the seq_cst bump and waiters
/// load pair with the reader's seq_cst count-in and epoch load (StreamReader's wait): either
/// the reader sees the new epoch (and the commits before it), or this load sees the reader.
pub(crate) fn notify_readers(s: &StreamSegment) {
    let epoch = s.h32(soff::DATA_EPOCH);
    epoch.fetch_add(1, Ordering::SeqCst);
    if s.h32(soff::DATA_WAITERS).load(Ordering::SeqCst) != 0
        && sys::futex_wake_all(epoch.as_ptr()) == 0
    {
        sweep_sleeping_readers(s);
    }
}

/// Wakes writers waiting for room (26.2, "Advance"). SYNC POINT: the seq_cst fence after the
/// reader's cursor store pairs with the writer's fence after its count-in (send loop): either
/// this load sees the writer, or the writer's next scan sees the cursor.
pub(crate) fn notify_writers(s: &StreamSegment) {
    fence(Ordering::SeqCst);
    if s.h32(soff::SPACE_WAITERS).load(Ordering::Relaxed) != 0 {
        let epoch = s.h32(soff::SPACE_EPOCH);
        epoch.fetch_add(1, Ordering::SeqCst);
        if sys::futex_wake_all(epoch.as_ptr()) == 0 {
            sweep_sleeping_writers(s);
        }
    }
}

/// Bumps `space_epoch` and wakes every writer: a reader's close (26.6 step 6).
pub(crate) fn wake_writers(s: &StreamSegment) {
    let epoch = s.h32(soff::SPACE_EPOCH);
    epoch.fetch_add(1, Ordering::SeqCst);
    let _ = sys::futex_wake_all(epoch.as_ptr());
}

/// Mutex held after EOWNERDEAD (24.2): settles the dead holder's pending overwrite, abandons
/// its marks at and past `head` and moves `head` past them, then tells everyone to look again.
fn recover(s: &StreamSegment) {
    let pending = s.h64(soff::CLAIM_SEQ).load(Ordering::Relaxed);
    if pending != 0 {
        let x = pending - 1;
        let w = s.slot(x).word().load(Ordering::Relaxed);
        if w == word::make(x, word::WRITING) || w == word::make(x, word::ABANDONED) {
            let settled = s.h64(soff::CLAIM_DROPPED).load(Ordering::Relaxed);
            s.h64(soff::DROPPED).store(settled, Ordering::Relaxed);
        }
        s.h64(soff::CLAIM_SEQ).store(0, Ordering::Relaxed);
    }
    let mut head = s.h64(soff::HEAD).load(Ordering::Relaxed);
    for _ in 0..s.geo.capacity {
        // Under the mutex only the dead holder marks at head or beyond: still WRITING (abandon
        // it) or ABANDONED by a reader that judged it; either way the number is used up.
        match s.slot(head).word().compare_exchange(
            word::make(head, word::WRITING),
            word::make(head, word::ABANDONED),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                s.h64(soff::ABANDONED).fetch_add(1, Ordering::Relaxed);
            }
            Err(w) if w == word::make(head, word::ABANDONED) => {}
            Err(_) => break,
        }
        head = head.wrapping_add(1); // a corrupt head must not panic a recovery
    }
    // SYNC POINT: pairs with the acquire loads of head (a lapped reader, Stream::head).
    s.h64(soff::HEAD).store(head, Ordering::Release);
    s.h32(soff::READERS_GEN).fetch_add(1, Ordering::Relaxed);
    s.h32(soff::RECOVERIES).fetch_add(1, Ordering::Relaxed);
    notify_readers(s);
}

/// Locks a stream or group mutex as 24.1 says: `pthread_mutex_trylock`, polled for LOCK_POLL
/// while it is held (even for a zero timeout: a live holder's claim is short), then waited for
/// up to `timeout` (`None`: forever; zero: not at all).
///
/// # Safety
/// `m` points to a mutex in a live, writable mapping.
unsafe fn poll_lock(m: *mut libc::pthread_mutex_t, timeout: Option<Duration>) -> Result<Locked> {
    mutex::check_kind(m)?;
    let mut poll_end = None;
    let mut i: u32 = 0;
    loop {
        // SAFETY: by the caller's contract.
        let rc = unsafe { libc::pthread_mutex_trylock(m) };
        if rc != libc::EBUSY {
            return mutex::result(rc);
        }
        std::hint::spin_loop();
        i = i.wrapping_add(1);
        if i.is_multiple_of(16) {
            let now = Instant::now();
            if now >= *poll_end.get_or_insert(now + LOCK_POLL) {
                if timeout.is_some_and(|t| t.is_zero()) {
                    return Ok(Locked::TimedOut);
                }
                // SAFETY: by the caller's contract.
                return unsafe { mutex::lock(m, timeout) };
            }
        }
    }
}

/// The stream mutex, held by this thread; released on drop (not `Send`: the thread that
/// locked a pthread mutex unlocks it).
pub(crate) struct StreamLock<'a> {
    s: &'a StreamSegment,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<'a> StreamLock<'a> {
    /// Takes the mutex, waiting at most `timeout` (`None`: forever), after polling a held one
    /// for LOCK_POLL even for a zero timeout (24.1). `Ok(None)`: not acquired in time.
    pub(crate) fn acquire(s: &'a StreamSegment, timeout: Option<Duration>) -> Result<Option<Self>> {
        let m = s.mutex();
        // SAFETY: the mutex lies in page 0 of a writable mapping (a handle that locks was
        // opened with a descriptor of this process's mutex kind, S20).
        let outcome = unsafe { poll_lock(m, timeout)? };
        let held = match outcome {
            Locked::TimedOut => return Ok(None),
            Locked::Acquired => StreamLock {
                s,
                _not_send: std::marker::PhantomData,
            },
            Locked::OwnerDied => {
                let held = StreamLock {
                    s,
                    _not_send: std::marker::PhantomData,
                };
                recover(s);
                // SAFETY: this thread holds the mutex.
                unsafe { mutex::consistent(m)? };
                held
            }
        };
        s.h32(soff::OWNER_PID)
            .store(sys::current_pid(), Ordering::Relaxed);
        Ok(Some(held))
    }
}

impl Drop for StreamLock<'_> {
    fn drop(&mut self) {
        self.s.h32(soff::OWNER_PID).store(0, Ordering::Relaxed);
        // SAFETY: this thread holds the mutex (acquire).
        unsafe { mutex::unlock(self.s.mutex()) };
    }
}

/// Mutex held: this handle's writer entry, registered at its first claim (25.2).
fn ensure_writer(s: &StreamSegment) -> Result<()> {
    if s.writer_index.load(Ordering::Relaxed) >= 0 {
        return Ok(());
    }
    for j in 0..s.geo.max_writers {
        let state = s.writer_u64(j, writer_off::STATE);
        let st = state.load(Ordering::Acquire);
        let at = s.writer_lock_offset(j);
        if st != 0 && liveness::held_by_other(s.lock_fd(), at) {
            continue;
        }
        if !liveness::hold(s.lock_fd(), at) {
            continue;
        }
        if st != 0 {
            clear_sleeper(
                s.h32(soff::SPACE_WAITERS),
                s.writer_u32(j, writer_off::SLEEPING),
                entry_generation(st),
            );
        }
        // Under the mutex; never reset, so a dead writer's slots never match a later state.
        let gen_word = s.writer_u32(j, writer_off::GENERATION);
        let gen = next_generation(gen_word.load(Ordering::Relaxed));
        gen_word.store(gen, Ordering::Relaxed);
        let mine = entry_state(gen);
        s.writer_u32(j, writer_off::PID)
            .store(sys::current_pid(), Ordering::Relaxed);
        s.writer_u64(j, writer_off::SENT)
            .store(0, Ordering::Relaxed);
        s.writer_u64(j, writer_off::ATTACHED_NS)
            .store(sys::realtime_ns() as u64, Ordering::Relaxed);
        // SYNC POINT: release, with the fields above; pairs with a judge's acquire load of
        // the entry's state (writer_alive).
        state.store(mine, Ordering::Release);
        if st != 0 {
            s.h32(soff::REAPED).fetch_add(1, Ordering::Relaxed);
        }
        s.writer_state.store(mine, Ordering::Release);
        s.writer_index.store(i64::from(j), Ordering::Release);
        return Ok(());
    }
    Err(Error::Other(format!(
        "stream {} has all {} writer entries in use by live writers (max_writers)",
        s.name, s.geo.max_writers
    )))
}

/// One gate (26.8.4): a cursor that holds writers back, and whose it is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gate {
    pub cursor: u64,
    /// A solo reader's pid, else 0.
    pub pid: u32,
    /// A group's index + 1, else 0.
    pub group: u32,
}

/// Visits every gate once: each attached solo reader at its own cursor, each group with an
/// attached member at the group's cursor; every cursor taken as `min(cursor, head)`.
pub(crate) fn for_each_gate(s: &StreamSegment, head: u64, mut f: impl FnMut(Gate)) {
    let mut groups: Vec<bool> = Vec::new();
    for i in 0..s.geo.max_readers {
        if s.reader_u64(i, reader_off::STATE).load(Ordering::Acquire) == 0 {
            continue;
        }
        let g = s.reader_u32(i, reader_off::GROUP).load(Ordering::Relaxed);
        if g != 0 && g <= s.geo.max_groups {
            if groups.is_empty() {
                groups.resize(s.geo.max_groups as usize, false);
            }
            groups[(g - 1) as usize] = true;
            continue;
        }
        // SYNC POINT: pairs with the reader's release store of its cursor after its copy.
        let c = s.reader_u64(i, reader_off::CURSOR).load(Ordering::Acquire);
        f(Gate {
            cursor: c.min(head),
            pid: s.reader_u32(i, reader_off::PID).load(Ordering::Relaxed),
            group: 0,
        });
    }
    for (g, _) in groups.iter().enumerate().filter(|(_, on)| **on) {
        // SYNC POINT: pairs with a member's release store of the group cursor.
        let c = s
            .group_u64(g as u32, group_off::CURSOR)
            .load(Ordering::Acquire);
        f(Gate {
            cursor: c.min(head),
            pid: 0,
            group: g as u32 + 1,
        });
    }
}

/// Mutex held: the smallest gate, from a fresh look at the tables (25.3 step 3).
fn scan_readers(s: &StreamSegment, v: &mut ClaimView) {
    let head = s.h64(soff::HEAD).load(Ordering::Relaxed);
    v.gen = s.h32(soff::READERS_GEN).load(Ordering::Acquire);
    v.any_reader = false;
    v.gate = u64::MAX;
    for_each_gate(s, head, |g| {
        v.any_reader = true;
        v.gate = v.gate.min(g.cursor);
    });
    v.scanned = true;
}

/// Mutex held: detaches attached readers whose liveness lock is gone (26.7). True if any.
pub(crate) fn reap_readers(s: &StreamSegment) -> bool {
    let mut any = false;
    for i in 0..s.geo.max_readers {
        let state = s.reader_u64(i, reader_off::STATE);
        let st = state.load(Ordering::Acquire);
        if st == 0 || reader_alive(s, i) {
            continue;
        }
        if state
            .compare_exchange(st, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            clear_sleeper(
                s.h32(soff::DATA_WAITERS),
                s.reader_u32(i, reader_off::SLEEPING),
                entry_generation(st),
            );
            s.h32(soff::REAPED).fetch_add(1, Ordering::Relaxed);
            s.h32(soff::READERS_GEN).fetch_add(1, Ordering::AcqRel);
            any = true;
        }
    }
    any
}

/// Without the mutex: whether `n` more messages would fit in front of every gate now (a hint
/// for polling, 25.5 step 7; the claim decides).
pub(crate) fn has_room(s: &StreamSegment, n: u64) -> bool {
    let head = s.h64(soff::HEAD).load(Ordering::Acquire);
    let mut room = true;
    for_each_gate(s, head, |g| {
        room &= head.saturating_add(n) <= g.cursor.saturating_add(s.geo.capacity);
    });
    room
}

/// The slowest gate, for the StreamFull text.
pub(crate) fn slowest_gate(s: &StreamSegment) -> Gate {
    let mut slowest = Gate {
        cursor: u64::MAX,
        pid: 0,
        group: 0,
    };
    for_each_gate(s, s.h64(soff::HEAD).load(Ordering::Acquire), |g| {
        if g.cursor < slowest.cursor {
            slowest = g;
        }
    });
    slowest
}

/// What a claim did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Claimed, from this sequence number on.
    Made(u64),
    /// Block only: the slowest gate is too close.
    Full,
    /// A slot's earlier writer, alive, is still writing it.
    Busy,
}

fn due(last: &mut i64, now: i64) -> bool {
    if now.saturating_sub(*last) < GATE_CHECK.as_nanos() as i64 {
        return false;
    }
    *last = now;
    true
}

/// Mutex held: claims the `n` (1 to capacity) sequence numbers from `head` on, marking their
/// slots WRITING, exactly in the order of 25.3. The handle's view of the reader table is
/// updated whatever the outcome.
pub(crate) fn claim_locked(s: &StreamSegment, n: u64) -> Result<Claim> {
    let mut v = s.view.load();
    let r = claim_with(s, &mut v, n);
    s.view.store(&v);
    r
}

/// The gate of the handle's view of the reader table: the smallest gating cursor it saw
/// (u64::MAX: none). Mutex held.
pub(crate) fn view_gate(s: &StreamSegment) -> u64 {
    s.view.load().gate
}

fn claim_with(s: &StreamSegment, v: &mut ClaimView, n: u64) -> Result<Claim> {
    ensure_writer(s)?;
    let head = s.h64(soff::HEAD).load(Ordering::Relaxed);
    if head > word::MAX_SEQ - (n - 1) {
        return Err(Error::Other(format!(
            "stream {} has used all 2**62 sequence numbers",
            s.name
        )));
    }
    if !v.scanned || s.h32(soff::READERS_GEN).load(Ordering::Acquire) != v.gen {
        scan_readers(s, v);
    }
    let cap = s.geo.capacity;
    if v.any_reader
        && (head + n) / cap != head / cap
        && due(&mut v.last_lap_reap_ns, monotonic_ns())
        && reap_readers(s)
    {
        scan_readers(s, v);
    }
    let block = s.geo.backpressure == crate::stream_layout::Backpressure::Block;
    if block && v.any_reader && head + n > v.gate + cap {
        scan_readers(s, v); // the cached cursors may be old
        if v.any_reader && head + n > v.gate + cap {
            if !due(&mut v.last_reap_ns, monotonic_ns()) || !reap_readers(s) {
                return Ok(Claim::Full);
            }
            scan_readers(s, v);
            if v.any_reader && head + n > v.gate + cap {
                return Ok(Claim::Full);
            }
        }
    }
    // The previous lap: a slot still WRITING for an earlier number waits for a live writer,
    // and is abandoned if its writer is dead.
    for j in 0..n {
        if head + j < cap {
            continue;
        }
        let x = head + j;
        let sl = s.slot(x);
        let w = sl.word().load(Ordering::Acquire);
        if word::tag(w) != word::WRITING || word::seq(w) >= head {
            continue;
        }
        let index = sl.u32(slot_off::WRITER_INDEX).load(Ordering::Relaxed);
        let state = sl.u64(slot_off::WRITER_STATE).load(Ordering::Relaxed);
        if writer_alive(s, index, state) {
            return Ok(Claim::Busy);
        }
        if sl
            .word()
            .compare_exchange(
                w,
                word::make(word::seq(w), word::ABANDONED),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            s.h64(soff::ABANDONED).fetch_add(1, Ordering::Relaxed);
        }
    }
    let widx = s.writer_index.load(Ordering::Relaxed) as u32;
    let wstate = s.writer_state.load(Ordering::Relaxed);
    let sent = s.writer_u64(widx, writer_off::SENT);
    // Only this entry's writer changes it, under the mutex: no read-modify-write needed.
    sent.store(
        sent.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
    let drops = !v.any_reader;
    for j in 0..n {
        let x = head + j;
        let sl = s.slot(x);
        let overwrites = drops && x >= cap;
        if overwrites {
            // Recovery can tell whether this slot was marked, hence whether dropped counts it.
            let d = s.h64(soff::DROPPED).load(Ordering::Relaxed).wrapping_add(1);
            s.h64(soff::CLAIM_DROPPED).store(d, Ordering::Relaxed);
            s.h64(soff::CLAIM_SEQ).store(x + 1, Ordering::Relaxed);
        }
        sl.u32(slot_off::WRITER_INDEX)
            .store(widx, Ordering::Relaxed);
        sl.u64(slot_off::WRITER_STATE)
            .store(wstate, Ordering::Relaxed);
        // SYNC POINT: release, so a judge that loads W(x) with acquire sees the writer fields
        // above; the fence after it pairs with a lapped reader's acquire fence before its
        // re-check (27, third row): a copy that saw any byte written after it sees the word
        // changed.
        sl.word()
            .store(word::make(x, word::WRITING), Ordering::Release);
        fence(Ordering::Release);
        if overwrites {
            let d = s.h64(soff::CLAIM_DROPPED).load(Ordering::Relaxed);
            s.h64(soff::DROPPED).store(d, Ordering::Relaxed);
        }
    }
    // SYNC POINT: pairs with the acquire loads of head (a lapped reader, Stream::head).
    s.h64(soff::HEAD).store(head + n, Ordering::Release);
    s.h64(soff::CLAIM_SEQ).store(0, Ordering::Relaxed);
    Ok(Claim::Made(head))
}

/// Publishes claimed slot `x` whose payload is in place: its length, time and pid, then the
/// commit CAS (25.4). False when a reader abandoned the slot first (it judged this writer
/// dead); the slot then stays abandoned.
pub(crate) fn publish(s: &StreamSegment, x: u64, len: u64) -> bool {
    publish_slot(s.slot(x), x, len)
}

/// publish() of a slot already found.
fn publish_slot(sl: Slot<'_>, x: u64, len: u64) -> bool {
    sl.u64(slot_off::LENGTH).store(len, Ordering::Relaxed);
    sl.u64(slot_off::TIMESTAMP_NS)
        .store(sys::realtime_ns() as u64, Ordering::Relaxed);
    sl.u32(slot_off::WRITER_PID)
        .store(sys::current_pid(), Ordering::Relaxed);
    // SYNC POINT: release on success; pairs with the reader's acquire load of the word: a
    // reader that sees COMMITTED sees the payload and the fields above.
    sl.word()
        .compare_exchange(
            word::make(x, word::WRITING),
            word::make(x, word::COMMITTED),
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Fills claimed slot `x` with `data` and commits it, without the notify (a send notifies
/// once per claim).
pub(crate) fn fill_and_commit(s: &StreamSegment, x: u64, data: &[u8]) -> bool {
    let sl = s.slot(x);
    if !data.is_empty() {
        // SAFETY: the payload holds max_bytes ≥ data.len() (checked before the claim), is
        // 64-byte aligned, and the ring is mapped writable (a handle that sends has an O_RDWR
        // descriptor).
        unsafe { mem::store_bytes(sl.payload(), data) };
    }
    publish_slot(sl, x, data.len() as u64)
}

/// Drops claim `x` (25.7): `cancelled`, then the CAS to ABANDONED, then the notify.
pub(crate) fn cancel_claim(s: &StreamSegment, x: u64) {
    s.slot(x)
        .u64(slot_off::CANCELLED)
        .store(x + 1, Ordering::Relaxed);
    // SYNC POINT: release, pairs with the reader's acquire load of the word: a reader that
    // sees this ABANDONED word sees `cancelled`.
    let _ = s.slot(x).word().compare_exchange(
        word::make(x, word::WRITING),
        word::make(x, word::ABANDONED),
        Ordering::Release,
        Ordering::Relaxed,
    );
    notify_readers(s);
}

/// The longest group name, in bytes.
pub(crate) const MAX_GROUP_NAME: usize = 40;

/// A group name: 1 to 40 bytes of printable ASCII without '/' (19.3).
pub(crate) fn check_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME {
        return Err(Error::Argument(format!(
            "a group name is 1 to 40 bytes, got {}",
            name.len()
        )));
    }
    if name
        .bytes()
        .any(|b| !(0x20..=0x7e).contains(&b) || b == b'/')
    {
        return Err(Error::Argument(format!(
            "a group name is printable ASCII without '/': {name} is not"
        )));
    }
    Ok(())
}

/// Stream mutex held: the index of the group named `name`, created at `cursor` if there is
/// none yet (26.8.1).
pub(crate) fn find_or_create_group(s: &StreamSegment, name: &str, cursor: u64) -> Result<u32> {
    if s.geo.max_groups == 0 {
        return Err(Error::Other(format!(
            "stream {} has no group table (it was created with max_groups 0)",
            s.name
        )));
    }
    let mut free = None;
    for g in 0..s.geo.max_groups {
        if s.group_u64(g, group_off::STATE).load(Ordering::Acquire) != 1 {
            free.get_or_insert(g);
            continue;
        }
        if s.group_u32(g, group_off::NAME_LEN).load(Ordering::Relaxed) as usize == name.len()
            && s.group_name(g).as_bytes() == name.as_bytes()
        {
            return Ok(g);
        }
    }
    let Some(g) = free else {
        return Err(Error::Other(format!(
            "stream {} has all {} group entries in use (max_groups); create the stream with more",
            s.name, s.geo.max_groups
        )));
    };
    // SAFETY: a free entry's mutex bytes, which nobody uses (groups are created under the
    // stream mutex, which this thread holds).
    unsafe { mutex::init(s.group_mutex(g))? };
    for (at, v) in [
        (group_off::START, cursor),
        (group_off::CURSOR, cursor),
        (group_off::RECEIVED, 0),
        (group_off::LOST, 0),
        (group_off::SKIPPED, 0),
        (group_off::CREATED_NS, sys::realtime_ns() as u64),
    ] {
        s.group_u64(g, at).store(v, Ordering::Relaxed);
    }
    let gen = s.group_u32(g, group_off::GENERATION);
    gen.store(
        next_generation(gen.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    s.group_u32(g, group_off::NAME_LEN)
        .store(name.len() as u32, Ordering::Relaxed);
    let mut padded = [0u8; MAX_GROUP_NAME];
    padded[..name.len()].copy_from_slice(name.as_bytes());
    s.store_group_name(g, &padded);
    // SYNC POINT: release, pairs with the acquire load of state by joiners and listers: a
    // group seen active is seen whole, its mutex initialised.
    s.group_u64(g, group_off::STATE).store(1, Ordering::Release);
    Ok(g)
}

/// A member's `hold`: the step in progress and the group cursor it started from (19.1).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupStep {
    Copy = 1,
    Lose = 2,
    Skip = 3,
}

pub(crate) const fn hold_word(c: u64, step: GroupStep) -> u64 {
    (c << 2) | step as u64
}

/// The stores of a step (or of a recovery) in the order the program makes them: a kill
/// stops the process between two of them, never reorders what it did (26.8.2).
fn in_order() {
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// Group mutex held after EOWNERDEAD (26.8.3): finishes the step its dead holder left half
/// done, from that member's `hold`. Idempotent: a rerun from what is stored ends the same.
fn recover_group(s: &StreamSegment, gi: u32) {
    for i in 0..s.geo.max_readers {
        let hold_at = s.reader_u64(i, reader_off::HOLD);
        let hold = hold_at.load(Ordering::Relaxed);
        if hold == 0 || s.reader_u32(i, reader_off::GROUP).load(Ordering::Relaxed) != gi + 1 {
            continue;
        }
        let c = hold >> 2;
        let step = hold & 3;
        let load = |at| s.group_u64(gi, at).load(Ordering::Relaxed);
        let store = |at, v| s.group_u64(gi, at).store(v, Ordering::Relaxed);
        let (cursor, start) = (load(group_off::CURSOR), load(group_off::START));
        let (received, lost, skipped) = (
            load(group_off::RECEIVED),
            load(group_off::LOST),
            load(group_off::SKIPPED),
        );
        let copy = step == GroupStep::Copy as u64;
        if cursor == c {
            if copy {
                // Taken by a member that never returned it: lost. Rewritten as a lose step
                // first, so a rerun finishes it as one.
                hold_at.store(hold_word(c, GroupStep::Lose), Ordering::Relaxed);
                in_order();
                s.group_u64(gi, group_off::CURSOR)
                    .store(c + 1, Ordering::Release);
                in_order();
                store(
                    group_off::LOST,
                    (c + 1)
                        .wrapping_sub(start)
                        .wrapping_sub(received)
                        .wrapping_sub(skipped),
                );
            }
        } else if copy {
            // Copied, then lost with its member (counted received already or not).
            let span = cursor.wrapping_sub(start);
            let counted = received.wrapping_add(lost).wrapping_add(skipped) == span;
            hold_at.store(hold_word(c, GroupStep::Lose), Ordering::Relaxed);
            in_order();
            let took = if counted {
                received.wrapping_sub(1)
            } else {
                received
            };
            store(group_off::RECEIVED, took);
            in_order();
            store(
                group_off::LOST,
                span.wrapping_sub(took).wrapping_sub(skipped),
            );
        } else if step == GroupStep::Lose as u64 {
            store(
                group_off::LOST,
                cursor
                    .wrapping_sub(start)
                    .wrapping_sub(received)
                    .wrapping_sub(skipped),
            );
        } else {
            store(
                group_off::SKIPPED,
                cursor
                    .wrapping_sub(start)
                    .wrapping_sub(received)
                    .wrapping_sub(lost),
            );
        }
        in_order();
        hold_at.store(0, Ordering::Relaxed);
    }
    notify_writers(s);
}

/// A group's mutex, held by this thread; released on drop.
pub(crate) struct GroupLock {
    m: *mut libc::pthread_mutex_t,
}

impl GroupLock {
    /// Polls the group mutex for LOCK_POLL, then waits up to `wait`; recovers it after
    /// EOWNERDEAD. `Ok(None)`: not acquired.
    pub(crate) fn acquire(s: &StreamSegment, gi: u32, wait: Duration) -> Result<Option<Self>> {
        let m = s.group_mutex(gi);
        // SAFETY: an active group's mutex in the writable control pages.
        let outcome = unsafe { poll_lock(m, Some(wait))? };
        match outcome {
            Locked::TimedOut => Ok(None),
            Locked::Acquired => Ok(Some(GroupLock { m })),
            Locked::OwnerDied => {
                let held = GroupLock { m };
                recover_group(s, gi);
                // SAFETY: this thread holds the mutex.
                unsafe { mutex::consistent(m)? };
                Ok(Some(held))
            }
        }
    }
}

impl Drop for GroupLock {
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex (acquire).
        unsafe { mutex::unlock(self.m) };
    }
}

/// What [`crate::Stream::groups`] reports of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// The next sequence number a member takes.
    pub cursor: u64,
    /// Messages its members took.
    pub received: u64,
    /// Numbers lost: lapped, abandoned, or with a member that died taking them.
    pub lost: u64,
    /// Dropped claims stepped over.
    pub skipped: u64,
    /// The cursor it was created at (`received + lost + skipped = cursor − start`).
    pub start: u64,
    /// Attached members whose process lives.
    pub members: u32,
}

/// The active groups with their live members (26.8.5).
pub(crate) fn list_groups(s: &StreamSegment) -> Vec<GroupInfo> {
    let mut out = Vec::new();
    for g in 0..s.geo.max_groups {
        if s.group_u64(g, group_off::STATE).load(Ordering::Acquire) != 1 {
            continue;
        }
        let members = (0..s.geo.max_readers)
            .filter(|&i| {
                s.reader_u64(i, reader_off::STATE).load(Ordering::Acquire) != 0
                    && s.reader_u32(i, reader_off::GROUP).load(Ordering::Relaxed) == g + 1
                    && reader_alive(s, i)
            })
            .count() as u32;
        out.push(GroupInfo {
            name: s.group_name(g),
            cursor: s.group_u64(g, group_off::CURSOR).load(Ordering::Acquire),
            received: s.group_u64(g, group_off::RECEIVED).load(Ordering::Relaxed),
            lost: s.group_u64(g, group_off::LOST).load(Ordering::Relaxed),
            skipped: s.group_u64(g, group_off::SKIPPED).load(Ordering::Relaxed),
            start: s.group_u64(g, group_off::START).load(Ordering::Relaxed),
            members,
        });
    }
    out
}

//! A model of xshm's record protocol (cpp/include/xshm/seqlock.hpp and manager.hpp), written
//! against `loom`'s atomics so that `cargo test -p xshm-protocol-model` explores the thread
//! interleavings and the weak-memory outcomes the C++ memory model allows (loom models
//! relaxed/acquire/release atomics and fences), not just what an x86 machine happens to do.
//!
//! The model keeps the protocol's shape and orderings exactly: two record slots (live, backup)
//! each behind a seqlock word; the writer's odd store is relaxed and followed by a release
//! fence, data words are relaxed, the even store is release; the reader loads the lock with
//! acquire, copies relaxed, issues an acquire fence and re-loads relaxed. A record is two words
//! `[n, n * 10]`, so a torn copy shows as a mismatch. A crash is a writer that stops after a
//! chosen number of its stores; recovery is `recover()` run by the next writer, after the dead
//! one (the robust mutex hands over with acquire/release, modelled by `join`).
#![warn(missing_docs)]

use loom::sync::atomic::{fence, AtomicU64, Ordering::*};

/// Words per record: `[seq, seq * 10]`.
pub const WORDS: usize = 2;

/// One record slot: its seqlock word and its data words.
pub struct Slot {
    lock: AtomicU64,
    data: [AtomicU64; WORDS],
}

/// The segment: live slot, backup slot, and the published sequence.
pub struct Segment {
    slots: [Slot; 2],
    seq: AtomicU64,
}

/// Counts the writer's stores and stops the writer (as if SIGKILLed) after `limit` of them.
pub struct Crash {
    done: usize,
    limit: usize,
}

impl Crash {
    /// A writer that dies after `limit` stores (`usize::MAX`: never).
    pub fn after(limit: usize) -> Self {
        Crash { done: 0, limit }
    }
    fn step(&mut self) -> Result<(), Died> {
        if self.done == self.limit {
            return Err(Died);
        }
        self.done += 1;
        Ok(())
    }
}

/// The writer was killed.
#[derive(Debug)]
pub struct Died;

impl Slot {
    fn new() -> Self {
        Slot {
            lock: AtomicU64::new(0),
            data: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }
}

impl Default for Segment {
    fn default() -> Self {
        Self::new()
    }
}

impl Segment {
    /// A fresh segment: both slots hold record 0, `[0, 0]`.
    pub fn new() -> Self {
        Segment {
            slots: [Slot::new(), Slot::new()],
            seq: AtomicU64::new(0),
        }
    }

    fn begin_write(slot: &Slot, crash: &mut Crash) -> Result<u64, Died> {
        let mut s = slot.lock.load(Relaxed);
        if s & 1 == 0 {
            crash.step()?;
            s += 1;
            slot.lock.store(s, Relaxed);
        }
        fence(Release); // pairs with the reader's acquire fence
        Ok(s)
    }

    fn end_write(slot: &Slot, odd: u64, crash: &mut Crash) -> Result<(), Died> {
        crash.step()?;
        slot.lock.store(odd + 1, Release); // pairs with the reader's acquire load
        Ok(())
    }

    fn copy_slot(&self, from: usize, to: usize, crash: &mut Crash) -> Result<(), Died> {
        for i in 0..WORDS {
            let v = self.slots[from].data[i].load(Relaxed);
            crash.step()?;
            self.slots[to].data[i].store(v, Relaxed);
        }
        Ok(())
    }

    /// One publish of record `n`, steps 1 to 3 of the protocol (writer mutex held).
    pub fn publish(&self, n: u64, crash: &mut Crash) -> Result<(), Died> {
        let live = &self.slots[0];
        let odd = Self::begin_write(live, crash)?;
        for (i, v) in [n, n * 10].into_iter().enumerate() {
            crash.step()?;
            live.data[i].store(v, Relaxed);
        }
        Self::end_write(live, odd, crash)?;
        crash.step()?;
        self.seq.store(n, Release);
        let backup = &self.slots[1];
        let odd1 = Self::begin_write(backup, crash)?;
        self.copy_slot(0, 1, crash)?;
        Self::end_write(backup, odd1, crash)
    }

    /// What the next writer does on EOWNERDEAD: make both slots complete and publish seq.
    pub fn recover(&self) {
        let mut never = Crash::after(usize::MAX);
        let l0 = self.slots[0].lock.load(Relaxed);
        let l1 = self.slots[1].lock.load(Relaxed);
        if l0 & 1 == 1 {
            let odd = Self::begin_write(&self.slots[0], &mut never).unwrap();
            self.copy_slot(1, 0, &mut never).unwrap();
            Self::end_write(&self.slots[0], odd, &mut never).unwrap();
        } else if l1 & 1 == 1
            || self.slots[1].data[0].load(Relaxed) != self.slots[0].data[0].load(Relaxed)
        {
            // Died refreshing the backup, or between completing the live slot and starting the
            // refresh: the backup is odd, or even but stale. Either way it must become the live
            // record again, or the next publish would send readers back to an older record.
            let odd = Self::begin_write(&self.slots[1], &mut never).unwrap();
            self.copy_slot(0, 1, &mut never).unwrap();
            Self::end_write(&self.slots[1], odd, &mut never).unwrap();
        }
        if self.slots[0].lock.load(Relaxed) & 1 == 0 {
            let live_seq = self.slots[0].data[0].load(Relaxed);
            if self.seq.load(Relaxed) < live_seq {
                self.seq.store(live_seq, Release);
            }
        }
    }

    fn try_read(slot: &Slot) -> Option<[u64; WORDS]> {
        let s0 = slot.lock.load(Acquire);
        if s0 & 1 == 1 {
            return None;
        }
        let out = [slot.data[0].load(Relaxed), slot.data[1].load(Relaxed)];
        fence(Acquire);
        (slot.lock.load(Relaxed) == s0).then_some(out)
    }

    /// The reader: live slot, then backup; `attempts` rounds (loom needs bounded loops).
    pub fn read(&self, attempts: usize) -> Option<[u64; WORDS]> {
        for _ in 0..attempts {
            for slot in &self.slots {
                if let Some(r) = Self::try_read(slot) {
                    return Some(r);
                }
            }
            loom::thread::yield_now();
        }
        None
    }

    /// The published sequence (acquire, as `seq()` in C++).
    pub fn seq(&self) -> u64 {
        self.seq.load(Acquire)
    }

    /// The number the next publish gives itself (writer mutex held, after any recovery): the
    /// live slot's seq + 1, as `publish_locked()` does for segments with a backup, which never
    /// loads the header's seq. Correct only if the live slot then always holds the published seq.
    pub fn next_seq(&self) -> u64 {
        self.slots[0].data[0].load(Relaxed) + 1
    }
}

/// Stores made by one complete publish (the crash points to try are 0..=this).
pub const STORES_PER_PUBLISH: usize = 1 + WORDS + 1 + 1 + 1 + WORDS + 1;

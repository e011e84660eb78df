//! Only under `--cfg loom`: a record's memory made of loom's atomics, so that the loom model
//! checker runs the crate's own protocol code (src/protocol.rs) over every interleaving and
//! weak-memory outcome the Rust (C++) memory model allows. tests/loom.rs holds the scenarios.
//!
//! What is abstracted, and why it keeps the protocol's shape:
//! - **The slot body**: the seq word and one values word stand in for the four meta words,
//!   the values and the message. The protocol moves every one of them the same way (relaxed
//!   words between the lock word's stores), so more words add states, not behaviours; the
//!   model stays small enough to explore with three preemptions. The counter, timestamp,
//!   writer pid and message length are not modelled.
//! - **A writer's death**: a store budget. Once a writer has made `budget` stores, every
//!   later store of it is dropped, as if it had been SIGKILLed there: no other code of the
//!   protocol changes. [`ModelRecord::revive`] ends the death (the next writer's turn).
//! - **The robust mutex**: its hand-over after a death is a thread join (acquire/release);
//!   the futex: only the epoch word (nobody sleeps in the model).
//!
//! What the model does not check: the byte copies of the real memory (src/mem.rs; the model
//! moves one values word), a second death during a recovery (recovery is idempotent: it only
//! copies a complete slot over another and raises seq), a reader overlapping the dying writer
//! of a segment with a backup (the scenarios' readers start after the death), the waits and
//! their futex (src/wait.rs, argued in docs/LAYOUT.md section 11), and the stuck check of the
//! reader and the torn-record policy of the writer (src/reader.rs, src/writer.rs; shown by
//! the golden vectors and the crate's SIGKILL test).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};

use crate::protocol::{Meta, RecordMemory};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// One record segment in loom's atomics; slot 0 live, slot 1 backup.
pub struct ModelRecord {
    slots: usize,
    lock: [AtomicU64; 2],
    meta: [AtomicU64; 2],
    value: [AtomicU64; 2],
    seq: AtomicU64,
    epoch: AtomicU32,
    recoveries: AtomicU32,
    /// Stores left before the writer dies; `usize::MAX`: it never does. Not a loom atomic:
    /// the budget is bookkeeping of the model, not shared memory of the protocol.
    budget: AtomicUsize,
}

/// Stores one complete publish makes on a segment with a backup slot: the crash points a
/// scenario tries are `0..=STORES_PER_PUBLISH` (lock, seq, value, lock; header seq; epoch;
/// lock, seq, value, lock).
pub const STORES_PER_PUBLISH: usize = 10;

impl ModelRecord {
    /// A fresh segment (every word 0), with a backup slot or without.
    pub fn new(backup: bool) -> Self {
        let pair = || [AtomicU64::new(0), AtomicU64::new(0)];
        ModelRecord {
            slots: if backup { 2 } else { 1 },
            lock: pair(),
            meta: pair(),
            value: pair(),
            seq: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            recoveries: AtomicU32::new(0),
            budget: AtomicUsize::new(usize::MAX),
        }
    }

    /// From now on the writer dies after `stores` more stores.
    pub fn die_after(&self, stores: usize) {
        self.budget.store(stores, StdOrdering::Relaxed);
    }

    /// The dead writer is gone: the next one's stores all land.
    pub fn revive(&self) {
        self.budget.store(usize::MAX, StdOrdering::Relaxed);
    }

    /// Whether the writer is still alive to make one more store (and counts it).
    fn store_lands(&self) -> bool {
        self.budget
            .fetch_update(StdOrdering::Relaxed, StdOrdering::Relaxed, |b| match b {
                usize::MAX => Some(b),
                0 => None,
                _ => Some(b - 1),
            })
            .is_ok()
    }

    /// The recoveries counted.
    pub fn recoveries(&self) -> u32 {
        self.recoveries.load(Ordering::Relaxed)
    }
}

impl RecordMemory for ModelRecord {
    fn slots(&self) -> usize {
        self.slots
    }

    fn message_capacity(&self) -> usize {
        0
    }

    fn load_lock(&self, slot: usize) -> u64 {
        self.lock[slot].load(Ordering::Relaxed)
    }

    fn store_lock(&self, slot: usize, value: u64, order: Ordering) {
        if self.store_lands() {
            self.lock[slot].store(value, order);
        }
    }

    fn load_meta(&self, slot: usize) -> Meta {
        Meta {
            seq: self.meta[slot].load(Ordering::Relaxed),
            ..Meta::default()
        }
    }

    fn store_meta(&self, slot: usize, meta: &Meta) {
        if self.store_lands() {
            self.meta[slot].store(meta.seq, Ordering::Relaxed);
        }
    }

    fn load_payload(&self, slot: usize, values: Option<&mut [u8]>, _message: Option<&mut [u8]>) {
        if let Some(v) = values {
            v.copy_from_slice(&self.value[slot].load(Ordering::Relaxed).to_le_bytes());
        }
    }

    fn store_payload(&self, slot: usize, values: Option<&[u8]>, _message: Option<&[u8]>) {
        if let Some(v) = values {
            let word = u64::from_le_bytes(v.try_into().expect("one values word"));
            if self.store_lands() {
                self.value[slot].store(word, Ordering::Relaxed);
            }
        }
    }

    fn copy_body(&self, dst: usize, src: usize, values: bool, _message_bytes: usize) {
        let seq = self.meta[src].load(Ordering::Relaxed);
        if self.store_lands() {
            self.meta[dst].store(seq, Ordering::Relaxed);
        }
        if values {
            let v = self.value[src].load(Ordering::Relaxed);
            if self.store_lands() {
                self.value[dst].store(v, Ordering::Relaxed);
            }
        }
    }

    fn copy_slot_body(&self, dst: usize, src: usize) {
        self.copy_body(dst, src, true, 0);
    }

    fn load_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    fn store_seq(&self, value: u64, order: Ordering) {
        if self.store_lands() {
            self.seq.store(value, order);
        }
    }

    fn notify(&self) {
        if self.store_lands() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn count_recovery(&self) {
        if self.store_lands() {
            self.recoveries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

//! The record protocol (docs/LAYOUT.md sections 9 and 10), over any memory that implements
//! [`RecordMemory`]: the shared mapping in normal builds (src/segment.rs), loom's atomics in
//! the model (src/model.rs, `cfg(loom)`), so the model checker runs this very code.
//!
//! A record slot is a seqlock word (`lock`, odd while a writer is in the slot) and the data it
//! guards: four meta words, the values, the message. Every data word is moved with relaxed
//! atomic loads and stores, so a reader racing a writer is never undefined behaviour: it may
//! copy a mix of old and new words, which its second look at the lock word rejects.
//!
//! Orderings. Readers only ever load, and on a read-only mapping Rust allows only relaxed
//! atomic loads, so every reader's "acquire load" here is a relaxed load followed by an
//! acquire fence, which is at least as strong. Each fence says what it pairs with.
#![forbid(unsafe_code)] // pure: no OS calls, no unsafe (src/lib.rs, "Safety")

use crate::sync::{fence, Ordering::*};

/// The meta words of a slot after its lock word: seq, counter, timestamp_ns, and writer_pid
/// with message_len in one word, moved as four `u64` words (docs/LAYOUT.md section 7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The publish number the slot holds.
    pub seq: u64,
    /// The user's counter.
    pub counter: u64,
    /// CLOCK_REALTIME of the publish, in nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// The pid of the process that published it.
    pub writer_pid: u32,
    /// Bytes used in the message slot.
    pub message_len: u32,
}

impl Meta {
    /// The four little-endian words as the slot holds them (bytes 8 to 40).
    #[inline]
    pub fn to_words(&self) -> [u64; 4] {
        [
            self.seq,
            self.counter,
            self.timestamp_ns as u64,
            u64::from(self.writer_pid) | (u64::from(self.message_len) << 32),
        ]
    }

    /// The meta of four words loaded from a slot.
    #[inline]
    pub fn from_words(w: [u64; 4]) -> Self {
        Meta {
            seq: w[0],
            counter: w[1],
            timestamp_ns: w[2] as i64,
            writer_pid: w[3] as u32,
            message_len: (w[3] >> 32) as u32,
        }
    }
}

/// The memory of one record segment as the protocol sees it. Loads are relaxed; the protocol
/// adds the fences. Slot 0 is the live slot, slot 1 the backup.
pub trait RecordMemory {
    /// 2 with a backup slot, else 1.
    fn slots(&self) -> usize;
    /// The message slot's capacity in bytes.
    fn message_capacity(&self) -> usize;
    /// A slot's lock word (relaxed).
    fn load_lock(&self, slot: usize) -> u64;
    /// Stores a slot's lock word (writers only).
    fn store_lock(&self, slot: usize, value: u64, order: crate::sync::Ordering);
    /// A slot's meta words (relaxed).
    fn load_meta(&self, slot: usize) -> Meta;
    /// Stores a slot's meta words (relaxed; writers only).
    fn store_meta(&self, slot: usize, meta: &Meta);
    /// Copies the slot's values into `values` (its whole size) and the first `message.len()`
    /// bytes of its message slot into `message` (at most the capacity); relaxed.
    fn load_payload(&self, slot: usize, values: Option<&mut [u8]>, message: Option<&mut [u8]>);
    /// Stores the values (their whole size) and a message prefix (relaxed; writers only).
    fn store_payload(&self, slot: usize, values: Option<&[u8]>, message: Option<&[u8]>);
    /// Copies slot `src` into slot `dst`: the meta, the values when `values`, and the first
    /// `message_bytes` bytes of the message (relaxed; writers only).
    fn copy_body(&self, dst: usize, src: usize, values: bool, message_bytes: usize);
    /// Copies the whole body of slot `src`, every byte after its lock word, into slot `dst`
    /// (relaxed; writers only): docs/LAYOUT.md 9.4.
    fn copy_slot_body(&self, dst: usize, src: usize);
    /// The header's seq (relaxed).
    fn load_seq(&self) -> u64;
    /// Stores the header's seq (writers only).
    fn store_seq(&self, value: u64, order: crate::sync::Ordering);
    /// Bumps the epoch and wakes the sleepers (docs/LAYOUT.md section 11).
    fn notify(&self);
    /// Counts one recovery from a dead writer.
    fn count_recovery(&self);
}

/// The header's seq, as an acquire load.
#[inline(always)]
pub fn load_seq_acquire<M: RecordMemory + ?Sized>(mem: &M) -> u64 {
    let seq = mem.load_seq();
    // SYNC POINT: with the relaxed load above, an acquire load; pairs with the writer's
    // release store of seq in complete_publish() and recover().
    fence(Acquire);
    seq
}

/// Reader: one consistent copy of `slot`, or `None` when a writer was (or is) in it. Copies
/// the values into `values` and `min(message_len, message.len())` bytes of the message into
/// `message`. The caller checks the returned message_len against the capacity.
#[inline(always)]
pub fn try_read<M: RecordMemory + ?Sized>(
    mem: &M,
    slot: usize,
    values: Option<&mut [u8]>,
    message: Option<&mut [u8]>,
) -> Option<Meta> {
    let s0 = mem.load_lock(slot);
    // SYNC POINT: with the relaxed load above, an acquire load of the lock word; pairs with
    // end_write()'s release store: an even value seen here brings every data word stored
    // before it.
    fence(Acquire);
    if s0 & 1 == 1 {
        return None;
    }
    let meta = mem.load_meta(slot);
    let message = message.map(|m| {
        let n = (meta.message_len as usize).min(m.len());
        &mut m[..n]
    });
    mem.load_payload(slot, values, message);
    // SYNC POINT: pairs with begin_write()'s release fence: if any word copied above was
    // stored after a writer made the slot odd, the re-load below sees that odd value (or later).
    fence(Acquire);
    (mem.load_lock(slot) == s0).then_some(meta)
}

/// Reader: the live slot, then the backup; `None` when a writer was in every slot.
#[inline(always)]
pub fn read_once<M: RecordMemory + ?Sized>(
    mem: &M,
    mut values: Option<&mut [u8]>,
    mut message: Option<&mut [u8]>,
) -> Option<Meta> {
    (0..mem.slots())
        .find_map(|slot| try_read(mem, slot, values.as_deref_mut(), message.as_deref_mut()))
}

/// A slot write begins (writer mutex held): the lock word odd. A word left odd by a writer
/// that died stays odd. Returns the odd value [`end_write`] completes.
pub fn begin_write<M: RecordMemory + ?Sized>(mem: &M, slot: usize) -> u64 {
    let mut s = mem.load_lock(slot);
    if s & 1 == 0 {
        s += 1;
        mem.store_lock(slot, s, Relaxed);
    }
    // SYNC POINT: pairs with the reader's second acquire fence in try_read(): a reader that
    // copies any data word stored after this fence then sees the odd value when it re-loads.
    fence(Release);
    s
}

/// A slot write ends: the slot even, published.
pub fn end_write<M: RecordMemory + ?Sized>(mem: &M, slot: usize, odd: u64) {
    // SYNC POINT: pairs with the reader's acquire of the lock word in try_read(): a reader
    // that sees this even value sees every data word stored before it.
    mem.store_lock(slot, odd.wrapping_add(1), Release);
}

/// Copies slot `src` over slot `dst` whole (docs/LAYOUT.md section 9.4): dst odd (kept odd if
/// it already is), the body, dst even. Recovery and the abort of an in-place write use it.
pub fn copy_slot<M: RecordMemory + ?Sized>(mem: &M, dst: usize, src: usize) {
    let odd = begin_write(mem, dst);
    mem.copy_slot_body(dst, src);
    end_write(mem, dst, odd);
}

/// Writer mutex held after its last owner died (EOWNERDEAD): make both slots complete again
/// and the header agree, count the recovery and notify (docs/LAYOUT.md section 9.5):
///
/// - live odd (died writing it): the backup is copied over the live slot;
/// - backup odd (died refreshing it), or both even with the backup's seq not the live one's
///   (died between steps 1 and 4): the live slot is copied over the backup;
/// - live complete and the header's seq behind (died between steps 1 and 2): seq = live's;
/// - no backup and live odd: it stays odd; the record is torn.
pub fn recover<M: RecordMemory + ?Sized>(mem: &M) {
    if mem.slots() == 2 {
        let l0 = mem.load_lock(0);
        let l1 = mem.load_lock(1);
        if l0 & 1 == 1 {
            copy_slot(mem, 0, 1);
        } else if l1 & 1 == 1 || mem.load_meta(1).seq != mem.load_meta(0).seq {
            // A stale backup left in place would send readers of the next publish back to an
            // older record (found by the loom model).
            copy_slot(mem, 1, 0);
        }
    }
    if mem.load_lock(0) & 1 == 0 {
        let live_seq = mem.load_meta(0).seq;
        if mem.load_seq() < live_seq {
            // SYNC POINT: pairs with the acquire loads of seq (seq(), waits), like a publish.
            mem.store_seq(live_seq, Release);
        }
    }
    mem.count_recovery();
    mem.notify();
}

/// The meta of the next publish (writer mutex held, after any recovery): numbered after the
/// current record; `counter`/`message_len` that are `None` keep the current ones.
pub fn next_meta<M: RecordMemory + ?Sized>(
    mem: &M,
    counter: Option<u64>,
    message_len: Option<u32>,
    timestamp_ns: i64,
    writer_pid: u32,
) -> Meta {
    let mut m = mem.load_meta(0);
    // With a backup the live slot is whole under the mutex (recovery saw to it) and its seq is
    // the header's; without one a torn slot's seq is not to be trusted.
    let current = if mem.slots() == 2 {
        m.seq
    } else {
        mem.load_seq()
    };
    m.seq = current.wrapping_add(1);
    if let Some(c) = counter {
        m.counter = c;
    }
    if let Some(n) = message_len {
        m.message_len = n;
    }
    m.timestamp_ns = timestamp_ns;
    m.writer_pid = writer_pid;
    m
}

/// Steps 1 to 4 of a publish (docs/LAYOUT.md section 9.3), the writer mutex held; `values`
/// and `message` that are `None` keep the current ones. Returns the new sequence.
///
/// 1. live slot odd; meta, values, message; live slot even
/// 2. header seq (release)
/// 3. notify: epoch + 1, wake the sleepers
/// 4. backup slot odd; what changed copied from the live slot; backup even
///
/// At every instant one slot holds a complete record, so a reader never waits for a writer.
pub fn publish_locked<M: RecordMemory + ?Sized>(
    mem: &M,
    meta: &Meta,
    values: Option<&[u8]>,
    message: Option<&[u8]>,
) -> u64 {
    let odd = begin_write(mem, 0);
    mem.store_meta(0, meta);
    mem.store_payload(0, values, message);
    end_write(mem, 0, odd);
    // SYNC POINT: pairs with the acquire loads of seq in seq() and the waits.
    mem.store_seq(meta.seq, Release);
    mem.notify();
    if mem.slots() == 2 {
        let odd = begin_write(mem, 1);
        mem.copy_body(1, 0, values.is_some(), message.map_or(0, <[u8]>::len));
        end_write(mem, 1, odd);
    }
    meta.seq
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn meta_words_round_trip() {
        let m = Meta {
            seq: 1,
            counter: u64::MAX,
            timestamp_ns: -5,
            writer_pid: 77,
            message_len: 3,
        };
        assert_eq!(Meta::from_words(m.to_words()), m);
        assert_eq!(m.to_words()[3], 77 | (3 << 32));
    }
}

//! The reader: a consistent copy of the record without ever waiting for a writer (the live
//! slot, or the backup while the live one is being written), and the stall detection that
//! turns a record no writer will ever finish into an error instead of a spin (docs/LAYOUT.md
//! section 10). Readers only load from the segment.

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use crate::clock::format_duration;
use crate::error::{Error, Result};
use crate::layout::off;
use crate::protocol::{self, Meta, RecordMemory};
use crate::segment::Segment;
use crate::sys;

/// What the reader saw at its last look at the slot locks, to tell a live writer from a
/// state that will never change by itself.
struct Stuck {
    locks: (u64, u64),
    since: Instant,
}

/// How long a read tolerates a live writer stalled mid-write on a segment without backup.
fn stall_limit(s: &Segment) -> Duration {
    s.stall_timeout
        .unwrap_or_else(|| Duration::from_secs(2) + Duration::from_nanos(4 * s.geo.values_size))
}

/// Called every 1024 failed rounds. With a backup, both slots odd and unchanged is impossible
/// for a working writer: the segment is corrupt. Without one, the live slot odd and unchanged
/// means its writer died (at once) or stalls (after the stall limit). A lock word that changed
/// since the last look is no verdict: it restarts the clock.
fn check_stuck(s: &Segment, stuck: &mut Option<Stuck>) -> Result<()> {
    let l0 = s.load_lock(0);
    let l1 = if s.geo.backup { s.load_lock(1) } else { 0 };
    let now = Instant::now();
    let same = stuck.as_ref().is_some_and(|st| st.locks == (l0, l1));
    if !same || l0 & 1 == 0 {
        *stuck = Some(Stuck {
            locks: (l0, l1),
            since: now,
        });
        return Ok(());
    }
    if s.geo.backup {
        if l1 & 1 == 1 {
            return Err(Error::Layout(format!(
                "corrupt segment {}: both record slots are marked as being written",
                s.name
            )));
        }
        return Ok(());
    }
    let owner = s.header_u32(off::OWNER_PID).load(Ordering::Relaxed);
    // SYNC POINT: with the relaxed load above, this fence acquires the writer's seq_cst clear
    // of owner_pid (src/writer.rs), which follows its release of the slot: the re-load below
    // then sees the slot's newer value. A writer that finished the slot since l0 was loaded
    // is no verdict.
    fence(Ordering::SeqCst);
    let again = s.load_lock(0);
    if again != l0 {
        *stuck = Some(Stuck {
            locks: (again, l1),
            since: now,
        });
        return Ok(());
    }
    if !sys::process_alive(owner) {
        return Err(Error::TornRecord(format!(
            "the record of {} was torn by a writer that died mid-write; it stays unreadable \
             until the next complete publish",
            s.name
        )));
    }
    let limit = stall_limit(s);
    let since = stuck.as_ref().map_or(now, |st| st.since);
    if now.duration_since(since) > limit {
        return Err(Error::TornRecord(format!(
            "no complete record of {} for {}: its writer (pid {owner}) is stalled mid-write",
            s.name,
            format_duration(limit)
        )));
    }
    Ok(())
}

/// A consistent copy: `values` gets the values (values_size bytes), `message` the message
/// (a buffer of message_capacity bytes; the returned meta's message_len says how many were
/// filled). Tries the live slot, then the backup; never waits for a writer.
pub(crate) fn read_raw(
    s: &Segment,
    mut values: Option<&mut [u8]>,
    mut message: Option<&mut [u8]>,
) -> Result<Meta> {
    let cap = s.geo.message_capacity;
    let mut stuck: Option<Stuck> = None;
    let mut attempt: u32 = 0;
    loop {
        if let Some(meta) = protocol::read_once(s, values.as_deref_mut(), message.as_deref_mut()) {
            if meta.message_len > cap {
                return Err(Error::Layout(format!(
                    "corrupt record: message length {} exceeds the slot's {cap} bytes",
                    meta.message_len
                )));
            }
            return Ok(meta);
        }
        if attempt & 1023 == 1023 {
            check_stuck(s, &mut stuck)?;
        }
        if attempt < 64 {
            std::hint::spin_loop();
        } else {
            sys::yield_now();
        }
        attempt = attempt.wrapping_add(1);
    }
}

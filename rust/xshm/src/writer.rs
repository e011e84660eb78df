//! The writer: the segment's robust mutex (and, when its last owner died, the recovery of the
//! record before anything else) and the publish under it (docs/LAYOUT.md section 9). Only the
//! holder of the mutex stores into the record slots, the header's seq and owner_pid.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::format_duration;
use crate::error::{Error, Result};
use crate::layout::off;
use crate::mutex::{self, Locked};
use crate::protocol::{self, RecordMemory};
use crate::segment::Segment;
use crate::sys;

/// The writer mutex, held; released on drop. Not `Send`: a pthread mutex is released by the
/// thread that took it.
pub(crate) struct WriterLock<'a> {
    seg: &'a Segment,
    torn: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> WriterLock<'a> {
    /// Takes the mutex, waiting at most `timeout` (`None`: forever); recovers first when the
    /// last owner died. `None` when the timeout passed.
    pub(crate) fn acquire(seg: &'a Segment, timeout: Option<Duration>) -> Result<Option<Self>> {
        // SAFETY: the mutex of a writable, live mapping (only writable handles get here).
        let locked = unsafe { mutex::lock(seg.mutex(), timeout)? };
        if locked == Locked::TimedOut {
            return Ok(None);
        }
        let mut held = WriterLock {
            seg,
            torn: false,
            _not_send: PhantomData,
        };
        if locked == Locked::OwnerDied {
            // Released (owner cleared) by drop if anything below fails.
            protocol::recover(seg);
            // SAFETY: this thread holds the mutex.
            unsafe { mutex::consistent(seg.mutex())? };
        }
        seg.header_u32(off::OWNER_PID)
            .store(sys::current_pid(), Ordering::SeqCst);
        held.torn = seg.load_lock(0) & 1 == 1;
        Ok(Some(held))
    }

    /// Only without a backup: the live slot was left mid-write by a writer that died.
    pub(crate) fn torn(&self) -> bool {
        self.torn
    }
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        let owner = self.seg.header_u32(off::OWNER_PID);
        // SYNC POINT: this seq_cst clear follows the slot's release; it pairs with the
        // reader's fence after its load of owner_pid (src/reader.rs check_stuck).
        owner.store(0, Ordering::SeqCst);
        // SAFETY: the mutex of the live mapping this guard borrows.
        if unsafe { mutex::unlock(self.seg.mutex()) } != 0 {
            // Not this thread's: the mutex stays held by the thread that took it.
            owner.store(sys::current_pid(), Ordering::SeqCst);
        }
    }
}

pub(crate) fn require_writable(s: &Segment) -> Result<()> {
    if s.readonly {
        return Err(Error::ReadOnly(format!(
            "segment {} was opened read-only",
            s.name
        )));
    }
    Ok(())
}

/// The writer mutex stayed taken for the whole `timeout`: who held it, when the header says.
pub(crate) fn lock_timeout(s: &Segment, timeout: Option<Duration>) -> Error {
    let owner = s.header_u32(off::OWNER_PID).load(Ordering::Relaxed);
    let held = if owner != 0 {
        format!(" (held by pid {owner})")
    } else {
        String::new()
    };
    Error::WaitTimeout(format!(
        "the writer lock of {} was not free within {}{held}",
        s.name,
        format_duration(timeout.unwrap_or(Duration::ZERO))
    ))
}

/// The message as it will be stored: longer than the slot is [`Error::MessageTooLong`]
/// unless `truncate`, which cuts it on a code-point boundary.
pub(crate) fn fit_message<'m>(s: &Segment, text: &'m [u8], truncate: bool) -> Result<&'m [u8]> {
    let cap = s.geo.message_capacity as usize;
    if text.len() <= cap {
        return Ok(text);
    }
    if !truncate {
        return Err(Error::MessageTooLong(format!(
            "message is {} bytes; the slot holds {cap}",
            text.len()
        )));
    }
    Ok(&text[..xshm_text::cut(text, cap)])
}

/// A whole publish: checks, the mutex (waiting at most `timeout`), steps 1 to 4, release.
/// `None`: the mutex stayed taken for the whole timeout; nothing was published.
pub(crate) fn publish(
    s: &Segment,
    values: Option<&[u8]>,
    message: Option<&[u8]>,
    counter: Option<u64>,
    truncate: bool,
    timeout: Option<Duration>,
) -> Result<Option<u64>> {
    require_writable(s)?;
    if let Some(v) = values {
        if v.len() as u64 != s.geo.values_size {
            return Err(Error::Argument(format!(
                "publish: values have {} bytes, the segment's array has {}",
                v.len(),
                s.geo.values_size
            )));
        }
    }
    let message = message.map(|m| fit_message(s, m, truncate)).transpose()?;
    // Overlaps the transfers of the lines this publish writes with the mutex and the clock.
    s.prefetch_live(values.is_some(), message.map_or(0, <[u8]>::len));
    let Some(held) = WriterLock::acquire(s, timeout)? else {
        return Ok(None);
    };
    let all_values = values.is_some() || s.geo.values_size == 0;
    if held.torn() && (!all_values || message.is_none() || counter.is_none()) {
        return Err(Error::TornRecord(
            "the record was torn by a writer that died mid-write and has no backup: the next \
             publish must give values, message and counter"
                .into(),
        ));
    }
    if message.is_none() {
        // A live message_len beyond the slot (only corruption makes one) is refused before a
        // publish keeps it.
        let len = s.load_meta(0).message_len;
        if len > s.geo.message_capacity {
            return Err(Error::Layout(format!(
                "corrupt record of {}: message length {len} exceeds the slot's {} bytes; \
                 publish a message to repair it",
                s.name, s.geo.message_capacity
            )));
        }
    }
    let meta = protocol::next_meta(
        s,
        counter,
        message.map(|m| m.len() as u32),
        sys::realtime_ns(),
        sys::current_pid(),
    );
    let seq = protocol::publish_locked(s, &meta, values, message);
    drop(held);
    Ok(Some(seq))
}

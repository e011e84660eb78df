//! Waiting for the next publish (docs/LAYOUT.md section 11): poll the header's seq
//! (optionally spinning first), then sleep on the futex epoch, counted in the header's
//! waiters so that a writer knows to wake. A waiter stores only its own +1/-1 to `waiters`
//! (through a writable alias of page 0 when its handle is read-only).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::layout::off;
use crate::protocol;
use crate::segment::Segment;
use crate::sys;

/// The waiter count of one sleeping wait, given back on every way out.
struct Sleeper<'a>(Option<&'a AtomicU32>);

impl<'a> Sleeper<'a> {
    fn count_in(waiters: Option<&'a AtomicU32>) -> Self {
        if let Some(w) = waiters {
            w.fetch_add(1, Ordering::SeqCst);
        }
        Sleeper(waiters)
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.0 {
            w.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Without a writable header page this process cannot announce that it sleeps, so it
/// sleeps in slices of 1 ms.
const BLIND_SLICE: Duration = Duration::from_millis(1);

/// Blocks until the header's seq exceeds `last` or `timeout` passes (`None`: never). Returns
/// the new sequence, or `None` on timeout. `spin`: how long to poll before sleeping.
pub(crate) fn wait_for(
    s: &Segment,
    last: u64,
    timeout: Option<Duration>,
    spin: Duration,
) -> Option<u64> {
    // SYNC POINT (every acquire load of seq here): pairs with the writer's release store of
    // seq in protocol::publish_locked() and protocol::recover().
    let cur = protocol::load_seq_acquire(s);
    if cur > last {
        return Some(cur);
    }
    let now = sys::monotonic_now();
    let far = Duration::from_secs(3600);
    let deadline = timeout.map(|t| sys::add(now, t));
    if !spin.is_zero() {
        let spin_end = sys::add(now, spin);
        let mut i: u32 = 0;
        loop {
            std::hint::spin_loop();
            let cur = protocol::load_seq_acquire(s);
            if cur > last {
                return Some(cur);
            }
            if i & 63 == 63 {
                let t = sys::monotonic_now();
                if deadline.is_some_and(|d| !sys::before(&t, &d)) {
                    return None;
                }
                if !sys::before(&t, &spin_end) {
                    break;
                }
            }
            i = i.wrapping_add(1);
        }
    }
    let waiters = s.waiters();
    let blind = waiters.is_none();
    let _sleeper = Sleeper::count_in(waiters);
    let epoch = s.header_u32(off::EPOCH);
    loop {
        // SYNC POINT: seq_cst, paired with the writer's seq_cst epoch bump and waiters load
        // (Segment::notify): either the writer sees our waiter count and wakes us, or we see
        // its new epoch. A read-only mapping allows only relaxed loads: the fence makes it
        // seq_cst.
        std::sync::atomic::fence(Ordering::SeqCst);
        let e = epoch.load(Ordering::Relaxed);
        let cur = protocol::load_seq_acquire(s);
        if cur > last {
            return Some(cur);
        }
        let t = sys::monotonic_now();
        if deadline.is_some_and(|d| !sys::before(&t, &d)) {
            return None;
        }
        let mut until = deadline.unwrap_or_else(|| sys::add(t, far));
        if blind {
            let b = sys::add(t, BLIND_SLICE);
            if sys::before(&b, &until) {
                until = b;
            }
        }
        sys::futex_wait(epoch.as_ptr(), e, &until);
    }
}

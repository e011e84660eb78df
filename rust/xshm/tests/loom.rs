//! The loom model checks of the record protocol, on the crate's own protocol code
//! (src/protocol.rs) over loom's atomics (src/model.rs). Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p xshm --test loom --release` (the Makefile's
//! test-rust does, with LOOM_MAX_PREEMPTIONS=3).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use xshm::model::{ModelRecord, STORES_PER_PUBLISH};
use xshm::protocol::{self, load_seq_acquire, Meta};

/// The next record, publish number n: one values word n * 10. Returns n.
fn publish(mem: &ModelRecord) -> u64 {
    let meta = protocol::next_meta(mem, None, None, 0, 1);
    let n = meta.seq;
    protocol::publish_locked(mem, &meta, Some(&(n * 10).to_le_bytes()), None)
}

/// A reader's copy, `attempts` rounds (loom needs bounded loops): (seq, value).
fn read(mem: &ModelRecord, attempts: usize) -> Option<(u64, u64)> {
    for _ in 0..attempts {
        let mut v = [0u8; 8];
        if let Some(Meta { seq, .. }) = protocol::read_once(mem, Some(&mut v), None) {
            return Some((seq, u64::from_le_bytes(v)));
        }
        thread::yield_now();
    }
    None
}

/// Whole: the value is the one its publish number wrote.
fn whole(r: (u64, u64)) -> bool {
    r.1 == r.0 * 10
}

/// A writer publishing twice while a reader reads twice: no torn snapshot, never backwards.
#[test]
fn reads_are_consistent_and_monotonic() {
    for backup in [true, false] {
        loom::model(move || {
            let mem = Arc::new(ModelRecord::new(backup));
            let w = {
                let mem = mem.clone();
                thread::spawn(move || {
                    for n in 1..=2 {
                        assert_eq!(publish(&mem), n);
                    }
                })
            };
            let mut last = 0;
            for _ in 0..2 {
                if let Some(r) = read(&mem, 2) {
                    assert!(whole(r), "torn snapshot {r:?} (backup {backup})");
                    assert!(r.0 >= last, "went backwards: {r:?} after {last}");
                    last = r.0;
                }
            }
            w.join().unwrap();
            let r = read(&mem, 1).expect("a quiescent segment is always readable");
            assert_eq!(r, (2, 20));
            assert_eq!(load_seq_acquire(&*mem), 2);
        });
    }
}

/// A writer killed after each possible number of stores in its second publish; the next
/// writer recovers and publishes while a reader reads. The reader never sees a torn record,
/// never less than the acknowledged publish 1, and the segment ends whole.
#[test]
fn crash_at_every_point_then_recovery() {
    for crash_point in 0..=STORES_PER_PUBLISH {
        loom::model(move || {
            let mem = Arc::new(ModelRecord::new(true));
            assert_eq!(publish(&mem), 1); // acknowledged
            let victim = {
                let mem = mem.clone();
                thread::spawn(move || {
                    mem.die_after(crash_point);
                    publish(&mem);
                })
            };
            victim.join().unwrap(); // the robust mutex hands over after the owner's death
            mem.revive();
            let reader = {
                let mem = mem.clone();
                thread::spawn(move || {
                    let mut last = 1;
                    for _ in 0..2 {
                        let r = read(&mem, 3).expect("a reader always gets a record after a crash");
                        assert!(whole(r), "torn snapshot {r:?} (crash after {crash_point})");
                        assert!(r.0 >= last, "lost the acknowledged publish: {r:?}");
                        last = r.0;
                    }
                })
            };
            protocol::recover(&*mem);
            assert_eq!(mem.recoveries(), 1);
            let seq = load_seq_acquire(&*mem);
            assert!(seq >= 1);
            let next = protocol::next_meta(&*mem, None, None, 0, 1).seq;
            assert_eq!(
                next,
                seq + 1,
                "the live slot disagrees with the published seq (crash after {crash_point})"
            );
            assert_eq!(publish(&mem), next);
            reader.join().unwrap();
            assert_eq!(read(&mem, 1), Some((next, next * 10)));
            assert_eq!(load_seq_acquire(&*mem), next);
        });
    }
}

/// Without a backup slot a crash mid-write tears the record: a reader then gets nothing
/// (the real reader's stall check turns that into TornRecordError), never a torn copy; the
/// next full publish makes it whole.
#[test]
fn without_backup_a_crash_tears_but_is_never_read_torn() {
    for crash_point in 0..=6 {
        loom::model(move || {
            let mem = Arc::new(ModelRecord::new(false));
            assert_eq!(publish(&mem), 1);
            let victim = {
                let mem = mem.clone();
                thread::spawn(move || {
                    mem.die_after(crash_point);
                    publish(&mem);
                })
            };
            let reader = {
                let mem = mem.clone();
                thread::spawn(move || {
                    if let Some(r) = read(&mem, 2) {
                        assert!(whole(r), "torn snapshot {r:?} (crash after {crash_point})");
                    }
                })
            };
            victim.join().unwrap();
            mem.revive();
            protocol::recover(&*mem);
            let n = load_seq_acquire(&*mem) + 1;
            assert_eq!(publish(&mem), n);
            reader.join().unwrap();
            assert_eq!(read(&mem, 1), Some((n, n * 10)));
        });
    }
}

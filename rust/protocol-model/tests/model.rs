//! Model checks of the protocol under loom (every interleaving, weak-memory outcomes).
use loom::sync::Arc;
use loom::thread;
use xshm_protocol_model::{Crash, Segment, STORES_PER_PUBLISH};

fn consistent(r: [u64; 2]) -> bool {
    r[1] == r[0] * 10
}

/// A writer publishing twice while a reader reads twice: no torn snapshot, never backwards.
#[test]
fn reads_are_consistent_and_monotonic() {
    loom::model(|| {
        let seg = Arc::new(Segment::new());
        let w = {
            let seg = seg.clone();
            thread::spawn(move || {
                for n in 1..=2 {
                    seg.publish(n, &mut Crash::after(usize::MAX)).unwrap();
                }
            })
        };
        let mut last = 0;
        for _ in 0..2 {
            if let Some(r) = seg.read(2) {
                assert!(consistent(r), "torn snapshot {r:?}");
                assert!(r[0] >= last, "went backwards: {} after {last}", r[0]);
                last = r[0];
            }
        }
        w.join().unwrap();
        let r = seg.read(1).expect("a quiescent segment is always readable");
        assert_eq!(r, [2, 20]);
    });
}

/// A writer killed after each possible number of stores in its second publish; the next
/// writer recovers and publishes while a reader reads. The reader never sees a torn record,
/// never sees less than the acknowledged publish 1, and the segment ends complete.
#[test]
fn crash_at_every_point_then_recovery() {
    for crash_point in 0..=STORES_PER_PUBLISH {
        loom::model(move || {
            let seg = Arc::new(Segment::new());
            seg.publish(1, &mut Crash::after(usize::MAX)).unwrap(); // acknowledged
            let victim = {
                let seg = seg.clone();
                thread::spawn(move || {
                    let _ = seg.publish(2, &mut Crash::after(crash_point));
                })
            };
            victim.join().unwrap(); // the robust mutex hands over after the owner's death
            let reader = {
                let seg = seg.clone();
                thread::spawn(move || {
                    let mut last = 1;
                    for _ in 0..2 {
                        let r = seg
                            .read(3)
                            .expect("a reader always gets a record after a crash");
                        assert!(
                            consistent(r),
                            "torn snapshot {r:?} (crash after {crash_point})"
                        );
                        assert!(r[0] >= last, "lost the acknowledged publish: {r:?}");
                        last = r[0];
                    }
                })
            };
            seg.recover();
            assert!(seg.seq() >= 1);
            let n = seg.next_seq();
            assert_eq!(
                n,
                seg.seq() + 1,
                "the live slot disagrees with the published seq (crash after {crash_point})"
            );
            seg.publish(n, &mut Crash::after(usize::MAX)).unwrap();
            reader.join().unwrap();
            assert_eq!(seg.read(1), Some([n, n * 10]));
            assert_eq!(seg.seq(), n);
        });
    }
}

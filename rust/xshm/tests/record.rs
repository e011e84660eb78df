//! The record end to end through the public API: create, open, publish, read, wait, lock,
//! unlink; the errors of bad input; consistent reads under a writer publishing flat out (and
//! proof that an unsynchronized read of the same memory does tear); a writer SIGKILLed
//! mid-publish, recovered by the next one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xshm::{CreateOptions, Dtype, ErrorKind, OpenOptions, Publish, SharedMemoryManager};

/// A unique segment name, unlinked on drop (whatever the test did with it).
struct Name(String);

impl Name {
    fn new(tag: &str) -> Name {
        static N: AtomicU64 = AtomicU64::new(0);
        Name(format!(
            "xshm-rs-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
    }
}

fn opts(shape: &[u64], dtype: Dtype, cap: u64, backup: bool) -> CreateOptions {
    CreateOptions {
        shape: shape.to_vec(),
        dtype,
        message_capacity: cap,
        backup,
        ..CreateOptions::default()
    }
}

#[test]
fn publish_then_read_from_another_handle() {
    let n = Name::new("roundtrip");
    let w = SharedMemoryManager::create(&n.0, &opts(&[2, 3], Dtype::Int32, 32, true)).unwrap();
    assert_eq!(w.name(), format!("/{}", n.0));
    let r = SharedMemoryManager::open(&n.0, &OpenOptions::readonly()).unwrap();
    let fresh = r.read().unwrap();
    assert_eq!(fresh.info.seq, 0);
    assert_eq!(fresh.info.writer_pid, std::process::id());
    assert_eq!(fresh.values, vec![0; 24]);
    let seq = w
        .publish_values(&[1i32, -2, 3, -4, 5, -6], Some("héllo"), Some(42))
        .unwrap();
    assert_eq!(seq, 1);
    assert_eq!(r.seq(), 1);
    let s = r.read().unwrap();
    assert_eq!(s.values_i32().unwrap(), vec![1, -2, 3, -4, 5, -6]);
    assert_eq!(s.text().unwrap(), "héllo");
    assert_eq!((s.info.seq, s.info.counter), (1, 42));
    assert!(s.info.timestamp_ns > 1_700_000_000_000_000_000);
    // A publish of only a message keeps the values and the counter.
    w.publish(&Publish {
        message: Some(b"second"),
        ..Publish::default()
    })
    .unwrap();
    let s = r.read().unwrap();
    assert_eq!(s.values_i32().unwrap(), vec![1, -2, 3, -4, 5, -6]);
    assert_eq!(
        (s.info.seq, s.info.counter, s.text().unwrap()),
        (2, 42, "second")
    );
    // read_into with buffers kept by the caller.
    let mut values = vec![0u8; 24];
    let mut message = Vec::new();
    let info = r.read_into(Some(&mut values), Some(&mut message)).unwrap();
    assert_eq!((info.seq, &message[..]), (2, &b"second"[..]));
    assert_eq!(values, s.values);
    assert_eq!(r.epoch(), 2);
    assert_eq!(r.recoveries(), 0);
    assert_eq!(r.owner_pid(), 0);
    w.unlink().unwrap();
}

#[test]
fn creation_is_exclusive_owner_only_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let n = Name::new("excl");
    let o = opts(&[4], Dtype::Float64, 16, true);
    let _w = SharedMemoryManager::create(&n.0, &o).unwrap();
    let mode = std::fs::metadata(format!("/dev/shm/{}", n.0))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let e = SharedMemoryManager::create(&n.0, &o).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    assert!(e.to_string().contains("already exists"), "{e}");
    let again = SharedMemoryManager::create(
        &n.0,
        &CreateOptions {
            exist_ok: true,
            ..o.clone()
        },
    )
    .unwrap();
    assert_eq!(again.shape(), &[4]);
    let e = SharedMemoryManager::create(
        &n.0,
        &CreateOptions {
            exist_ok: true,
            shape: vec![5],
            dtype: Dtype::Float32,
            ..o.clone()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Layout);
    assert!(
        e.to_string()
            .contains("dtype float64 there, float32 asked; shape (4,) there, (5,) asked"),
        "{e}"
    );
    for bad in ["", "a/b", ".."] {
        assert_eq!(
            SharedMemoryManager::create(bad, &o).unwrap_err().kind(),
            ErrorKind::Argument
        );
    }
    let big = CreateOptions {
        shape: vec![1 << 41],
        ..o.clone()
    };
    assert!(SharedMemoryManager::create(&n.0, &big)
        .unwrap_err()
        .is_argument());
    let mode = CreateOptions { mode: 0o1777, ..o };
    assert_eq!(
        SharedMemoryManager::create("x", &mode).unwrap_err().kind(),
        ErrorKind::Argument
    );
}

#[test]
fn bad_calls_get_typed_errors() {
    let n = Name::new("errors");
    let w = SharedMemoryManager::create(&n.0, &opts(&[3], Dtype::Float64, 4, true)).unwrap();
    let r = SharedMemoryManager::open(&n.0, &OpenOptions::readonly()).unwrap();
    let e = r.publish_values(&[1.0f64; 3], None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly);
    assert_eq!(r.lock(None).unwrap_err().kind(), ErrorKind::ReadOnly);
    let e = w.publish_values(&[1.0f32; 3], None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Dtype);
    let e = w
        .publish(&Publish {
            values: Some(&[0; 5]),
            ..Publish::default()
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Argument);
    let e = w
        .publish(&Publish {
            message: Some(b"too long"),
            ..Publish::default()
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MessageTooLong);
    // Truncation cuts at a code point: "aé" is 3 bytes; 4 bytes would split "✓".
    w.publish(&Publish {
        message: Some("aé✓".as_bytes()),
        truncate: true,
        ..Publish::default()
    })
    .unwrap();
    assert_eq!(r.read().unwrap().text().unwrap(), "aé");
    w.publish(&Publish {
        message: Some(b"a\xffb"),
        ..Publish::default()
    })
    .unwrap();
    let s = r.read().unwrap();
    match s.text().unwrap_err() {
        xshm::Error::MessageDecode { offset, .. } => assert_eq!(offset, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.text_lossy(), "a\u{fffd}b");
    assert_eq!(s.values_f32().unwrap_err().kind(), ErrorKind::Dtype);
    let mut small = [0u8; 8];
    assert!(r
        .read_into(Some(&mut small), None)
        .unwrap_err()
        .is_argument());
    let e = SharedMemoryManager::open(&format!("{}-missing", n.0), &OpenOptions::readonly())
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    // The same thread locking twice is an error, not a deadlock.
    let g = w.lock(None).unwrap();
    assert!(w.lock(None).unwrap_err().is_argument());
    assert!(w
        .publish_values(&[0.0f64; 3], None, None)
        .unwrap_err()
        .is_argument());
    drop(g);
    // Another thread sees the lock held.
    let g = w.lock(None).unwrap();
    let w2 = w.clone();
    let (free_now, timed_out) = std::thread::spawn(move || {
        let t = w2.try_lock().unwrap().is_none();
        let e = w2.lock(Some(Duration::from_millis(30))).unwrap_err();
        (
            t,
            e.kind() == ErrorKind::WaitTimeout && e.to_string().contains("held by pid"),
        )
    })
    .join()
    .unwrap();
    assert!(free_now && timed_out);
    drop(g);
    assert!(w.try_lock().unwrap().is_some());
}

#[test]
fn unlink_removes_only_its_own_segment() {
    let n = Name::new("unlink");
    let o = opts(&[1], Dtype::UInt8, 0, false);
    let first = SharedMemoryManager::create(&n.0, &o).unwrap();
    xshm::unlink(&n.0, false).unwrap();
    let second = SharedMemoryManager::create(&n.0, &o).unwrap();
    let e = first.unlink().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert!(std::path::Path::new(&format!("/dev/shm/{}", n.0)).exists());
    // The first handle still reads its own (unlinked) mapping.
    assert_eq!(first.read().unwrap().info.seq, 0);
    second.unlink().unwrap();
    assert!(!std::path::Path::new(&format!("/dev/shm/{}", n.0)).exists());
    // A foreign file is not removed without force.
    std::fs::write(format!("/dev/shm/{}", n.0), b"not a segment").unwrap();
    assert_eq!(
        xshm::unlink(&n.0, false).unwrap_err().kind(),
        ErrorKind::Layout
    );
    xshm::unlink(&n.0, true).unwrap();
}

#[test]
fn open_waits_for_a_name_that_appears() {
    let n = Name::new("appear");
    let name = n.0.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        SharedMemoryManager::create(&name, &CreateOptions::default()).unwrap()
    });
    let r = SharedMemoryManager::open(
        &n.0,
        &OpenOptions {
            readonly: true,
            timeout: Some(Duration::from_secs(10)),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.shape(), &[100]);
    drop(t.join().unwrap());
    let e = SharedMemoryManager::open(
        "xshm-rs-never-there",
        &OpenOptions {
            timeout: Some(Duration::from_millis(20)),
            ..OpenOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert!(e.to_string().contains("within 20 ms"), "{e}");
}

#[test]
fn waits_are_woken_by_a_publish_and_time_out() {
    let n = Name::new("wait");
    let w = SharedMemoryManager::create(&n.0, &opts(&[1], Dtype::UInt64, 8, true)).unwrap();
    let r = SharedMemoryManager::open(&n.0, &OpenOptions::readonly()).unwrap();
    let e = r.wait(0, Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WaitTimeout);
    assert_eq!(r.wait_for(0, Some(Duration::ZERO), Duration::ZERO), None);
    for spin in [Duration::ZERO, Duration::from_micros(50)] {
        let last = r.seq();
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            w2.publish_values(&[7u64], None, None).unwrap()
        });
        let start = Instant::now();
        let got = r.wait_for(last, Some(Duration::from_secs(10)), spin);
        let published = t.join().unwrap();
        assert_eq!(got, Some(published));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    // Woken, not timed out: a forever wait returns.
    let last = r.seq();
    let w2 = w.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        w2.publish_values(&[8u64], None, None).unwrap()
    });
    assert_eq!(r.wait(last, None).unwrap(), last + 1);
    t.join().unwrap();
}

/// Values of record `k`: every element `k`, so that a mix of two records shows.
fn record_values(k: u64, n: usize) -> Vec<u64> {
    vec![k; n]
}

#[test]
fn reads_never_tear_while_an_unsynchronized_read_does() {
    const N: usize = 512; // 4 KiB of values: a copy takes long enough to be caught
    let name = Name::new("tear");
    for backup in [true, false] {
        let w = Arc::new(
            SharedMemoryManager::create(
                &name.0,
                &CreateOptions {
                    exist_ok: false,
                    ..opts(&[N as u64], Dtype::UInt64, 0, backup)
                },
            )
            .unwrap(),
        );
        let r = SharedMemoryManager::open(&name.0, &OpenOptions::readonly()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (w, stop) = (w.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    w.publish_values(&record_values(k, N), None, Some(k))
                        .unwrap();
                }
                k
            })
        };
        // The protected read: values all equal to the counter, never mixed.
        let mut values = vec![0u8; N * 8];
        let mut torn = 0;
        let mut last = 0;
        for _ in 0..20_000 {
            let info = r.read_into(Some(&mut values), None).unwrap();
            let mixed = values
                .chunks_exact(8)
                .any(|c| u64::from_le_bytes(c.try_into().unwrap()) != info.counter);
            torn += usize::from(mixed);
            assert!(info.seq >= last, "went backwards");
            last = info.seq;
        }
        // The same memory read without the seqlock: the first and last words of the live
        // slot's values, loaded while the writer runs.
        let p = r.live_values();
        let mut unsync_torn = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while unsync_torn == 0 && Instant::now() < deadline {
            for _ in 0..10_000 {
                // SAFETY: the live values are mapped for as long as `r` lives; relaxed atomic
                // loads of aligned words (the crate's own access rule).
                let (a, b) = unsafe {
                    let first = (*p.cast::<std::sync::atomic::AtomicU64>()).load(Ordering::Relaxed);
                    let last = (*p.add((N - 1) * 8).cast::<std::sync::atomic::AtomicU64>())
                        .load(Ordering::Relaxed);
                    (first, last)
                };
                unsync_torn += usize::from(a != b);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let published = writer.join().unwrap();
        assert!(
            published > 100,
            "the writer published only {published} records"
        );
        assert_eq!(torn, 0, "backup={backup}: {torn} torn snapshots");
        assert!(
            unsync_torn > 0,
            "backup={backup}: the unsynchronized read never tore, so this test cannot catch a tear"
        );
        w.unlink().unwrap();
    }
}

/// A child process (this test binary again) publishing big records flat out, SIGKILLed at a
/// random moment; the next writer recovers the record. Repeated until the kill has landed
/// while the child held the lock (recoveries counts it), and every read in between is whole.
#[test]
fn a_writer_killed_mid_publish_is_recovered_by_the_next() {
    const N: u64 = 1 << 16; // 512 KiB of values: a publish takes long, a kill lands in one
    if let Ok(name) = std::env::var("XSHM_RS_TEST_CHILD_PUBLISHER") {
        let w = SharedMemoryManager::open(&name, &OpenOptions::default()).unwrap();
        let mut k = w.read().unwrap().info.counter;
        println!("ready");
        loop {
            k += 1;
            w.publish_values(&record_values(k, N as usize), Some("child"), Some(k))
                .unwrap();
        }
    }
    for backup in [true, false] {
        let n = Name::new("kill");
        let w = SharedMemoryManager::create(&n.0, &opts(&[N], Dtype::UInt64, 16, backup)).unwrap();
        let mut recovered = 0;
        for round in 0..200u64 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "a_writer_killed_mid_publish_is_recovered_by_the_next",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("XSHM_RS_TEST_CHILD_PUBLISHER", &n.0)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // Wait until it publishes, then kill it at a varying moment.
            let start = w.seq();
            assert!(w
                .wait_for(start, Some(Duration::from_secs(20)), Duration::ZERO)
                .is_some());
            std::thread::sleep(Duration::from_micros(200 + 137 * (round % 40)));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            child.wait().unwrap();
            let before = w.recoveries();
            let torn = w.lock(Some(Duration::from_secs(5))).unwrap().torn();
            let did_recover = w.recoveries() == before + 1;
            recovered += usize::from(did_recover);
            if backup {
                assert!(!torn);
                let s = w.read().unwrap();
                let v = s.values_u64().unwrap();
                assert!(
                    v.iter().all(|&x| x == s.info.counter),
                    "torn record after a kill"
                );
                assert_eq!(
                    w.seq(),
                    s.info.seq,
                    "the header's seq disagrees with the record"
                );
            } else if torn {
                assert_eq!(w.read().unwrap_err().kind(), ErrorKind::TornRecord);
                let e = w.publish(&Publish {
                    message: Some(b"x"),
                    ..Publish::default()
                });
                assert_eq!(e.unwrap_err().kind(), ErrorKind::TornRecord);
            }
            // The next full publish always works.
            let k = w.read().map(|s| s.info.counter).unwrap_or(0) + 1;
            w.publish_values(&record_values(k, N as usize), Some("parent"), Some(k))
                .unwrap();
            let s = w.read().unwrap();
            assert_eq!((s.info.counter, s.text().unwrap()), (k, "parent"));
            if recovered >= 3 {
                break;
            }
        }
        assert!(
            recovered >= 1,
            "backup={backup}: no kill landed while the child held the lock"
        );
        w.unlink().unwrap();
    }
}

#[test]
fn unlink_without_force_takes_only_what_may_be_a_segment() {
    let n = Name::new("small");
    let path = format!("/dev/shm/{}", n.0);
    for small in [vec![0u8; 100], b"XSHMSEG\0junk".to_vec()] {
        std::fs::write(&path, &small).unwrap();
        assert_eq!(
            xshm::unlink(&n.0, false).unwrap_err().kind(),
            ErrorKind::Layout
        );
        assert!(std::path::Path::new(&path).exists());
    }
    for never_ready in [Vec::new(), vec![0u8; 4096]] {
        std::fs::write(&path, &never_ready).unwrap();
        xshm::unlink(&n.0, false).unwrap();
        assert!(!std::path::Path::new(&path).exists());
    }
}

#[test]
fn os_errors_have_the_errno_glibc_gives() {
    let n = Name::new("dir");
    let path = format!("/dev/shm/{}", n.0);
    std::fs::create_dir(&path).unwrap();
    // glibc's shm_open reports a directory as EINVAL.
    let e = SharedMemoryManager::open(&n.0, &OpenOptions::default()).unwrap_err();
    std::fs::remove_dir(&path).unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    // A name with ": " in it keeps the OS's text.
    let e = xshm::unlink("xshm-rs-no: such", true).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert!(e.to_string().ends_with("No such file or directory"), "{e}");
}

#[test]
fn a_timeout_too_long_for_the_clock_is_forever() {
    let n = Name::new("forever");
    let _w = SharedMemoryManager::create(&n.0, &CreateOptions::default()).unwrap();
    let o = OpenOptions {
        readonly: true,
        timeout: Some(Duration::MAX),
        stall_timeout: Some(Duration::MAX),
    };
    let r = SharedMemoryManager::open(&n.0, &o).unwrap();
    assert_eq!(r.read().unwrap().info.seq, 0);
    assert_eq!(r.wait_for(0, Some(Duration::ZERO), Duration::ZERO), None);
    // The name is checked before the geometry.
    let e = SharedMemoryManager::create(
        "a/b",
        &CreateOptions {
            shape: vec![1 << 41],
            ..CreateOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("segment name"), "{e}");
}

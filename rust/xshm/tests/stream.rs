//! Streams end to end through the public API: create, open, send, receive, in order and
//! whole; block gating writers and drop_oldest counting what a slow reader lost; the errors
//! of bad input; a reader killed while it gates writers (reaped), and a writer killed
//! mid-send (its hole abandoned, its mutex recovered), with every number accounted for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xshm::{Backpressure, Dtype, ErrorKind, Start, Stream, StreamOpenOptions, StreamOptions};

/// A unique stream name, unlinked on drop (whatever the test did with it).
struct Name(String);

impl Name {
    fn new(tag: &str) -> Name {
        static N: AtomicU64 = AtomicU64::new(0);
        Name(format!(
            "xshm-rs-st-{}-{}-{tag}",
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

fn opts(capacity: u64, max_bytes: u64, backpressure: Backpressure) -> StreamOptions {
    StreamOptions {
        capacity,
        max_bytes,
        backpressure,
        ..StreamOptions::default()
    }
}

const SECOND: Option<Duration> = Some(Duration::from_secs(1));
const LONG: Option<Duration> = Some(Duration::from_secs(20));

/// A message whose every 8-byte word is `k`, `words` words long: a torn copy shows.
fn payload(k: u64, words: usize) -> Vec<u8> {
    k.to_le_bytes().repeat(words)
}

/// The `k` of a payload, checking that it is whole.
fn whole(data: &[u8]) -> u64 {
    assert!(
        !data.is_empty() && data.len().is_multiple_of(8),
        "{} bytes",
        data.len()
    );
    let k = u64::from_le_bytes(data[..8].try_into().unwrap());
    assert!(
        data.chunks_exact(8)
            .all(|w| u64::from_le_bytes(w.try_into().unwrap()) == k),
        "a torn message"
    );
    k
}

fn open(name: &str) -> Stream {
    Stream::open(name, &StreamOpenOptions::default()).unwrap()
}

#[test]
fn messages_arrive_in_order_and_whole_across_handles() {
    let n = Name::new("order");
    let w = Stream::create(&n.0, &opts(8, 256, Backpressure::Block)).unwrap();
    let r = open(&n.0);
    let mut reader = r.reader(Start::Oldest).unwrap();
    let writer = std::thread::spawn(move || {
        for k in 0..2000u64 {
            let seq = w.send(&payload(k, 1 + (k % 32) as usize), LONG).unwrap();
            assert_eq!(seq, k);
        }
        w
    });
    for k in 0..2000u64 {
        let m = reader.recv(LONG).unwrap();
        assert_eq!((m.seq, whole(&m.data)), (k, k));
        assert_eq!(m.data.len(), 8 * (1 + (k % 32) as usize));
        assert_eq!(m.writer_pid, std::process::id());
    }
    let w = writer.join().unwrap();
    assert_eq!(
        (reader.received(), reader.lost(), reader.skipped()),
        (2000, 0, 0)
    );
    assert_eq!((reader.cursor(), w.head(), reader.lag()), (2000, 2000, 0));
    assert_eq!(w.dropped(), 0);
    w.unlink().unwrap();
}

#[test]
fn creation_is_exclusive_owner_only_and_checked() {
    let n = Name::new("excl");
    let s = Stream::create(&n.0, &opts(8, 100, Backpressure::Block)).unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/{}", n.0)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), s.geometry().total_size);
    let e = Stream::create(&n.0, &opts(8, 100, Backpressure::Block)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    assert!(e.to_string().contains("Stream::open"), "{e}");
    let same = Stream::create(
        &n.0,
        &StreamOptions {
            exist_ok: true,
            ..opts(8, 100, Backpressure::Block)
        },
    )
    .unwrap();
    assert_eq!(same.geometry(), s.geometry());
    let e = Stream::create(
        &n.0,
        &StreamOptions {
            exist_ok: true,
            ..opts(16, 100, Backpressure::DropOldest)
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Layout);
    assert!(
        e.to_string()
            .contains("capacity 8 there, 16 asked; backpressure block there, drop_oldest asked"),
        "{e}"
    );
    let e = Stream::create("bad/name", &StreamOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Argument);
    let e = Stream::create(&Name::new("cap").0, &opts(0, 100, Backpressure::Block)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Argument);
    s.unlink().unwrap();
}

#[test]
fn block_gates_writers_until_the_reader_moves() {
    let n = Name::new("block");
    let w = Stream::create(&n.0, &opts(4, 64, Backpressure::Block)).unwrap();
    // No reader: nothing gates, and overwrites count as dropped.
    for k in 0..6 {
        w.send(&payload(k, 1), Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(w.dropped(), 2);
    let mut r = w.reader(Start::Latest).unwrap();
    for k in 6..10 {
        assert_eq!(w.try_send(&payload(k, 1)).unwrap(), Some(k));
    }
    assert_eq!(w.try_send(&payload(10, 1)).unwrap(), None);
    let t = Instant::now();
    let e = w
        .send(&payload(10, 1), Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(e.kind(), ErrorKind::StreamFull);
    assert!(e.is_timeout());
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "is full: the slowest reader (pid {}, at message 6) is 4 messages behind",
            std::process::id()
        )),
        "{text}"
    );
    let e = w
        .send_many(
            &[&payload(10, 1)[..], &payload(11, 1)[..]],
            Some(Duration::ZERO),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamFull);
    assert_eq!(w.dropped(), 2);
    // A writer blocked in another thread is woken by the reader's move.
    let w2 = w.clone();
    let blocked = std::thread::spawn(move || w2.send(&payload(10, 1), LONG).unwrap());
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(whole(&r.recv(SECOND).unwrap().data), 6);
    assert_eq!(blocked.join().unwrap(), 10);
    for k in 7..11 {
        assert_eq!(whole(&r.recv(SECOND).unwrap().data), k);
    }
    // A close stops the gating at once.
    assert_eq!(w.send_many(&[b"a", b"b", b"c", b"d"], SECOND).unwrap(), 14);
    assert_eq!(w.try_send(b"e").unwrap(), None);
    drop(r);
    assert_eq!(w.try_send(b"e").unwrap(), Some(15));
    w.unlink().unwrap();
}

#[test]
fn drop_oldest_counts_what_a_slow_reader_lost() {
    let n = Name::new("drop");
    let w = Stream::create(&n.0, &opts(4, 64, Backpressure::DropOldest)).unwrap();
    let mut r = w.reader(Start::Oldest).unwrap();
    for k in 0..20 {
        assert_eq!(w.try_send(&payload(k, 2)).unwrap(), Some(k));
    }
    let mut got = Vec::new();
    while let Some(m) = r.try_recv().unwrap() {
        got.push(whole(&m.data));
    }
    // Lapped at 0: it jumps to head − capacity + 1 and takes the rest.
    assert_eq!(got, vec![17, 18, 19]);
    assert_eq!((r.received(), r.lost(), r.cursor()), (3, 17, 20));
    assert_eq!(
        w.dropped(),
        0,
        "a reader was attached: its lost counts, not dropped"
    );
    // A writer lapping a reader that is copying never hands it a torn message.
    let w2 = w.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut k = 20;
        while !stop2.load(Ordering::Relaxed) {
            w2.send(&payload(k, 8), None).unwrap();
            k += 1;
        }
        k
    });
    let mut last = 19;
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        if let Some(m) = r.try_recv().unwrap() {
            let k = whole(&m.data);
            assert_eq!(k, m.seq);
            assert!(k > last, "out of order: {k} after {last}");
            last = k;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    while let Some(m) = r.try_recv().unwrap() {
        last = whole(&m.data);
    }
    assert_eq!(last, sent - 1);
    assert_eq!(r.received() + r.lost() + r.skipped(), r.cursor());
    assert_eq!(r.cursor(), w.head());
    w.unlink().unwrap();
}

#[test]
fn bad_calls_get_typed_errors() {
    let n = Name::new("errors");
    let w = Stream::create(&n.0, &opts(4, 16, Backpressure::Block)).unwrap();
    let e = w.send(&[0u8; 17], None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MessageTooLong);
    assert_eq!(
        e.to_string(),
        format!(
            "message is 17 bytes; stream /{} takes at most 16 (max_bytes)",
            n.0
        )
    );
    assert_eq!(
        w.send_many(&[], None).unwrap_err().kind(),
        ErrorKind::Argument
    );
    // A refused batch sends nothing.
    assert!(w.send_many(&[b"ok", &[0u8; 17]], None).is_err());
    assert_eq!(w.head(), 0);
    let ro = Stream::open(
        &n.0,
        &StreamOpenOptions {
            readonly: true,
            ..StreamOpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(ro.send(b"x", None).unwrap_err().kind(), ErrorKind::ReadOnly);
    let mut r = ro.reader(Start::Latest).unwrap(); // a read-only handle still attaches
    let t = Instant::now();
    let e = r.recv(Some(Duration::from_millis(30))).unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(e.kind(), ErrorKind::WaitTimeout);
    assert_eq!(r.recv_many(5, Some(Duration::ZERO)).unwrap(), vec![]);
    let mut small = [0u8; 15];
    let e = r.recv_into(&mut small, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Argument);
    w.send_many(&[b"one", b"two"], None).unwrap();
    let mut buf = [0u8; 16];
    let info = r.recv_into(&mut buf, SECOND).unwrap().unwrap();
    assert_eq!((info.seq, &buf[..info.size]), (0, &b"one"[..]));
    assert_eq!(r.recv_many(5, SECOND).unwrap()[0].data, b"two");
    // Interrupted from another thread: ClosedError now and after.
    let stop = r.interrupter();
    let waiting = std::thread::spawn(move || {
        let e = r.recv(LONG).unwrap_err();
        (e.kind(), r.try_recv().unwrap_err().kind())
    });
    std::thread::sleep(Duration::from_millis(20));
    stop.interrupt();
    assert_eq!(
        waiting.join().unwrap(),
        (ErrorKind::Closed, ErrorKind::Closed)
    );
    let mut r = w.reader(Start::Oldest).unwrap();
    r.close();
    assert_eq!(r.try_recv().unwrap_err().kind(), ErrorKind::Closed);
    // A full reader table of live readers.
    let few = Name::new("few");
    let f = Stream::create(
        &few.0,
        &StreamOptions {
            max_readers: 2,
            ..opts(4, 16, Backpressure::Block)
        },
    )
    .unwrap();
    let _a = f.reader(Start::Oldest).unwrap();
    let _b = f.reader(Start::Oldest).unwrap();
    let e = f.reader(Start::Oldest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other);
    assert!(e.to_string().contains("all 2 reader entries in use"), "{e}");
    f.unlink().unwrap();
    // Frames are whole.
    let fr = Name::new("frames");
    let f = Stream::create(
        &fr.0,
        &StreamOptions {
            dtype: Some(Dtype::Float32),
            shape: vec![2, 3],
            ..opts(4, 24, Backpressure::Block)
        },
    )
    .unwrap();
    assert_eq!(
        f.send(&[0u8; 23], None).unwrap_err().kind(),
        ErrorKind::Argument
    );
    f.send(&[1u8; 24], None).unwrap();
    f.unlink().unwrap();
    // A record is not a stream, nor the reverse.
    let rec = Name::new("rec");
    let m = xshm::SharedMemoryManager::create(&rec.0, &xshm::CreateOptions::default()).unwrap();
    let e = open_err(&rec.0);
    assert!(e.contains("is a record, not a stream"), "{e}");
    m.unlink().unwrap();
    let e = xshm::SharedMemoryManager::open(&n.0, &xshm::OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Layout);
    w.unlink().unwrap();
    let e = Stream::open(&n.0, &StreamOpenOptions::default()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

fn open_err(name: &str) -> String {
    Stream::open(name, &StreamOpenOptions::default())
        .unwrap_err()
        .to_string()
}

/// The u32 at `offset` of the stream file (a header word a test checks from outside).
fn header_u32(name: &str, offset: u64) -> u32 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/dev/shm/{name}")).unwrap();
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, offset).unwrap();
    u32::from_le_bytes(b)
}

/// Three writer threads against a ring of 16: two share one handle (its clones), the third
/// has its own. Nothing is lost, each writer's messages arrive in order, and once everyone is
/// done no sleeper is left counted (a handle whose two threads slept for room at once counts
/// once, 23.4).
#[test]
fn writers_in_many_threads_lose_nothing_under_block() {
    let n = Name::new("mt");
    let w = Stream::create(&n.0, &opts(16, 64, Backpressure::Block)).unwrap();
    let mut r = w.reader(Start::Oldest).unwrap();
    let shared = open(&n.0);
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let w = if t < 2 { shared.clone() } else { open(&n.0) };
            std::thread::spawn(move || {
                for k in 0..3000u64 {
                    let mut m = payload(t, 1);
                    m.extend(k.to_le_bytes());
                    w.send(&m, LONG).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u64; 3];
    for i in 0..9000 {
        if i % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(20)); // the writers fill the ring and sleep
        }
        let m = r.recv(LONG).unwrap();
        let t = u64::from_le_bytes(m.data[..8].try_into().unwrap()) as usize;
        let k = u64::from_le_bytes(m.data[8..16].try_into().unwrap());
        assert_eq!(k, next[t], "writer {t} out of order");
        next[t] += 1;
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!((r.received(), r.lost()), (9000, 0));
    assert_eq!(w.dropped(), 0);
    let (data_waiters, space_waiters) = (268, 324); // docs/LAYOUT.md 18.2, 18.3
    assert_eq!(
        header_u32(&n.0, space_waiters),
        0,
        "a writer handle left counted"
    );
    assert_eq!(header_u32(&n.0, data_waiters), 0, "a reader left counted");
    w.unlink().unwrap();
}

/// A child process running one role of a kill test: a re-exec of this test binary with an
/// env var naming the role and the stream. Killed (SIGKILL) and reaped on drop, so a failing
/// test leaves no process behind.
struct Child(std::process::Child);

impl Child {
    fn spawn(test: &str, role: &str, name: &str) -> Child {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("XSHM_RS_STREAM_CHILD", format!("{role}:{name}"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for its "ready" (after the test harness's own lines).
        use std::io::BufRead;
        let out = std::io::BufReader::new(c.stdout.take().unwrap());
        for line in out.lines() {
            if line.unwrap().contains("XSHM-CHILD-READY") {
                return Child(c);
            }
        }
        let _ = c.kill();
        panic!("the child ended before it was ready: {:?}", c.wait());
    }

    fn kill(&mut self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn child_role() -> Option<(String, String)> {
    let v = std::env::var("XSHM_RS_STREAM_CHILD").ok()?;
    let (role, name) = v.split_once(':')?;
    Some((role.to_string(), name.to_string()))
}

#[test]
fn a_reader_killed_while_it_gates_is_reaped() {
    const TEST: &str = "a_reader_killed_while_it_gates_is_reaped";
    if let Some((_, name)) = child_role() {
        let s = open(&name);
        let _r = s.reader(Start::Latest).unwrap();
        println!("\nXSHM-CHILD-READY");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let n = Name::new("reap");
    let w = Stream::create(&n.0, &opts(4, 64, Backpressure::Block)).unwrap();
    let mut c = Child::spawn(TEST, "reader", &n.0);
    for k in 0..4 {
        w.send(&payload(k, 1), SECOND).unwrap();
    }
    assert_eq!(w.try_send(b"x").unwrap(), None, "the child's reader gates");
    c.kill();
    // Within about GATE_CHECK the blocked send reaps it and goes on.
    let t = Instant::now();
    assert_eq!(w.send(b"x", Some(Duration::from_secs(5))).unwrap(), 4);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(w.reaped(), 1);
    w.unlink().unwrap();
}

/// A writer SIGKILLed at varying moments while it sends flat out. With 64 KiB messages under
/// block (filled after the mutex is released; the child mostly waits for the reader) a kill
/// lands between a claim and its commit: the reader judges the hole and counts it lost, once.
/// With 4 KiB messages under drop_oldest (filled under the mutex; the child never waits) a
/// kill lands holding the mutex: the next locker recovers. Either way every number is
/// accounted for, nothing is reordered, and no message is torn.
#[test]
fn a_writer_killed_mid_send_leaves_holes_that_are_judged() {
    const TEST: &str = "a_writer_killed_mid_send_leaves_holes_that_are_judged";
    if let Some((role, name)) = child_role() {
        let words: usize = role.parse().unwrap();
        let s = open(&name);
        println!("\nXSHM-CHILD-READY");
        let mut k = s.head();
        loop {
            s.send(&payload(k, words), None).unwrap();
            k += 1;
        }
    }
    for (words, backpressure) in [
        (8192usize, Backpressure::Block),
        (512, Backpressure::DropOldest),
    ] {
        let want_recovery = backpressure == Backpressure::DropOldest;
        let n = Name::new("wkill");
        let w = Stream::create(&n.0, &opts(8, 8 * words as u64, backpressure)).unwrap();
        let mut r = w.reader(Start::Oldest).unwrap();
        for round in 0..200u64 {
            let mut c = Child::spawn(TEST, &words.to_string(), &n.0);
            let until = Instant::now() + Duration::from_micros(300 + 211 * (round % 20));
            let mut last = None;
            while Instant::now() < until {
                if let Some(m) = r.try_recv().unwrap() {
                    assert_eq!(whole(&m.data), m.seq, "a message is its own number");
                    last = Some(m.seq);
                }
            }
            c.kill();
            // The parent sends a marker (recovering the mutex first if the child died holding
            // it) while the reader drains the ring; the reader reaches the marker past any
            // hole the kill left.
            let mut check = |m: xshm::Message| -> bool {
                if whole(&m.data) == u64::MAX {
                    return true;
                }
                assert_eq!(whole(&m.data), m.seq);
                assert!(last.is_none_or(|l| m.seq > l), "out of order");
                last = Some(m.seq);
                false
            };
            let give_up = Instant::now() + Duration::from_secs(10);
            let mut marker = None;
            let mut reached = false;
            while !reached {
                assert!(Instant::now() < give_up, "the marker never arrived");
                if marker.is_none() {
                    marker = w.try_send(&payload(u64::MAX, 1)).unwrap();
                }
                while let Some(m) = r.try_recv().unwrap() {
                    reached = check(m);
                    if reached {
                        break;
                    }
                }
            }
            assert_eq!(r.received() + r.lost() + r.skipped(), r.cursor());
            assert_eq!(r.cursor(), w.head());
            if want_recovery {
                // Laps count too; every abandoned number was counted lost by the reader.
                assert!(w.abandoned() <= r.lost());
                if w.recoveries() >= 1 && round >= 2 {
                    break;
                }
            } else {
                assert_eq!(
                    w.abandoned(),
                    r.lost(),
                    "every lost number was abandoned once"
                );
                if r.lost() >= 2 && round >= 2 {
                    break;
                }
            }
        }
        if want_recovery {
            assert!(
                w.recoveries() >= 1,
                "no kill landed while the child held the mutex"
            );
        } else {
            assert!(
                r.lost() >= 1,
                "no kill landed between a claim and its commit"
            );
        }
        w.unlink().unwrap();
    }
}

/// A reader entry left by a member that died in a step names a group whose mutex is corrupt:
/// the attach that would finish the step is refused (the mutex is not one xshm makes), and
/// gives the entry's liveness lock back (a leaked lock would make a later dead reader of that
/// entry look alive for ever).
#[test]
fn an_attach_refused_by_a_corrupt_group_gives_its_lock_back() {
    let n = Name::new("corruptgroup");
    let w = Stream::create(
        &n.0,
        &StreamOptions {
            max_groups: 2,
            ..opts(4, 16, Backpressure::Block)
        },
    )
    .unwrap();
    let readers_offset = w.geometry().readers_offset;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{}", n.0))
            .unwrap();
        let entry = readers_offset;
        f.write_all_at(
            &(7u64 << 2 | 1).to_le_bytes(),
            entry + xshm::reader_off::HOLD as u64,
        )
        .unwrap();
        f.write_all_at(&2u32.to_le_bytes(), entry + xshm::reader_off::GROUP as u64)
            .unwrap();
        // Group entry 1 was never created: its mutex bytes are zero, not a mutex xshm makes.
    }
    let e = w.reader(Start::Oldest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Layout, "{e}");
    // Nobody holds entry 0's byte now: ask from a description of our own.
    let f = std::fs::File::open(format!("/dev/shm/{}", n.0)).unwrap();
    // SAFETY: a zeroed flock is valid; the descriptor is open.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = readers_offset as libc::off_t;
    fl.l_len = 1;
    use std::os::fd::AsRawFd;
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) },
        0
    );
    assert_eq!(
        fl.l_type,
        libc::F_UNLCK as libc::c_short,
        "the refused attach kept its lock"
    );
    w.unlink().unwrap();
}

#[test]
fn claims_are_filled_in_place_committed_or_dropped() {
    let n = Name::new("claim");
    let w = Stream::create(&n.0, &opts(4, 16, Backpressure::Block)).unwrap();
    let mut r = w.reader(Start::Oldest).unwrap();
    let mut c = w.claim(16, SECOND).unwrap();
    assert_eq!((c.seq(), c.len()), (0, 16));
    c.write(0, b"hello, ").unwrap();
    c.write(7, b"world").unwrap();
    assert_eq!(
        c.write(10, &[0; 7]).unwrap_err().kind(),
        ErrorKind::Argument
    );
    assert_eq!(
        r.try_recv().unwrap(),
        None,
        "an open claim is a hole, not a message"
    );
    assert_eq!(c.commit(12).unwrap(), 0);
    assert_eq!(r.try_recv().unwrap().unwrap().data, b"hello, world");
    // Dropped (explicitly or by going out of scope): skipped, never lost.
    w.claim(4, SECOND).unwrap().drop_claim();
    drop(w.claim(4, SECOND).unwrap());
    w.send(b"after", SECOND).unwrap();
    assert_eq!(r.recv(SECOND).unwrap().data, b"after");
    assert_eq!((r.received(), r.lost(), r.skipped()), (2, 0, 2));
    // A wrong length is refused and leaves the claim open.
    let mut c = w.claim(8, SECOND).unwrap();
    c.write(0, b"kept").unwrap();
    assert_eq!(c.commit(9).unwrap_err().kind(), ErrorKind::Argument);
    assert_eq!(c.commit(4).unwrap(), 4);
    assert_eq!(c.commit(4).unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(r.recv(SECOND).unwrap().data, b"kept");
    // A full ring: try_claim says so.
    while w.try_send(b"x").unwrap().is_some() {}
    assert!(w.try_claim(1).unwrap().is_none());
    assert_eq!(
        w.claim(17, None).unwrap_err().kind(),
        ErrorKind::MessageTooLong
    );
    w.unlink().unwrap();
}

#[test]
fn views_are_read_in_place_and_report_an_overwrite() {
    let n = Name::new("view");
    let w = Stream::create(&n.0, &opts(2, 64, Backpressure::Block)).unwrap();
    let mut r = w.reader(Start::Oldest).unwrap();
    w.send(&payload(0, 4), SECOND).unwrap();
    w.send(&payload(1, 4), SECOND).unwrap();
    {
        let v = r.recv_view(SECOND).unwrap().unwrap();
        let mut buf = [0u8; 64];
        v.copy_to(&mut buf).unwrap();
        assert_eq!((v.seq(), whole(&buf[..v.len()])), (0, 0));
        // Under block a held view gates writers like an unread message.
        assert_eq!(w.try_send(b"z").unwrap(), None);
        v.release().unwrap();
    }
    assert_eq!((r.received(), r.cursor()), (1, 1));
    assert_eq!(w.try_send(&payload(2, 4)).unwrap(), Some(2));
    let d = Name::new("viewdrop");
    let w = Stream::create(&d.0, &opts(2, 64, Backpressure::DropOldest)).unwrap();
    let mut r = w.reader(Start::Oldest).unwrap();
    w.send(&payload(0, 4), SECOND).unwrap();
    let v = r.try_recv_view().unwrap().unwrap();
    for k in 1..4 {
        w.send(&payload(k, 4), SECOND).unwrap(); // laps the viewed slot
    }
    let e = v.release().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overwritten);
    assert_eq!((r.received(), r.lost()), (0, 1));
    let m = r.recv(SECOND).unwrap();
    assert_eq!(whole(&m.data), m.seq);
    assert_eq!(r.received() + r.lost(), r.cursor());
    let mut member = w.group_reader("g", Start::Oldest).unwrap();
    assert_eq!(
        member.try_recv_view().unwrap_err().kind(),
        ErrorKind::Argument
    );
    w.unlink().unwrap();
}

#[test]
fn a_group_gives_each_message_to_one_member() {
    let n = Name::new("group");
    let w = Stream::create(&n.0, &opts(8, 64, Backpressure::Block)).unwrap();
    let members: Vec<_> = (0..2)
        .map(|_| {
            let mut m = open(&n.0).group_reader("work", Start::Oldest).unwrap();
            assert_eq!(m.group().as_deref(), Some("work"));
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let msg = m.recv(LONG).unwrap();
                    let k = whole(&msg.data);
                    if k == u64::MAX {
                        return (got, m.received());
                    }
                    got.push(k);
                }
            })
        })
        .collect();
    // A solo reader beside the group sees everything.
    let mut solo = w.reader(Start::Oldest).unwrap();
    for k in 0..3000 {
        w.send(&payload(k, 2), LONG).unwrap();
        assert_eq!(whole(&solo.recv(LONG).unwrap().data), k);
    }
    let groups = w.groups().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].name.as_str(), groups[0].members), ("work", 2));
    w.send_many(
        &[&payload(u64::MAX, 1)[..], &payload(u64::MAX, 1)[..]],
        LONG,
    )
    .unwrap();
    let mut all = Vec::new();
    let mut shares = 0;
    for m in members {
        let (got, received) = m.join().unwrap();
        assert!(
            got.windows(2).all(|p| p[0] < p[1]),
            "a member's messages in order"
        );
        shares += received;
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..3000).collect::<Vec<_>>(),
        "each message to exactly one member"
    );
    let g = &w.groups().unwrap()[0];
    assert_eq!((g.received, g.lost, g.skipped, g.start), (3002, 0, 0, 0));
    assert_eq!(g.cursor, 3002);
    assert_eq!(shares, 3002);
    assert_eq!(g.members, 0, "the members closed");
    // Names and tables are checked.
    for bad in ["", "a/b", "tab\t", &"x".repeat(41)] {
        let e = w.group_reader(bad, Start::Oldest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Argument, "{bad:?}");
    }
    let none = Name::new("nogroups");
    let ng = Stream::create(
        &none.0,
        &StreamOptions {
            max_groups: 0,
            ..opts(4, 16, Backpressure::Block)
        },
    )
    .unwrap();
    let e = ng.group_reader("g", Start::Oldest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other);
    assert!(e.to_string().contains("no group table"), "{e}");
    ng.unlink().unwrap();
    w.unlink().unwrap();
}

/// A group member SIGKILLed at varying moments while it takes flat out: whenever it died
/// holding the group mutex, the next member's lock finishes its step (26.8.3), so the group's
/// `received + lost + skipped = cursor − start` holds after every kill and the surviving
/// member goes on in order.
#[test]
fn a_member_killed_mid_take_leaves_the_group_whole() {
    const TEST: &str = "a_member_killed_mid_take_leaves_the_group_whole";
    if let Some((_, name)) = child_role() {
        let s = open(&name);
        let mut m = s.group_reader("q", Start::Oldest).unwrap();
        println!("\nXSHM-CHILD-READY");
        loop {
            let _ = m.recv(None).unwrap();
        }
    }
    let n = Name::new("mkill");
    let w = Stream::create(&n.0, &opts(64, 4096, Backpressure::DropOldest)).unwrap();
    let mut me = w.group_reader("q", Start::Oldest).unwrap();
    let mut k = 0u64;
    for round in 0..30u64 {
        let mut c = Child::spawn(TEST, "member", &n.0);
        let until = Instant::now() + Duration::from_micros(200 + 173 * round);
        while Instant::now() < until {
            w.send(&payload(k, 512), None).unwrap();
            k += 1;
        }
        c.kill();
        let mut last = None;
        while let Some(m) = me.try_recv().unwrap() {
            assert_eq!(whole(&m.data), m.seq);
            assert!(last.is_none_or(|l| m.seq > l));
            last = Some(m.seq);
        }
        let g = &w.groups().unwrap()[0];
        assert_eq!(g.received + g.lost + g.skipped, g.cursor - g.start, "{g:?}");
        assert_eq!(g.cursor, w.head());
    }
    w.unlink().unwrap();
}

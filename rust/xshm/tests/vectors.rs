//! The golden vectors of docs/LAYOUT.md section 13, read by this crate: each `*.seg` of
//! tests/vectors is copied to /dev/shm under a unique name, opened, compared with its row of
//! segments.tsv, checked unchanged by a reader, then unlinked. The writer columns run on a
//! second copy. The stream manifest's rows a record opener must refuse are checked too, and
//! every stream row through the look-only handle, and through `Stream` with a reader (and a
//! writer) as docs/LAYOUT.md section 13's stream columns say.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use xshm::{ErrorKind, OpenOptions, Publish, SharedMemoryManager};

fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors");
    assert!(
        dir.join("segments.tsv").is_file(),
        "the golden vectors are not at {} (run the tests from the xshm repository)",
        dir.display()
    );
    dir
}

/// The rows of a manifest, each a map from column name to cell.
fn manifest(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let columns: Vec<String> = lines
        .next()
        .unwrap()
        .split('\t')
        .map(str::to_string)
        .collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            assert_eq!(cells.len(), columns.len(), "row {l:?}");
            columns
                .iter()
                .cloned()
                .zip(cells.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect()
}

/// A copy of a vector under /dev/shm, removed on drop.
struct Copy {
    name: String,
}

impl Copy {
    fn of(file: &Path) -> Copy {
        static N: AtomicUsize = AtomicUsize::new(0);
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let name = format!(
            "xshm-rs-vec-{}-{}-{stem}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        std::fs::copy(file, format!("/dev/shm/{name}")).unwrap();
        Copy { name }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(format!("/dev/shm/{}", self.name)).unwrap()
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.name));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind_named(name: &str) -> ErrorKind {
    match name {
        "LayoutError" => ErrorKind::Layout,
        "TornRecordError" => ErrorKind::TornRecord,
        "WaitTimeoutError" => ErrorKind::WaitTimeout,
        "Error" => ErrorKind::Other,
        other => panic!("the manifest names an error kind this test does not know: {other}"),
    }
}

fn num(row: &HashMap<String, String>, col: &str) -> u64 {
    row[col]
        .parse()
        .unwrap_or_else(|_| panic!("{}: {col} {:?}", row["file"], row[col]))
}

fn check_row(dir: &Path, row: &HashMap<String, String>) {
    let file = dir.join(&row["file"]);
    let what = &row["file"];
    let copy = Copy::of(&file);
    let before = copy.bytes();
    let opened = SharedMemoryManager::open(&copy.name, &OpenOptions::readonly());
    match row["stage"].as_str() {
        "open" => {
            let e = opened.expect_err(what);
            assert_eq!(e.kind(), kind_named(&row["error"]), "{what}: {e}");
            assert!(e.to_string().contains(&row["error_text"]), "{what}: {e}");
            // A writable open is refused the same way.
            let e = SharedMemoryManager::open(&copy.name, &OpenOptions::default()).expect_err(what);
            assert_eq!(
                e.kind(),
                kind_named(&row["error"]),
                "{what} (writable): {e}"
            );
        }
        "read" => {
            let m = opened.unwrap_or_else(|e| panic!("{what}: {e}"));
            let e = m.read().expect_err(what);
            assert_eq!(e.kind(), kind_named(&row["error"]), "{what}: {e}");
            assert!(e.to_string().contains(&row["error_text"]), "{what}: {e}");
        }
        "ok" => {
            let m = opened.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(m.dtype().name(), row["dtype"], "{what}");
            assert_eq!(xshm::format_shape(m.shape()), row["shape"], "{what}");
            assert_eq!(m.backup(), row["backup"] == "1", "{what}");
            assert_eq!(m.seq(), num(row, "seq"), "{what}");
            assert_eq!(u64::from(m.epoch()), num(row, "epoch"), "{what}");
            assert_eq!(u64::from(m.recoveries()), num(row, "recoveries"), "{what}");
            let snap = m.read().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(snap.info.seq, num(row, "read_seq"), "{what}");
            assert_eq!(snap.info.counter, num(row, "counter"), "{what}");
            assert_eq!(
                snap.info.timestamp_ns.to_string(),
                row["timestamp_ns"],
                "{what}"
            );
            assert_eq!(
                u64::from(snap.info.writer_pid),
                num(row, "writer_pid"),
                "{what}"
            );
            assert_eq!(snap.text().unwrap(), row["message"], "{what}");
            assert_eq!(hex(&snap.values), row["values"], "{what}");
        }
        other => panic!("{what}: unknown stage {other}"),
    }
    assert!(copy.bytes() == before, "{what}: a reader changed the file");
}

/// The `writer` column: what a writer's first lock does, on a copy of its own.
fn check_writer(dir: &Path, row: &HashMap<String, String>) {
    let what = &row["file"];
    let writer = row["writer"].as_str();
    if writer == "-" {
        return;
    }
    let copy = Copy::of(&dir.join(what));
    let opened = SharedMemoryManager::open(&copy.name, &OpenOptions::default());
    if writer == "refuse" {
        let e = opened.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::Layout, "{what}: {e}");
        assert!(
            e.to_string().contains(&row["writer_error_text"]),
            "{what}: {e}"
        );
        return;
    }
    let m = opened.unwrap_or_else(|e| panic!("{what}: {e}"));
    let (epoch, recoveries) = (u64::from(m.epoch()), u64::from(m.recoveries()));
    let recovers = writer == "recover" || writer == "torn";
    {
        let guard = m.lock(Some(std::time::Duration::from_secs(5))).unwrap();
        assert_eq!(guard.torn(), writer == "torn", "{what}");
    }
    let bump = u64::from(recovers);
    assert_eq!(u64::from(m.recoveries()), recoveries + bump, "{what}");
    assert_eq!(u64::from(m.epoch()), epoch + bump, "{what}");
    let header_seq = m.seq();
    if writer == "recover" {
        assert_eq!(header_seq, num(row, "read_seq"), "{what}");
        let snap = m.read().unwrap();
        assert_eq!(snap.info.seq, num(row, "read_seq"), "{what}");
        assert_eq!(hex(&snap.values), row["values"], "{what}");
    }
    if writer == "torn" {
        let e = m
            .publish(&Publish {
                message: Some(b"only a message"),
                ..Publish::default()
            })
            .expect_err(what);
        assert_eq!(e.kind(), ErrorKind::TornRecord, "{what}: {e}");
        assert_eq!(m.read().unwrap_err().kind(), ErrorKind::TornRecord);
    }
    let values = vec![0x5au8; m.geometry().values_size as usize];
    let seq = m
        .publish(&Publish {
            values: Some(&values),
            message: Some("from rust".as_bytes()),
            counter: Some(99),
            truncate: true,
            ..Publish::default()
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(seq, header_seq + 1, "{what}");
    let snap = m.read().unwrap();
    assert_eq!((snap.info.seq, snap.info.counter), (seq, 99), "{what}");
    assert_eq!(snap.values, values, "{what}");
    let cap = m.message_capacity() as usize;
    assert_eq!(snap.text().unwrap(), &"from rust"[..cap.min(9)], "{what}");
    assert_eq!(snap.info.writer_pid, std::process::id(), "{what}");
    assert_eq!(u64::from(m.recoveries()), recoveries + bump, "{what}");
}

#[test]
fn every_record_vector_reads_as_its_row_says() {
    let dir = vectors_dir();
    let rows = manifest(&dir.join("segments.tsv"));
    assert!(rows.len() >= 50, "only {} rows", rows.len());
    for row in &rows {
        check_row(&dir, row);
    }
    // Every vector has a row.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".seg") {
            assert!(rows.iter().any(|r| r["file"] == name), "{name} has no row");
        }
    }
}

#[test]
fn every_record_vector_takes_a_writer_as_its_row_says() {
    if !cfg!(all(target_env = "gnu", target_arch = "x86_64")) {
        eprintln!("the vectors' mutex bytes are glibc x86-64's: writer columns not checked here");
        return;
    }
    let dir = vectors_dir();
    let rows = manifest(&dir.join("segments.tsv"));
    let checked = rows.iter().filter(|r| r["writer"] != "-").count();
    assert!(checked >= 20, "only {checked} rows with a writer column");
    for row in &rows {
        check_writer(&dir, row);
    }
}

#[test]
fn streams_are_refused_by_the_record_opener() {
    let dir = vectors_dir().join("streams");
    let rows = manifest(&dir.join("streams.tsv"));
    let records: Vec<_> = rows.iter().filter(|r| r["open_as"] == "record").collect();
    assert!(records.len() >= 3);
    for row in records {
        let copy = Copy::of(&dir.join(&row["file"]));
        let e = SharedMemoryManager::open(&copy.name, &OpenOptions::readonly())
            .expect_err(&row["file"]);
        assert_eq!(e.kind(), kind_named(&row["error"]), "{}: {e}", row["file"]);
        assert!(
            e.to_string().contains(&row["error_text"]),
            "{}: {e}",
            row["file"]
        );
    }
}

/// The stream manifest: every row opened as its `open_as` says; a stream row by the look-only
/// handle (the refusals of section 22 at open; the geometry and `head` as opened, before any
/// recovery, of the others), and every row's `peek` (section 16's dispatch).
#[test]
fn every_stream_vector_opens_as_its_row_says() {
    let dir = vectors_dir().join("streams");
    let rows = manifest(&dir.join("streams.tsv"));
    assert!(rows.len() >= 70, "only {} rows", rows.len());
    let mut looked = 0;
    for row in &rows {
        let what = &row["file"];
        let copy = Copy::of(&dir.join(what));
        let before = copy.bytes();
        let kind = match xshm::segment_kind(&copy.name).unwrap() {
            xshm::SegmentKind::Record => "record",
            xshm::SegmentKind::Stream => "stream",
            xshm::SegmentKind::Unknown => "unknown",
        };
        assert_eq!(kind, row["peek"], "{what}");
        if row["open_as"] != "stream" {
            continue;
        }
        let opened = xshm::StreamLook::open(&copy.name, Some(std::time::Duration::ZERO));
        if row["stage"] == "open" {
            let e = opened.expect_err(what);
            assert_eq!(e.kind(), kind_named(&row["error"]), "{what}: {e}");
            assert!(e.to_string().contains(&row["error_text"]), "{what}: {e}");
            // S5 to S19 name the segment first; S3 and S4 name it in their own words.
            assert!(
                e.to_string()
                    .starts_with(&format!("segment /{}", copy.name)),
                "{what}: {e}"
            );
        } else {
            // ok, attach and recv rows all open; what an attach or a receive refuses is the
            // next slice's.
            let s = opened.unwrap_or_else(|e| panic!("{what}: {e}"));
            let g = s.geometry();
            assert_eq!(g.backpressure.name(), row["backpressure"], "{what}");
            assert_eq!(g.capacity, num(row, "capacity"), "{what}");
            assert_eq!(g.max_bytes, num(row, "max_bytes"), "{what}");
            assert_eq!(u64::from(g.max_groups), num(row, "max_groups"), "{what}");
            assert_eq!(u64::from(g.max_readers), num(row, "max_readers"), "{what}");
            assert_eq!(u64::from(g.max_writers), num(row, "max_writers"), "{what}");
            let dtype = g.dtype.map_or("bytes", |d| d.name());
            assert_eq!(dtype, row["dtype"], "{what}");
            if g.dtype.is_some() {
                assert_eq!(xshm::format_shape(&g.shape), row["shape"], "{what}");
            }
            assert_eq!(s.head(), num(row, "head_open"), "{what}");
            looked += 1;
        }
        assert!(copy.bytes() == before, "{what}: a look changed the file");
    }
    assert!(looked >= 20, "only {looked} streams looked at");
}

/// The `messages` cell: (seq, writer_pid, timestamp_ns, payload hex), in order.
fn expected_messages(row: &HashMap<String, String>) -> Vec<(u64, u32, i64, String)> {
    if row["messages"] == "-" {
        return Vec::new();
    }
    row["messages"]
        .split(' ')
        .map(|cell| {
            let f: Vec<&str> = cell.split(':').collect();
            assert_eq!(f.len(), 4, "{}: {cell}", row["file"]);
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].to_string(),
            )
        })
        .collect()
}

fn take_expected(r: &mut xshm::StreamReader, row: &HashMap<String, String>) {
    for (seq, pid, ts, payload) in expected_messages(row) {
        // A hole before it is judged after kHoleCheck (10 ms).
        let m = r
            .recv(Some(std::time::Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{}: message {seq}: {e}", row["file"]));
        assert_eq!(
            (m.seq, m.writer_pid, m.timestamp_ns, hex(&m.data)),
            (seq, pid, ts, payload),
            "{}",
            row["file"]
        );
    }
}

fn stream_open(name: &str, readonly: bool) -> xshm::Result<xshm::Stream> {
    xshm::Stream::open(
        name,
        &xshm::StreamOpenOptions {
            readonly,
            timeout: Some(std::time::Duration::ZERO),
        },
    )
}

/// The stream rows a `Stream` opens: `attach` (S20 for a handle that locks the mutex, and the
/// attach of a read-only handle refused), `ok` and `recv` (a reader at oldest: its cursor,
/// `head` after any recovery its attach made, every message in order, then none or the
/// refusal; the counters), and for `ok` rows a new writer's message at `head`.
#[test]
fn every_stream_vector_reads_as_its_row_says() {
    let dir = vectors_dir().join("streams");
    let rows = manifest(&dir.join("streams.tsv"));
    let (mut read, mut written) = (0, 0);
    for row in rows.iter().filter(|r| r["open_as"] == "stream") {
        let what = &row["file"];
        match row["stage"].as_str() {
            "open" => continue,
            "attach" => {
                let copy = Copy::of(&dir.join(what));
                let e = stream_open(&copy.name, false).expect_err(what);
                assert_eq!(e.kind(), ErrorKind::Layout, "{what}: {e}");
                assert!(e.to_string().contains(&row["error_text"]), "{what}: {e}");
                let s = stream_open(&copy.name, true).unwrap();
                let e = s.reader(xshm::Start::Oldest).expect_err(what);
                assert_eq!(e.kind(), ErrorKind::Layout, "{what}: {e}");
                assert!(e.to_string().contains(&row["error_text"]), "{what}: {e}");
                continue;
            }
            _ => {}
        }
        let copy = Copy::of(&dir.join(what));
        let before = copy.bytes();
        for readonly in [true, false] {
            let s = stream_open(&copy.name, readonly).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(s.head(), num(row, "head_open"), "{what}");
            let groups: Vec<String> = s
                .groups()
                .unwrap()
                .iter()
                .map(|g| {
                    format!(
                        "{}:{}:{}:{}:{}:{}:{}",
                        g.name, g.start, g.cursor, g.received, g.lost, g.skipped, g.members
                    )
                })
                .collect();
            let want: Vec<String> = if row["groups"] == "-" {
                Vec::new()
            } else {
                // index:name:...: the listing is in table order; the index is not reported.
                row["groups"]
                    .split(' ')
                    .map(|g| g.split_once(':').unwrap().1.to_string())
                    .collect()
            };
            assert_eq!(groups, want, "{what}");
        }
        assert!(copy.bytes() == before, "{what}: opening changed the file");
        // Read-only forbids sending only: a reader may attach (21.3 step 5).
        let s = stream_open(&copy.name, true).unwrap();
        let mut r = s.reader(xshm::Start::Oldest).unwrap();
        assert_eq!(r.cursor(), num(row, "cursor"), "{what}");
        assert_eq!(s.head(), num(row, "head"), "{what}");
        take_expected(&mut r, row);
        if row["stage"] == "recv" {
            for _ in 0..2 {
                // A refusal moves nothing: the next receive refuses again.
                let e = r
                    .recv(Some(std::time::Duration::from_secs(1)))
                    .expect_err(what);
                assert_eq!(e.kind(), kind_named(&row["error"]), "{what}: {e}");
                assert!(e.to_string().contains(&row["error_text"]), "{what}: {e}");
            }
            read += 1;
            continue;
        }
        assert_eq!(r.try_recv().unwrap(), None, "{what}");
        let e = r
            .recv(Some(std::time::Duration::from_millis(20)))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WaitTimeout);
        let n = expected_messages(row).len() as u64;
        assert_eq!(
            (r.received(), r.lost(), r.skipped()),
            (n, num(row, "lost"), num(row, "skipped")),
            "{what}"
        );
        assert_eq!(r.cursor(), num(row, "head"), "{what}");
        assert_eq!(
            r.received() + r.lost() + r.skipped(),
            r.cursor() - num(row, "cursor"),
            "{what}: 28.2"
        );
        assert_eq!(
            (s.abandoned(), s.dropped(), u64::from(s.recoveries())),
            (
                num(row, "abandoned"),
                num(row, "dropped"),
                num(row, "recoveries")
            ),
            "{what}"
        );
        let latest = s.reader(xshm::Start::Latest).unwrap();
        assert_eq!(latest.cursor(), num(row, "head"), "{what}");
        drop((r, latest, s));
        read += 1;
        // A new writer: what a reader takes, then its message at head.
        let copy = Copy::of(&dir.join(what));
        let w = stream_open(&copy.name, false).unwrap();
        let mut r = w.reader(xshm::Start::Oldest).unwrap();
        take_expected(&mut r, row);
        let max = w.max_bytes() as usize;
        let data = if w.geometry().dtype.is_some() {
            vec![0x5a; max]
        } else {
            b"after"[..5.min(max)].to_vec()
        };
        let head = num(row, "head");
        let timeout = Some(std::time::Duration::from_secs(5));
        assert_eq!(
            w.send(&data, timeout).unwrap(),
            head,
            "{what}: a dead gating reader is reaped"
        );
        let m = r.recv(timeout).unwrap();
        assert_eq!(
            (m.seq, m.writer_pid, &m.data),
            (head, std::process::id(), &data),
            "{what}"
        );
        assert_eq!(r.lost(), num(row, "lost"), "{what}");
        assert_eq!(w.head(), head + 1);
        written += 1;
    }
    assert!(
        read >= 20 && written >= 15,
        "only {read} read, {written} written"
    );
}

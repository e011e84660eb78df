//! The Rust peer of the cross-language record matrix
//! (tests/cross_language/test_record_matrix.py): the commands and JSON lines of
//! tests/cross_language/record_peer.cpp (C++) and record_peer.py (Python). Record k: counter
//! k, every value k (uint64), message "k=<k>"; record 0 is the fresh one.
//!
//! ```text
//! record_peer publish NAME COUNT N INTERVAL_US   create (exist_ok), publish COUNT records (0: until killed)
//! record_peer read NAME COUNT                    COUNT consistent reads, checked
//! record_peer wait NAME TARGET TIMEOUT_MS        sleep on the futex until seq >= TARGET
//! record_peer recover NAME                       take the lock (recovering), check, publish the next
//! ```
use std::collections::HashSet;
use std::time::Duration;

use xshm::{CreateOptions, Dtype, OpenOptions, Publish, SharedMemoryManager, Snapshot};

fn whole(s: &Snapshot) -> bool {
    let expected = if s.info.counter == 0 {
        String::new()
    } else {
        format!("k={}", s.info.counter)
    };
    s.values_u64()
        .is_ok_and(|v| v.iter().all(|&x| x == s.info.counter))
        && s.text().is_ok_and(|t| t == expected)
}

fn open_reader(name: &str) -> xshm::Result<SharedMemoryManager> {
    SharedMemoryManager::open(
        name,
        &OpenOptions {
            readonly: true,
            timeout: Some(Duration::from_secs(10)),
            ..OpenOptions::default()
        },
    )
}

fn publish(name: &str, count: u64, n: u64, interval_us: u64) -> xshm::Result<()> {
    let m = SharedMemoryManager::create(
        name,
        &CreateOptions {
            shape: vec![n],
            dtype: Dtype::UInt64,
            message_capacity: 64,
            exist_ok: true,
            ..CreateOptions::default()
        },
    )?;
    let mut k = m.read()?.info.counter;
    println!("{{\"ready\": true}}");
    let mut values = vec![0u8; n as usize * 8];
    let mut done = 0u64;
    while count == 0 || done < count {
        k += 1;
        for c in values.chunks_exact_mut(8) {
            c.copy_from_slice(&k.to_le_bytes());
        }
        let message = format!("k={k}");
        m.publish(&Publish {
            values: Some(&values),
            message: Some(message.as_bytes()),
            counter: Some(k),
            ..Publish::default()
        })?;
        done += 1;
        if interval_us > 0 {
            std::thread::sleep(Duration::from_micros(interval_us));
        }
    }
    println!("{{\"published\": {done}, \"last\": {k}}}");
    Ok(())
}

fn read(name: &str, count: u64) -> xshm::Result<()> {
    let m = open_reader(name)?;
    m.wait(0, Some(Duration::from_secs(10)))?;
    let (mut torn, mut regressions, mut last) = (0u64, 0u64, 0u64);
    let mut distinct = HashSet::new();
    // COUNT reads, and on until the record was seen changing (at most 5 s more).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut reads = 0u64;
    while reads < count || (distinct.len() < 2 && std::time::Instant::now() < until) {
        let s = m.read()?;
        torn += u64::from(!whole(&s));
        regressions += u64::from(s.info.seq < last);
        last = s.info.seq;
        distinct.insert(s.info.seq);
        reads += 1;
    }
    println!(
        "{{\"reads\": {reads}, \"torn\": {torn}, \"regressions\": {regressions}, \"distinct\": {}, \
         \"last_seq\": {last}}}",
        distinct.len()
    );
    Ok(())
}

fn wait(name: &str, target: u64, timeout_ms: u64) -> xshm::Result<()> {
    let m = open_reader(name)?;
    let mut last = m.seq();
    println!("{{\"ready\": true}}");
    let (mut woken, mut timeouts, mut torn) = (0u64, 0u64, 0u64);
    while last < target {
        match m.wait_for(
            last,
            Some(Duration::from_millis(timeout_ms)),
            Duration::ZERO,
        ) {
            Some(seq) => {
                woken += 1;
                torn += u64::from(!whole(&m.read()?));
                last = seq;
            }
            None => {
                timeouts += 1;
                break;
            }
        }
    }
    println!(
        "{{\"woken\": {woken}, \"timeouts\": {timeouts}, \"torn\": {torn}, \"last_seq\": {last}}}"
    );
    Ok(())
}

fn recover(name: &str) -> xshm::Result<()> {
    let m = SharedMemoryManager::open(name, &OpenOptions::default())?;
    let before = m.recoveries();
    drop(m.lock(Some(Duration::from_secs(5)))?);
    let recovered = m.recoveries() == before + 1;
    let s = m.read()?;
    let mut ok = whole(&s) && s.info.seq == m.seq();
    let k = s.info.counter + 1;
    let values: Vec<u64> = vec![k; s.values.len() / 8];
    let seq = m.publish_values(&values, Some(&format!("k={k}")), Some(k))?;
    let after = m.read()?;
    ok = ok && whole(&after) && after.info.counter == k && after.info.seq == seq;
    ok = ok && seq == s.info.seq + 1;
    println!(
        "{{\"recovered\": {recovered}, \"recoveries\": {}, \"whole\": {ok}, \"seq\": {seq}}}",
        m.recoveries()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let result = match (args.first().map(String::as_str), args.len()) {
        (Some("publish"), 5) => publish(&args[1], num(2), num(3), num(4)),
        (Some("read"), 3) => read(&args[1], num(2)),
        (Some("wait"), 4) => wait(&args[1], num(2), num(3)),
        (Some("recover"), 2) => recover(&args[1]),
        _ => {
            eprintln!("usage: record_peer publish|read|wait|recover NAME ...");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("record_peer: {e}");
        std::process::exit(1);
    }
}

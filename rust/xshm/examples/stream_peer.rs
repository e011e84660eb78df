//! The Rust peer of the cross-language stream matrix
//! (tests/cross_language/test_stream_matrix.py): the commands and JSON lines of
//! tests/cross_language/stream_peer.cpp's `write`/`take` modes (C++) and stream_matrix_peer.py
//! (Python). A message is its writer id (u32), its counter (u64), a body of varying length and
//! the CRC-32 (zlib's) of all that, little-endian.
//!
//! ```text
//! stream_peer write NAME N WID      send N messages (send, and send_many of 5 now and then)
//! stream_peer take NAME N PAUSE_US  attach at the oldest message, say ready, take until the
//!                                   cursor reaches N (pausing PAUSE_US after each), check each
//! stream_peer drain NAME 0 0        attach at the oldest message, say ready, take until a
//!                                   message of writer id MARKER, check each
//! stream_peer member NAME GROUP 0   join GROUP at the oldest message, say ready, take until a
//!                                   message of MARKER, print {"ks": [its counters], ...}
//! stream_peer hole NAME 3 WID       send 3 messages, claim the next slot and never commit it:
//!                                   print {"claimed": SEQ} and wait to be killed
//! ```
use std::collections::HashMap;
use std::time::Duration;

use xshm::{Start, Stream, StreamOpenOptions};

const WAIT: Option<Duration> = Some(Duration::from_secs(120));
/// The writer id of the message that ends a drain or a member.
const MARKER: u32 = u32::MAX;

/// zlib's CRC-32, chained from `crc`.
fn crc32(data: &[u8], crc: u32) -> u32 {
    let mut c = !crc;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// splitmix64
fn next_random(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn payload(wid: u32, k: u64, max_bytes: u64, rng: &mut u64) -> Vec<u8> {
    let body = next_random(rng) % (max_bytes - 16 + 1);
    let mut p = Vec::with_capacity(16 + body as usize);
    p.extend(wid.to_le_bytes());
    p.extend(k.to_le_bytes());
    p.extend((0..body).map(|_| next_random(rng) as u8));
    let c = crc32(&p, 0);
    p.extend(c.to_le_bytes());
    p
}

fn open(name: &str) -> xshm::Result<Stream> {
    Stream::open(
        name,
        &StreamOpenOptions {
            timeout: Some(Duration::from_secs(10)),
            ..StreamOpenOptions::default()
        },
    )
}

fn write(name: &str, n: u64, wid: u32) -> xshm::Result<()> {
    let s = open(name)?;
    let mut rng = 0x5EED_0000 + u64::from(wid);
    let (mut k, mut first, mut last) = (0u64, None, 0u64);
    while k < n {
        let batch = (n - k).min(if next_random(&mut rng).is_multiple_of(4) {
            5
        } else {
            1
        });
        let items: Vec<Vec<u8>> = (0..batch)
            .map(|j| payload(wid, k + j, s.max_bytes(), &mut rng))
            .collect();
        let seq = if batch == 1 {
            s.send(&items[0], WAIT)?
        } else {
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            s.send_many(&refs, WAIT)?
        };
        first.get_or_insert(seq - (batch - 1));
        last = seq;
        k += batch;
    }
    println!(
        "{{\"sent\": {n}, \"first_seq\": {}, \"last_seq\": {last}}}",
        first.unwrap_or(0)
    );
    Ok(())
}

/// The writer id and counter of a whole message (CRC checked), or None for a torn one.
fn parse(d: &[u8]) -> Option<(u32, u64)> {
    let size = d.len();
    if size < 16 || crc32(&d[..size - 4], 0) != u32::from_le_bytes(d[size - 4..].try_into().ok()?) {
        return None;
    }
    Some((
        u32::from_le_bytes(d[..4].try_into().ok()?),
        u64::from_le_bytes(d[4..12].try_into().ok()?),
    ))
}

fn hole(name: &str, n: u64, wid: u32) -> xshm::Result<()> {
    let s = open(name)?;
    let mut rng = 0x5EED_0000 + u64::from(wid);
    for k in 0..n {
        s.send(&payload(wid, k, s.max_bytes(), &mut rng), WAIT)?;
    }
    let c = s.claim(16, WAIT)?; // never committed: this process is killed holding it
    println!("{{\"claimed\": {}}}", c.seq());
    std::thread::sleep(Duration::from_secs(120));
    drop(c);
    Ok(())
}

fn member(name: &str, group: &str) -> xshm::Result<bool> {
    let s = open(name)?;
    let mut r = s.group_reader(group, Start::Oldest)?;
    println!("{{\"ready\": true}}");
    let (mut ks, mut torn) = (Vec::new(), 0u64);
    loop {
        match parse(&r.recv(WAIT)?.data) {
            None => torn += 1,
            Some((MARKER, _)) => break,
            Some((_, k)) => ks.push(k.to_string()),
        }
    }
    println!(
        "{{\"ks\": [{}], \"received\": {}, \"lost\": {}, \"torn\": {torn}}}",
        ks.join(", "),
        r.received(),
        r.lost()
    );
    Ok(torn == 0)
}

fn take(name: &str, n: u64, pause_us: u64, until_marker: bool) -> xshm::Result<bool> {
    let s = open(name)?;
    let mut r = s.reader(Start::Oldest)?;
    let start = r.cursor();
    println!("{{\"ready\": true}}");
    let (mut torn, mut disorder) = (0u64, 0u64);
    let mut last_seq = None;
    let mut next_k: HashMap<u32, u64> = HashMap::new();
    while until_marker || r.cursor() < n {
        let m = r.recv(WAIT)?;
        if last_seq.is_some_and(|l| m.seq <= l) {
            disorder += 1;
        }
        last_seq = Some(m.seq);
        let Some((wid, k)) = parse(&m.data) else {
            torn += 1;
            continue;
        };
        if wid == MARKER {
            break;
        }
        let next = next_k.entry(wid).or_insert(0);
        if k < *next {
            disorder += 1;
        }
        *next = k + 1;
        if pause_us != 0 {
            std::thread::sleep(Duration::from_micros(pause_us));
        }
    }
    println!(
        "{{\"received\": {}, \"lost\": {}, \"skipped\": {}, \"start\": {start}, \"cursor\": {}, \
         \"torn\": {torn}, \"disorder\": {disorder}, \"writers\": {}}}",
        r.received(),
        r.lost(),
        r.skipped(),
        r.cursor(),
        next_k.len()
    );
    Ok(torn == 0 && disorder == 0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!(
            "usage: stream_peer write NAME N WID | take NAME N PAUSE_US | drain NAME 0 0 | member \
             NAME GROUP 0 | hole NAME N WID"
        );
        std::process::exit(2);
    }
    let (mode, name) = (args[1].as_str(), args[2].as_str());
    let result = if mode == "member" {
        member(name, &args[3])
    } else {
        let (Ok(n), Ok(arg)) = (args[3].parse::<u64>(), args[4].parse::<u64>()) else {
            eprintln!("stream_peer: N and the last argument are numbers");
            std::process::exit(2);
        };
        match mode {
            "write" => write(name, n, arg as u32).map(|()| true),
            "take" => take(name, n, arg, false),
            "drain" => take(name, 0, 0, true),
            "hole" => hole(name, n, arg as u32).map(|()| true),
            _ => {
                eprintln!("unknown mode {mode}");
                std::process::exit(2);
            }
        }
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("stream_peer: {e}");
            std::process::exit(1);
        }
    }
}

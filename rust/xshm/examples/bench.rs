//! The Rust side of the benchmarks' Rust question (benchmarks/questions/rust.py), the twin of
//! benchmarks/cpp/pingpong.cpp's `read`, `xshm-peer` and `echo` modes, with the same output: one
//! JSON line per round.
//!
//! ```text
//! bench read ROUNDS N                      N consistent reads of the default record per round
//!                                          (read_into: the 100 values and the message)
//! bench pingpong spin ROUNDS N ECHO_EXE    one-way hop over two default records, against the
//!                                          echo ECHO_EXE runs (`ECHO_EXE echo PING PONG spin T`)
//! bench echo PING PONG spin TOTAL          the echo: wait for PING, read it, publish it to PONG
//! bench stream ROUNDS N WARMUP             one-way hop of an 8-byte message over two streams
//!                                          (send; spinning recv_into), as
//!                                          benchmarks/cpp/stream_pingpong.cpp's `stream` mode,
//!                                          against this program's `stream-echo`
//! bench stream-echo PING PONG TOTAL        the stream echo: receive from PING, send it to PONG
//! ```
use std::time::{Duration, Instant};

use xshm::{
    CreateOptions, OpenOptions, Publish, SharedMemoryManager, Start, Stream, StreamOpenOptions,
    StreamOptions, StreamReader,
};

/// The spin budget of a wait in spin mode, as pingpong.cpp's kSpin.
const SPIN: Duration = Duration::from_millis(100);
/// benchmarks/common.py FAST_WAKE_NS.
const FAST_WAKE_NS: i64 = 10_000;

fn report(case: &str, round: u32, one_way: &mut [i64]) {
    one_way.sort_unstable();
    let pct = |p: f64| one_way[(p * (one_way.len() - 1) as f64) as usize];
    let fast = one_way.partition_point(|&x| x < FAST_WAKE_NS);
    println!(
        "{{\"case\": \"{case}\", \"round\": {round}, \"n\": {}, \"p50_ns\": {}, \"p99_ns\": {}, \
         \"p999_ns\": {}, \"fast_share\": {:.4}}}",
        one_way.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        fast as f64 / one_way.len() as f64
    );
}

fn read(rounds: u32, n: u32) -> xshm::Result<()> {
    let name = format!("xshm-bench-rs-read-{}", std::process::id());
    let m = SharedMemoryManager::create(&name, &CreateOptions::default())?;
    let values: Vec<f64> = (0..100).map(f64::from).collect();
    m.publish_values(&values, Some("a message of the default record"), Some(1))?;
    let mut buf = vec![0u8; m.geometry().values_size as usize];
    let mut message = Vec::new();
    let mut sink = 0u64;
    for round in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..n {
            let info = m.read_into(Some(&mut buf), Some(&mut message))?;
            sink = sink.wrapping_add(info.counter + u64::from(buf[8]) + message.len() as u64);
        }
        let ns = t0.elapsed().as_nanos() as f64 / f64::from(n);
        println!(
            "{{\"case\": \"rust-read\", \"round\": {round}, \"n\": {n}, \"ns_per_read\": {ns:.2}, \
             \"sink\": {}}}",
            sink % 10
        );
    }
    m.unlink()
}

/// One hop in: wait for the peer's publish (spinning first), take a consistent copy.
fn hop_in(m: &SharedMemoryManager, seq: u64, buf: &mut [u8]) -> xshm::Result<u64> {
    let seq = m
        .wait_for(seq, None, SPIN)
        .expect("a wait without timeout returns");
    m.read_into(Some(buf), None)?;
    Ok(seq)
}

fn pingpong(rounds: u32, n: u32, echo: &str) -> xshm::Result<()> {
    let base = format!("xshm-bench-rs-pp-{}", std::process::id());
    let (ping_name, pong_name) = (format!("{base}-ping"), format!("{base}-pong"));
    let ping = SharedMemoryManager::create(&ping_name, &CreateOptions::default())?;
    let pong = SharedMemoryManager::create(&pong_name, &CreateOptions::default())?;
    let total = u64::from(rounds) * (u64::from(n) + 100);
    let mut child = std::process::Command::new(echo)
        .args(["echo", &ping_name, &pong_name, "spin", &total.to_string()])
        .spawn()
        .map_err(|e| xshm::Error::Argument(format!("cannot run the echo {echo}: {e}")))?;
    let mut buf = vec![0u8; ping.geometry().values_size as usize];
    let mut seq = 0;
    let case = if echo.ends_with("pingpong") {
        "rust-cpp-xshm-spin"
    } else {
        "rust-xshm-spin"
    };
    for round in 0..rounds {
        let mut one_way = Vec::with_capacity(n as usize);
        for k in 0..u64::from(n) + 100 {
            let t0 = Instant::now();
            ping.publish(&Publish {
                values: Some(&buf),
                counter: Some(k),
                ..Publish::default()
            })?;
            seq = hop_in(&pong, seq, &mut buf)?;
            if k >= 100 {
                one_way.push(t0.elapsed().as_nanos() as i64 / 2);
            }
        }
        report(case, round, &mut one_way);
    }
    let _ = child.wait();
    ping.unlink()?;
    pong.unlink()
}

fn echo(ping: &str, pong: &str, total: u64) -> xshm::Result<()> {
    let o = OpenOptions {
        timeout: Some(Duration::from_secs(30)),
        ..OpenOptions::default()
    };
    let input = SharedMemoryManager::open(ping, &o)?;
    let out = SharedMemoryManager::open(pong, &o)?;
    let mut buf = vec![0u8; input.geometry().values_size as usize];
    let mut seq = 0; // fresh segments: the initiator's first ping is seq 1
    for i in 0..total {
        seq = hop_in(&input, seq, &mut buf)?;
        out.publish(&Publish {
            values: Some(&buf),
            counter: Some(i),
            ..Publish::default()
        })?;
    }
    Ok(())
}

/// A receive that waits longer than this is an error (stream_pingpong.cpp's kTimeout).
const STREAM_TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
/// The payload of message k (stream_pingpong.cpp's kMix).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// One end of the stream ping-pong: sends on one stream, receives (spinning) on the other.
struct StreamEnd {
    out: Stream,
    input: StreamReader,
}

impl StreamEnd {
    fn send(&self, v: u64) -> xshm::Result<()> {
        self.out.send(&v.to_le_bytes(), STREAM_TIMEOUT).map(|_| ())
    }

    fn recv(&mut self) -> xshm::Result<u64> {
        let mut b = [0u8; 8];
        match self.input.recv_into(&mut b, STREAM_TIMEOUT)? {
            Some(_) => Ok(u64::from_le_bytes(b)),
            None => Err(xshm::Error::WaitTimeout("no message within 30 s".into())),
        }
    }
}

fn stream_options() -> StreamOptions {
    StreamOptions {
        capacity: 64, // as stream_pingpong.cpp and the Python stream hop
        max_bytes: 8,
        ..StreamOptions::default()
    }
}

/// Removes shared-memory names when the program leaves them, however it leaves (a panic too).
struct Unlink(Vec<String>);

impl Drop for Unlink {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = xshm::unlink(n, false);
        }
    }
}

fn stream_pingpong(rounds: u32, n: u32, warmup: u32) -> xshm::Result<()> {
    let base = format!("xshm-bench-rs-spp-{}", std::process::id());
    let (ping_name, pong_name) = (format!("{base}-ping"), format!("{base}-pong"));
    let _names = Unlink(vec![ping_name.clone(), pong_name.clone()]);
    let ping = Stream::create(&ping_name, &stream_options())?;
    let pong = Stream::create(&pong_name, &stream_options())?;
    let mut me = StreamEnd {
        input: pong.reader(Start::Oldest)?,
        out: ping,
    };
    me.input.set_spin(SPIN);
    let total = u64::from(rounds) * u64::from(n + warmup);
    let exe = std::env::current_exe().map_err(|e| xshm::Error::Argument(e.to_string()))?;
    let mut child = std::process::Command::new(exe)
        .args(["stream-echo", &ping_name, &pong_name, &total.to_string()])
        .spawn()
        .map_err(|e| xshm::Error::Argument(format!("cannot run the stream echo: {e}")))?;
    let mut k = 0u64;
    let result = (|| {
        for round in 0..rounds {
            let mut one_way = Vec::with_capacity(n as usize);
            for i in 0..n + warmup {
                k += 1;
                let t0 = Instant::now();
                me.send(k.wrapping_mul(MIX))?;
                let back = me.recv()?;
                let t = t0.elapsed().as_nanos() as i64 / 2;
                if back != k.wrapping_mul(MIX) {
                    return Err(xshm::Error::Argument(
                        "the echo sent back another message".into(),
                    ));
                }
                if i >= warmup {
                    one_way.push(t);
                }
            }
            report("rust-xshm-stream-spin", round, &mut one_way);
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    result
}

fn stream_echo(ping: &str, pong: &str, total: u64) -> xshm::Result<()> {
    let o = StreamOpenOptions {
        timeout: Some(Duration::from_secs(10)),
        ..StreamOpenOptions::default()
    };
    let input = Stream::open(ping, &o)?;
    let mut echo = StreamEnd {
        out: Stream::open(pong, &o)?,
        input: input.reader(Start::Oldest)?,
    };
    echo.input.set_spin(SPIN);
    for _ in 0..total {
        let v = echo.recv()?;
        echo.send(v)?;
    }
    Ok(())
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| a.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let result = match (a.first().map(String::as_str), a.len()) {
        (Some("read"), 3) => read(num(1) as u32, num(2) as u32),
        (Some("pingpong"), 5) if a[1] == "spin" => pingpong(num(2) as u32, num(3) as u32, &a[4]),
        (Some("echo"), 5) if a[3] == "spin" => echo(&a[1], &a[2], num(4)),
        (Some("stream"), 4) => stream_pingpong(num(1) as u32, num(2) as u32, num(3) as u32),
        (Some("stream-echo"), 4) => stream_echo(&a[1], &a[2], num(3)),
        _ => {
            eprintln!(
                "usage: bench read ROUNDS N | pingpong spin ROUNDS N ECHO_EXE | echo PING PONG spin \
                 TOTAL | stream ROUNDS N WARMUP | stream-echo PING PONG TOTAL"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

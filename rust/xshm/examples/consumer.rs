//! Follows a record: waits for each publish (on the futex, no polling) and prints it. Run
//! `cargo run --example consumer -- NAME [COUNT]` next to the producer (of any language).
use std::time::Duration;

use xshm::{OpenOptions, SharedMemoryManager};

fn main() -> xshm::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "xshm-rust-demo".into());
    let count: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let reader = SharedMemoryManager::open(
        &name,
        &OpenOptions {
            readonly: true,
            timeout: Some(Duration::from_secs(10)), // wait for the producer to create it
            ..OpenOptions::default()
        },
    )?;
    let mut last = reader.seq();
    for _ in 0..count {
        last = reader.wait(last, Some(Duration::from_secs(10)))?;
        let snap = reader.read()?;
        println!(
            "seq {} counter {} values {:?} message {:?}",
            snap.info.seq,
            snap.info.counter,
            snap.values_f64()?,
            snap.text()?
        );
    }
    Ok(())
}

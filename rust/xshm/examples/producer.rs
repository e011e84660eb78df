//! Publishes a record ten times a second: three float64 values and a message. Run
//! `cargo run --example producer -- NAME`, then the consumer (or any xshm reader, in any
//! language) on the same NAME. Ctrl-C stops it; `xshm rm NAME` (or the consumer's `--unlink`)
//! removes the segment.
use std::time::Duration;

use xshm::{CreateOptions, Dtype, SharedMemoryManager};

fn main() -> xshm::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "xshm-rust-demo".into());
    let count: u64 = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let writer = SharedMemoryManager::create(
        &name,
        &CreateOptions {
            shape: vec![3],
            dtype: Dtype::Float64,
            message_capacity: 64,
            exist_ok: true,
            ..CreateOptions::default()
        },
    )?;
    for i in 1..=count {
        let t = i as f64 / 10.0;
        let seq = writer.publish_values(
            &[t, t.sin(), t.cos()],
            Some(&format!("tick {i} from rust")),
            Some(i),
        )?;
        println!("published seq {seq}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

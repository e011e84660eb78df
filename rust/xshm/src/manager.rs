//! The public handle of a record segment, [`SharedMemoryManager`], with the same concepts and
//! names as the C++ `xshm::SharedMemoryManager` and Python's `xshm.SharedMemoryManager`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::format_duration;
use crate::error::{Error, Result};
use crate::layout::{compute_geometry, off, Dtype, Geometry};
use crate::name::normalize_name;
use crate::protocol::{self, RecordMemory};
use crate::segment::{self, Segment};
use crate::{reader, wait, writer};

/// Parameters of [`SharedMemoryManager::create`].
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Extents of the values array (at most 8). Default `[100]`.
    pub shape: Vec<u64>,
    /// The element type. Default float64.
    pub dtype: Dtype,
    /// Bytes of the message slot (at most 2^24). Default 256.
    pub message_capacity: u64,
    /// Permissions of the segment file. Default 0o600, owner only.
    pub mode: u32,
    /// Attach to an existing segment of the same layout instead of failing with EEXIST.
    pub exist_ok: bool,
    /// Keep a backup copy of the record, so that a writer killed mid-write never tears it.
    /// Default true.
    pub backup: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            shape: vec![100],
            dtype: Dtype::Float64,
            message_capacity: 256,
            mode: 0o600,
            exist_ok: false,
            backup: true,
        }
    }
}

/// Parameters of [`SharedMemoryManager::open`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Map the segment read-only: reads and waits only. Default false.
    pub readonly: bool,
    /// How long to wait for a segment that does not exist yet: `None` forever, zero (the
    /// default) not at all.
    pub timeout: Option<Duration>,
    /// Only for segments without backup: how long a read tolerates the live record staying
    /// mid-write while its writer seems alive before it returns [`Error::TornRecord`].
    /// `None` (the default): 2 s plus 4 ns per byte of values.
    pub stall_timeout: Option<Duration>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            readonly: false,
            timeout: Some(Duration::ZERO),
            stall_timeout: None,
        }
    }
}

impl OpenOptions {
    /// Read-only, not waiting for the name.
    pub fn readonly() -> Self {
        OpenOptions {
            readonly: true,
            ..OpenOptions::default()
        }
    }
}

/// The metadata of one consistent record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordInfo {
    /// The publish number (1 for the first publish; 0 for a fresh segment).
    pub seq: u64,
    /// The user's counter.
    pub counter: u64,
    /// CLOCK_REALTIME of the publish, in nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// The pid of the process that published it.
    pub writer_pid: u32,
}

/// A consistent copy of the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// seq, counter, timestamp and writer.
    pub info: RecordInfo,
    /// The values, raw little-endian bytes of the segment's dtype.
    pub values: Vec<u8>,
    /// The bytes of the message slot, unchecked (see [`Snapshot::text`]).
    pub message: Vec<u8>,
    /// The segment's element type.
    pub dtype: Dtype,
}

impl Snapshot {
    /// The message, checked to be UTF-8: [`Error::MessageDecode`] with the offset of the
    /// first invalid sequence when a writer stored other bytes.
    pub fn text(&self) -> Result<&str> {
        match xshm_text::validate(&self.message) {
            // SAFETY: validate() just checked that the bytes are UTF-8.
            Ok(()) => Ok(unsafe { std::str::from_utf8_unchecked(&self.message) }),
            Err(offset) => Err(Error::MessageDecode {
                message: format!(
                    "the message is not valid UTF-8 (first invalid byte at offset {offset})"
                ),
                offset,
            }),
        }
    }

    /// The message with each invalid sequence replaced by U+FFFD (text-core's rule).
    pub fn text_lossy(&self) -> Cow<'_, str> {
        Cow::Owned(xshm_text::decode_lossy(&self.message))
    }

    /// The values as `f64`; [`Error::Dtype`] unless the segment holds float64.
    pub fn values_f64(&self) -> Result<Vec<f64>> {
        self.typed(Dtype::Float64, f64::from_le_bytes)
    }

    /// The values as `f32`; [`Error::Dtype`] unless the segment holds float32.
    pub fn values_f32(&self) -> Result<Vec<f32>> {
        self.typed(Dtype::Float32, f32::from_le_bytes)
    }

    /// The values as `i64`; [`Error::Dtype`] unless the segment holds int64.
    pub fn values_i64(&self) -> Result<Vec<i64>> {
        self.typed(Dtype::Int64, i64::from_le_bytes)
    }

    /// The values as `u64`; [`Error::Dtype`] unless the segment holds uint64.
    pub fn values_u64(&self) -> Result<Vec<u64>> {
        self.typed(Dtype::UInt64, u64::from_le_bytes)
    }

    /// The values as `i32`; [`Error::Dtype`] unless the segment holds int32.
    pub fn values_i32(&self) -> Result<Vec<i32>> {
        self.typed(Dtype::Int32, i32::from_le_bytes)
    }

    fn typed<T, const N: usize>(&self, want: Dtype, from: fn([u8; N]) -> T) -> Result<Vec<T>> {
        check_dtype(self.dtype, want)?;
        Ok(self
            .values
            .chunks_exact(N)
            .map(|c| from(c.try_into().expect("N bytes")))
            .collect())
    }
}

fn check_dtype(there: Dtype, want: Dtype) -> Result<()> {
    if there != want {
        return Err(Error::Dtype(format!(
            "the segment holds {there}, not {want}: use the accessor of {there}"
        )));
    }
    Ok(())
}

/// Little-endian bytes of typed values, for [`SharedMemoryManager::publish_values`].
pub trait Element: Copy {
    /// The dtype of this element type.
    const DTYPE: Dtype;
    /// Appends the little-endian bytes of `self`.
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: Dtype = $d;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
element!(i8, Dtype::Int8);
element!(u8, Dtype::UInt8);
element!(i16, Dtype::Int16);
element!(u16, Dtype::UInt16);
element!(i32, Dtype::Int32);
element!(u32, Dtype::UInt32);
element!(i64, Dtype::Int64);
element!(u64, Dtype::UInt64);
element!(f32, Dtype::Float32);
element!(f64, Dtype::Float64);

/// One publish: what changes. Fields left `None` keep the record's current ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct Publish<'a> {
    /// The values, raw little-endian bytes of the whole array.
    pub values: Option<&'a [u8]>,
    /// The message (UTF-8 text, or any bytes).
    pub message: Option<&'a [u8]>,
    /// The user's counter.
    pub counter: Option<u64>,
    /// Cut a message longer than the slot at a code-point boundary instead of refusing it.
    pub truncate: bool,
    /// How long to wait for the writer lock: `None` (the default) forever.
    pub timeout: Option<Duration>,
}

/// A handle of a record segment: the latest value of a counter, a typed values array and a
/// UTF-8 message, shared between processes. Cheap to clone (the clones share one mapping);
/// `Send` and `Sync`. The mapping is released when the last clone is dropped.
#[derive(Clone)]
pub struct SharedMemoryManager {
    seg: Arc<Segment>,
}

impl std::fmt::Debug for SharedMemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryManager")
            .field("name", &self.seg.name)
            .field("dtype", &self.seg.geo.dtype)
            .field("shape", &self.seg.geo.shape)
            .field("readonly", &self.seg.readonly)
            .finish()
    }
}

impl SharedMemoryManager {
    /// Creates a segment exclusively (EEXIST if the name is taken, unless `exist_ok`), owner
    /// only by default, its pages reserved up front.
    pub fn create(name: &str, options: &CreateOptions) -> Result<Self> {
        // The name first, then the geometry, then the mode (docs/LAYOUT.md 7.1 step 1).
        normalize_name(name)?;
        let geo = compute_geometry(
            options.dtype,
            &options.shape,
            options.message_capacity,
            options.backup,
        )?;
        let seg = segment::create(name, &geo, options.mode, options.exist_ok)?;
        Ok(SharedMemoryManager { seg: Arc::new(seg) })
    }

    /// Opens an existing segment, checking every field of its header against the mapping.
    pub fn open(name: &str, options: &OpenOptions) -> Result<Self> {
        let seg = segment::open(
            name,
            options.readonly,
            options.timeout,
            options.stall_timeout,
        )?;
        Ok(SharedMemoryManager { seg: Arc::new(seg) })
    }

    /// Removes a segment name. Unless `force`, refuses a file that is not an xshm segment.
    /// Processes that have it open keep their mapping.
    pub fn unlink_name(name: &str, force: bool) -> Result<()> {
        segment::unlink_name(name, force)
    }

    /// Removes this segment's name, if the name still refers to this segment.
    pub fn unlink(&self) -> Result<()> {
        self.seg.unlink()
    }

    /// The canonical name ("/x").
    pub fn name(&self) -> &str {
        &self.seg.name
    }

    /// Sizes and offsets of the segment.
    pub fn geometry(&self) -> &Geometry {
        &self.seg.geo
    }

    /// The element type of the values.
    pub fn dtype(&self) -> Dtype {
        self.seg.geo.dtype
    }

    /// The extents of the values array.
    pub fn shape(&self) -> &[u64] {
        &self.seg.geo.shape
    }

    /// Bytes of the message slot.
    pub fn message_capacity(&self) -> u32 {
        self.seg.geo.message_capacity
    }

    /// Whether the segment keeps a backup slot.
    pub fn backup(&self) -> bool {
        self.seg.geo.backup
    }

    /// Whether this handle was opened read-only.
    pub fn readonly(&self) -> bool {
        self.seg.readonly
    }

    /// The number of completed publishes (an acquire load: a record read after it is at
    /// least this new).
    pub fn seq(&self) -> u64 {
        protocol::load_seq_acquire(&*self.seg)
    }

    /// The futex word, bumped after every publish.
    pub fn epoch(&self) -> u32 {
        self.seg
            .header_u32(off::EPOCH)
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The pid holding the writer lock, 0 when free.
    pub fn owner_pid(&self) -> u32 {
        self.seg
            .header_u32(off::OWNER_PID)
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times a writer recovered the record after another died holding the lock.
    pub fn recoveries(&self) -> u32 {
        self.seg
            .header_u32(off::RECOVERIES)
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A consistent copy of the record. Never waits for a writer: with a backup slot a reader
    /// copies the backup while the live slot is being written.
    pub fn read(&self) -> Result<Snapshot> {
        let n = self.seg.geo.values_size as usize;
        let mut values = Vec::new();
        // A segment may hold up to 2^40 bytes of values (sparse): failing to allocate a copy
        // is an error, not an abort.
        values.try_reserve_exact(n).map_err(|_| {
            Error::os(
                libc::ENOMEM,
                format!("read({}): a copy of {n} bytes of values", self.seg.name),
            )
        })?;
        values.resize(n, 0);
        let mut message = Vec::new();
        let info = self.read_into(Some(&mut values), Some(&mut message))?;
        Ok(Snapshot {
            info,
            values,
            message,
            dtype: self.seg.geo.dtype,
        })
    }

    /// A consistent copy into buffers the caller keeps (no allocation once `message` has
    /// grown): `values` must hold exactly the values' bytes; `message` is resized to the
    /// message. Either may be `None` to skip it.
    pub fn read_into(
        &self,
        values: Option<&mut [u8]>,
        message: Option<&mut Vec<u8>>,
    ) -> Result<RecordInfo> {
        let s = &*self.seg;
        if let Some(v) = &values {
            if v.len() as u64 != s.geo.values_size {
                return Err(Error::Argument(format!(
                    "read_into: buffer has {} bytes, the segment's values have {}",
                    v.len(),
                    s.geo.values_size
                )));
            }
        }
        let cap = s.geo.message_capacity as usize;
        let meta = match message {
            Some(m) => {
                m.resize(cap, 0);
                let meta = reader::read_raw(s, values, Some(&mut m[..]))?;
                m.truncate(meta.message_len as usize);
                meta
            }
            None => reader::read_raw(s, values, None)?,
        };
        Ok(RecordInfo {
            seq: meta.seq,
            counter: meta.counter,
            timestamp_ns: meta.timestamp_ns,
            writer_pid: meta.writer_pid,
        })
    }

    /// Publishes a record: the fields of `p` that are set replace the current ones. Waits for
    /// the writer lock at most `p.timeout`, then [`Error::WaitTimeout`]. Returns the new
    /// sequence.
    pub fn publish(&self, p: &Publish<'_>) -> Result<u64> {
        writer::publish(
            &self.seg, p.values, p.message, p.counter, p.truncate, p.timeout,
        )?
        .ok_or_else(|| writer::lock_timeout(&self.seg, p.timeout))
    }

    /// [`publish`](Self::publish) only if the writer lock is free now: `None` when it is taken
    /// (`p.timeout` is not used).
    pub fn try_publish(&self, p: &Publish<'_>) -> Result<Option<u64>> {
        writer::publish(
            &self.seg,
            p.values,
            p.message,
            p.counter,
            p.truncate,
            Some(Duration::ZERO),
        )
    }

    /// Publishes typed values (their type must be the segment's dtype), with an optional
    /// message and counter.
    pub fn publish_values<T: Element>(
        &self,
        values: &[T],
        message: Option<&str>,
        counter: Option<u64>,
    ) -> Result<u64> {
        check_dtype(self.seg.geo.dtype, T::DTYPE)?;
        let mut bytes = Vec::with_capacity(std::mem::size_of_val(values));
        for v in values {
            v.put(&mut bytes);
        }
        self.publish(&Publish {
            values: Some(&bytes),
            message: message.map(str::as_bytes),
            counter,
            ..Publish::default()
        })
    }

    /// Holds the writer lock for the caller's own critical section (another writer waits
    /// meanwhile; readers do not). Taking it recovers the record first when its last holder
    /// died. Waits at most `timeout` (`None`: forever), then [`Error::WaitTimeout`]. A publish
    /// from the same thread while it is held is [`Error::Argument`], not a deadlock.
    pub fn lock(&self, timeout: Option<Duration>) -> Result<LockGuard<'_>> {
        writer::require_writable(&self.seg)?;
        match writer::WriterLock::acquire(&self.seg, timeout)? {
            Some(held) => Ok(LockGuard { held }),
            None => Err(writer::lock_timeout(&self.seg, timeout)),
        }
    }

    /// [`lock`](Self::lock) only if the writer lock is free now: `None` when it is taken.
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        writer::require_writable(&self.seg)?;
        Ok(
            writer::WriterLock::acquire(&self.seg, Some(Duration::ZERO))?
                .map(|held| LockGuard { held }),
        )
    }

    /// Blocks until [`seq`](Self::seq) exceeds `last` or `timeout` passes (`None`: never).
    /// Returns the new sequence, or `None` on timeout. `spin`: how long to poll before
    /// sleeping on the futex (a hop of a few hundred ns instead of a wake-up of several µs).
    pub fn wait_for(&self, last: u64, timeout: Option<Duration>, spin: Duration) -> Option<u64> {
        wait::wait_for(&self.seg, last, timeout, spin)
    }

    /// Blocks until [`seq`](Self::seq) exceeds `last`; [`Error::WaitTimeout`] when `timeout`
    /// passes.
    pub fn wait(&self, last: u64, timeout: Option<Duration>) -> Result<u64> {
        self.wait_for(last, timeout, Duration::ZERO).ok_or_else(|| {
            Error::WaitTimeout(format!(
                "no publish after sequence {last} within {}",
                format_duration(timeout.unwrap_or(Duration::ZERO))
            ))
        })
    }

    /// The live slot's values, zero-copy: `values_size` bytes at an 8-byte aligned address,
    /// valid while this handle (or a clone) lives. **No seqlock guards them**: a writer may
    /// change them while you read, so a read through this pointer may tear (mix two records).
    /// Load them with atomics, as `read()` does, and check [`seq`](Self::seq) before and after
    /// if you need consistency; or use [`read_into`](Self::read_into).
    pub fn live_values(&self) -> *const u8 {
        self.seg.live_values()
    }

    /// The start of the mapping (page 0, the header), valid while this handle lives. Other
    /// processes write it: access it only with atomics.
    pub fn base(&self) -> *const u8 {
        self.seg.base()
    }

    /// Bytes mapped.
    pub fn mapped_size(&self) -> usize {
        self.seg.mapped_size()
    }

    /// The live slot's lock word (odd while a writer is in it), for tools and tests.
    pub fn live_lock(&self) -> u64 {
        self.seg.load_lock(0)
    }
}

/// The writer lock, held (from [`SharedMemoryManager::lock`]); released on drop. Not `Send`:
/// the thread that took it releases it.
pub struct LockGuard<'a> {
    held: writer::WriterLock<'a>,
}

impl LockGuard<'_> {
    /// Only without a backup slot: the record was left torn by a writer that died mid-write;
    /// the next publish must give values, message and counter.
    pub fn torn(&self) -> bool {
        self.held.torn()
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("torn", &self.torn())
            .finish()
    }
}

/// Removes a segment name; see [`SharedMemoryManager::unlink_name`].
pub fn unlink(name: &str, force: bool) -> Result<()> {
    SharedMemoryManager::unlink_name(name, force)
}

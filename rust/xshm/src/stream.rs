//! Streams, so far as this crate has them: the look-only handle of docs/LAYOUT.md section 21.5
//! ([`StreamLook`]: open and validate a stream, show its geometry and counters, never store)
//! and the kind of a segment by name ([`segment_kind`]). Sending and receiving are the next
//! slice of this crate.

use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::HEADER_SIZE;
use crate::mem;
use crate::name::normalize_name;
use crate::segment::{copy_page, open_ready};
use crate::stream_layout::{
    peek_kind, soff, validate_stream_header, SegmentKind, StreamGeometry, STREAM_CHECKED_RANGES,
};
use crate::sys::{self, Mapping};

/// A stream opened to look, never to store (docs/LAYOUT.md 21.5): a monitor's handle. Its
/// descriptor and mapping are read-only; it attaches no reader, takes no lock, sends nothing
/// and recovers nothing.
pub struct StreamLook {
    name: String,
    geo: StreamGeometry,
    map: Mapping,
    /// The second descriptor of 21.3 step 7, checked to be the same file; kept for the
    /// liveness queries (F_OFD_GETLK) a look may make.
    _lock_fd: OwnedFd,
}

impl std::fmt::Debug for StreamLook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLook")
            .field("name", &self.name)
            .field("geometry", &self.geo)
            .finish()
    }
}

impl StreamLook {
    /// Opens the stream `name` read-only: waits up to `timeout` for the name (`None`:
    /// forever), a bounded time for its ready marker, validates page 0 (S3 to S19 of
    /// section 22) before mapping anything else, then maps the whole stream `PROT_READ`.
    pub fn open(name: &str, timeout: Option<Duration>) -> Result<StreamLook> {
        let canon = normalize_name(name)?;
        let (fd, size) = open_ready(&canon, false, timeout)?;
        // 21.3 steps 4 to 7 under the ready wait's LOCK_SH, as the reference does them.
        let result = Self::open_locked(canon, &fd, size);
        let _ = sys::flock(&fd, libc::LOCK_UN);
        result
    }

    fn open_locked(canon: String, fd: &OwnedFd, size: u64) -> Result<StreamLook> {
        let (geo, map) = Self::map_and_validate(&canon, fd, size)?;
        let first = sys::fstat(fd)?;
        // 21.3 step 7: the lock descriptor, the same file.
        let replaced = || {
            Error::os(
                libc::ENOENT,
                format!("shm_open({canon}): the name was removed or replaced while it was opened"),
            )
        };
        let lock_fd = sys::shm_open(&canon, libc::O_RDONLY, 0).map_err(|e| {
            if e == libc::ENOENT {
                replaced()
            } else {
                Error::os(e, format!("shm_open({canon})"))
            }
        })?;
        let again = sys::fstat(&lock_fd)?;
        if (again.dev, again.ino) != (first.dev, first.ino) {
            return Err(replaced());
        }
        Ok(StreamLook {
            name: canon,
            geo,
            map,
            _lock_fd: lock_fd,
        })
    }

    fn map_and_validate(canon: &str, fd: &OwnedFd, size: u64) -> Result<(StreamGeometry, Mapping)> {
        if size < HEADER_SIZE as u64 {
            let zero = Box::new([0u8; HEADER_SIZE]);
            return Err(
                validate_stream_header(&zero, size, canon).expect_err("a short file is refused")
            );
        }
        let page0 = Mapping::map(fd, HEADER_SIZE as u64, false)?;
        let page = copy_page(&page0, &STREAM_CHECKED_RANGES);
        // S4 looks at the magic and the version, which copy_page copied with the identity.
        let geo = validate_stream_header(&page, size, canon)?;
        drop(page0);
        let map = Mapping::map(fd, geo.total_size, false)?;
        Ok((geo, map))
    }

    /// The canonical name ("/x").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sizes, offsets, backpressure and frame of the stream.
    pub fn geometry(&self) -> &StreamGeometry {
        &self.geo
    }

    fn u64_at(&self, at: usize) -> u64 {
        // SAFETY: `at` is one of the aligned header offsets of soff, inside page 0, which is
        // mapped for as long as self lives.
        unsafe { mem::u64_at(self.map.ptr().add(at)) }.load(Ordering::Relaxed)
    }

    fn u32_at(&self, at: usize) -> u32 {
        // SAFETY: as u64_at.
        unsafe { mem::u32_at(self.map.ptr().add(at)) }.load(Ordering::Relaxed)
    }

    /// The sequence number the next claim gets: messages claimed so far (an acquire load).
    pub fn head(&self) -> u64 {
        let head = self.u64_at(soff::HEAD);
        // SYNC POINT: with the relaxed load above, an acquire load; pairs with a claimant's
        // release store of head (docs/LAYOUT.md 25.3 step 9).
        fence(Ordering::Acquire);
        head
    }

    /// Slots overwritten while no reader was attached.
    pub fn dropped(&self) -> u64 {
        self.u64_at(soff::DROPPED)
    }

    /// Sequence numbers lost with their writer.
    pub fn abandoned(&self) -> u64 {
        self.u64_at(soff::ABANDONED)
    }

    /// Times a locker recovered the stream after another died holding its mutex.
    pub fn recoveries(&self) -> u32 {
        self.u32_at(soff::RECOVERIES)
    }

    /// Dead readers detached and dead writers' entries taken over.
    pub fn reaped(&self) -> u32 {
        self.u32_at(soff::REAPED)
    }

    /// The pid holding the stream mutex, 0 when free (informational).
    pub fn owner_pid(&self) -> u32 {
        self.u32_at(soff::OWNER_PID)
    }
}

/// The kind of the segment `name`, by a look at its first page (docs/LAYOUT.md section 16):
/// record, stream, or unknown (too short, another magic, version or kind). It looks after the
/// ready wait, under `LOCK_SH` (as section 16 advises and the Python binding does): a segment
/// whose creator still holds its lock after 2 s reads as unknown.
pub fn segment_kind(name: &str) -> Result<SegmentKind> {
    let canon = normalize_name(name)?;
    let fd = sys::shm_open(&canon, libc::O_RDONLY, 0)
        .map_err(|e| Error::os(e, format!("shm_open({canon})")))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    if !sys::flock_until(&fd, libc::LOCK_SH, deadline)? {
        return Ok(SegmentKind::Unknown);
    }
    let kind = peek_fd(&fd);
    let _ = sys::flock(&fd, libc::LOCK_UN);
    kind
}

fn peek_fd(fd: &OwnedFd) -> Result<SegmentKind> {
    let size = sys::fstat(fd)?.size;
    if size < HEADER_SIZE as u64 {
        return Ok(SegmentKind::Unknown);
    }
    let map = Mapping::map(fd, HEADER_SIZE as u64, false)?;
    let mut page = Box::new([0u8; HEADER_SIZE]);
    // Only the magic, the version and the kind are looked at: section 16 allows that before
    // the ready marker.
    // SAFETY: the first 32 bytes of a mapping of HEADER_SIZE bytes, page aligned.
    unsafe { mem::load_bytes(&mut page[..32], map.ptr()) };
    Ok(peek_kind(&page, size))
}

//! The SAMPLES ring buffer, from userspace (what became of each sample is counted in STATS, read
//! by the collector).
//!
//! Live, aya's reader drains the ring as records come. Replay with several test-run workers
//! needs more: where each record lies, so that records can be handed on in the order of the
//! frames that made them, whichever worker ran them. [`RingView`] maps the ring a second way
//! for that, and is then the ring's only reader.

use std::{
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    ptr::NonNull,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use agent_common::sample::SAMPLES;
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Map, MapData, RingBuf},
};

/// Flags in a record's 8-byte header (uapi/linux/bpf.h).
const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER: u64 = 8;

enum Reader {
    Aya(RingBuf<MapData>),
    /// With the map, kept open for as long as the view maps it.
    View(Arc<RingView>, MapData),
}

pub struct Samples {
    ring: Reader,
}

impl Samples {
    /// The live reader (aya's).
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let ring = ebpf.take_map(SAMPLES).context("map SAMPLES missing")?.try_into().context(SAMPLES)?;
        Ok(Self { ring: Reader::Aya(ring) })
    }

    /// The ring mapped as a [`RingView`] of `ring_bytes` bytes (replay with workers).
    pub fn take_view(ebpf: &mut Ebpf, ring_bytes: u32) -> anyhow::Result<Self> {
        let Map::RingBuf(data) = ebpf.take_map(SAMPLES).context("map SAMPLES missing")? else {
            anyhow::bail!("map SAMPLES is not a ring buffer");
        };
        let view = RingView::new(data.fd().as_fd(), ring_bytes).context("mapping the SAMPLES ring")?;
        Ok(Self { ring: Reader::View(Arc::new(view), data) })
    }

    /// The view, when the ring is read through one.
    pub fn view(&self) -> Option<Arc<RingView>> {
        match &self.ring {
            Reader::Aya(_) => None,
            Reader::View(v, _) => Some(Arc::clone(v)),
        }
    }

    /// A duplicate of the ring's descriptor, to wait on with epoll (tokio's AsyncFd).
    pub fn ready_fd(&self) -> anyhow::Result<OwnedFd> {
        match &self.ring {
            Reader::Aya(ring) => ring.as_fd().try_clone_to_owned(),
            Reader::View(_, data) => data.fd().as_fd().try_clone_to_owned(),
        }
        .context("duplicating the ring buffer's descriptor")
    }

    /// Hands the records waiting in the ring to `f`, oldest first, at most `max` of them.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        match &mut self.ring {
            Reader::Aya(ring) => {
                while n < max
                    && let Some(item) = ring.next()
                {
                    f(&item);
                    n += 1;
                }
            }
            Reader::View(view, _) => {
                let (mut pos, end) = (view.consumer_pos(), view.producer_pos());
                while pos != end && n < max {
                    match view.record(pos) {
                        Record::Busy => break,
                        Record::Discarded { next } => pos = next,
                        Record::Ready { data, next } => {
                            f(data);
                            n += 1;
                            pos = next;
                        }
                    }
                    view.release(pos);
                }
            }
        }
        n
    }
}

/// A record of the ring at a position between the consumer and the producer.
pub enum Record<'a> {
    /// Reserved, not yet submitted: its length is known, its content not yet.
    Busy,
    Discarded {
        next: u64,
    },
    Ready {
        data: &'a [u8],
        next: u64,
    },
}

/// The ring's pages mapped as the kernel lays them out: the consumer position (read-write), the
/// producer position and the data pages twice over (read-only), so a record that wraps around
/// the end reads as one slice. Positions are the kernel's: byte counts since the ring was made.
pub struct RingView {
    consumer: NonNull<u8>,
    producer: NonNull<u8>,
    page: usize,
    size: usize,
}

// SAFETY: the mappings are shared memory written by the kernel; every access below goes through
// atomics (positions, record headers) or reads committed records, which nothing writes again
// until the consumer position passes them.
unsafe impl Send for RingView {}
// SAFETY: as above; `release` is the only write, an atomic store.
unsafe impl Sync for RingView {}

impl RingView {
    fn new(fd: BorrowedFd<'_>, size: u32) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let size = size as usize;
        let map = |len: usize, prot: i32, offset: usize| -> std::io::Result<NonNull<u8>> {
            use std::os::fd::AsRawFd as _;
            // SAFETY: a fresh shared mapping of the map's descriptor at the offsets the kernel
            // defines for ring buffers (kernel/bpf/ringbuf.c: ringbuf_map_mmap_kern).
            let p =
                unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), offset as i64) };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("mmap returned null"))
        };
        let consumer = map(page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = match map(page + 2 * size, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: mapped just above with this length.
                unsafe { libc::munmap(consumer.as_ptr().cast(), page) };
                return Err(e);
            }
        };
        Ok(Self { consumer, producer, page, size })
    }

    fn position(&self, consumer: bool) -> &AtomicU64 {
        let p = if consumer { self.consumer } else { self.producer };
        // SAFETY: the first word of a position page, page-aligned, mapped while `self` lives.
        unsafe { p.cast::<AtomicU64>().as_ref() }
    }

    /// The header word of the record at `pos` and where it lies in the producer mapping.
    fn header(&self, pos: u64) -> (u32, usize) {
        let off = self.page + (pos & (self.size as u64 - 1)) as usize;
        // SAFETY: `off` + 8 lies within the first copy of the data pages; the kernel writes the
        // header word atomically (xchg on submit).
        let word = unsafe { self.producer.add(off).cast::<AtomicU32>().as_ref() }.load(Ordering::Acquire);
        (word, off)
    }

    /// Where the program will write its next record (every record before it is reserved).
    pub fn producer_pos(&self) -> u64 {
        self.position(false).load(Ordering::Acquire)
    }

    /// Where the reader is: records before it may be overwritten.
    pub fn consumer_pos(&self) -> u64 {
        self.position(true).load(Ordering::Acquire)
    }

    /// Gives the space of every record before `pos` back to the program.
    pub fn release(&self, pos: u64) {
        self.position(true).store(pos, Ordering::Release);
    }

    /// The record at `pos`, which must lie between the consumer and the producer positions.
    pub fn record(&self, pos: u64) -> Record<'_> {
        let (header, off) = self.header(pos);
        if header & BUSY_BIT != 0 {
            return Record::Busy;
        }
        let len = header & !(BUSY_BIT | DISCARD_BIT);
        let next = pos + (HEADER + u64::from(len)).next_multiple_of(8);
        if header & DISCARD_BIT != 0 {
            return Record::Discarded { next };
        }
        // SAFETY: a committed record of `len` bytes (at most the ring's size) after its header;
        // the data pages are mapped twice, so the slice is contiguous even across the end.
        let data =
            unsafe { std::slice::from_raw_parts(self.producer.add(off + HEADER as usize).as_ptr(), len as usize) };
        Record::Ready { data, next }
    }

    /// Length of the record at `pos`, committed or not (to step over other writers' records).
    pub fn next_after(&self, pos: u64) -> u64 {
        let (header, _) = self.header(pos);
        pos + (HEADER + u64::from(header & !(BUSY_BIT | DISCARD_BIT))).next_multiple_of(8)
    }
}

impl Drop for RingView {
    fn drop(&mut self) {
        // SAFETY: both mapped in `new` with these lengths, and no reference outlives the view.
        unsafe {
            libc::munmap(self.consumer.as_ptr().cast(), self.page);
            libc::munmap(self.producer.as_ptr().cast(), self.page + 2 * self.size);
        }
    }
}

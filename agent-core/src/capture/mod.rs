//! Capture files (pcap, pcapng): a streaming reader over any `std::io::Read`.
//!
//! Our own rather than the `pcap-file` crate because `replay` needs: the byte offset of
//! every record in its errors; resynchronisation after a corrupt pcapng block by the
//! block's length; bounded memory when a length field lies; and pcapng's per-interface
//! timestamp resolution, offset and link type.
//!
//! The format is recognised by content (magic), never by file name. Errors are items of
//! the iterator: a non-fatal one covers a single pcapng block and reading goes on with the
//! next block; after a fatal one (the position in the file is lost) the iterator ends.

mod pcap;
mod pcapng;

use std::{
    io::{self, Chain, Cursor, Read},
    path::Path,
};

/// Captured bytes per record accepted; a larger record is invalid.
pub const MAX_RECORD: usize = 256 * 1024;

/// Link types (LINKTYPE_* values) that the replay path knows; others are passed through.
pub mod linktype {
    pub const ETHERNET: u32 = 1;
    pub const LINUX_SLL: u32 = 113;
    pub const LINUX_SLL2: u32 = 276;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

#[derive(Debug, Clone)]
pub struct Packet {
    /// Byte offset of the record (pcap) or block (pcapng) in the file.
    pub offset: u64,
    /// Capture time, ns since the epoch (saturating; 0 when the block carries none).
    pub ts_ns: u64,
    pub linktype: u32,
    /// pcapng interface id; 0 for pcap.
    pub interface: u32,
    /// Length on the wire, never less than `data.len()`.
    pub orig_len: u32,
    /// Captured bytes; shorter than `orig_len` when the capture was snapped.
    pub data: Vec<u8>,
}

/// Input a capture reader could not read, and where; `fatal` when nothing more will be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {message}")]
pub struct CaptureError {
    pub offset: u64,
    pub message: String,
    /// The reader lost its place in the file: nothing more will be read.
    pub fatal: bool,
}

impl CaptureError {
    fn fatal(offset: u64, message: impl Into<String>) -> Self {
        CaptureError { offset, message: message.into(), fatal: true }
    }
    fn block(offset: u64, message: impl Into<String>) -> Self {
        CaptureError { offset, message: message.into(), fatal: false }
    }
}

/// The input with the magic bytes put back in front, and the current byte offset.
struct Src<R> {
    inner: Chain<Cursor<[u8; 4]>, R>,
    pos: u64,
}

/// Fills `buf` unless the input ends first; returns how many bytes were read.
/// `pos` is the offset of `buf[0]` in the file, for the error.
fn fill(r: &mut impl Read, buf: &mut [u8], pos: u64) -> Result<usize, CaptureError> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|rest| !rest.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(CaptureError::fatal(pos + got as u64, format!("read error: {e}")));
            }
        }
    }
    Ok(got)
}

impl<R: Read> Src<R> {
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, CaptureError> {
        let got = fill(&mut self.inner, buf, self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }

    /// `read_full` where a short read is a fatal truncation of the record at `start`
    /// whose total length is `total` (of which `done` bytes were read before).
    fn read_exact_at(
        &mut self,
        buf: &mut [u8],
        start: u64,
        done: usize,
        total: usize,
        what: &str,
    ) -> Result<(), CaptureError> {
        let got = self.read_full(buf)?;
        if got < buf.len() {
            return Err(truncated(start, what, total, done + got));
        }
        Ok(())
    }
}

fn truncated(start: u64, what: &str, expected: usize, got: usize) -> CaptureError {
    CaptureError::fatal(start, format!("truncated {what}: expected {expected} bytes, file ends after {got}"))
}

/// Fixed-width integers of either byte order, from a slice, without panicking.
#[derive(Debug, Clone, Copy, Default)]
struct Endian {
    big: bool,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let a: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) })
    }
    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let a: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
    }
    fn u64(self, b: &[u8], at: usize) -> Option<u64> {
        let a: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(if self.big { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) })
    }
}

enum Kind {
    Pcap(pcap::State),
    PcapNg(pcapng::State),
}

pub struct CaptureReader<R> {
    src: Src<R>,
    kind: Kind,
    done: bool,
}

impl<R: Read> CaptureReader<R> {
    /// Recognises the format by content (magic), not by name. For pcap the file header is
    /// read here; for pcapng the first section header is read by the first `next`.
    pub fn new(mut reader: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        let got = fill(&mut reader, &mut magic, 0)?;
        if got == 0 {
            return Err(CaptureError::fatal(0, "empty file"));
        }
        let not_capture = || {
            let hex: Vec<String> = magic.iter().take(got).map(|b| format!("{b:02x}")).collect();
            CaptureError::fatal(0, format!("not a pcap or pcapng file (starts with {})", hex.join(" ")))
        };
        if got < 4 {
            return Err(not_capture());
        }
        let mut src = Src { inner: Cursor::new(magic).chain(reader), pos: 0 };
        let kind = if magic == pcapng::SHB_MAGIC {
            Kind::PcapNg(pcapng::State::default())
        } else if let Some((endian, nanos)) = pcap::magic(magic) {
            Kind::Pcap(pcap::State::read_header(&mut src, endian, nanos)?)
        } else {
            return Err(not_capture());
        };
        Ok(CaptureReader { src, kind, done: false })
    }

    pub fn format(&self) -> Format {
        match self.kind {
            Kind::Pcap(_) => Format::Pcap,
            Kind::PcapNg(_) => Format::PcapNg,
        }
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<Packet, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match &mut self.kind {
            Kind::Pcap(s) => s.next(&mut self.src),
            Kind::PcapNg(s) => s.next(&mut self.src),
        };
        match &item {
            None | Some(Err(CaptureError { fatal: true, .. })) => self.done = true,
            _ => {}
        }
        item
    }
}

/// Opens a capture file; I/O errors become a fatal `CaptureError` at offset 0.
pub fn open(path: &Path) -> Result<CaptureReader<io::BufReader<std::fs::File>>, CaptureError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CaptureError::fatal(0, format!("cannot open {}: {e}", path.display())))?;
    // 1 MiB reads: a capture of frames is read with a system call per thousand of them, not
    // per ten (replay's budget is one system call per frame, the test run).
    CaptureReader::new(io::BufReader::with_capacity(1 << 20, file))
}

/// Reads a whole capture held in memory; returns packets plus errors. For fuzz targets:
/// must never panic, whatever `bytes` holds.
pub fn read_all_for_fuzzing(bytes: &[u8]) -> usize {
    match CaptureReader::new(bytes) {
        Ok(reader) => reader.count(),
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests;

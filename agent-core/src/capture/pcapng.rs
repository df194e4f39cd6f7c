//! pcapng: a sequence of blocks (type, total length, body, total length again).
//! The length lets us skip any block we do not know, and step over one whose content is
//! inconsistent (non-fatal); only a length that cannot be true loses the position (fatal).

use std::io::Read;

use super::{CaptureError, Endian, MAX_RECORD, Packet, Src, truncated};

pub(super) const SHB_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const PB: u32 = 2; // obsolete Packet Block
const SPB: u32 = 3;
const EPB: u32 = 6;
const OPT_TSRESOL: u16 = 9;
const OPT_TSOFFSET: u16 = 14;
/// Largest block accepted: a largest record plus room for its fields and options.
const MAX_BLOCK: usize = MAX_RECORD + 4096;
/// Interfaces kept per section: bounds memory when a file declares IDBs without end.
const MAX_INTERFACES: usize = 4096;

#[derive(Debug, Clone, Copy)]
enum Resolution {
    Decimal(u8), // 10^-n s
    Binary(u8),  // 2^-n s
}

struct Interface {
    linktype: u32,
    resolution: Resolution,
    offset_s: i64,
}

#[derive(Default)]
pub(super) struct State {
    endian: Endian,
    interfaces: Vec<Interface>,
    /// The current block, reused: at most MAX_BLOCK bytes whatever the file says.
    buf: Vec<u8>,
}

impl State {
    pub(super) fn next<R: Read>(&mut self, src: &mut Src<R>) -> Option<Result<Packet, CaptureError>> {
        loop {
            let start = src.pos;
            match self.read_block(src) {
                Err(e) => return Some(Err(e)),
                Ok(false) => return None,
                Ok(true) => {}
            }
            match parse(&self.buf, self.endian, &mut self.interfaces, start) {
                Ok(Some(packet)) => return Some(Ok(packet)),
                Ok(None) => {} // not a packet: next block
                Err(msg) => return Some(Err(CaptureError::block(start, msg))),
            }
        }
    }

    /// Reads one whole block into `buf`; false at end of file on a block boundary.
    fn read_block<R: Read>(&mut self, src: &mut Src<R>) -> Result<bool, CaptureError> {
        let start = src.pos;
        let mut head = [0u8; 12];
        let n = src.read_full(&mut head[..8])?;
        if n == 0 {
            return Ok(false);
        }
        if n < 8 {
            return Err(truncated(start, "block", 8, n));
        }
        let mut have = 8;
        if head[..4] == SHB_MAGIC {
            // A section header carries its own byte order, needed to read its length.
            src.read_exact_at(&mut head[8..], start, 8, 12, "block")?;
            have = 12;
            self.endian = match [head[8], head[9], head[10], head[11]] {
                [0x1a, 0x2b, 0x3c, 0x4d] => Endian { big: true },
                [0x4d, 0x3c, 0x2b, 0x1a] => Endian { big: false },
                m => {
                    let m = u32::from_be_bytes(m);
                    return Err(CaptureError::fatal(start, format!("bad byte-order magic {m:08x} in section header")));
                }
            };
        }
        let len = self.endian.u32(&head, 4).unwrap_or(0) as usize;
        if !len.is_multiple_of(4) || !(12..=MAX_BLOCK).contains(&len) {
            let msg = format!("invalid block length {len} (a multiple of 4 from 12 to {MAX_BLOCK})");
            return Err(CaptureError::fatal(start, msg));
        }
        self.buf.clear();
        self.buf.extend_from_slice(head.get(..have).unwrap_or_default());
        self.buf.resize(len, 0);
        let rest = self.buf.get_mut(have..).unwrap_or_default();
        src.read_exact_at(rest, start, have, len, "block")?;
        Ok(true)
    }
}

/// One whole block: a packet, nothing (other blocks), or why the block was skipped.
fn parse(block: &[u8], e: Endian, ifaces: &mut Vec<Interface>, start: u64) -> Result<Option<Packet>, String> {
    let len = block.len();
    let btype = e.u32(block, 0).unwrap_or(0);
    if btype == SHB {
        ifaces.clear(); // a new section, even if its header turns out damaged
    }
    let trailer = e.u32(block, len.saturating_sub(4)).unwrap_or(0);
    if trailer as usize != len {
        return Err(format!("block length {len} and trailing length {trailer} differ"));
    }
    let body = block.get(8..len.saturating_sub(4)).unwrap_or_default();
    let u32_at = |at| e.u32(body, at).unwrap_or(0);
    match btype {
        SHB if body.len() < 16 => Err("section header block too short".into()),
        IDB if body.len() < 8 => Err("interface description block too short".into()),
        IDB if ifaces.len() >= MAX_INTERFACES => Err(format!("more than {MAX_INTERFACES} interfaces")),
        IDB => {
            let mut iface = Interface {
                linktype: u32::from(e.u16(body, 0).unwrap_or(0)),
                resolution: Resolution::Decimal(6),
                offset_s: 0,
            };
            // Declared even when an option is damaged, so that later interface ids still match.
            let options = read_options(body.get(8..).unwrap_or_default(), e, &mut iface);
            ifaces.push(iface);
            options.map(|()| None)
        }
        EPB | PB if body.len() < 20 => Err("packet block too short".into()),
        EPB | PB => {
            let id = if btype == PB { u32::from(e.u16(body, 0).unwrap_or(0)) } else { u32_at(0) };
            let ticks = (u64::from(u32_at(4)) << 32) | u64::from(u32_at(8));
            let (cap, orig) = (u32_at(12) as usize, u32_at(16));
            let room = body.len() - 20;
            if cap > room {
                return Err(format!("captured length {cap} overruns the block ({room} bytes of room)"));
            }
            let data = body.get(20..20 + cap).unwrap_or_default();
            packet(ifaces, id, Some(ticks), data, orig, start).map(Some)
        }
        SPB if body.len() < 4 => Err("simple packet block too short".into()),
        SPB => {
            let orig = u32_at(0);
            let cap = (orig as usize).min(body.len() - 4);
            let data = body.get(4..4 + cap).unwrap_or_default();
            packet(ifaces, 0, None, data, orig, start).map(Some)
        }
        _ => Ok(None), // name resolution, statistics, decryption secrets, custom, unknown
    }
}

fn packet(
    ifaces: &[Interface],
    id: u32,
    ticks: Option<u64>,
    data: &[u8],
    orig: u32,
    start: u64,
) -> Result<Packet, String> {
    let iface = ifaces
        .get(id as usize)
        .ok_or_else(|| format!("packet for undeclared interface {id} ({} declared in this section)", ifaces.len()))?;
    if data.len() > MAX_RECORD {
        return Err(format!("captured length {} exceeds the limit of {MAX_RECORD} bytes", data.len()));
    }
    Ok(Packet {
        offset: start,
        ts_ns: ticks.map_or(0, |t| to_ns(t, iface)),
        linktype: iface.linktype,
        interface: id,
        orig_len: orig.max(u32::try_from(data.len()).unwrap_or(u32::MAX)),
        data: data.to_vec(),
    })
}

/// Interface options: only the timestamp resolution and offset matter here.
fn read_options(opts: &[u8], e: Endian, iface: &mut Interface) -> Result<(), String> {
    let mut at = 0;
    while let (Some(code), Some(olen)) = (e.u16(opts, at), e.u16(opts, at + 2)) {
        if code == 0 {
            break; // opt_endofopt
        }
        let olen = usize::from(olen);
        let value = opts
            .get(at + 4..at + 4 + olen)
            .ok_or_else(|| format!("interface option {code} of {olen} bytes overruns the block"))?;
        match (code, value) {
            (OPT_TSRESOL, &[v]) if v & 0x80 != 0 => iface.resolution = Resolution::Binary(v & 0x7f),
            (OPT_TSRESOL, &[v]) => iface.resolution = Resolution::Decimal(v),
            (OPT_TSOFFSET, _) if olen == 8 => iface.offset_s = e.u64(value, 0).unwrap_or(0) as i64,
            (OPT_TSRESOL | OPT_TSOFFSET, _) => {
                return Err(format!("interface option {code} has a bad length {olen}"));
            }
            _ => {}
        }
        at += 4 + olen.next_multiple_of(4);
    }
    Ok(())
}

/// Timestamp ticks of an interface to ns since the epoch, saturating at 0 and u64::MAX.
fn to_ns(ticks: u64, iface: &Interface) -> u64 {
    let t = u128::from(ticks); // < 2^64, so t * 10^9 < 2^94: no overflow below
    let ns = match iface.resolution {
        Resolution::Decimal(n) if n <= 9 => t * 10u128.pow(9 - u32::from(n)),
        Resolution::Decimal(n) => 10u128.checked_pow(u32::from(n) - 9).map_or(0, |d| t / d),
        Resolution::Binary(n) => (t * 1_000_000_000).checked_shr(u32::from(n)).unwrap_or(0),
    };
    let ns = i128::try_from(ns).unwrap_or(i128::MAX);
    let total = ns.saturating_add(i128::from(iface.offset_s) * 1_000_000_000);
    u64::try_from(total.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(super) fn ticks_to_ns(ticks: u64, tsresol: u8, offset_s: i64) -> u64 {
    let resolution =
        if tsresol & 0x80 != 0 { Resolution::Binary(tsresol & 0x7f) } else { Resolution::Decimal(tsresol) };
    to_ns(ticks, &Interface { linktype: 0, resolution, offset_s })
}

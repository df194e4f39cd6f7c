//! Classic pcap: a 24-byte file header, then records of a 16-byte header and the data.
//! Nothing in a record marks where the next one starts, so a record whose length is
//! unbelievable or cut short ends the reading (fatal).

use std::io::Read;

use super::{CaptureError, Endian, MAX_RECORD, Packet, Src, truncated};

const HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// Byte order and timestamp unit (true = ns, false = µs) from the magic, if it is pcap's.
pub(super) fn magic(m: [u8; 4]) -> Option<(Endian, bool)> {
    match u32::from_le_bytes(m) {
        0xa1b2_c3d4 => Some((Endian { big: false }, false)),
        0xa1b2_3c4d => Some((Endian { big: false }, true)),
        0xd4c3_b2a1 => Some((Endian { big: true }, false)),
        0x4d3c_b2a1 => Some((Endian { big: true }, true)),
        _ => None,
    }
}

pub(super) struct State {
    endian: Endian,
    nanos: bool,
    linktype: u32,
}

impl State {
    pub(super) fn read_header<R: Read>(src: &mut Src<R>, endian: Endian, nanos: bool) -> Result<Self, CaptureError> {
        let mut h = [0u8; HEADER_LEN];
        src.read_exact_at(&mut h, 0, 0, HEADER_LEN, "file header")?;
        // The top 4 bits carry the FCS length (and its presence bit): not the link type.
        let linktype = endian.u32(&h, 20).unwrap_or(0) & 0x0fff_ffff;
        Ok(State { endian, nanos, linktype })
    }

    pub(super) fn next<R: Read>(&mut self, src: &mut Src<R>) -> Option<Result<Packet, CaptureError>> {
        let start = src.pos;
        let mut h = [0u8; RECORD_HEADER_LEN];
        match src.read_full(&mut h) {
            Err(e) => return Some(Err(e)),
            Ok(0) => return None, // end of file at a record boundary
            Ok(n) if n < RECORD_HEADER_LEN => {
                return Some(Err(truncated(start, "record", RECORD_HEADER_LEN, n)));
            }
            Ok(_) => {}
        }
        let field = |at| self.endian.u32(&h, at).unwrap_or(0);
        let (sec, frac, incl, orig) = (field(0), field(4), field(8), field(12));
        let len = incl as usize;
        if len > MAX_RECORD {
            let msg = format!("record length {incl} exceeds the limit of {MAX_RECORD} bytes");
            return Some(Err(CaptureError::fatal(start, msg)));
        }
        let mut data = vec![0u8; len]; // at most MAX_RECORD, whatever the file says
        if let Err(e) = src.read_exact_at(&mut data, start, RECORD_HEADER_LEN, RECORD_HEADER_LEN + len, "record") {
            return Some(Err(e));
        }
        let frac_ns = if self.nanos { u64::from(frac) } else { u64::from(frac) * 1_000 };
        Some(Ok(Packet {
            offset: start,
            ts_ns: u64::from(sec).saturating_mul(1_000_000_000).saturating_add(frac_ns),
            linktype: self.linktype,
            interface: 0,
            orig_len: orig.max(incl),
            data,
        }))
    }
}

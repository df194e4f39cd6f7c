//! Writers of test files (pcap records, pcapng blocks, lengths that may lie) and readers of
//! what the capture reader makes of them.

use super::super::*;

pub(super) fn put16(out: &mut Vec<u8>, be: bool, v: u16) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}
pub(super) fn put32(out: &mut Vec<u8>, be: bool, v: u32) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}
pub(super) fn put64(out: &mut Vec<u8>, be: bool, v: u64) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}

pub(super) fn pcap_header(be: bool, nanos: bool, linktype: u32) -> Vec<u8> {
    let mut out = Vec::new();
    put32(&mut out, be, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    put16(&mut out, be, 2);
    put16(&mut out, be, 4);
    put32(&mut out, be, 0); // thiszone
    put32(&mut out, be, 0); // sigfigs
    put32(&mut out, be, 65535); // snaplen
    put32(&mut out, be, linktype);
    out
}

/// Appends a record; returns its offset. `incl` is written as given (may lie).
pub(super) fn pcap_record(out: &mut Vec<u8>, be: bool, sec: u32, frac: u32, incl: u32, orig: u32, data: &[u8]) -> u64 {
    let at = out.len() as u64;
    for v in [sec, frac, incl, orig] {
        put32(out, be, v);
    }
    out.extend_from_slice(data);
    at
}

pub(super) struct Ng {
    pub(super) be: bool,
    pub(super) out: Vec<u8>,
}

impl Ng {
    pub(super) fn new(be: bool) -> Self {
        let mut ng = Ng { be, out: Vec::new() };
        ng.shb();
        ng
    }
    /// Appends a block with the body padded to 4; returns its offset.
    pub(super) fn block(&mut self, btype: u32, body: &[u8]) -> u64 {
        let at = self.out.len() as u64;
        let len = 12 + body.len().next_multiple_of(4) as u32;
        put32(&mut self.out, self.be, btype);
        put32(&mut self.out, self.be, len);
        self.out.extend_from_slice(body);
        self.out.resize(self.out.len().next_multiple_of(4), 0);
        put32(&mut self.out, self.be, len);
        at
    }
    pub(super) fn shb(&mut self) -> u64 {
        let mut b = Vec::new();
        put32(&mut b, self.be, 0x1a2b_3c4d);
        put16(&mut b, self.be, 1);
        put16(&mut b, self.be, 0);
        put64(&mut b, self.be, u64::MAX); // section length unknown
        self.block(0x0a0d_0d0a, &b)
    }
    pub(super) fn idb(&mut self, linktype: u16, options: &[(u16, &[u8])]) -> u64 {
        let mut b = Vec::new();
        put16(&mut b, self.be, linktype);
        put16(&mut b, self.be, 0);
        put32(&mut b, self.be, 262144);
        if !options.is_empty() {
            for (code, value) in options {
                put16(&mut b, self.be, *code);
                put16(&mut b, self.be, value.len() as u16);
                b.extend_from_slice(value);
                b.resize(b.len().next_multiple_of(4), 0);
            }
            put32(&mut b, self.be, 0); // opt_endofopt
        }
        self.block(1, &b)
    }
    pub(super) fn epb(&mut self, iface: u32, ticks: u64, data: &[u8], orig: u32) -> u64 {
        let mut b = Vec::new();
        for v in [iface, (ticks >> 32) as u32, ticks as u32, data.len() as u32, orig] {
            put32(&mut b, self.be, v);
        }
        b.extend_from_slice(data);
        self.block(6, &b)
    }
    pub(super) fn pb(&mut self, iface: u16, ticks: u64, data: &[u8], orig: u32) -> u64 {
        let mut b = Vec::new();
        put16(&mut b, self.be, iface);
        put16(&mut b, self.be, 0); // drops
        for v in [(ticks >> 32) as u32, ticks as u32, data.len() as u32, orig] {
            put32(&mut b, self.be, v);
        }
        b.extend_from_slice(data);
        self.block(2, &b)
    }
    pub(super) fn spb(&mut self, orig: u32, data: &[u8]) -> u64 {
        let mut b = Vec::new();
        put32(&mut b, self.be, orig);
        b.extend_from_slice(data);
        self.block(3, &b)
    }
}

pub(super) fn read_all(bytes: &[u8]) -> (Format, Vec<Result<Packet, CaptureError>>) {
    let mut reader = CaptureReader::new(bytes).expect("recognised");
    let format = reader.format();
    let items: Vec<_> = reader.by_ref().collect();
    assert!(reader.next().is_none(), "stays ended");
    (format, items)
}

pub(super) fn ok(item: &Result<Packet, CaptureError>) -> &Packet {
    item.as_ref().expect("a packet")
}

pub(super) fn err(item: &Result<Packet, CaptureError>) -> &CaptureError {
    item.as_ref().expect_err("an error")
}

pub(super) fn assert_packet(
    p: &Packet,
    offset: u64,
    ts_ns: u64,
    linktype: u32,
    interface: u32,
    orig_len: u32,
    data: &[u8],
) {
    assert_eq!(
        (p.offset, p.ts_ns, p.linktype, p.interface, p.orig_len, p.data.as_slice()),
        (offset, ts_ns, linktype, interface, orig_len, data)
    );
}

pub(super) const T: u64 = 1_700_000_000; // seconds, a plausible capture time

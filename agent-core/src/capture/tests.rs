use super::*;

// ---- writers for test files ----

fn put16(out: &mut Vec<u8>, be: bool, v: u16) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}
fn put32(out: &mut Vec<u8>, be: bool, v: u32) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}
fn put64(out: &mut Vec<u8>, be: bool, v: u64) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}

fn pcap_header(be: bool, nanos: bool, linktype: u32) -> Vec<u8> {
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
fn pcap_record(out: &mut Vec<u8>, be: bool, sec: u32, frac: u32, incl: u32, orig: u32, data: &[u8]) -> u64 {
    let at = out.len() as u64;
    for v in [sec, frac, incl, orig] {
        put32(out, be, v);
    }
    out.extend_from_slice(data);
    at
}

struct Ng {
    be: bool,
    out: Vec<u8>,
}

impl Ng {
    fn new(be: bool) -> Self {
        let mut ng = Ng { be, out: Vec::new() };
        ng.shb();
        ng
    }
    /// Appends a block with the body padded to 4; returns its offset.
    fn block(&mut self, btype: u32, body: &[u8]) -> u64 {
        let at = self.out.len() as u64;
        let len = 12 + body.len().next_multiple_of(4) as u32;
        put32(&mut self.out, self.be, btype);
        put32(&mut self.out, self.be, len);
        self.out.extend_from_slice(body);
        self.out.resize(self.out.len().next_multiple_of(4), 0);
        put32(&mut self.out, self.be, len);
        at
    }
    fn shb(&mut self) -> u64 {
        let mut b = Vec::new();
        put32(&mut b, self.be, 0x1a2b_3c4d);
        put16(&mut b, self.be, 1);
        put16(&mut b, self.be, 0);
        put64(&mut b, self.be, u64::MAX); // section length unknown
        self.block(0x0a0d_0d0a, &b)
    }
    fn idb(&mut self, linktype: u16, options: &[(u16, &[u8])]) -> u64 {
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
    fn epb(&mut self, iface: u32, ticks: u64, data: &[u8], orig: u32) -> u64 {
        let mut b = Vec::new();
        for v in [iface, (ticks >> 32) as u32, ticks as u32, data.len() as u32, orig] {
            put32(&mut b, self.be, v);
        }
        b.extend_from_slice(data);
        self.block(6, &b)
    }
    fn pb(&mut self, iface: u16, ticks: u64, data: &[u8], orig: u32) -> u64 {
        let mut b = Vec::new();
        put16(&mut b, self.be, iface);
        put16(&mut b, self.be, 0); // drops
        for v in [(ticks >> 32) as u32, ticks as u32, data.len() as u32, orig] {
            put32(&mut b, self.be, v);
        }
        b.extend_from_slice(data);
        self.block(2, &b)
    }
    fn spb(&mut self, orig: u32, data: &[u8]) -> u64 {
        let mut b = Vec::new();
        put32(&mut b, self.be, orig);
        b.extend_from_slice(data);
        self.block(3, &b)
    }
}

fn read_all(bytes: &[u8]) -> (Format, Vec<Result<Packet, CaptureError>>) {
    let mut reader = CaptureReader::new(bytes).expect("recognised");
    let format = reader.format();
    let items: Vec<_> = reader.by_ref().collect();
    assert!(reader.next().is_none(), "stays ended");
    (format, items)
}

fn ok(item: &Result<Packet, CaptureError>) -> &Packet {
    item.as_ref().expect("a packet")
}

fn err(item: &Result<Packet, CaptureError>) -> &CaptureError {
    item.as_ref().expect_err("an error")
}

fn assert_packet(p: &Packet, offset: u64, ts_ns: u64, linktype: u32, interface: u32, orig_len: u32, data: &[u8]) {
    assert_eq!(
        (p.offset, p.ts_ns, p.linktype, p.interface, p.orig_len, p.data.as_slice()),
        (offset, ts_ns, linktype, interface, orig_len, data)
    );
}

const T: u64 = 1_700_000_000; // seconds, a plausible capture time

// ---- pcap ----

#[test]
fn pcap_both_byte_orders_and_units() {
    for be in [false, true] {
        for nanos in [false, true] {
            let mut f = pcap_header(be, nanos, linktype::ETHERNET);
            let frac = if nanos { 123_456_789 } else { 123_456 };
            let a = pcap_record(&mut f, be, T as u32, frac, 4, 60, &[1, 2, 3, 4]);
            let b = pcap_record(&mut f, be, T as u32 + 1, 0, 3, 3, &[5, 6, 7]);
            let (format, items) = read_all(&f);
            assert_eq!(format, Format::Pcap);
            assert_eq!((a, b), (24, 44));
            assert_eq!(items.len(), 2, "be={be} nanos={nanos}");
            let ts = T * 1_000_000_000 + if nanos { 123_456_789 } else { 123_456_000 };
            assert_packet(ok(&items[0]), 24, ts, 1, 0, 60, &[1, 2, 3, 4]);
            assert_packet(ok(&items[1]), 44, (T + 1) * 1_000_000_000, 1, 0, 3, &[5, 6, 7]);
        }
    }
}

#[test]
fn pcap_linktype_masks_fcs_bits_and_fixes_short_orig_len() {
    let mut f = pcap_header(false, false, 0x1000_0000 | linktype::LINUX_SLL);
    pcap_record(&mut f, false, 1, 2, 5, 2, b"hello"); // orig_len 2 < incl_len 5
    let (_, items) = read_all(&f);
    assert_eq!(items.len(), 1);
    assert_packet(ok(&items[0]), 24, 1_000_002_000, linktype::LINUX_SLL, 0, 5, b"hello");
}

#[test]
fn pcap_zero_length_record_is_a_packet() {
    let mut f = pcap_header(false, false, 1);
    pcap_record(&mut f, false, 0, 0, 0, 0, &[]);
    pcap_record(&mut f, false, 0, 1, 1, 1, &[9]);
    let (_, items) = read_all(&f);
    assert_eq!(items.len(), 2);
    assert_packet(ok(&items[0]), 24, 0, 1, 0, 0, &[]);
    assert_packet(ok(&items[1]), 40, 1_000, 1, 0, 1, &[9]);
}

#[test]
fn pcap_header_only_is_an_empty_capture() {
    let f = pcap_header(true, true, 1);
    let (format, items) = read_all(&f);
    assert_eq!(format, Format::Pcap);
    assert!(items.is_empty());
}

#[test]
fn pcap_truncated_in_record_data() {
    let mut f = pcap_header(false, false, 1);
    pcap_record(&mut f, false, 0, 0, 2, 2, &[1, 2]);
    let cut = pcap_record(&mut f, false, 0, 0, 100, 100, &[0; 30]);
    let (_, items) = read_all(&f);
    assert_eq!(items.len(), 2);
    assert_eq!(ok(&items[0]).data, [1, 2]);
    let e = err(&items[1]);
    assert_eq!(e.offset, cut);
    assert_eq!(e.message, "truncated record: expected 116 bytes, file ends after 46");
    assert!(e.fatal);
}

#[test]
fn pcap_truncated_in_record_header() {
    let mut f = pcap_header(false, false, 1);
    f.extend_from_slice(&[0; 10]);
    let (_, items) = read_all(&f);
    assert_eq!(items.len(), 1);
    assert_eq!(
        err(&items[0]),
        &CaptureError {
            offset: 24,
            message: "truncated record: expected 16 bytes, file ends after 10".into(),
            fatal: true
        }
    );
}

#[test]
fn pcap_truncated_file_header_fails_new() {
    let f = pcap_header(false, false, 1);
    let e = CaptureReader::new(&f[..20]).err().expect("error");
    assert_eq!(e, CaptureError::fatal(0, "truncated file header: expected 24 bytes, file ends after 20"));
}

#[test]
fn pcap_huge_incl_len_is_fatal_without_allocating() {
    let mut f = pcap_header(true, false, 1);
    pcap_record(&mut f, true, 0, 0, 1, 1, &[7]);
    let bad = pcap_record(&mut f, true, 0, 0, u32::MAX, u32::MAX, &[0; 64]);
    pcap_record(&mut f, true, 0, 0, 1, 1, &[8]);
    let (_, items) = read_all(&f);
    assert_eq!(items.len(), 2);
    assert_eq!(ok(&items[0]).data, [7]);
    let e = err(&items[1]);
    assert_eq!((e.offset, e.fatal), (bad, true));
    assert_eq!(e.message, "record length 4294967295 exceeds the limit of 262144 bytes");
    // One byte over the limit is refused too; exactly the limit is read.
    let mut f = pcap_header(false, false, 1);
    pcap_record(&mut f, false, 0, 0, MAX_RECORD as u32, 0, &vec![1; MAX_RECORD]);
    pcap_record(&mut f, false, 0, 0, MAX_RECORD as u32 + 1, 0, &[]);
    let (_, items) = read_all(&f);
    assert_eq!(ok(&items[0]).data.len(), MAX_RECORD);
    assert!(err(&items[1]).fatal);
}

// ---- pcapng ----

#[test]
fn pcapng_interfaces_blocks_and_sections() {
    for be in [false, true] {
        let mut ng = Ng::new(be);
        ng.idb(linktype::ETHERNET as u16, &[]); // default 10^-6
        let tsoffset = 100i64.to_be_bytes();
        let tsoffset = if be { tsoffset } else { 100i64.to_le_bytes() };
        ng.idb(linktype::LINUX_SLL2 as u16, &[(2, b"eth1"), (9, &[9]), (14, &tsoffset)]);
        let a = ng.epb(0, T * 1_000_000 + 5, &[0xaa; 14], 1514);
        ng.block(4, &[0; 8]); // name resolution: skipped
        ng.block(0x4000_0bad, &[1, 2, 3]); // unknown: skipped
        let b = ng.epb(1, T * 1_000_000_000 + 7, &[0xbb; 3], 3);
        ng.block(5, &[0; 20]); // interface statistics: skipped
        let c = ng.spb(100, &[0xcc; 5]); // 5 bytes of data, 3 of padding: the block holds 8
        let d = ng.pb(1, 42, &[0xdd], 1);
        ng.be = !be; // a second section, in the other byte order
        ng.shb();
        let stale = ng.epb(1, 0, &[1], 1); // interface 1 belonged to the first section
        ng.idb(linktype::LINUX_SLL as u16, &[(9, &[0x80 | 10])]); // 2^-10 s
        let e = ng.epb(0, 1024 * 3 + 512, &[0xee; 2], 2);

        let (format, items) = read_all(&ng.out);
        assert_eq!(format, Format::PcapNg);
        assert_eq!(items.len(), 6, "be={be}");
        assert_packet(ok(&items[0]), a, T * 1_000_000_000 + 5_000, 1, 0, 1514, &[0xaa; 14]);
        assert_packet(ok(&items[1]), b, (T + 100) * 1_000_000_000 + 7, 276, 1, 3, &[0xbb; 3]);
        // The SPB has no timestamp; its data are min(orig_len, what the block holds).
        assert_packet(ok(&items[2]), c, 0, 1, 0, 100, &[0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0, 0, 0]);
        assert_packet(ok(&items[3]), d, 100_000_000_042, 276, 1, 1, &[0xdd]);
        let err4 = err(&items[4]);
        assert_eq!(err4.offset, stale);
        assert_eq!(err4.message, "packet for undeclared interface 1 (0 declared in this section)");
        assert!(!err4.fatal);
        assert_packet(ok(&items[5]), e, 3_500_000_000, 113, 0, 2, &[0xee; 2]);
    }
}

#[test]
fn pcapng_spb_data_is_min_of_orig_len_and_block() {
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    let at = ng.spb(2, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let (_, items) = read_all(&ng.out);
    assert_packet(ok(&items[0]), at, 0, 1, 0, 2, &[1, 2]);
}

#[test]
fn pcapng_timestamp_conversion() {
    use pcapng::ticks_to_ns;
    assert_eq!(ticks_to_ns(1_500_000, 6, 0), 1_500_000_000);
    assert_eq!(ticks_to_ns(7, 9, 0), 7);
    assert_eq!(ticks_to_ns(12_345, 12, 0), 12); // 10^-12: ps, truncated
    assert_eq!(ticks_to_ns(u64::MAX, 127, 0), 0); // absurd resolution: no overflow
    assert_eq!(ticks_to_ns(1 << 20, 0x80 | 20, 0), 1_000_000_000);
    assert_eq!(ticks_to_ns(u64::MAX, 0x80 | 127, 0), 0);
    assert_eq!(ticks_to_ns(u64::MAX, 0, 0), u64::MAX); // seconds: saturates
    assert_eq!(ticks_to_ns(5, 0, -10), 0); // negative offset: saturates at 0
    assert_eq!(ticks_to_ns(u64::MAX, 9, i64::MAX), u64::MAX);
    assert_eq!(ticks_to_ns(1, 0, 2), 3_000_000_000);
}

#[test]
fn pcapng_insane_block_length_is_fatal() {
    for bad_len in [0u32, 8, 13, 0x7fff_fffc] {
        let mut ng = Ng::new(false);
        ng.idb(1, &[]);
        let good = ng.epb(0, 0, &[1], 1);
        let bad = ng.out.len() as u64;
        put32(&mut ng.out, false, 6);
        put32(&mut ng.out, false, bad_len);
        ng.out.extend_from_slice(&[0; 64]);
        ng.epb(0, 0, &[2], 1); // unreachable: the position is lost
        let (_, items) = read_all(&ng.out);
        assert_eq!(items.len(), 2, "len {bad_len}");
        assert_eq!(ok(&items[0]).offset, good);
        let e = err(&items[1]);
        assert_eq!((e.offset, e.fatal), (bad, true));
        let msg = format!("invalid block length {bad_len} (a multiple of 4 from 12 to {})", MAX_RECORD + 4096);
        assert_eq!(e.message, msg);
    }
}

#[test]
fn pcapng_trailing_length_mismatch_skips_one_block() {
    let mut ng = Ng::new(true);
    ng.idb(1, &[]);
    let bad = ng.epb(0, 1, &[1, 2, 3, 4], 4);
    let end = ng.out.len();
    ng.out[end - 1] ^= 0x40; // damage the trailing copy of the length
    let good = ng.epb(0, 2, &[5], 1);
    let (_, items) = read_all(&ng.out);
    assert_eq!(items.len(), 2);
    assert_eq!(
        err(&items[0]),
        &CaptureError { offset: bad, message: "block length 36 and trailing length 100 differ".into(), fatal: false }
    );
    assert_packet(ok(&items[1]), good, 2_000, 1, 0, 1, &[5]);
}

#[test]
fn pcapng_packet_before_any_interface_or_undeclared() {
    let mut ng = Ng::new(false);
    let before = ng.epb(0, 0, &[1], 1);
    let spb = ng.spb(1, &[1]);
    ng.idb(1, &[]);
    let undeclared = ng.epb(7, 0, &[1], 1);
    let good = ng.epb(0, 0, &[2], 1);
    let (_, items) = read_all(&ng.out);
    assert_eq!(items.len(), 4);
    let expect = |item: &Result<Packet, CaptureError>, offset, msg: &str| {
        assert_eq!(err(item), &CaptureError { offset, message: msg.into(), fatal: false });
    };
    expect(&items[0], before, "packet for undeclared interface 0 (0 declared in this section)");
    expect(&items[1], spb, "packet for undeclared interface 0 (0 declared in this section)");
    expect(&items[2], undeclared, "packet for undeclared interface 7 (1 declared in this section)");
    assert_eq!(ok(&items[3]).offset, good);
}

#[test]
fn pcapng_inconsistent_content_is_skipped() {
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    // Captured length larger than the block.
    let mut b = Vec::new();
    for v in [0u32, 0, 0, 1000, 1000] {
        put32(&mut b, false, v);
    }
    b.extend_from_slice(&[0; 8]);
    let overrun = ng.block(6, &b);
    let short = ng.block(6, &[0; 12]); // EPB without room for its fields
    // An IDB with a damaged option still declares its interface (ids must keep matching).
    let bad_opt = ng.idb(113, &[(9, &[6, 6])]);
    let good = ng.epb(1, 0, &[3], 1);
    let (_, items) = read_all(&ng.out);
    let errs: Vec<_> = items.iter().take(3).map(|i| (err(i).offset, err(i).message.as_str(), err(i).fatal)).collect();
    assert_eq!(
        errs,
        [
            (overrun, "captured length 1000 overruns the block (8 bytes of room)", false),
            (short, "packet block too short", false),
            (bad_opt, "interface option 9 has a bad length 2", false),
        ]
    );
    assert_packet(ok(&items[3]), good, 0, 113, 1, 1, &[3]);
    assert_eq!(items.len(), 4);
}

#[test]
fn pcapng_truncated_block_and_bad_byte_order() {
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    let cut = ng.epb(0, 0, &[0; 40], 40);
    let f = &ng.out[..ng.out.len() - 10];
    let (_, items) = read_all(f);
    assert_eq!(items.len(), 1);
    assert_eq!(err(&items[0]).message, "truncated block: expected 72 bytes, file ends after 62");
    assert_eq!(err(&items[0]).offset, cut);

    let mut f = Ng::new(false).out;
    f[8..12].copy_from_slice(&[1, 2, 3, 4]);
    let (_, items) = read_all(&f);
    assert_eq!(items.len(), 1);
    assert_eq!(err(&items[0]), &CaptureError::fatal(0, "bad byte-order magic 01020304 in section header"));
}

// ---- recognition, I/O ----

#[test]
fn not_a_capture() {
    let e = CaptureReader::new(&b"GIF89a..."[..]).err().expect("error");
    assert_eq!(e, CaptureError::fatal(0, "not a pcap or pcapng file (starts with 47 49 46 38)"));
    assert_eq!(e.to_string(), "at byte 0: not a pcap or pcapng file (starts with 47 49 46 38)");
    let e = CaptureReader::new(&[0xd4u8, 0xc3][..]).err().expect("error");
    assert_eq!(e.message, "not a pcap or pcapng file (starts with d4 c3)");
    let e = CaptureReader::new(&[][..]).err().expect("error");
    assert_eq!(e, CaptureError::fatal(0, "empty file"));
    assert_eq!(read_all_for_fuzzing(&[]), 1);
}

/// Hands out one byte per read and an `Interrupted` error between reads.
struct Trickle<'a> {
    bytes: &'a [u8],
    interrupt: bool,
    fail_at: Option<usize>,
    pos: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.fail_at == Some(self.pos) {
            return Err(io::Error::other("disk on fire"));
        }
        let (Some(&b), Some(out)) = (self.bytes.get(self.pos), buf.first_mut()) else {
            return Ok(0);
        };
        *out = b;
        self.pos += 1;
        Ok(1)
    }
}

#[test]
fn short_reads_interruptions_and_io_errors() {
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    ng.epb(0, 1, &[1; 33], 33);
    let second = ng.epb(0, 2, &[2; 7], 7);
    let whole: Vec<_> = read_all(&ng.out).1.into_iter().map(|r| ok(&r).data.clone()).collect();
    let trickled = CaptureReader::new(Trickle { bytes: &ng.out, interrupt: false, fail_at: None, pos: 0 }).unwrap();
    let trickled: Vec<_> = trickled.map(|r| ok(&r).data.clone()).collect();
    assert_eq!(whole, trickled);

    let fail_at = second as usize + 10;
    let reader = Trickle { bytes: &ng.out, interrupt: false, fail_at: Some(fail_at), pos: 0 };
    let items: Vec<_> = CaptureReader::new(reader).unwrap().collect();
    assert_eq!(items.len(), 2);
    assert_eq!(err(&items[1]), &CaptureError::fatal(fail_at as u64, "read error: disk on fire"));
}

#[test]
fn open_reads_files_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("iotwatch-capture-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("capture.bin"); // the name says nothing: content decides
    let mut f = pcap_header(false, true, 1);
    pcap_record(&mut f, false, 1, 1, 1, 1, &[1]);
    std::fs::write(&path, &f).unwrap();
    let reader = open(&path).unwrap();
    assert_eq!(reader.format(), Format::Pcap);
    assert_eq!(reader.count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
    let e = open(&dir.join("missing.pcap")).err().expect("error");
    assert_eq!((e.offset, e.fatal), (0, true));
    assert!(e.message.starts_with("cannot open "), "{}", e.message);
}

// ---- robustness ----

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed_files() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for be in [false, true] {
        let mut f = pcap_header(be, be, 1);
        for i in 0..5u8 {
            pcap_record(&mut f, be, i.into(), 0, u32::from(i) * 3, 60, &vec![i; usize::from(i) * 3]);
        }
        files.push(f);
        let mut ng = Ng::new(be);
        ng.idb(1, &[(9, &[9]), (14, &[0; 8])]);
        ng.idb(276, &[(9, &[0x85])]);
        ng.epb(0, 1, &[1; 20], 60);
        ng.block(4, &[0; 12]);
        ng.spb(10, &[2; 10]);
        ng.pb(1, 3, &[3; 5], 5);
        ng.shb();
        ng.idb(113, &[]);
        ng.epb(0, 4, &[4; 9], 9);
        files.push(ng.out);
    }
    files
}

#[test]
fn mutated_files_never_panic_and_terminate() {
    const INTERESTING: [u32; 8] = [0, 1, 4, 12, 0x7fff_ffff, 0x8000_0000, u32::MAX, MAX_RECORD as u32 + 1];
    let seeds = seed_files();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut packets, mut errors) = (0usize, 0usize);
    for _ in 0..20_000 {
        let mut f = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(f.len());
            match rng.below(5) {
                0 => f[at] = rng.next() as u8,
                1 => {
                    let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                    let at = at & !3;
                    let end = (at + 4).min(f.len());
                    f[at..end].copy_from_slice(&v[..end - at]);
                }
                2 => f.truncate(at),
                3 => {
                    let n = rng.below(16).min(f.len() - at);
                    f.drain(at..at + n);
                }
                _ => {
                    let chunk: Vec<u8> = f[at..].iter().take(rng.below(24)).copied().collect();
                    f.splice(at..at, chunk);
                }
            }
            if f.is_empty() {
                break;
            }
        }
        let n = read_all_for_fuzzing(&f);
        assert!(n <= f.len() / 8 + 1, "{n} items from {} bytes", f.len());
        if let Ok(mut reader) = CaptureReader::new(f.as_slice()) {
            let mut last = 0;
            for item in reader.by_ref() {
                let offset = match &item {
                    Ok(p) => {
                        assert!(p.data.len() <= MAX_RECORD && p.orig_len as usize >= p.data.len());
                        packets += 1;
                        p.offset
                    }
                    Err(e) => {
                        errors += 1;
                        e.offset
                    }
                };
                assert!(offset >= last && offset <= f.len() as u64);
                last = offset;
            }
            assert!(reader.next().is_none());
        }
    }
    // The mutations must exercise both outcomes, or the test proves little.
    assert!(packets > 1000 && errors > 1000, "packets {packets}, errors {errors}");
}

/// The fuzz target's seed corpus (fuzz/corpus/capture) reads to its end on stable, in CI.
#[test]
fn fuzz_seed_corpus_reads_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/capture");
    let mut files = 0;
    for f in std::fs::read_dir(&dir).expect("fuzz/corpus/capture exists") {
        let bytes = std::fs::read(f.expect("entry").path()).expect("read");
        assert!(super::read_all_for_fuzzing(&bytes) > 0);
        files += 1;
    }
    assert!(files >= 2, "seed corpus has {files} files");
}

//! pcapng: interfaces, blocks, sections, timestamps, damaged and inconsistent blocks.

use super::*;

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
    use crate::capture::pcapng::ticks_to_ns;
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

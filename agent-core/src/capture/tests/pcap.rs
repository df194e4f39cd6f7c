//! Classic pcap: byte orders, units, link types, lengths, truncations.

use super::*;

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

//! Recognition and I/O: what is not a capture, short and interrupted reads, read errors, files.

use super::*;

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

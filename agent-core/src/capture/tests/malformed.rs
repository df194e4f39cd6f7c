//! Robustness: mutated files never panic and always end; the fuzz seed corpus reads to its end.

use super::*;

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

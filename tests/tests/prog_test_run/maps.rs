//! Map lifecycles under pressure: the conversation LRU's real capacity, idle MACs aged out of
//! the never-evicting per-MAC map, and counts that arrive between a read and a removal.

use std::fmt::Debug;

use iotwatch::kernel::collect::{BATCH_ENTRIES, MapRead, Reading};

use super::*;

privileged_test! {
    /// The kernel's common LRU hands free entries to each CPU in batches (bpf_lru_list.c:
    /// `target_free`, at most LOCAL_FREE_TARGET = 128) and evicts as soon as the CPU that
    /// inserts finds its own batch and the global free list empty, while other CPUs' batches
    /// still hold free entries. `--bpf.max-conversations N` must hold N conversations without an
    /// eviction however the inserts are spread over the CPUs.
    fn the_conversation_map_holds_what_was_asked_for_on_every_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(cpus >= 2, "needs two CPUs");
        const N: u16 = 200;
        let mut h = Harness::load(&LoadOptions { max_conversations: u32::from(N), ..LoadOptions::default() });
        // One conversation on every CPU but the last (each takes a batch of free entries), the
        // rest on the last.
        let mut port = 10_000u16;
        for cpu in 0..cpus - 1 {
            on_cpu(cpu, || h.tc(&udp4(DEV_A, DEV_B, IP_A, IP_B, port, 9_999, 1)));
            port += 1;
        }
        on_cpu(cpus - 1, || {
            while port < 10_000 + N {
                h.tc(&udp4(DEV_A, DEV_B, IP_A, IP_B, port, 9_999, 1));
                port += 1;
            }
        });
        let s = h.poll();
        assert_eq!(stat(&s, Stat::ConvInserts), u64::from(N));
        assert_eq!(s.evictions, 0, "no conversation evicted below the requested capacity");
        assert_eq!(s.conversation_entries, u64::from(N));
        assert_eq!(s.deltas.len(), usize::from(N));
    }
}

const S: u64 = 1_000_000_000;
const BROADCAST: [u8; 6] = [0xff; 6];

fn spoofed(i: u8) -> [u8; 6] {
    [0x02, 0x5b, 0, 0, 0, i]
}

fn to_broadcast(src: [u8; 6]) -> Vec<u8> {
    udp4(src, BROADCAST, IP_A, [255, 255, 255, 255], 1_000, 2_000, 10)
}

/// Every MAC's exported totals in `after` are at least those in `before`.
fn assert_monotonic(before: &Snapshot, after: &Snapshot) {
    for (mac, b) in &before.macs {
        let a = mac_counters(after, mac.0);
        assert!(
            a.tx_packets >= b.tx_packets
                && a.tx_bytes >= b.tx_bytes
                && a.rx_packets >= b.rx_packets
                && a.rx_bytes >= b.rx_bytes,
            "totals of {mac} fell: {b:?} then {a:?}"
        );
    }
}

privileged_test! {
    /// Spoofed MACs fill the never-evicting per-MAC map and a new device goes uncounted; once
    /// they have been idle for the timeout the agent removes them (lookup-and-delete, so a frame
    /// counted after the walk read them is kept), the new device is counted, and no MAC's
    /// totals fall, not even for a spoofed MAC that comes back and is counted from zero again.
    fn idle_macs_leave_the_device_map_and_new_devices_are_counted() {
        let mut h = Harness::load(&LoadOptions { max_macs: 8, ..LoadOptions::default() });
        h.set_mac_idle(Some(3_600 * S));
        // Seven spoofed sources and the broadcast destination: 8 entries, full.
        for i in 0..7 {
            h.tc(&to_broadcast(spoofed(i)));
        }
        h.tc(&to_broadcast(DEV_A));
        let s0 = h.poll_at(0, None);
        assert_eq!((s0.mac_entries, stat(&s0, Stat::DeviceInsertFailed)), (8, 1));
        assert_eq!(mac_counters(&s0, DEV_A).tx_packets, 0, "no room for a new device");

        // Half an hour later spoofed(0) speaks again: it and the broadcast entry are not idle.
        h.tc(&to_broadcast(spoofed(0)));
        let s1 = h.poll_at(1_800 * S, None);
        assert_eq!(s1.macs_aged_out, 0);

        // After an hour the other six leave; spoofed(1) sends once more between the read and the
        // removal, and that frame is kept.
        let s2 = h.poll_with(3_600 * S, None, |h| h.tc(&to_broadcast(spoofed(1))));
        assert_eq!((s2.macs_aged_out, s2.mac_entries), (6, 2));
        assert_eq!(mac_counters(&s2, spoofed(1)).tx_packets, 2, "the frame between read and delete");
        assert_eq!(mac_counters(&s2, spoofed(2)).tx_packets, 1, "aged out, totals kept");
        assert_monotonic(&s1, &s2);

        // A new device and a returning spoofed MAC are counted now.
        h.tc(&to_broadcast(DEV_A));
        h.tc(&to_broadcast(spoofed(2)));
        let s3 = h.poll_at(3_601 * S, None);
        assert_eq!(mac_counters(&s3, DEV_A).tx_packets, 1, "the new device is counted");
        assert_eq!(mac_counters(&s3, spoofed(2)).tx_packets, 2, "1 before it aged out + 1 since");
        assert_eq!(s3.mac_entries, 4);
        assert_eq!(stat(&s3, Stat::DeviceInsertFailed), 1, "no insert failed after the ageing");
        assert_monotonic(&s2, &s3);
        // Broadcast: every one of the 12 frames, the uncounted sender's included.
        assert_eq!(mac_counters(&s3, BROADCAST).rx_packets, 12);
    }
}

privileged_test! {
    /// An idle conversation is removed after the walk read it; a frame counted in between is
    /// not lost: the removal returns the last counts (lookup-and-delete).
    fn a_frame_between_the_read_and_the_removal_of_a_conversation_is_kept() {
        let mut h = Harness::new(true);
        let frame = udp4(DEV_A, DEV_B, IP_A, IP_B, 40_000, 9_999, 100);
        h.send(&frame, 10);
        let s = h.poll_at(0, None);
        assert_eq!(only_conversation(&s).1, 1);
        // Idle since before 100 s of capture time; one more frame at 20 s while the agent walks.
        let s = h.poll_with(0, Some(100 * S), |h| h.send(&frame, 20));
        let (_, packets, bytes) = only_conversation(&s);
        assert_eq!((packets, bytes), (1, frame.len() as u64), "the frame after the read");
        assert_eq!((s.aged_out, s.conversation_entries, s.evictions), (1, 0, 0));
        let s = h.poll_at(0, None);
        assert!(s.deltas.is_empty() && s.conversation_entries == 0, "{s:?}");
    }
}

/// The `i`th of many source MACs.
fn many(i: u32) -> [u8; 6] {
    let [_, _, hi, lo] = i.to_be_bytes();
    [0x02, 0x5c, 0, 0, hi, lo]
}

/// `n` conversations with distinct source ports from 300 source MACs, each counted on CPU 0 at
/// 10 s; every third is counted again on CPU 1 at 20 s with a longer frame, so its values differ
/// between the CPUs' slots and only a right per-CPU decoding sums them right.
fn fill(h: &mut Harness, n: u32) {
    let frame = |i: u32, len: usize| udp4(many(i % 300), DEV_B, IP_A, IP_B, 10_000 + i as u16, 9_999, len);
    on_cpu(0, || (0..n).for_each(|i| h.send(&frame(i, 10), 10)));
    on_cpu(1, || (0..n).step_by(3).for_each(|i| h.send(&frame(i, 100), 20)));
}

/// The first place two sorted readings differ, for a short failure message.
fn first_difference<K: Debug + PartialEq, T: Debug + PartialEq>(a: &[(K, T)], b: &[(K, T)]) -> Option<String> {
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        return Some(format!("entry {i}: {:?} against {:?}", a[i], b[i]));
    }
    (a.len() != b.len()).then(|| format!("{} entries against {}", a.len(), b.len()))
}

privileged_test! {
    /// BPF_MAP_LOOKUP_BATCH reads exactly the keys and per-CPU sums that get-next-key and a
    /// lookup per key read, from the same map, whatever the batch size: one entry (every bucket
    /// of two or more makes the kernel answer ENOSPC and the reader grow), sizes 5,000 is no
    /// multiple of, one it is, and one larger than the map.
    fn a_batched_walk_reads_what_an_entry_at_a_time_walk_reads() {
        assert!(std::thread::available_parallelism().map_or(1, usize::from) >= 2, "needs two CPUs");
        const N: u32 = 5_000;
        let mut h = Harness::new(true);
        fill(&mut h, N);
        let c = h.collector();

        let Reading { entries: mut conversations, walk } = c.read_conversations(MapRead::Iterate, 0).expect("iterate");
        assert_eq!(walk, None, "get-next-key, no batches");
        conversations.sort_by_key(|(k, _)| *k);
        assert_eq!(conversations.len(), N as usize, "one entry per conversation");
        let twice = conversations.iter().filter(|(_, t)| t.totals.packets == 2).count();
        assert_eq!(twice, N.div_ceil(3) as usize, "every third counted on both CPUs");
        assert!(
            conversations.iter().filter(|(_, t)| t.totals.packets == 2).all(|(_, t)| t.first_seen_ns == 10_000_000_000
                && t.last_seen_ns == 20_000_000_000),
            "first seen from CPU 0's slot, last seen from CPU 1's"
        );
        for batch in [1, 7, 256, 1_000, 4_096, 10_000] {
            let Reading { entries: mut batched, walk } = c.read_conversations(MapRead::Batch, batch).expect("batch");
            let walk = walk.expect("a batched walk");
            assert_eq!(walk.entries, N as usize, "batch of {batch}: each key once");
            assert!(walk.calls >= (N as usize).div_ceil(walk.batch_entries), "batch of {batch}: {walk:?}");
            if batch == 1 {
                // Thousands of keys in 131,072 buckets: some share one, and the kernel's ENOSPC
                // for it made the reader ask for more.
                assert!(walk.batch_entries > 1, "{walk:?}");
            } else {
                assert_eq!(walk.batch_entries, batch, "no bucket holds {batch}");
            }
            batched.sort_by_key(|(k, _)| *k);
            assert_eq!(first_difference(&batched, &conversations), None, "batch of {batch}");
        }

        let mut devices = c.read_devices(MapRead::Iterate, 0).expect("iterate").entries;
        devices.sort_by_key(|(k, _)| *k);
        assert_eq!(devices.len(), 301, "300 sources and the one destination");
        for batch in [1, 7, 64, 4_096] {
            let Reading { entries: mut batched, walk } = c.read_devices(MapRead::Batch, batch).expect("batch");
            assert_eq!(walk.expect("a batched walk").entries, 301, "batch of {batch}");
            batched.sort_by_key(|(k, _)| *k);
            assert_eq!(first_difference(&batched, &devices), None, "batch of {batch}");
        }

        // The collector's own poll reads in batches and takes every conversation's counts.
        let s = h.poll();
        assert_eq!(h.collector().read(), MapRead::Batch, "the kernel took the batches");
        let mut deltas: Vec<_> = s.deltas.iter().map(|d| (d.key, (d.packets, d.bytes))).collect();
        deltas.sort_unstable();
        let expected: Vec<_> = conversations.iter().map(|(k, t)| (*k, (t.totals.packets, t.totals.bytes))).collect();
        assert_eq!(first_difference(&deltas, &expected), None, "the poll's deltas");
        assert_eq!(s.conversation_entries, u64::from(N));
    }
}

privileged_test! {
    /// The fallback (get-next-key and a lookup per key) counts what the batched walk counts:
    /// the same frames in two loads, one read each way, poll for poll, ageing included.
    fn the_fallback_walk_counts_what_the_batched_walk_counts() {
        let mut batched = Harness::new(true);
        let mut iterating = Harness::new(true);
        iterating.collector().set_read(MapRead::Iterate);
        let sorted = |s: &Snapshot| {
            let mut d: Vec<_> = s.deltas.iter().map(|d| (d.key, (d.packets, d.bytes, d.last_seen_ns))).collect();
            d.sort_unstable();
            d
        };
        let same = |a: &Snapshot, b: &Snapshot| {
            assert_eq!(first_difference(&sorted(a), &sorted(b)), None);
            assert_eq!(
                (a.conversation_entries, a.aged_out, a.evictions, a.mac_entries, &a.macs),
                (b.conversation_entries, b.aged_out, b.evictions, b.mac_entries, &b.macs)
            );
        };
        for h in [&mut batched, &mut iterating] {
            fill(h, 600);
        }
        let (a, b) = (batched.poll_at(0, None), iterating.poll_at(0, None));
        assert_eq!(a.deltas.len(), 600);
        same(&a, &b);
        // A third of them speak again at 30 s; everything last seen before 25 s leaves.
        for h in [&mut batched, &mut iterating] {
            (0..600).step_by(3).for_each(|i| h.send(&udp4(many(i % 300), DEV_B, IP_A, IP_B, 10_000 + i as u16, 9_999, 10), 30));
        }
        let (a, b) = (batched.poll_at(0, Some(25 * S)), iterating.poll_at(0, Some(25 * S)));
        assert_eq!((a.deltas.len(), a.aged_out, a.conversation_entries), (200, 400, 200));
        same(&a, &b);
        assert_eq!((batched.collector().read(), iterating.collector().read()), (MapRead::Batch, MapRead::Iterate));
    }
}

privileged_test! {
    /// A measurement, not a test: one poll of 50,000 conversations read in batches and an entry
    /// at a time. `cargo test … -- --ignored --nocapture one_poll_of_50000`.
    #[ignore = "a measurement; prints timings"]
    fn one_poll_of_50000_conversations() {
        const N: u32 = 50_000;
        let mut h = Harness::new(true);
        let frame = |i: u32| udp4(many(i % 300), DEV_B, IP_A, IP_B, 10_000 + i as u16, 9_999, 10);
        (0..N).for_each(|i| h.send(&frame(i), 10));
        assert_eq!(h.poll().conversation_entries, u64::from(N));
        for round in 0..3 {
            for read in [MapRead::Iterate, MapRead::Batch] {
                h.collector().set_read(read);
                let mut times: Vec<_> = (0..5)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        let s = h.poll();
                        let e = t.elapsed();
                        assert_eq!(s.conversation_entries, u64::from(N));
                        e
                    })
                    .collect();
                times.sort_unstable();
                eprintln!("round {round} {read:?}: median {:?}, min {:?}, max {:?} per poll", times[2], times[0], times[4]);
            }
        }
        // The read alone, without the deltas and the per-MAC book a poll also does.
        for read in [MapRead::Iterate, MapRead::Batch, MapRead::Iterate, MapRead::Batch] {
            let t = std::time::Instant::now();
            let Reading { entries, walk } = h.collector().read_conversations(read, BATCH_ENTRIES).expect("read");
            eprintln!("{read:?} read of CONVERSATIONS: {:?} for {} entries, {walk:?}", t.elapsed(), entries.len());
        }
    }
}

privileged_test! {
    /// A map the kernel has no batch lookup for (a queue) makes the batch reader answer "not
    /// supported" before reading anything, which is when the collector falls back to
    /// get-next-key; a hash map it reads.
    fn the_batch_reader_says_when_the_kernel_refuses_batches() {
        use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};

        use iotwatch::kernel::map_ops::BatchReader;
        /// BPF_MAP_CREATE of `map_type` with 8-byte values (`bpf_attr`'s map_create prefix).
        fn create(map_type: u32, key_size: u32) -> OwnedFd {
            let attr: [u32; 4] = [map_type, key_size, 8, 16];
            // SAFETY: a valid bpf_attr prefix for BPF_MAP_CREATE (the kernel zero-fills the
            // rest); it returns a new fd or -1.
            let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), size_of_val(&attr) as u32) };
            assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
            // SAFETY: the kernel just handed us this fd, and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        }
        const QUEUE: u32 = 22;
        const PERCPU_HASH: u32 = 5;
        let queue = create(QUEUE, 0);
        let mut reader = BatchReader::new(8);
        let walk = reader.for_each_per_cpu::<u64, u64>(queue.as_fd(), |_, _| panic!("a queue has no keys"));
        assert!(matches!(walk, Ok(None)), "{walk:?}");
        let hash = create(PERCPU_HASH, 8);
        let walk = reader.for_each_per_cpu::<u64, u64>(hash.as_fd(), |_, _| panic!("empty"));
        assert_eq!(walk.expect("a hash map has batches").map(|w| w.entries), Some(0));
    }
}

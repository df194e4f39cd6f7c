//! Map lifecycles under pressure: the conversation LRU's real capacity, idle MACs aged out of
//! the never-evicting per-MAC map, and counts that arrive between a read and a removal.

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

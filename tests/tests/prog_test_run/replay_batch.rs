//! Replay's programs run a batch of frames per test run (agent-common's `ReplayBatch`): the
//! batch must count and sample exactly what the same frames count and sample one per test run.

use agent_common::REPLAY_BATCH_FRAMES;
use iotwatch_core::snapshot::Snapshot;

use super::*;

/// Frames of every shape a batch holds: the shortest (an Ethernet header alone), tagged IPv6
/// TCP with payload (a flow sample), DNS (sampled by its port), ARP, one snapped short of its wire
/// length, and a frame past a test run's page cut to what replay hands in.
fn mixed() -> Vec<(Vec<u8>, u32, u64)> {
    let mut tagged = vlan(eth(DEV_B, DEV_A, ETH_8021Q), 5, ETH_IPV6);
    ipv6_header(&mut tagged, v6("2001:db8::11"), v6("2001:db8::12"), 6, 20 + 40);
    tcp(&mut tagged, 50_000, 80, 0, &[b'G'; 40]);
    let dns = udp4(DEV_A, DEV_B, IP_A, INET, 40_001, 53, 30);
    let long = udp4(DEV_B, DEV_A, IP_B, IP_A, 9, 7_000, 1_400);
    let frames = [
        (eth(DEV_B, DEV_A, ETH_IPV4), 60),
        (tagged.clone(), 0),
        (dns.clone(), 0),
        (arp_request(DEV_A, IP_A, IP_B), 0),
        (long[..200].to_vec(), long.len() as u32),
        (udp4(DEV_A, DEV_B, IP_A, IP_B, 1, 2, 2_980), 0),
        (dns, 0),
        (tagged, 0),
    ];
    frames
        .into_iter()
        .enumerate()
        .map(|(i, (f, wire))| {
            let wire = if wire == 0 { f.len() as u32 } else { wire };
            (f, wire, 1_700_000_000_000_000_000 + i as u64 * 1_000_000)
        })
        .collect()
}

/// What a snapshot says, in an order that does not depend on the map's.
fn counted(s: &Snapshot) -> (Vec<String>, Vec<String>, Vec<u64>) {
    let mut deltas: Vec<String> = s.deltas.iter().map(|d| format!("{d:?}")).collect();
    let mut macs: Vec<String> = s.macs.iter().map(|m| format!("{m:?}")).collect();
    deltas.sort();
    macs.sort();
    (deltas, macs, s.stats.to_vec())
}

privileged_test! {
    fn a_batch_counts_and_samples_what_its_frames_do_one_by_one() {
        iotwatch_tests::harness::pin_to_cpu(0);
        let frames = mixed();
        let mut batched = Harness::new(true);
        let mut alone = Harness::new(true);
        // Three test runs as the room allows them, against one per frame.
        let room = batched.replay_room();
        let mut start = 0;
        let mut runs = 0;
        let mut index_in_batch = vec![0; frames.len()];
        while start < frames.len() {
            let mut run = iotwatch::kernel::test_run::ReplayRun::new(room);
            let mut end = start;
            while end < frames.len() && run.fits(frames[end].0.len()) {
                run.push(&frames[end].0, frames[end].1, frames[end].2);
                index_in_batch[end] = (end - start) as u32;
                end += 1;
            }
            let batch: Vec<(&[u8], u32, u64)> = frames[start..end].iter().map(|(f, w, t)| (&f[..], *w, *t)).collect();
            batched.replay_batch(&batch).expect("every frame of the batch ran");
            start = end;
            runs += 1;
        }
        assert!(runs < frames.len(), "the frames went in batches ({runs} test runs)");
        for (f, wire, ts) in &frames {
            alone.xdp_replay(f, *wire, *ts);
        }
        let (b, a) = (batched.poll(), alone.poll());
        assert_eq!(counted(&b), counted(&a));
        assert_eq!(stat(&b, Stat::Frames), frames.len() as u64);
        assert_eq!(mac_counters(&b, DEV_B).tx_bytes, 1_442, "the snapped frame counts its wire length");
        // The same records, each naming its frame's place in its batch.
        let (bs, als) = (batched.take_samples(), alone.take_samples());
        assert!(bs.len() >= 3, "DNS twice and the flow's first packet: {bs:?}");
        assert_eq!(bs.len(), als.len());
        for ((bh, bd), (ah, ad)) in bs.iter().zip(&als) {
            assert_eq!(ah.batch_index, 0, "a batch of one");
            let frame = frames.iter().position(|(_, _, t)| *t == bh.ts_ns).expect("a sample's time is its frame's");
            assert_eq!(frames[frame].0[..bd.len()], bd[..], "the record holds its frame");
            assert_eq!(bh.batch_index, index_in_batch[frame], "the record names its frame");
            assert_eq!((agent_common::sample::SampleHeader { batch_index: 0, ..*bh }, bd), (*ah, ad));
        }
    }
}

privileged_test! {
    fn a_test_run_holds_what_the_kernel_says_and_up_to_32_frames() {
        let mut h = Harness::new(true);
        let room = h.replay_room();
        // A page less XDP's headroom and the shared info behind the data.
        assert!((3_000..=4_096).contains(&room), "{room}");
        // Frames that fill the room to the byte: a batch header, and each frame with its metadata.
        let (header, meta) = (size_of::<agent_common::ReplayBatch>(), size_of::<agent_common::ReplayMeta>());
        let last = room - header - meta - (meta + 60);
        let full = [udp4(DEV_A, DEV_B, IP_A, IP_B, 1, 2, 60 - 42), udp4(DEV_A, DEV_B, IP_A, IP_B, 1, 2, last - 42)];
        assert_eq!(full[1].len(), last);
        h.replay_batch(&[(&full[0], 60, 1), (&full[1], last as u32, 2)]).expect("a batch as long as the room");
        let small = udp4(DEV_A, DEV_B, IP_A, IP_B, 1, 2, 18);
        let most: Vec<(&[u8], u32, u64)> = (0..REPLAY_BATCH_FRAMES as u64).map(|i| (&small[..], 60, 3 + i)).collect();
        h.replay_batch(&most).expect("32 frames, 32 tail calls");
        let s = h.poll();
        assert_eq!(stat(&s, Stat::Frames), 2 + REPLAY_BATCH_FRAMES as u64);
        assert_eq!(mac_counters(&s, DEV_A).tx_bytes, 60 + last as u64 + 60 * REPLAY_BATCH_FRAMES as u64);
    }
}

#![no_main]
//! Fuzzes the pcap/pcapng reader: no input may panic, and iteration always ends.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = iotwatch_core::capture::read_all_for_fuzzing(data);
});

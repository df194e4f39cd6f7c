#![no_main]
//! Fuzzes `iotwatch_core::proto` as icmp: no input may panic, and what parses must serialise.

use iotwatch_core::proto::{self, Kind};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for tcp in [false, true] {
        if let Ok(ev) = proto::parse(Kind::Icmp, data, tcp) {
            serde_json::to_vec(&ev).expect("event serialises");
        }
    }
});

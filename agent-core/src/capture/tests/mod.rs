//! Tests of the capture reader, by subject; the file writers they share are in `helpers`.

mod errors;
mod helpers;
mod malformed;
mod pcap;
mod pcapng;

use helpers::*;

use super::*;

//! Capture files (pcap, pcapng): a streaming reader. Being written.

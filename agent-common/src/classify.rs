//! Cheap, pure helpers shared by the kernel program and the agent.

/// Bytes a GSO/GRO buffer stands for on the wire: the buffer's own bytes plus, for every wire
/// segment after the first, a copy of the headers each segment repeats.
#[inline(always)]
pub const fn wire_bytes(buffer_len: u64, segments: u64, repeated_header_len: u64) -> u64 {
    if segments <= 1 { buffer_len } else { buffer_len + (segments - 1) * repeated_header_len }
}

/// Wire frames a buffer stands for. `gso_segs` when the kernel set it; else, for a GSO buffer
/// that carries only its segment size (tap, macvtap, virtio-net and AF_PACKET with a vnet
/// header), the payload behind the repeated headers cut into `gso_size` pieces; else one.
#[inline(always)]
pub const fn segments(gso_segs: u64, gso_size: u64, buffer_len: u64, repeated_header_len: u64) -> u64 {
    if gso_segs > 0 {
        gso_segs
    } else if gso_size == 0 || buffer_len <= repeated_header_len {
        1
    } else {
        (buffer_len - repeated_header_len).div_ceil(gso_size)
    }
}

/// Broadcast `ff:ff:ff:ff:ff:ff`.
#[inline(always)]
pub const fn is_broadcast_mac(mac: &[u8; 6]) -> bool {
    mac[0] == 0xff && mac[1] == 0xff && mac[2] == 0xff && mac[3] == 0xff && mac[4] == 0xff && mac[5] == 0xff
}

/// Group bit set (multicast, broadcast included).
#[inline(always)]
pub const fn is_group_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_adds_repeated_headers() {
        assert_eq!(wire_bytes(1514, 1, 66), 1514);
        assert_eq!(wire_bytes(1514, 0, 66), 1514);
        // 3 segments of 1448 bytes of payload behind 66 bytes of headers.
        assert_eq!(wire_bytes(66 + 3 * 1448, 3, 66), 3 * (66 + 1448));
    }

    #[test]
    fn segments_from_the_count_or_the_size() {
        assert_eq!(segments(4, 1448, 5858, 66), 4, "gso_segs wins");
        assert_eq!(segments(0, 1448, 66 + 4 * 1448, 66), 4);
        assert_eq!(segments(0, 1448, 66 + 3 * 1448 + 1, 66), 4, "a short last segment counts");
        assert_eq!(segments(0, 0, 1514, 66), 1, "not GSO");
        assert_eq!(segments(0, 1448, 60, 66), 1, "headers only");
    }

    #[test]
    fn mac_groups() {
        assert!(is_broadcast_mac(&[0xff; 6]));
        assert!(is_group_mac(&[0xff; 6]));
        assert!(is_group_mac(&[0x01, 0x00, 0x5e, 0, 0, 0xfb]));
        assert!(!is_group_mac(&[0x02, 0, 0, 0, 0, 1]));
        assert!(!is_broadcast_mac(&[0x01, 0x00, 0x5e, 0, 0, 0xfb]));
    }
}

//! DHCP with real daemons, for the scenario lab (every device asks once, the gateway answers)
//! and tests/tests/daemons_dhcp_dns.rs: dnsmasq as the server (Debian's `dnsmasq-base`, no
//! service) and busybox `udhcpc` as the client. One place for both command lines.
//!
//! The client sends what real devices send and a passive observer learns them by: option 12
//! (hostname), 60 (vendor class) and 55 (parameter request list). It runs its script as
//! `/bin/true`, so the lease is not applied and the lab's static address stays; with `-n -q`
//! it exits once it has a lease, or after its tries. It asks for broadcast replies (`-B`, the
//! BOOTP broadcast flag, which many clients set): the device already has the offered address,
//! so a reply unicast to it would reach its kernel, which (udhcpc reads a raw socket, no UDP
//! socket is bound to port 68) answers with ICMP port unreachable, seen here twice per device
//! in a lab run; a kernel sends no ICMP error for a broadcast.

/// What a device says of itself in its DISCOVER and REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpIdentity {
    /// Option 12.
    pub hostname: &'static str,
    /// Option 60; "" sends none (lwIP, the stack of ESP8266/ESP32 firmware, sends none).
    pub vendor_class: &'static str,
    /// Option 55. udhcpc sends the options it is asked for in ascending order, so list them so.
    pub params: &'static [u8],
}

/// udhcpc's tries: 3 DISCOVERs 2 s apart, so one exchange ends within about 6 s.
pub const UDHCPC_TRIES: u32 = 3;

/// `busybox udhcpc` on `eth0` for one exchange (DISCOVER, OFFER, REQUEST, ACK), then exit.
/// The caller bounds it (`timeout`); [`UDHCPC_TRIES`] keeps it short.
pub fn udhcpc_argv(id: &DhcpIdentity) -> Vec<String> {
    let mut v: Vec<String> = ["busybox", "udhcpc", "-i", "eth0", "-B", "-n", "-q", "-t"].map(str::to_owned).to_vec();
    v.push(UDHCPC_TRIES.to_string());
    v.extend(["-T", "2", "-s", "/bin/true", "-x"].map(str::to_owned));
    v.push(format!("hostname:{}", id.hostname));
    v.push("-V".to_owned());
    v.push(id.vendor_class.to_owned());
    // -o: none of udhcpc's default options; each -O adds one to option 55.
    v.push("-o".to_owned());
    for p in id.params {
        v.push("-O".to_owned());
        v.push(p.to_string());
    }
    v
}

/// dnsmasq in the foreground on `eth0` of its namespace, logging every DHCP exchange to
/// stderr, as root (no user to drop to), with no configuration file, upstream resolver or
/// /etc/hosts. Callers add the DHCP range, reservations and DNS records they need.
pub fn dnsmasq_argv(pid_file: &str, lease_file: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--user=root",
        "--group=root",
        "--interface=eth0",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--log-dhcp",
        "--log-facility=-",
        "--dhcp-authoritative",
    ]
    .map(str::to_owned)
    .to_vec();
    v.push(format!("--pid-file={pid_file}"));
    v.push(format!("--dhcp-leasefile={lease_file}"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udhcpc_sends_the_identity() {
        let id = DhcpIdentity { hostname: "HS105", vendor_class: "udhcp 1.19.4", params: &[1, 3, 6, 42] };
        let v = udhcpc_argv(&id).join(" ");
        assert!(v.starts_with("busybox udhcpc -i eth0 -B -n -q -t 3 -T 2 -s /bin/true"), "{v}");
        assert!(v.ends_with("-x hostname:HS105 -V udhcp 1.19.4 -o -O 1 -O 3 -O 6 -O 42"), "{v}");
        let none = DhcpIdentity { vendor_class: "", ..id };
        let argv = udhcpc_argv(&none);
        let at = argv.iter().position(|a| a == "-V").expect("-V");
        assert_eq!(argv[at + 1], "", "an empty vendor class: udhcpc sends no option 60");
    }
}

//! The agent on a real bridge in network namespaces: exact counts against independent
//! references, ports that come and go, clean detach, attach conflicts.
//!
//! Each test builds its own lab (root-namespace bridge `<prefix>br`, devices in namespaces,
//! addresses of design.md) that is removed when the test ends, even on panic.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use iotwatch_tests::{
    TempDir, agent_bin,
    capture::{Counts, Frame, Tcpdump, mac_bytes, reference},
    privileged_test, temp_dir,
};
use xtask::{
    HomeLab, LabOptions, Sample,
    agent::Agent,
    metrics::{scrape, sum},
};

fn quiet_lab(prefix: &str, devices: usize) -> HomeLab {
    let lab = HomeLab::create(LabOptions { prefix: prefix.into(), devices, ipv6: false, static_neighbors: true })
        .expect("create the lab");
    // Interfaces coming up send IGMP reports for a second or two; let that pass.
    std::thread::sleep(Duration::from_secs(3));
    lab
}

/// The agent on the lab's bridge; its stderr goes to `<dir>/agent-<port>.log`.
fn start_agent(lab: &HomeLab, dir: &TempDir, attach: &str, port: u16, extra: &[&str]) -> Agent {
    let listen = format!("127.0.0.1:{port}");
    let log = dir.join(format!("agent-{port}.log"));
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let mut agent =
        Agent::spawn(&agent_bin(), &lab.bridge, attach, &listen, &extra, Some(&log)).expect("start the agent");
    agent.wait_ready(Duration::from_secs(20)).expect("agent ready");
    agent
}

fn ns(lab: &HomeLab, ns: &str, args: &[&str]) {
    let out = lab.exec(ns, args).output().expect("run in namespace");
    assert!(out.status.success(), "{args:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
}

fn root(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Per-MAC counts as exported, from the exact map and from the scope breakdown.
fn exported(samples: &[Sample], mac: &str) -> (Counts, Counts) {
    let get = |name: &str, dir: &str| sum(samples, name, &[("mac", mac), ("direction", dir)]);
    let exact = Counts {
        tx_packets: get("iotwatch_mac_packets_total", "tx"),
        tx_bytes: get("iotwatch_mac_bytes_total", "tx"),
        rx_packets: get("iotwatch_mac_packets_total", "rx"),
        rx_bytes: get("iotwatch_mac_bytes_total", "rx"),
    };
    let by_scope = Counts {
        tx_packets: get("iotwatch_device_packets_total", "tx"),
        tx_bytes: get("iotwatch_device_bytes_total", "tx"),
        rx_packets: get("iotwatch_device_packets_total", "rx"),
        rx_bytes: get("iotwatch_device_bytes_total", "rx"),
    };
    (exact, by_scope)
}

/// Port to port, device to host and host to device, counted against tcpdump on every port
/// (ingress) and on the bridge (egress: what the host sends), with offloads off so that one
/// socket buffer is one wire frame.
fn exact_counts(prefix: &str, attach: &str, http_port: u16) {
    let dir = temp_dir(&format!("iotwatch-bridge-{prefix}"));
    let lab = quiet_lab(prefix, 2);
    lab.set_offloads(false).expect("offloads off");
    let (a, b) = (&lab.devices[0], &lab.devices[1]);
    let mut agent = start_agent(&lab, &dir, attach, http_port, &[]);

    let mut dumps = vec![Tcpdump::start(&lab.bridge, "out", dir.join("br.pcap"))];
    for port in [&a.port, &b.port, &lab.gateway.port] {
        dumps.push(Tcpdump::start(port, "in", dir.join(format!("{port}.pcap"))));
    }
    let (a_ip, b_ip, host_ip) = (a.ip.to_string(), b.ip.to_string(), lab.bridge_ip.to_string());
    ns(&lab, &a.ns, &["ping", "-c", "5", "-i", "0.2", "-s", "200", &b_ip]); // port to port
    ns(&lab, &a.ns, &["ping", "-c", "3", "-i", "0.2", &host_ip]); // device to host and back
    root(&["ping", "-c", "4", "-i", "0.2", "-s", "1000", &b_ip]); // host to device and back
    // 7 UDP datagrams to a closed port: B answers each with ICMP port unreachable.
    let send = format!(
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(7): s.sendto(b'x'*(100+i), ('{b_ip}', 5000))"
    );
    ns(&lab, &a.ns, &["/usr/bin/python3", "-c", &send]);
    std::thread::sleep(Duration::from_millis(500));
    let frames: Vec<Frame> = dumps.into_iter().flat_map(Tcpdump::finish).collect();
    let samples = scrape(&agent.listen).expect("scrape");
    let report = xtask::metrics::http_get(&agent.listen, "/api/v1/report", Duration::from_secs(5)).expect("report");
    agent.stop().expect("agent stops cleanly");

    let want = reference(&frames);
    // The live report has replay's schema and the same exact per-MAC counts.
    let report: serde_json::Value = serde_json::from_str(&report).expect("the report is JSON");
    assert_eq!(report["schema"], "iotwatch.report/v1");
    assert!(report["capture"].is_null(), "no capture section live");
    for (mac, counts) in &want {
        let row =
            report["macs"].as_array().unwrap().iter().find(|m| m["mac"] == mac.as_str()).expect("MAC in the report");
        let got = Counts {
            tx_packets: row["tx_packets"].as_u64().unwrap(),
            tx_bytes: row["tx_bytes"].as_u64().unwrap(),
            rx_packets: row["rx_packets"].as_u64().unwrap(),
            rx_bytes: row["rx_bytes"].as_u64().unwrap(),
        };
        assert_eq!(got, *counts, "{attach}: /api/v1/report macs row of {mac}");
    }
    // Pings both ways and the 7 datagrams; B's ICMP errors are rate-limited by its kernel, so
    // at least one of those.
    assert!(frames.len() > 2 * 5 + 2 * 3 + 2 * 4 + 7, "tcpdump saw only {} frames", frames.len());
    for (mac, counts) in &want {
        let (exact, by_scope) = exported(&samples, mac);
        assert_eq!(exact, *counts, "{attach}: exact per-MAC counters of {mac}");
        if !mac.starts_with("01:") && !mac.starts_with("33:") && mac != "ff:ff:ff:ff:ff:ff" {
            assert_eq!(by_scope, *counts, "{attach}: per-scope device counters of {mac}");
        }
    }
    // Nothing counted that tcpdump did not see.
    let frames_total = sum(&samples, "iotwatch_bpf_events_total", &[("event", "frames")]);
    assert_eq!(frames_total, frames.len() as u64, "{attach}: frames counted by the program");
    // Per-port: A's UDP to port 5000, exactly the 7 datagrams.
    let udp_5000 = frames
        .iter()
        .filter(|f| {
            f.src() == mac_bytes(&a.mac)
                && f.data[12..14] == [8, 0]
                && f.data[23] == 17
                && f.data[36..38] == 5000u16.to_be_bytes()
        })
        .count() as u64;
    assert_eq!(udp_5000, 7);
    assert_eq!(
        sum(&samples, "iotwatch_device_port_packets_total", &[("mac", &a.mac), ("proto", "udp"), ("port", "5000")]),
        7
    );
    // Scopes: all of it stayed in the LAN.
    assert_eq!(sum(&samples, "iotwatch_device_packets_total", &[("scope", "internet")]), 0);
    let _ = a_ip;
}

privileged_test! {
    fn exact_counts_with_tc() {
        exact_counts("iwt1", "tc", 19471);
    }
}

privileged_test! {
    fn exact_counts_with_xdp_skb_mode() {
        exact_counts("iwt2", "xdp-skb", 19472);
    }
}

privileged_test! {
    fn exact_counts_with_native_xdp() {
        exact_counts("iwt3", "xdp", 19473);
    }
}

/// Segments a namespace's TCP put on the wire: OutSegs leaves out retransmissions, which
/// RetransSegs counts.
fn snmp_tcp_out_segs(lab: &HomeLab, ns: &str) -> u64 {
    let out = lab.exec(ns, &["cat", "/proc/net/snmp"]).output().expect("read snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("Tcp header"), tcp.next().expect("Tcp values"));
    let field = |name: &str| -> u64 {
        let i = names.split_whitespace().position(|n| n == name).expect("field");
        values.split_whitespace().nth(i).expect("value").parse().expect("number")
    };
    field("OutSegs") + field("RetransSegs")
}

privileged_test! {
    /// With GSO/GRO on, one socket buffer carries many segments: the program must count each wire
    /// frame. Reference: the sender's own segment count (TcpOutSegs of each namespace).
    fn gso_counts_wire_segments_not_buffers() {
        let dir = temp_dir("iotwatch-bridge-iwt4");
        let lab = quiet_lab("iwt4", 2);
        lab.set_offloads(true).expect("offloads on");
        let (a, b) = (&lab.devices[0], &lab.devices[1]);
        let mut agent = start_agent(&lab, &dir, "tc", 19474, &[]);
        let server = format!(
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{}', 5201)); s.listen(1)\nc,_=s.accept()\nn=0\nwhile True:\n  d=c.recv(65536)\n  if not d: break\n  n+=len(d)\nc.close(); print(n)",
            b.ip
        );
        let srv = lab
            .exec(&b.ns, &["/usr/bin/python3", "-c", &server])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("server");
        std::thread::sleep(Duration::from_millis(500));
        let before = (snmp_tcp_out_segs(&lab, &a.ns), snmp_tcp_out_segs(&lab, &b.ns));
        let dump = Tcpdump::start(&a.port, "in", dir.join("a.pcap"));
        let client = format!(
            "import socket\nc=socket.create_connection(('{}', 5201))\nc.sendall(b'z'*4000000)\nc.close()",
            b.ip
        );
        ns(&lab, &a.ns, &["/usr/bin/python3", "-c", &client]);
        let out = srv.wait_with_output().expect("server done");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4000000");
        std::thread::sleep(Duration::from_millis(500));
        let after = (snmp_tcp_out_segs(&lab, &a.ns), snmp_tcp_out_segs(&lab, &b.ns));
        let frames = dump.finish();
        let samples = scrape(&agent.listen).expect("scrape");
        agent.stop().expect("stop");

        let (a_segs, b_segs) = (after.0 - before.0, after.1 - before.1);
        let captured: u64 = frames.iter().map(|f| u64::from(f.orig_len)).sum();
        eprintln!("segments {a_segs}, buffers on the port {}, captured bytes {captured}", frames.len());
        let (exact, by_scope) = exported(&samples, &a.mac);
        assert_eq!(exact.tx_packets, a_segs, "A's frames = the segments A's TCP sent");
        assert_eq!(exact.rx_packets, b_segs, "A received the segments B's TCP sent");
        assert_eq!(by_scope, exact);
        // The buffers tcpdump saw on A's port were fewer than the segments: GSO really happened.
        let buffers = frames.len() as u64;
        assert!(buffers < a_segs, "expected aggregated buffers: {buffers} buffers for {a_segs} segments");
        assert!(sum(&samples, "iotwatch_bpf_events_total", &[("event", "gso_buffers")]) > 0);
        // Wire bytes: each buffer's length plus, per extra segment, the 66 bytes of headers each
        // segment repeats (Ethernet 14 + IPv4 20 + TCP 32 with timestamps).
        assert_eq!(exact.tx_bytes, captured + (a_segs - buffers) * 66);
    }
}

privileged_test! {
    /// Tagged traffic over the bridge: live, TC reads the outer tag from socket-buffer metadata and
    /// must add its 4 bytes; tcpdump shows the tag, so the lengths must match exactly. The frames are
    /// sent raw (AF_PACKET) so the test needs no 8021q module.
    fn vlan_tagged_traffic_counts_the_tag() {
        let dir = temp_dir("iotwatch-bridge-iwt5");
        let lab = quiet_lab("iwt5", 2);
        lab.set_offloads(false).expect("offloads off");
        let (a, b) = (&lab.devices[0], &lab.devices[1]);
        let mut agent = start_agent(&lab, &dir, "tc", 19475, &[]);
        let dump = Tcpdump::start(&a.port, "in", dir.join("a.pcap"));
        // 6 frames with one 802.1Q tag (54 bytes), 6 with an 802.1ad tag over an 802.1Q tag (QinQ,
        // 58 bytes), each an IPv4/UDP datagram from A to B (veth does not pad short frames).
        let send = format!(
            r#"import socket, struct
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
dst, src = bytes.fromhex("{}"), bytes.fromhex("{}")
ip = bytes([0x45,0,0,36, 0,1,0,0, 64,17,0,0, 192,168,77,11, 192,168,77,12])
udp = struct.pack("!HHHH", 40000, 7, 16, 0) + b"tagged!!"
for i in range(6):
    s.send(dst + src + b"\x81\x00" + struct.pack("!H", 10) + b"\x08\x00" + ip + udp)
    s.send(dst + src + b"\x88\xa8" + struct.pack("!H", 100) + b"\x81\x00" + struct.pack("!H", 10) + b"\x08\x00" + ip + udp)
"#,
            b.mac.replace(':', ""),
            a.mac.replace(':', "")
        );
        ns(&lab, &a.ns, &["/usr/bin/python3", "-c", &send]);
        std::thread::sleep(Duration::from_millis(500));
        let frames = dump.finish();
        let samples = scrape(&agent.listen).expect("scrape");
        agent.stop().expect("stop");
        let single = frames.iter().filter(|f| f.data[12..14] == [0x81, 0x00]).count();
        let qinq = frames.iter().filter(|f| f.data[12..14] == [0x88, 0xa8]).count();
        assert_eq!((single, qinq, frames.len()), (6, 6, 12), "tcpdump shows every frame with its tags");
        let len_of = |tpid: [u8; 2]| frames.iter().filter(|f| f.data[12..14] == tpid).map(|f| f.orig_len).max();
        assert_eq!((len_of([0x81, 0x00]), len_of([0x88, 0xa8])), (Some(54), Some(58)), "lengths include the tags");
        for (mac, counts) in reference(&frames) {
            assert_eq!(exported(&samples, &mac).0, counts, "tagged counts of {mac}");
        }
        assert_eq!(sum(&samples, "iotwatch_bpf_events_total", &[("event", "vlan")]), 12);
        assert_eq!(sum(&samples, "iotwatch_bpf_events_total", &[("event", "vlan_stacked")]), 6);
        assert_eq!(
            sum(&samples, "iotwatch_device_port_packets_total", &[("mac", &a.mac), ("proto", "udp"), ("port", "7")]),
            12,
            "ports read behind the tags"
        );
    }
}

fn attached(samples: &[Sample]) -> Vec<(String, String)> {
    let mut v: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "iotwatch_attached_interfaces" && s.value == 1.0)
        .map(|s| (s.label("interface").unwrap_or("").to_owned(), s.label("hook").unwrap_or("").to_owned()))
        .collect();
    v.sort();
    v
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

privileged_test! {
    fn ports_joining_and_leaving_are_followed() {
        let dir = temp_dir("iotwatch-bridge-iwt6");
        let mut lab = quiet_lab("iwt6", 1);
        let mut agent = start_agent(&lab, &dir, "tc", 19476, &["--bpf.poll-interval", "1"]);
        let first = lab.devices[0].clone();
        let initial = attached(&scrape(&agent.listen).expect("scrape"));
        assert!(initial.contains(&(first.port.clone(), "tc_ingress".into())), "{initial:?}");
        assert!(initial.contains(&(lab.bridge.clone(), "tc_egress".into())), "{initial:?}");

        let new = lab.add_device().expect("add a device").clone();
        wait_for("the new port to be attached", Duration::from_secs(10), || {
            attached(&scrape(&agent.listen).expect("scrape")).contains(&(new.port.clone(), "tc_ingress".into()))
        });
        ns(&lab, &new.ns, &["ping", "-c", "3", "-i", "0.2", &first.ip.to_string()]);
        let samples = scrape(&agent.listen).expect("scrape");
        assert_eq!(exported(&samples, &new.mac).0.tx_packets, 3, "the new device's pings were counted");

        lab.remove_device(new.index).expect("remove the device");
        wait_for("the removed port to be forgotten", Duration::from_secs(10), || {
            !attached(&scrape(&agent.listen).expect("scrape")).iter().any(|(i, _)| *i == new.port)
        });
        agent.check_alive().expect("the agent survives a port going away");
        agent.stop().expect("stop");
    }
}

privileged_test! {
    /// Another user's tcx program that ends the chain (returns TC_ACT_OK), attached before the
    /// agent starts: the agent attaches first, so it still sees every frame, and the other one
    /// still runs after it.
    fn a_program_ending_the_tcx_chain_does_not_hide_frames() {
        let dir = temp_dir("iotwatch-bridge-iwt9");
        let lab = quiet_lab("iwt9", 2);
        lab.set_offloads(false).expect("offloads off");
        let (a, b) = (&lab.devices[0], &lab.devices[1]);
        let mut other = iotwatch::kernel::bench::load_baselines().expect("the baseline programs");
        let tc: &mut aya::programs::SchedClassifier =
            iotwatch::kernel::load::program(&mut other, "bare_tc").expect("bare_tc");
        let _link = tc.attach(&a.port, aya::programs::TcAttachType::Ingress).expect("attach bare_tc to a's port");
        let mut agent = start_agent(&lab, &dir, "tc", 19480, &[]);
        ns(&lab, &a.ns, &["ping", "-c", "10", "-i", "0.1", &b.ip.to_string()]);
        let samples = scrape(&agent.listen).expect("scrape");
        agent.stop().expect("agent stops cleanly");
        assert_eq!(exported(&samples, &a.mac).0.tx_packets, 10, "a's 10 echo requests, seen past the other program");
        assert_eq!(exported(&samples, &b.mac).0.tx_packets, 10, "b's 10 replies");
    }
}

privileged_test! {
    /// A port deleted and created again under the same name (a VM or container restart, a driver
    /// reload, hostapd restarting wlan0) has lost its program: the agent attaches it again, on
    /// the kernel's link notification (the poll interval is a minute here), and counts exactly.
    fn a_port_that_comes_back_is_attached_again() {
        let dir = temp_dir("iotwatch-bridge-iwt10");
        let lab = quiet_lab("iwt10", 2);
        lab.set_offloads(false).expect("offloads off");
        let (a, b) = (&lab.devices[0], &lab.devices[1]);
        let mut agent = start_agent(&lab, &dir, "tc", 19481, &["--bpf.poll-interval", "60"]);
        // b's port goes away and comes back under the same name, with b's MAC and address.
        root(&["ip", "link", "del", &b.port]);
        let (port, mac) = (b.port.as_str(), b.mac.as_str());
        root(&["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", &b.ns]);
        xtask::netns::sysctl(None, &format!("net.ipv6.conf.{}.disable_ipv6", b.port), "1").expect("IPv6 off");
        root(&["ip", "link", "set", &b.port, "master", &lab.bridge, "up"]);
        ns(&lab, &b.ns, &["ip", "addr", "add", &format!("{}/24", b.ip), "dev", "eth0"]);
        ns(&lab, &b.ns, &["ip", "link", "set", "eth0", "up"]);
        let a_ip = a.ip.to_string();
        ns(&lab, &b.ns, &["ip", "neigh", "replace", &a_ip, "lladdr", &a.mac, "dev", "eth0", "nud", "permanent"]);
        wait_for("b's port to be attached again", Duration::from_secs(5), || {
            attached(&scrape(&agent.listen).expect("scrape")).contains(&(b.port.clone(), "tc_ingress".into()))
        });
        // Interfaces coming up send IGMP reports for a second or two; then only b's datagrams.
        std::thread::sleep(Duration::from_secs(3));
        let before = exported(&scrape(&agent.listen).expect("scrape"), &b.mac).0.tx_packets;
        let send = format!(
            "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for i in range(10): s.sendto(b'x', ('{a_ip}', 5000))"
        );
        ns(&lab, &b.ns, &["/usr/bin/python3", "-c", &send]);
        std::thread::sleep(Duration::from_millis(500));
        let after = exported(&scrape(&agent.listen).expect("scrape"), &b.mac).0.tx_packets;
        agent.stop().expect("agent stops cleanly");
        assert_eq!(after - before, 10, "b's 10 datagrams through its port that came back");
    }
}

/// Programs attached to the lab's interfaces, as the kernel reports them: tcx programs on
/// ingress and egress (bpftool 7.1 cannot map tcx links to interfaces) plus XDP programs.
fn lab_links(lab: &HomeLab) -> usize {
    let mut n = 0;
    for iface in std::iter::once(&lab.bridge).chain(lab.devices.iter().map(|d| &d.port)).chain([&lab.gateway.port]) {
        for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
            n += SchedClassifier::query_tcx(iface, attach_type).map(|(_, progs)| progs.len()).unwrap_or(0);
        }
        if root(&["ip", "-d", "-j", "link", "show", "dev", iface]).contains("\"xdp\"") {
            n += 1;
        }
    }
    n
}

privileged_test! {
    fn killed_agent_leaves_nothing_attached_and_restarts() {
        let dir = temp_dir("iotwatch-bridge-iwt7");
        let lab = quiet_lab("iwt7", 2);
        lab.set_offloads(false).expect("offloads off (xdp-skb refuses ports that receive aggregates)");
        assert_eq!(lab_links(&lab), 0);
        for attach in ["tc", "xdp-skb"] {
            let mut agent = start_agent(&lab, &dir, attach, 19477, &[]);
            assert_eq!(lab_links(&lab), 4, "{attach}: bridge egress + 3 ports");
            // SIGKILL: no chance to detach; the links die with the process's file descriptors.
            let pid = root(&["pgrep", "-f", "iotwatch run --bridge iwt7br"]);
            for p in pid.split_whitespace() {
                root(&["kill", "-9", p]);
            }
            wait_for("the links to go", Duration::from_secs(10), || lab_links(&lab) == 0);
            assert!(agent.stop().is_err(), "the agent was killed, not stopped");
            let mut again = start_agent(&lab, &dir, attach, 19477, &[]);
            assert_eq!(lab_links(&lab), 4, "{attach}: restarted agent attaches again");
            again.stop().expect("SIGINT stops it");
            assert_eq!(lab_links(&lab), 0, "{attach}: SIGINT detaches everything");
        }
    }
}

privileged_test! {
    fn refuses_a_port_held_by_another_xdp_program_and_names_the_way_out() {
        let dir = temp_dir("iotwatch-bridge-iwt8");
        let lab = quiet_lab("iwt8", 1);
        lab.set_offloads(false).expect("offloads off (xdp-skb refuses ports that receive aggregates)");
        let mut first = start_agent(&lab, &dir, "xdp-skb", 19478, &[]);
        let out = Command::new(agent_bin())
            .args(["run", "--bridge", &lab.bridge, "--attach", "xdp-skb", "--web.listen-address", "127.0.0.1:19479"])
            .output()
            .expect("second agent");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("already has an XDP program") && err.contains("--attach tc"), "{err}");
        // The advice works: TC coexists with the first agent's XDP.
        let mut second = start_agent(&lab, &dir, "tc", 19479, &[]);
        second.stop().expect("stop");
        first.stop().expect("stop");
        assert_eq!(lab_links(&lab), 0);

        let out = Command::new(agent_bin()).args(["run", "--bridge", "iwt8nope"]).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("iwt8nope is not a bridge") && err.contains("iwt8br"), "{err}");
    }
}

/// A network interface the test made outside the lab, deleted when the test ends (also on panic).
struct Link(&'static str);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).status();
    }
}

privileged_test! {
    /// One port that cannot take the program does not stop the others: a device without native
    /// XDP (dummy or VXLAN) joins a bridge of veth ports under `--attach xdp`. The agent starts,
    /// attaches every veth port and counts their traffic, logs the dummy's reason once (not on
    /// every retry), and exports it as `iotwatch_attach_failed_interfaces`; once the dummy
    /// leaves the bridge, the series goes.
    fn a_port_that_fails_to_attach_leaves_the_others_counted() {
        let dir = temp_dir("iotwatch-bridge-iwt14");
        let lab = quiet_lab("iwt14", 2);
        lab.set_offloads(false).expect("offloads off");
        // A dummy device where the kernel has them, a VXLAN device otherwise: neither driver has
        // native XDP, and both are Ethernet devices a bridge takes as ports.
        let dummy = Link("iwt14nx");
        let made = Command::new("ip")
            .args(["link", "add", dummy.0, "type", "dummy"])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("ip");
        if !made.success() {
            root(&["ip", "link", "add", dummy.0, "type", "vxlan", "id", "42", "dstport", "4789"]);
        }
        root(&["ip", "link", "set", dummy.0, "master", &lab.bridge, "up"]);
        let mut agent = start_agent(&lab, &dir, "xdp", 19485, &["--bpf.poll-interval", "1"]);
        let (a, b) = (&lab.devices[0], &lab.devices[1]);
        ns(&lab, &a.ns, &["ping", "-c", "4", "-i", "0.2", &b.ip.to_string()]);
        // A few polls, each trying the dummy again.
        std::thread::sleep(Duration::from_secs(3));
        let samples = scrape(&agent.listen).expect("scrape");
        let hooks = attached(&samples);
        for port in [&a.port, &b.port, &lab.gateway.port] {
            assert!(hooks.contains(&(port.clone(), "xdp".into())), "{port} attached: {hooks:?}");
        }
        assert!(hooks.contains(&(lab.bridge.clone(), "tc_egress".into())), "{hooks:?}");
        assert!(!hooks.iter().any(|(i, _)| i == dummy.0), "{hooks:?}");
        let failed = |s: &[Sample]| sum(s, "iotwatch_attach_failed_interfaces", &[("interface", dummy.0)]);
        assert_eq!(sum(&samples, "iotwatch_attach_failed_interfaces", &[("interface", dummy.0), ("reason", "no_native_xdp")]), 1);
        assert_eq!(sum(&samples, "iotwatch_attach_failed_interfaces", &[]), 1, "only the dummy");
        let (exact, _) = exported(&samples, &a.mac);
        assert!(exact.tx_packets >= 4 && exact.rx_packets >= 4, "a's pings counted: {exact:?}");
        let log = std::fs::read_to_string(dir.join("agent-19485.log")).expect("agent log");
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains(&format!("the driver of port {} has no native XDP", dummy.0))).collect();
        assert_eq!(lines.len(), 1, "logged once, not on every retry:\n{log}");
        assert!(lines[0].contains("the other ports are still counted") && lines[0].contains("--attach tc"), "{}", lines[0]);

        root(&["ip", "link", "set", dummy.0, "nomaster"]);
        wait_for("the dummy's series to go", Duration::from_secs(10), || failed(&scrape(&agent.listen).expect("scrape")) == 0);
        agent.check_alive().expect("the agent runs on");
        agent.stop().expect("stop");
    }
}

/// `iotwatch run` that is expected to exit by itself: its exit status (None if it was still
/// running after `timeout`, then killed) and its stderr.
fn run_expecting_exit(args: &[&str], timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
    let mut child = Command::new(agent_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the agent");
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > end {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("read stderr");
    (status, err)
}

/// The command in a refusal's "switch the offload off: `...`".
fn suggested_fix(line: &str) -> Vec<String> {
    let (_, rest) = line.split_once("switch the offload off: `").unwrap_or_else(|| panic!("no fix in: {line}"));
    rest.split('`').next().unwrap_or("").split_whitespace().map(str::to_owned).collect()
}

/// A 4 MB TCP transfer from `a` to `b`: the segments each side's TCP put on the wire.
fn tcp_transfer(lab: &HomeLab, a: &xtask::lab::LabDevice, b: &xtask::lab::LabDevice, port: u16) -> (u64, u64) {
    let server = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
         s.bind(('{}', {port})); s.listen(1)\nc,_=s.accept()\nn=0\nwhile True:\n  d=c.recv(65536)\n  \
         if not d: break\n  n+=len(d)\nc.close(); print(n)",
        b.ip
    );
    let srv = lab
        .exec(&b.ns, &["timeout", "30", "/usr/bin/python3", "-c", &server])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("server");
    std::thread::sleep(Duration::from_millis(500));
    let before = (snmp_tcp_out_segs(lab, &a.ns), snmp_tcp_out_segs(lab, &b.ns));
    let client =
        format!("import socket\nc=socket.create_connection(('{}', {port}))\nc.sendall(b'z'*4000000)\nc.close()", b.ip);
    ns(lab, &a.ns, &["timeout", "30", "/usr/bin/python3", "-c", &client]);
    let out = srv.wait_with_output().expect("server done");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4000000");
    std::thread::sleep(Duration::from_millis(500));
    (snmp_tcp_out_segs(lab, &a.ns) - before.0, snmp_tcp_out_segs(lab, &b.ns) - before.1)
}

privileged_test! {
    /// Generic XDP runs after GRO, once per aggregate, with no segment count: measured with
    /// offloads on, a 4 MB transfer of 2,770 segments counted as 78 frames. So `--attach xdp-skb`
    /// refuses a port whose own GRO is on, or whose veth peer (in another namespace) has
    /// segmentation offload on, naming the offload, why and what to use (every port in one run;
    /// with all of them refused the agent stops); each command it suggests works, and once they
    /// have run the mode counts every wire frame of the same transfer.
    fn xdp_skb_refuses_ports_that_receive_aggregates_and_the_fix_works() {
        let dir = temp_dir("iotwatch-bridge-iwt11");
        let lab = quiet_lab("iwt11", 2);
        lab.set_offloads(true).expect("offloads on");
        let args = ["run", "--bridge", &lab.bridge, "--attach", "xdp-skb", "--web.listen-address", "127.0.0.1:19482"];
        let mut fixes = Vec::new();
        let mut seen = (false, false);
        // Every port is refused, so the agent stops, having said why for each: first their own
        // GRO (a line per port), then each veth peer's segmentation (a line per peer).
        for _ in 0..2 {
            let (status, err) = run_expecting_exit(&args, Duration::from_secs(20));
            let Some(status) = status else { panic!("the agent attached with offloads on:\n{err}") };
            assert!(!status.success(), "exit status {status}:\n{err}");
            let refusals: Vec<&str> = err
                .lines()
                .filter(|l| l.contains("refused for `--attach xdp-skb`") && !l.starts_with("iotwatch:"))
                .collect();
            assert!(!refusals.is_empty(), "{err}");
            assert!(err.contains("iotwatch: no port of bridge"), "the reason it stops: {err}");
            for line in refusals {
                assert!(line.contains("generic XDP sees each once, without its segment count"), "why: {line}");
                assert!(line.contains("use `--attach tc`"), "what to use: {line}");
                if line.contains("receive offload rx-gro is on") {
                    // The port's own GRO: a line naming it and its command.
                    seen.0 = true;
                    let port = lab.devices.iter().map(|d| &d.port).chain([&lab.gateway.port]).find(|p| line.contains(&format!("port {p} ")));
                    let port = port.unwrap_or_else(|| panic!("names a lab port: {line}"));
                    assert_eq!(suggested_fix(line), ["ethtool", "-K", port, "gro", "off"]);
                    root(&["ethtool", "-K", port, "gro", "off"]);
                } else {
                    assert!(line.contains("has segmentation offload on (") && line.contains("tx-tcp-segmentation"), "TSO: {line}");
                    seen.1 = true;
                    let fix = suggested_fix(line);
                    assert_eq!(fix[..3], ["ip", "netns", "exec"], "{line}");
                    assert!(line.contains(&format!("its veth peer eth0 in network namespace {} ", fix[3])), "{line}");
                    let fix: Vec<&str> = fix.iter().map(String::as_str).collect();
                    root(&fix);
                    fixes.push(fix.join(" "));
                }
            }
        }
        assert_eq!(fixes.len(), 3, "one fix per peer: {fixes:?}");
        assert_eq!(seen, (true, true), "refused for the port's GRO, then for each peer's segmentation");
        // Every port fixed: the agent attaches and counts the transfer's wire frames exactly.
        let (a, b) = (&lab.devices[0], &lab.devices[1]);
        let mut agent = start_agent(&lab, &dir, "xdp-skb", 19482, &[]);
        let dump = Tcpdump::start(&a.port, "in", dir.join("a.pcap"));
        let (a_segs, b_segs) = tcp_transfer(&lab, a, b, 5201);
        let frames = dump.finish();
        let samples = scrape(&agent.listen).expect("scrape");
        agent.stop().expect("stop");
        let (exact, _) = exported(&samples, &a.mac);
        eprintln!("segments {a_segs}/{b_segs}, frames on a's port {}, counted {exact:?}", frames.len());
        assert_eq!((exact.tx_packets, exact.rx_packets), (a_segs, b_segs), "every segment counted");
        assert_eq!(exact.tx_packets, frames.len() as u64, "one buffer per wire frame on a's port");
        assert_eq!(exact.tx_bytes, frames.iter().map(|f| u64::from(f.orig_len)).sum::<u64>());
    }
}

privileged_test! {
    /// A port that joins while the agent runs in xdp-skb mode gets the same check: with its veth
    /// peer's TSO on it is refused (logged once, exported as iotwatch_refused_interfaces) and the
    /// other ports keep counting; once the suggested command has run, it is attached.
    fn xdp_skb_refuses_a_joining_port_and_keeps_counting_the_others() {
        let dir = temp_dir("iotwatch-bridge-iwt12");
        let mut lab = quiet_lab("iwt12", 1);
        lab.set_offloads(false).expect("offloads off");
        let mut agent = start_agent(&lab, &dir, "xdp-skb", 19483, &["--bpf.poll-interval", "1"]);
        let first = lab.devices[0].clone();
        let new = lab.add_device().expect("add a device").clone();
        let refused = |s: &[Sample]| sum(s, "iotwatch_refused_interfaces", &[("interface", &new.port)]);
        wait_for("the new port to be refused", Duration::from_secs(10), || {
            refused(&scrape(&agent.listen).expect("scrape")) == 1
        });
        let samples = scrape(&agent.listen).expect("scrape");
        assert!(!attached(&samples).iter().any(|(i, _)| *i == new.port), "{:?}", attached(&samples));
        assert!(attached(&samples).contains(&(first.port.clone(), "xdp".into())));
        // The others keep counting: the first device's pings to the gateway.
        let before = exported(&samples, &first.mac).0.tx_packets;
        ns(&lab, &first.ns, &["ping", "-c", "3", "-i", "0.2", &lab.gateway.ip.to_string()]);
        let after = exported(&scrape(&agent.listen).expect("scrape"), &first.mac).0.tx_packets;
        assert_eq!(after - before, 3, "the first device's pings");
        agent.check_alive().expect("the agent runs on");
        std::thread::sleep(Duration::from_secs(2));
        let log = std::fs::read_to_string(dir.join("agent-19483.log")).expect("agent log");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&format!("port {} refused", new.port))).collect();
        assert_eq!(lines.len(), 1, "logged once, not on every poll:\n{log}");
        assert!(lines[0].contains("the other ports are still counted"), "{}", lines[0]);
        let fix = suggested_fix(lines[0]);
        assert_eq!(fix[..4], ["ip", "netns", "exec", new.ns.as_str()], "{}", lines[0]);
        root(&fix.iter().map(String::as_str).collect::<Vec<_>>());
        wait_for("the fixed port to be attached", Duration::from_secs(10), || {
            let s = scrape(&agent.listen).expect("scrape");
            attached(&s).contains(&(new.port.clone(), "xdp".into())) && refused(&s) == 0
        });
        std::thread::sleep(Duration::from_secs(1));
        let before = exported(&scrape(&agent.listen).expect("scrape"), &new.mac).0.tx_packets;
        ns(&lab, &new.ns, &["ping", "-c", "3", "-i", "0.2", &first.ip.to_string()]);
        let after = exported(&scrape(&agent.listen).expect("scrape"), &new.mac).0.tx_packets;
        agent.stop().expect("stop");
        assert_eq!(after - before, 3, "the new device's pings, once its port is attached");
    }
}

privileged_test! {
    /// Where the agent cannot read a veth peer's offloads (here: without CAP_SYS_ADMIN it cannot
    /// enter the peer's namespace), xdp-skb attaches with a warning, and the XDP program counts
    /// the buffers longer than the port's MTU allows (`xdp_oversized`): the TSO aggregates it
    /// counts as one frame each. The agent logs that the counts are short and to use tc.
    fn xdp_skb_counts_oversized_buffers_it_could_not_refuse() {
        let dir = temp_dir("iotwatch-bridge-iwt13");
        let lab = quiet_lab("iwt13", 2);
        lab.set_offloads(true).expect("offloads on");
        for p in lab.devices.iter().map(|d| &d.port).chain([&lab.gateway.port]) {
            root(&["ethtool", "-K", p, "gro", "off"]);
        }
        let wrapper = dir.join("iotwatch-without-sys-admin");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin {} \"$@\"\n", agent_bin().display()),
        )
        .expect("write the wrapper");
        root(&["chmod", "+x", &wrapper.to_string_lossy()]);
        let log = dir.join("agent.log");
        let mut agent = Agent::spawn(&wrapper, &lab.bridge, "xdp-skb", "127.0.0.1:19484", &[], Some(&log)).expect("spawn");
        agent.wait_ready(Duration::from_secs(20)).expect("the agent attaches despite the unreadable peers");
        let (a, b) = (&lab.devices[0], &lab.devices[1]);
        let dump = Tcpdump::start(&a.port, "in", dir.join("a.pcap"));
        let (a_segs, _) = tcp_transfer(&lab, a, b, 5201);
        let frames = dump.finish();
        std::thread::sleep(Duration::from_millis(500));
        let samples = scrape(&agent.listen).expect("scrape");
        std::thread::sleep(Duration::from_millis(500));
        agent.stop().expect("stop");
        let log = std::fs::read_to_string(&log).expect("agent log");
        // Longer than MTU 1500 + Ethernet header + the room for four VLAN tags the check leaves.
        let long = frames.iter().filter(|f| f.orig_len > 1500 + 14 + 16).count() as u64;
        let oversized = sum(&samples, "iotwatch_bpf_events_total", &[("event", "xdp_oversized")]);
        let (exact, _) = exported(&samples, &a.mac);
        eprintln!("segments {a_segs}, buffers {} ({long} oversized), counted {}, xdp_oversized {oversized}", frames.len(), exact.tx_packets);
        assert!(long > 0 && exact.tx_packets < a_segs, "aggregates reached the port: {long} long buffers");
        assert_eq!(oversized, long, "every buffer longer than the MTU allows is counted as such");
        assert!(log.contains("cannot enter other network namespaces to read its veth peer's offloads"), "{log}");
        let warned = log.lines().find(|l| l.contains("longer than their port's MTU allows")).unwrap_or_else(|| panic!("{log}"));
        assert!(warned.contains("use `--attach tc`") && warned.contains("xdp_oversized"), "{warned}");
    }
}

#!/usr/bin/python3
"""Writes the replay tests' captures into OUTDIR: `make_captures.py OUTDIR`.

Deterministic: fixed seeds and fixed timestamps, so a run writes the same bytes every time.
Made at test time (tests/tests/replay.rs), never committed. Packets are built with scapy; the
files are written here with `struct` so that every format detail is under control (byte
order, nanosecond magic, snapshot length, pcapng interfaces with their own if_tsresol).

Addresses (shared/design.md, "Test hosts and addresses"): LAN 192.168.77.0/24, fd77::/64 and
fe80::; Internet hosts from 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 198.18.0.0/15 and
2001:db8::/32 only.

Besides the captures it writes `malformed.txt`: one line per malformed file,
`FILE OFFSET CLEAN` where OFFSET is the byte offset of the first invalid record or block and
CLEAN is a well-formed capture holding exactly the frames a reader must still deliver (or `-`).
"""

import os
import random
import struct
import sys

from scapy.config import conf

conf.verb = 0
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, ICMPv6EchoRequest,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether  # noqa: E402
from scapy.layers.ppp import PPP, PPPoE  # noqa: E402
from scapy.packet import Raw  # noqa: E402

# ---- hosts ----
ROUTER = ("02:77:00:00:00:01", "192.168.77.1", "fd77::1")
CAMERA = ("80:9f:9b:45:a3:28", "192.168.77.23", "fd77::23")  # like the talk's camera
PLUG = ("50:c7:bf:1a:2b:3c", "192.168.77.10", "fd77::10")
TV = ("02:77:00:00:00:11", "192.168.77.11", "fd77::11")
PHONE = ("02:77:00:00:00:12", "192.168.77.12", "fd77::12")
PI = ("b8:27:eb:12:34:56", "192.168.77.30", "fd77::30")
BCAST = "ff:ff:ff:ff:ff:ff"
LL_CAMERA = "fe80::829f:9bff:fe45:a328"

BASE = 1_700_000_000  # 2023-11-14


def eth(src, dst, **kw):
    return Ether(src=src[0] if isinstance(src, tuple) else src, dst=dst[0] if isinstance(dst, tuple) else dst, **kw)


class Frames:
    """Frames with timestamps in ns; the clock moves forward by a fixed step unless told."""

    def __init__(self, start_s, step_ns=1_250_000):
        self.t = start_s * 1_000_000_000 + 123_456_000
        self.step = step_ns
        self.items = []  # (ts_ns, bytes, orig_len)

    def add(self, pkt, ts_ns=None, orig_len=None):
        data = bytes(pkt)
        if ts_ns is None:
            self.t += self.step
            ts_ns = self.t
        self.items.append((ts_ns, data, orig_len if orig_len is not None else len(data)))


# ---- writers ----

def pcap_bytes(frames, linktype=1, snaplen=262144, nsec=False, be=False):
    e = ">" if be else "<"
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = bytearray(struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    for ts, data, orig in frames:
        data = data[:snaplen]
        sec, ns = divmod(ts, 1_000_000_000)
        frac = ns if nsec else ns // 1000
        out += struct.pack(e + "IIII", sec, frac, len(data), max(orig, len(data))) + data
    return bytes(out)


def pad4(b):
    return b + b"\0" * (-len(b) % 4)


def ng_block(btype, body):
    body = pad4(body)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def ng_opts(opts):
    out = b""
    for code, val in opts:
        out += struct.pack("<HH", code, len(val)) + pad4(val)
    return out + struct.pack("<HH", 0, 0) if opts else b""


def ng_shb():
    return ng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def ng_idb(linktype, snaplen, opts):
    return ng_block(1, struct.pack("<HHI", linktype, 0, snaplen) + ng_opts(opts))


def ng_epb(if_id, ticks, data, orig):
    return ng_block(6, struct.pack("<IIIII", if_id, ticks >> 32, ticks & 0xFFFFFFFF, len(data), orig) + pad4(data))


def write(outdir, name, content):
    with open(os.path.join(outdir, name), "wb") as f:
        f.write(content)


# ---- frame builders ----

def tcp_flow(f, a, b, sport, dport, payloads, rng, v6=False, via=None):
    """A short TCP exchange a -> b (handshake, payloads both ways, FIN). `via` is the MAC of the
    router when b is on the Internet (then b is (ip,) only)."""
    amac, bmac = a[0], (via or b[0])
    aip, bip = (a[2], b[2]) if v6 else (a[1], b[1])
    L3 = IPv6 if v6 else IP

    def pkt(fwd, flags, load=b""):
        if fwd:
            p = Ether(src=amac, dst=bmac) / L3(src=aip, dst=bip) / TCP(sport=sport, dport=dport, flags=flags, seq=rng.randrange(1 << 32))
        else:
            p = Ether(src=bmac, dst=amac) / L3(src=bip, dst=aip) / TCP(sport=dport, dport=sport, flags=flags, seq=rng.randrange(1 << 32))
        return p / Raw(load) if load else p

    f.add(pkt(True, "S"))
    f.add(pkt(False, "SA"))
    f.add(pkt(True, "A"))
    for fwd, load in payloads:
        f.add(pkt(fwd, "PA", load))
        f.add(pkt(not fwd, "A"))
    f.add(pkt(True, "FA"))
    f.add(pkt(False, "FA"))
    f.add(pkt(True, "A"))


def client_hello(sni):
    name = sni.encode()
    sni_ext = struct.pack(">HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + struct.pack(">H", 2) + b"\x13\x01" + b"\x01\x00"
    body += struct.pack(">H", len(sni_ext)) + sni_ext
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


def ntp_client():
    return bytes([0x23]) + bytes(47)


def ntp_server():
    return bytes([0x24, 2, 6, 0xEC]) + bytes(44)


def dns_query(name, qid):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q


def iot_lan(rng):
    f = Frames(BASE)
    inet_mac = ROUTER[0]
    # ARP
    f.add(eth(CAMERA, BCAST) / ARP(op=1, hwsrc=CAMERA[0], psrc=CAMERA[1], pdst=ROUTER[1]))
    f.add(eth(ROUTER, CAMERA) / ARP(op=2, hwsrc=ROUTER[0], psrc=ROUTER[1], hwdst=CAMERA[0], pdst=CAMERA[1]))
    # DHCP-like broadcast
    f.add(eth(CAMERA, BCAST) / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) / Raw(b"\x01\x01\x06\x00" + bytes(236) + b"\x63\x82\x53\x63\x35\x01\x01\xff"))
    f.add(eth(ROUTER, BCAST) / IP(src=ROUTER[1], dst="255.255.255.255") / UDP(sport=67, dport=68) / Raw(b"\x02\x01\x06\x00" + bytes(236) + b"\x63\x82\x53\x63\x35\x01\x02\xff"))
    # mDNS, IPv4 and IPv6 multicast
    mdns = struct.pack(">HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\x04cam1\x05local\x00" + struct.pack(">HHIH", 1, 0x8001, 120, 4) + bytes([192, 168, 77, 23])
    f.add(eth(CAMERA, "01:00:5e:00:00:fb") / IP(src=CAMERA[1], dst="224.0.0.251", ttl=255) / UDP(sport=5353, dport=5353) / Raw(mdns))
    f.add(eth(CAMERA, "33:33:00:00:00:fb") / IPv6(src=LL_CAMERA, dst="ff02::fb", hlim=255) / UDP(sport=5353, dport=5353) / Raw(mdns))
    f.add(eth(TV, "01:00:5e:00:00:fb") / IP(src=TV[1], dst="224.0.0.251", ttl=255) / UDP(sport=5353, dport=5353) / Raw(dns_query("_googlecast._tcp.local", 0)))
    # SSDP M-SEARCH and a unicast reply from port 3075
    msearch = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: ssdp:all\r\n\r\n"
    f.add(eth(PHONE, "01:00:5e:7f:ff:fa") / IP(src=PHONE[1], dst="239.255.255.250", ttl=2) / UDP(sport=50123, dport=1900) / Raw(msearch))
    reply = b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://192.168.77.23:8815/desc.xml\r\nUSN: uuid:cam1::upnp:rootdevice\r\n\r\n"
    f.add(eth(CAMERA, PHONE) / IP(src=CAMERA[1], dst=PHONE[1]) / UDP(sport=3075, dport=50123) / Raw(reply))
    # HTTP on 8815 (phone -> camera)
    tcp_flow(f, PHONE, CAMERA, 41000 + rng.randrange(1000), 8815,
             [(True, b"GET /desc.xml HTTP/1.1\r\nHost: 192.168.77.23:8815\r\n\r\n"),
              (False, b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 20\r\n\r\n" + b"<root>" + bytes(rng.randrange(256) for _ in range(14)))], rng)
    # TLS to 443 on the Internet, IPv4 and IPv6
    tcp_flow(f, CAMERA, (None, "203.0.113.10", "2001:db8::10"), 49152 + rng.randrange(1000), 443,
             [(True, client_hello("cloud.example.com")), (False, bytes(rng.randrange(256) for _ in range(900)))], rng, via=inet_mac)
    tcp_flow(f, PLUG, (None, "198.18.4.7", "2001:db8:4::7"), 49152 + rng.randrange(1000), 443,
             [(True, client_hello("plug.example.net"))], rng, v6=True, via=inet_mac)
    # NTP to several servers
    for server in ["198.51.100.1", "198.51.100.2", "192.0.2.123", "203.0.113.123"]:
        sport = 30000 + rng.randrange(30000)
        f.add(eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst=server) / UDP(sport=sport, dport=123) / Raw(ntp_client()))
        f.add(eth(ROUTER, CAMERA) / IP(src=server, dst=CAMERA[1]) / UDP(sport=123, dport=sport) / Raw(ntp_server()))
    f.add(eth(PLUG, ROUTER) / IP(src=PLUG[1], dst="198.51.100.1") / UDP(sport=123, dport=123) / Raw(ntp_client()))
    # DNS
    for qid, name in [(0x1111, "cloud.example.com"), (0x2222, "time.example.org")]:
        f.add(eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst=ROUTER[1]) / UDP(sport=40000 + qid % 1000, dport=53) / Raw(dns_query(name, qid)))
        f.add(eth(ROUTER, CAMERA) / IP(src=ROUTER[1], dst=CAMERA[1]) / UDP(sport=53, dport=40000 + qid % 1000) / Raw(dns_query(name, qid)))
    # ICMP echo, and a port unreachable quoting a UDP header (inner port 9999 is not a port of the outer packet)
    f.add(eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst="192.0.2.1") / ICMP(type=8, id=7, seq=1) / Raw(b"ping" * 8))
    f.add(eth(ROUTER, CAMERA) / IP(src="192.0.2.1", dst=CAMERA[1]) / ICMP(type=0, id=7, seq=1) / Raw(b"ping" * 8))
    inner = IP(src=CAMERA[1], dst=PI[1]) / UDP(sport=5555, dport=9999) / Raw(b"hello")
    f.add(eth(PI, CAMERA) / IP(src=PI[1], dst=CAMERA[1]) / ICMP(type=3, code=3) / inner)
    f.add(eth(PI, CAMERA) / IPv6(src=PI[2], dst=CAMERA[2]) / ICMPv6EchoRequest(id=1, seq=1))
    # Neighbours talking on the LAN, some noise of random sizes
    for i in range(20):
        a, b = rng.sample([CAMERA, PLUG, TV, PHONE, PI], 2)
        size = rng.randrange(0, 1200)
        f.add(eth(a, b) / IP(src=a[1], dst=b[1]) / UDP(sport=rng.randrange(1024, 65535), dport=rng.choice([1883, 8883, 5683, 9999])) / Raw(bytes(size)))
    # Non-IP: an LLDP frame and an unknown ethertype
    f.add(Ether(src=ROUTER[0], dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(bytes(40)))
    f.add(Ether(src=PI[0], dst=TV[0], type=0x88B5) / Raw(bytes(50)))
    return f.items


def vlan(rng):
    f = Frames(BASE + 3600)
    # 802.1Q
    f.add(Ether(src=CAMERA[0], dst=ROUTER[0]) / Dot1Q(vlan=10) / IP(src=CAMERA[1], dst="198.51.100.5") / UDP(sport=1234, dport=123) / Raw(ntp_client()))
    f.add(Ether(src=ROUTER[0], dst=CAMERA[0]) / Dot1Q(vlan=10, prio=5) / IP(src="198.51.100.5", dst=CAMERA[1]) / UDP(sport=123, dport=1234) / Raw(ntp_server()))
    f.add(Ether(src=TV[0], dst=ROUTER[0]) / Dot1Q(vlan=20) / IPv6(src=TV[2], dst="2001:db8::80") / TCP(sport=40001, dport=80, flags="S"))
    f.add(Ether(src=TV[0], dst=BCAST) / Dot1Q(vlan=20) / ARP(op=1, hwsrc=TV[0], psrc=TV[1], pdst=ROUTER[1]))
    # QinQ: 802.1ad outer, 802.1Q inner; and 802.1Q in 802.1Q
    f.add(Ether(src=PLUG[0], dst=ROUTER[0]) / Dot1AD(vlan=100) / Dot1Q(vlan=10) / IP(src=PLUG[1], dst="203.0.113.50") / TCP(sport=50000, dport=8883, flags="S"))
    f.add(Ether(src=ROUTER[0], dst=PLUG[0]) / Dot1AD(vlan=100) / Dot1Q(vlan=10) / IP(src="203.0.113.50", dst=PLUG[1]) / TCP(sport=8883, dport=50000, flags="SA"))
    f.add(Ether(src=PHONE[0], dst=PI[0]) / Dot1Q(vlan=30) / Dot1Q(vlan=31) / IPv6(src=PHONE[2], dst=PI[2]) / UDP(sport=5000, dport=5684) / Raw(bytes(rng.randrange(10, 200))))
    # Three and four tags (real captures carry three): walked to the ports
    f.add(Ether(src=PHONE[0], dst=PI[0]) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(src=PHONE[1], dst=PI[1]) / UDP(sport=5000, dport=7777) / Raw(b"x" * 30))
    f.add(Ether(src=PHONE[0], dst=PI[0]) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / Dot1Q(vlan=4) / IP(src=PHONE[1], dst=PI[1]) / UDP(sport=5000, dport=7778) / Raw(b"x" * 30))
    # Five tags: deeper than the program walks, so only the MACs count
    f.add(Ether(src=PHONE[0], dst=PI[0]) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / Dot1Q(vlan=4) / Dot1Q(vlan=5) / IP(src=PHONE[1], dst=PI[1]) / UDP(sport=5000, dport=7779) / Raw(b"x" * 30))
    # PPPoE sessions (a DSL modem's LAN side): IPv4 in PPP with its protocol field compressed
    # to one byte (scapy's default, as PFC allows), IPv6 with the full two bytes inside a VLAN
    # tag, and LCP, which is no IP
    f.add(Ether(src=ROUTER[0], dst=PI[0]) / PPPoE(sessionid=0x1234) / PPP(proto=0x0021) / IP(src="198.51.100.9", dst=PI[1]) / UDP(sport=53, dport=40053) / Raw(b"d" * 40))
    f.add(Ether(src=PI[0], dst=ROUTER[0]) / Dot1Q(vlan=7) / PPPoE(sessionid=0x1234) / Raw(b"\x00\x57") / IPv6(src=PI[2], dst="2001:db8:4::7") / TCP(sport=40443, dport=443, flags="S"))
    f.add(Ether(src=PI[0], dst=ROUTER[0]) / PPPoE(sessionid=0x1234) / PPP(proto=0xc021) / Raw(b"\x09\x01\x00\x08\x00\x00\x00\x01"))
    for i in range(10):
        a, b = rng.sample([CAMERA, PLUG, TV, PHONE, PI], 2)
        tags = Dot1AD(vlan=200) / Dot1Q(vlan=i + 1) if i % 2 else Dot1Q(vlan=i + 1)
        f.add(Ether(src=a[0], dst=b[0]) / tags / IP(src=a[1], dst=b[1]) / UDP(sport=6000 + i, dport=6100 + i) / Raw(bytes(rng.randrange(0, 500))))
    return f.items


def ipv6_ext(rng):
    f = Frames(BASE + 7200)
    v6 = lambda a, dst, **kw: Ether(src=a[0], dst=ROUTER[0]) / IPv6(src=a[2], dst=dst, **kw)  # noqa: E731
    # Hop-by-hop (MLD-like router alert) carrying UDP; destination options carrying TCP
    f.add(v6(CAMERA, "2001:db8::1") / IPv6ExtHdrHopByHop() / UDP(sport=1000, dport=2001) / Raw(b"a" * 20))
    f.add(v6(CAMERA, "2001:db8::1") / IPv6ExtHdrDestOpt() / TCP(sport=1001, dport=2002, flags="S"))
    f.add(v6(TV, "2001:db8::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=1002, dport=2003) / Raw(b"b" * 40))
    f.add(v6(TV, "2001:db8::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / IPv6ExtHdrDestOpt() / UDP(sport=1003, dport=2004) / Raw(b"c" * 10))
    # Fragments: first (offset 0, ports present) and later ones (no ports)
    big = IPv6(src=PLUG[2], dst="2001:db8::3") / IPv6ExtHdrFragment(id=0x1234) / UDP(sport=1004, dport=2005) / Raw(bytes(rng.randrange(256) for _ in range(3000)))
    from scapy.layers.inet6 import fragment6
    for frag in fragment6(big, 1280):
        f.add(Ether(src=PLUG[0], dst=ROUTER[0]) / frag)
    # A first fragment behind hop-by-hop and a later one, TCP
    f.add(v6(PHONE, "2001:db8::4") / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=77, offset=0, m=1, nh=6) / TCP(sport=1005, dport=2006, flags="PA") / Raw(b"d" * 64))
    f.add(v6(PHONE, "2001:db8::4") / IPv6ExtHdrFragment(id=77, offset=11, m=0, nh=6) / Raw(b"e" * 64))
    # Six extension headers (the most the program walks), then seven (one too many: no port)
    six = IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
    f.add(v6(PI, "2001:db8::5") / six / UDP(sport=1006, dport=2007) / Raw(b"f" * 8))
    f.add(v6(PI, "2001:db8::5") / six / IPv6ExtHdrDestOpt() / UDP(sport=1007, dport=2008) / Raw(b"g" * 8))
    # Link-local and unique-local on the LAN
    f.add(Ether(src=CAMERA[0], dst=PI[0]) / IPv6(src=LL_CAMERA, dst="fe80::ba27:ebff:fe12:3456") / UDP(sport=546, dport=547) / Raw(b"h" * 30))
    f.add(Ether(src=CAMERA[0], dst=PI[0]) / IPv6(src=CAMERA[2], dst=PI[2]) / IPv6ExtHdrDestOpt() / TCP(sport=3333, dport=22, flags="S"))
    return f.items


def ipv4_opts_frag(rng):
    f = Frames(BASE + 10800)
    # Options: router alert (IHL 6), record route (IHL 15)
    f.add(eth(CAMERA, "01:00:5e:00:00:16") / IP(src=CAMERA[1], dst="224.0.0.22", ttl=1, options=[IPOption(b"\x94\x04\x00\x00")]) / Raw(b"\x22" + bytes(15)))
    f.add(eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst="192.0.2.9", options=[IPOption(b"\x94\x04\x00\x00")]) / UDP(sport=999, dport=3001) / Raw(b"i" * 40))
    f.add(eth(TV, ROUTER) / IP(src=TV[1], dst="198.51.100.9", options=[IPOption(b"\x07\x27\x04" + bytes(36))]) / TCP(sport=998, dport=3002, flags="S"))
    # Fragments of a UDP datagram: first carries the header, later ones do not
    from scapy.layers.inet import fragment
    big = IP(src=PLUG[1], dst="203.0.113.77", id=4242) / UDP(sport=997, dport=3003) / Raw(bytes(rng.randrange(256) for _ in range(4000)))
    frags = fragment(big, 1400)
    for fr in frags:
        f.add(eth(PLUG, ROUTER) / fr)
    # Out of order: the later fragment arrives before the first; TCP fragments with options
    big = IP(src=PHONE[1], dst="198.18.1.1", id=99, options=[IPOption(b"\x94\x04\x00\x00")]) / TCP(sport=996, dport=3004, flags="PA") / Raw(bytes(2000))
    frags = fragment(big, 1000)
    for fr in reversed(frags):
        f.add(eth(PHONE, ROUTER) / fr)
    # A fragment with DF set and offset 0 but MF clear: an ordinary unfragmented packet
    f.add(eth(PI, ROUTER) / IP(src=PI[1], dst="192.0.2.200", flags="DF") / UDP(sport=995, dport=3005) / Raw(b"j" * 12))
    return f.items


def truncated(rng):
    """Full frames, cut by the writer's snapshot length."""
    f = Frames(BASE + 14400)
    f.add(eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst="203.0.113.10") / TCP(sport=50001, dport=443) / Raw(bytes(1400)))
    f.add(eth(ROUTER, CAMERA) / IP(src="203.0.113.10", dst=CAMERA[1]) / TCP(sport=443, dport=50001) / Raw(bytes(600)))
    f.add(eth(CAMERA, ROUTER) / IPv6(src=CAMERA[2], dst="2001:db8::10") / UDP(sport=50002, dport=443) / Raw(bytes(1200)))
    # IPv6 in two VLAN tags: 22 + 40 bytes, the UDP ports start at 62 (cut at 64)
    f.add(Ether(src=CAMERA[0], dst=ROUTER[0]) / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IPv6(src=CAMERA[2], dst="2001:db8::11") / UDP(sport=50003, dport=5000) / Raw(bytes(300)))
    # IPv6 in one tag: 18 + 40 bytes, 6 bytes of the UDP header captured at 64 (the ports count)
    f.add(Ether(src=PHONE[0], dst=ROUTER[0]) / Dot1Q(vlan=6) / IPv6(src=PHONE[2], dst="2001:db8::13") / UDP(sport=50007, dport=5004) / Raw(bytes(80)))
    # IPv6 with hop-by-hop and destination options: ports at 14 + 40 + 8 + 8 = 70 (cut at 64)
    f.add(Ether(src=TV[0], dst=ROUTER[0]) / IPv6(src=TV[2], dst="2001:db8::12") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=50004, dport=5001) / Raw(bytes(100)))
    # IPv4 with 40 bytes of options: the header ends at 74 (cut at 64: no IP counted)
    f.add(eth(TV, ROUTER) / IP(src=TV[1], dst="198.51.100.20", options=[IPOption(b"\x07\x27\x04" + bytes(36))]) / UDP(sport=50005, dport=5002) / Raw(bytes(500)))
    # IPv4 with options, in two tags: header ends at 22 + 60 = 82 (cut at 64 and at 96 it is whole)
    f.add(Ether(src=PLUG[0], dst=ROUTER[0]) / Dot1AD(vlan=7) / Dot1Q(vlan=8) / IP(src=PLUG[1], dst="198.51.100.21", options=[IPOption(b"\x07\x27\x04" + bytes(36))]) / TCP(sport=50006, dport=5003) / Raw(bytes(700)))
    for i in range(8):
        a = rng.choice([CAMERA, PLUG, TV, PHONE, PI])
        f.add(eth(a, ROUTER) / IP(src=a[1], dst=f"192.0.2.{i + 30}") / UDP(sport=40000 + i, dport=rng.choice([53, 123, 443, 8080])) / Raw(bytes(rng.randrange(0, 1400))))
    f.add(eth(PI, PHONE) / Raw(bytes(50)))  # short non-IP frame, not cut
    return f.items


def two_interfaces(rng):
    """pcapng: interface 0 in microseconds, interface 1 in nanoseconds, frames interleaved."""
    out = ng_shb()
    out += ng_idb(1, 262144, [(2, b"br0-port1"), (9, bytes([6]))])
    out += ng_idb(1, 262144, [(2, b"br0-port2"), (9, bytes([9]))])
    t_ns = (BASE + 18000) * 1_000_000_000 + 987_654_321
    for i in range(24):
        a, b = rng.sample([CAMERA, PLUG, TV, PHONE, PI], 2)
        p = eth(a, b) / IP(src=a[1], dst=b[1]) / UDP(sport=7000 + i, dport=7100 + i % 3) / Raw(bytes(rng.randrange(0, 300)))
        data = bytes(p)
        if_id = i % 2
        t_ns += 1_000_123 * (i + 1)
        ticks = t_ns // 1000 if if_id == 0 else t_ns
        out += ng_epb(if_id, ticks, data, len(data))
    return out


def nanosecond(rng):
    f = Frames(BASE + 21600, step_ns=333)
    for i in range(12):
        a = rng.choice([CAMERA, PLUG, TV])
        f.add(eth(a, ROUTER) / IP(src=a[1], dst="203.0.113.5") / TCP(sport=20000 + i, dport=1883, flags="PA") / Raw(bytes(rng.randrange(0, 200))))
    return f.items


def big_endian(rng):
    f = Frames(BASE + 25200)
    for i in range(10):
        a, b = rng.sample([CAMERA, PLUG, TV, PHONE], 2)
        f.add(eth(a, b) / IPv6(src=a[2], dst=b[2]) / UDP(sport=8000 + i, dport=5683) / Raw(bytes(rng.randrange(0, 100))))
    f.add(eth(PHONE, ROUTER) / IP(src=PHONE[1], dst="198.51.100.99") / TCP(sport=8100, dport=993, flags="S"))
    return f.items


def time_travel(rng):
    """Timestamps that go backwards and span years (2001 .. 2030)."""
    f = Frames(0)
    times = [1_700_000_000, 1_000_000_001, 1_900_000_000, 1_600_000_000, 1_700_000_000, 1_899_999_999, 1_000_000_000]
    for i, s in enumerate(times):
        ts = s * 1_000_000_000 + 250_000_000 + i * 1000
        f.add(eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst="192.0.2.77") / UDP(sport=123, dport=123) / Raw(ntp_client()), ts_ns=ts)
    return f.items


def gro(rng):
    """A GRO-sized TCP frame longer than 65,535 bytes (IPv4 total length 0, as BIG TCP does), and
    an IPv6 one, in a capture with a large snapshot length."""
    f = Frames(BASE + 28800)
    f.add(eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst="203.0.113.10") / TCP(sport=50010, dport=443, flags="S"))
    # Headers first (checksums 0: scapy cannot sum more than 64 KiB), then the payload.
    hdr = bytes(eth(ROUTER, CAMERA) / IP(src="203.0.113.10", dst=CAMERA[1], len=0, chksum=0) / TCP(sport=443, dport=50010, flags="A", chksum=0))
    f.add(hdr + bytes(70_000 - len(hdr)))  # IPv4 total length 0: the real length is the frame's
    hdr = bytes(eth(ROUTER, PLUG) / IPv6(src="2001:db8::10", dst=PLUG[2], plen=0) / TCP(sport=443, dport=50011, flags="A", chksum=0))
    f.add(hdr + bytes(68_000 - len(hdr)))  # payload length 0
    f.add(eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst="203.0.113.10") / TCP(sport=50010, dport=443, flags="A"))
    return f.items


def sll(rng):
    """Linux cooked capture (linktype 113): not replayed, reported as skipped."""
    f = Frames(BASE + 32400)
    for i in range(5):
        ipb = bytes(IP(src=CAMERA[1], dst="192.0.2.5") / UDP(sport=9000 + i, dport=53) / Raw(bytes(20)))
        hdr = struct.pack(">HHH", 4, 1, 6) + bytes.fromhex("809f9b45a328") + b"\0\0" + struct.pack(">H", 0x0800)
        f.add(hdr + ipb)
    return f.items


def many_sources(rng):
    """Replay with several test-run workers (tests/tests/replay_workers.rs): sixteen sources whose
    frames interleave, several of them sampled, over 80 s. CAMERA sends 60 DNS queries within 3 s,
    far more than the test's sample burst (5): its rate limit suppresses most, so the result
    depends on all its frames meeting one token bucket, in order. Conversations pause for longer
    than the test's idle time and resume (aged out, then sampled again as new), a VLAN-tagged
    source, and frames only the XDP program takes (an IPv4 ethertype with 10 bytes behind it,
    and a 70,000-byte GRO frame)."""
    f = Frames(BASE + 40000, step_ns=20_000_000)
    hosts = [CAMERA, PLUG, TV, PHONE, PI] + [
        ("02:77:00:00:01:%02x" % i, "192.168.77.%d" % (100 + i), "fd77::1:%x" % i) for i in range(11)
    ]
    clouds = ["203.0.113.%d" % (20 + i) for i in range(8)] + ["198.51.100.%d" % (30 + i) for i in range(8)]
    names = ["cloud%d.example.com" % i for i in range(8)]

    def burst_of_queries(n):
        return [eth(CAMERA, ROUTER) / IP(src=CAMERA[1], dst=ROUTER[1]) / UDP(sport=41000 + i, dport=53)
                / Raw(dns_query(names[i % len(names)], 0x3000 + i)) for i in range(n)]

    def chatter(h, round_no):
        """A few frames of host `h`: TLS-like flow, DNS, NTP, mDNS or ARP."""
        k = rng.randrange(5)
        vid = 42 if h is PI else None
        def e(dst):
            p = Ether(src=h[0], dst=dst[0] if isinstance(dst, tuple) else dst)
            return p / Dot1Q(vlan=vid) if vid else p
        out = []
        cloud = clouds[(hosts.index(h) + round_no) % len(clouds)]
        sport = 50000 + hosts.index(h) * 10 + round_no % 3
        if k == 0:
            for n in range(4):
                out.append(e(ROUTER) / IP(src=h[1], dst=cloud) / TCP(sport=sport, dport=443, flags="PA")
                           / Raw(client_hello("svc%d.example.net" % hosts.index(h)) if n == 0 else bytes(rng.randrange(1, 900))))
        elif k == 1:
            out.append(e(ROUTER) / IP(src=h[1], dst=ROUTER[1]) / UDP(sport=sport, dport=53)
                       / Raw(dns_query(names[round_no % len(names)], rng.randrange(65536))))
        elif k == 2:
            out.append(e(ROUTER) / IP(src=h[1], dst=cloud) / UDP(sport=123, dport=123) / Raw(ntp_client()))
        elif k == 3:
            mdns = struct.pack(">HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\x05host%d\x05local\x00" % (hosts.index(h) % 10) \
                + struct.pack(">HHIH", 1, 0x8001, 120, 4) + bytes(int(x) for x in h[1].split("."))
            out.append(e("01:00:5e:00:00:fb") / IP(src=h[1], dst="224.0.0.251", ttl=255) / UDP(sport=5353, dport=5353) / Raw(mdns))
        else:
            out.append(e(BCAST) / ARP(op=1, hwsrc=h[0], psrc=h[1], pdst=ROUTER[1]))
            out.append(Ether(src=ROUTER[0], dst=h[0]) / ARP(op=2, hwsrc=ROUTER[0], psrc=ROUTER[1], hwdst=h[0], pdst=h[1]))
        return out

    for round_no in range(40):
        batch = []
        for h in hosts:
            batch += chatter(h, round_no)
        if round_no == 3:
            batch += burst_of_queries(60)
        if round_no == 7:
            batch.append(bytes(eth(PLUG, ROUTER)) + b"\x45" + bytes(9))  # IPv4 ethertype, 10 bytes: XDP only
        if round_no == 12:
            hdr = bytes(eth(ROUTER, TV) / IP(src="203.0.113.10", dst=TV[1], len=0, chksum=0) / TCP(sport=443, dport=50110, flags="A", chksum=0))
            batch.append(hdr + bytes(70_000 - len(hdr)))  # longer than a socket buffer's wire_len: XDP
        rng.shuffle(batch)
        for p in batch:
            f.add(p)
        # Quiet periods longer than the test's conversation idle time (5 s), then the same flows.
        f.t += 8_000_000_000 if round_no % 10 == 9 else 400_000_000
    return f.items


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    rng = random.Random(0x77)
    write(outdir, "iot_lan.pcap", pcap_bytes(iot_lan(rng)))
    write(outdir, "vlan.pcap", pcap_bytes(vlan(rng)))
    write(outdir, "ipv6_ext.pcap", pcap_bytes(ipv6_ext(rng)))
    write(outdir, "ipv4_opts_frag.pcap", pcap_bytes(ipv4_opts_frag(rng)))
    trunc = truncated(rng)
    write(outdir, "snaplen64.pcap", pcap_bytes(trunc, snaplen=64))
    write(outdir, "snaplen96.pcap", pcap_bytes(trunc, snaplen=96, nsec=True))
    write(outdir, "two_interfaces.pcapng", two_interfaces(rng))
    write(outdir, "nanosecond.pcap", pcap_bytes(nanosecond(rng), nsec=True))
    write(outdir, "big_endian.pcap", pcap_bytes(big_endian(rng), be=True))
    write(outdir, "time_travel.pcap", pcap_bytes(time_travel(rng)))
    write(outdir, "gro.pcap", pcap_bytes(gro(rng), snaplen=262144))
    write(outdir, "sll.pcap", pcap_bytes(sll(rng), linktype=113))

    # ---- malformed ----
    lines = []
    good = iot_lan(random.Random(1))[:12]
    clean = pcap_bytes(good)
    write(outdir, "good_for_bad.pcap", clean)
    # Cut mid-record: the 12 records before the 13th are read
    more = pcap_bytes(good + iot_lan(random.Random(1))[12:13])
    cut_at = len(clean)
    write(outdir, "bad_truncated.pcap", more[: cut_at + 16 + 20])
    lines.append(f"bad_truncated.pcap {cut_at} good_for_bad.pcap")
    # A record with a huge incl_len after the good ones: nothing after it can be read
    huge = clean + struct.pack("<IIII", BASE, 0, 0x7FFF_0000, 0x7FFF_0000) + bytes(100) + pcap_bytes(good)[24:]
    write(outdir, "bad_huge_incl.pcap", huge)
    lines.append(f"bad_huge_incl.pcap {len(clean)} good_for_bad.pcap")
    # A zero-length record in the middle: reported, and the records around it are read
    first, rest = pcap_bytes(good[:5]), pcap_bytes(good[5:])[24:]
    zero = first + struct.pack("<IIII", BASE + 1, 0, 0, 0) + rest
    write(outdir, "bad_zero_len.pcap", zero)
    lines.append(f"bad_zero_len.pcap {len(first)} good_for_bad.pcap")
    # pcapng with one corrupt block in the middle (trailing length differs): skipped, the rest read
    ng_good = ng_shb() + ng_idb(1, 262144, [])
    blocks = [ng_epb(0, ts // 1000, data, orig) for ts, data, orig in good]
    write(outdir, "good_for_bad.pcapng", ng_good + b"".join(blocks[:6] + blocks[7:]))
    bad_block = bytearray(blocks[6])
    bad_block[-4:] = struct.pack("<I", len(bad_block) + 64)
    prefix = ng_good + b"".join(blocks[:6])
    write(outdir, "bad_block.pcapng", prefix + bytes(bad_block) + b"".join(blocks[7:]))
    lines.append(f"bad_block.pcapng {len(prefix)} good_for_bad.pcapng")
    write(outdir, "not_a_capture.txt", b"This is not a capture file, just some text.\n" * 4)
    lines.append("not_a_capture.txt 0 -")
    write(outdir, "empty.pcap", b"")
    write(outdir, "many_sources.pcap", pcap_bytes(many_sources(random.Random(0x78)), snaplen=262144))
    lines.append("empty.pcap 0 -")
    with open(os.path.join(outdir, "malformed.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

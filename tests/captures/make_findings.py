#!/usr/bin/python3
"""Writes findings.pcap and findings_doubled.pcap (every frame twice, as a capture taken on two
ports at once) into OUTDIR: one device per scenario of issue 12, each finding's positive case
and its negative twin. Device N is 02:77:00:00:01:NN at 192.168.77.1NN; the gateway is
02:77:00:00:00:01 at 192.168.77.1; the Internet is in the documentation ranges.

  1 lateral_movement (M-SEARCH, then the description fetched from device 20, the GET split after
    its method)            2 none: M-SEARCH only
  3 unsolicited_mdns       4 none: answers device 5's question
  6 ntp_fanout (12)        7 none: one NTP server, five times
  8 firmware_over_http (3 Range chunks over 3 connections)
                           9 none: a 2 MiB JPEG over HTTP, and a TLS download
 10 cleartext (XML over UDP, MQTT with credentials)
                          11 none: MQTT over TLS, binary UDP
 12 gateway_ping (15 pings, 2 s apart)   13 none: 3 pings
 14 cloud_initiated (an Internet host connects to its port 8080)
                          15 none: it connects out
 16 scan (198.51.100.1-254 on port 23)   17 none: three hosts
 18 new_device (first frame at the end; every other device speaks at the start)
 19 dns_unreachable (its DNS queries to the gateway answered with ICMP port unreachable)
                          21 none: DNS answered; an NTP query refused with port unreachable
Deterministic."""
import sys
from scapy.all import ARP, DNS, DNSQR, DNSRR, ICMP, IP, NTP, TCP, UDP, Ether, Raw, UDPerror, IPerror, wrpcap

GW, GW_IP = "02:77:00:00:00:01", "192.168.77.1"
T0 = 1700000000.0
frames = []


def mac(n):
    return "02:77:00:00:01:%02x" % n


def ip(n):
    return "192.168.77.%d" % (100 + n)


def at(t, p):
    p.time = T0 + t
    frames.append(p)


def eth(src, dst):
    return Ether(src=src, dst=dst)


class Tcp:
    """One TCP connection with real sequence numbers (so retransmissions can be told apart)."""

    def __init__(self, cmac, cip, cport, smac, sip, sport):
        self.c = (cmac, cip, cport)
        self.s = (smac, sip, sport)
        self.seq = {"c": 1000, "s": 5000}

    def handshake(self, t):
        (cm, ci, cp), (sm, si, sp) = self.c, self.s
        at(t, eth(cm, sm) / IP(src=ci, dst=si) / TCP(sport=cp, dport=sp, flags="S", seq=self.seq["c"] - 1))
        at(t + 0.001, eth(sm, cm) / IP(src=si, dst=ci) / TCP(sport=sp, dport=cp, flags="SA", seq=self.seq["s"] - 1, ack=self.seq["c"]))
        at(t + 0.002, eth(cm, sm) / IP(src=ci, dst=si) / TCP(sport=cp, dport=sp, flags="A", seq=self.seq["c"], ack=self.seq["s"]))

    def send(self, t, side, data):
        (cm, ci, cp), (sm, si, sp) = self.c, self.s
        if side == "c":
            hdr = eth(cm, sm) / IP(src=ci, dst=si) / TCP(sport=cp, dport=sp, flags="PA", seq=self.seq["c"], ack=self.seq["s"])
        else:
            hdr = eth(sm, cm) / IP(src=si, dst=ci) / TCP(sport=sp, dport=cp, flags="PA", seq=self.seq["s"], ack=self.seq["c"])
        at(t, hdr / Raw(data))
        self.seq[side] += len(data)


# Every device but 18 says hello at the start (ARP), so the first poll's baseline holds them.
for n in list(range(1, 18)) + [19, 20, 21]:
    at(0.01 * n, eth(mac(n), "ff:ff:ff:ff:ff:ff") / ARP(hwsrc=mac(n), psrc=ip(n), pdst=GW_IP))
at(0.5, eth(GW, "ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc=GW, psrc=GW_IP, pdst=GW_IP))
# Traffic to the Internet through the gateway: what makes it the gateway.
c = Tcp(mac(15), ip(15), 51000, GW, "203.0.113.51", 443)
c.handshake(1.0)
c.send(1.1, "c", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
c.send(1.2, "s", b"\x16\x03\x03\x00\x05\x02\x00\x00\x01\x00")

# 1, 2: discovery with and without the fetch.
MSEARCH = b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: upnp:rootdevice\r\n\r\n'
for n, t in [(1, 2.0), (2, 2.5)]:
    at(t, eth(mac(n), "01:00:5e:7f:ff:fa") / IP(src=ip(n), dst="239.255.255.250", ttl=4) / UDP(sport=50000 + n, dport=1900) / Raw(MSEARCH))
    at(t + 0.1, eth(mac(20), mac(n)) / IP(src=ip(20), dst=ip(n)) / UDP(sport=1900, dport=50000 + n)
       / Raw(b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nUSN: uuid:x::upnp:rootdevice\r\nLOCATION: http://192.168.77.120:8200/rootDesc.xml\r\n\r\n"))
c = Tcp(mac(1), ip(1), 43412, mac(20), ip(20), 8200)
c.handshake(3.0)
c.send(3.1, "c", b"GET ")
c.send(3.2, "c", b"/rootDesc.xml HTTP/1.1\r\nHost: 192.168.77.120:8200\r\nUser-Agent: cam\r\n\r\n")
c.send(3.3, "s", b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 50\r\n\r\n<root/>")

# 3: an announcement; 4 answers 5's question.
def mdns_response(n, t, txt):
    inst = "Living room %d._hap._tcp.local" % n
    an = DNSRR(rrname="_hap._tcp.local", type="PTR", ttl=4500, rdata=inst) / DNSRR(rrname=inst, type="TXT", ttl=4500, rdata=txt)
    at(t, eth(mac(n), "01:00:5e:00:00:fb") / IP(src=ip(n), dst="224.0.0.251", ttl=255) / UDP(sport=5353, dport=5353)
       / DNS(id=0, qr=1, aa=1, qd=None, an=an))


mdns_response(3, 4.0, [b"md=IPC-A22", b"sn=A1B2C3D4E5", b"fv=2.1.7", b"c#=2"])
at(5.0, eth(mac(5), "01:00:5e:00:00:fb") / IP(src=ip(5), dst="224.0.0.251", ttl=255) / UDP(sport=5353, dport=5353)
   / DNS(id=0, qd=DNSQR(qname="_hap._tcp.local", qtype="PTR")))
mdns_response(4, 5.1, [b"c#=1"])

# 6: twelve NTP servers; 7: one, five times.
for i in range(12):
    at(6.0 + 0.1 * i, eth(mac(6), GW) / IP(src=ip(6), dst="198.51.100.%d" % (100 + i)) / UDP(sport=40123, dport=123) / NTP(version=4, mode=3))
for i in range(5):
    at(8.0 + 0.1 * i, eth(mac(7), GW) / IP(src=ip(7), dst="198.51.100.100") / UDP(sport=40124, dport=123) / NTP(version=4, mode=3))

# 8: firmware in three Range chunks over three connections; 9: a JPEG, and a TLS download.
TOTAL = 3 * 1048576
for i in range(3):
    first, last = i * 1048576, (i + 1) * 1048576 - 1
    c = Tcp(mac(8), ip(8), 52000 + i, GW, "203.0.113.20", 80)
    c.handshake(10.0 + i)
    c.send(10.1 + i, "c", b"GET /fw/cam-5.3.0.bin HTTP/1.1\r\nHost: fw.example.com\r\nRange: bytes=%d-%d\r\n\r\n" % (first, last))
    c.send(10.2 + i, "s", b"HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n"
           b"Content-Range: bytes %d-%d/%d\r\n\r\n" % (first, last, TOTAL) + bytes(200))
c = Tcp(mac(9), ip(9), 53000, GW, "203.0.113.21", 80)
c.handshake(14.0)
c.send(14.1, "c", b"GET /photos/holiday.jpg HTTP/1.1\r\nHost: img.example.com\r\n\r\n")
c.send(14.2, "s", b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 2097152\r\n\r\n\xff\xd8\xff\xe0")
c = Tcp(mac(9), ip(9), 53001, GW, "203.0.113.21", 443)
c.handshake(15.0)
c.send(15.1, "c", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")

# 10: XML with a serial over UDP, MQTT with credentials; 11: MQTT over TLS, binary UDP.
at(16.0, eth(mac(10), GW) / IP(src=ip(10), dst="198.51.100.60") / UDP(sport=59191, dport=6002)
   / Raw(b'<?xml version="1.0"?><dev><serial>E25105525</serial><wan>203.0.113.7</wan></dev>'))
mqtt = b"\x00\x04MQTT\x04\xc2\x00\x3c" + b"\x00\x04cam1" + b"\x00\x05alice" + b"\x00\x07hunter2"
c = Tcp(mac(10), ip(10), 42533, GW, "198.51.100.31", 1883)
c.handshake(17.0)
c.send(17.1, "c", b"\x10" + bytes([len(mqtt)]) + mqtt)
c = Tcp(mac(11), ip(11), 42534, GW, "198.51.100.31", 8883)
c.handshake(18.0)
c.send(18.1, "c", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
at(19.0, eth(mac(11), GW) / IP(src=ip(11), dst="198.51.100.61") / UDP(sport=59192, dport=6002) / Raw(bytes(range(256))[:120]))

# 12: fifteen pings of the gateway, 2 s apart; 13: three.
for i in range(15):
    at(20.0 + 2 * i, eth(mac(12), GW) / IP(src=ip(12), dst=GW_IP) / ICMP(type=8, id=12, seq=i) / Raw(bytes(56)))
    at(20.001 + 2 * i, eth(GW, mac(12)) / IP(src=GW_IP, dst=ip(12)) / ICMP(type=0, id=12, seq=i) / Raw(bytes(56)))
for i in range(3):
    at(21.0 + 2 * i, eth(mac(13), GW) / IP(src=ip(13), dst=GW_IP) / ICMP(type=8, id=13, seq=i) / Raw(bytes(56)))

# 14: an Internet host opens a connection to the device's port 8080 (after the grace period);
# 15: the device connects out.
c = Tcp(GW, "203.0.113.50", 45000, mac(14), ip(14), 8080)
c.handshake(60.0)
c.send(60.1, "c", b"hello camera\r\n")
c.send(60.2, "s", b"ok\r\n")
c = Tcp(mac(15), ip(15), 51001, GW, "203.0.113.52", 443)
c.handshake(61.0)

# 16: a Telnet sweep of a /24; 17: three hosts.
for i in range(1, 255):
    at(70.0 + 0.01 * i, eth(mac(16), GW) / IP(src=ip(16), dst="198.51.100.%d" % i) / TCP(sport=40000 + i, dport=23, flags="S"))
for i in range(1, 4):
    c = Tcp(mac(17), ip(17), 41000 + i, GW, "192.0.2.%d" % (10 + i), 443)
    c.handshake(75.0 + i)

# 19: DNS queries to the gateway, refused with port unreachable (the talk's door sensor);
# 21: a DNS query answered, and an NTP query refused.
for i in range(3):
    q = IP(src=ip(19), dst=GW_IP) / UDP(sport=41000 + i, dport=53) / DNS(id=i, rd=1, qd=DNSQR(qname="eu-api.coolkit.cc"))
    at(80.0 + 5 * i, eth(mac(19), GW) / q)
    at(80.001 + 5 * i, eth(GW, mac(19)) / IP(src=GW_IP, dst=ip(19)) / ICMP(type=3, code=3) / IPerror(bytes(q)[:28]))
q = IP(src=ip(21), dst=GW_IP) / UDP(sport=42000, dport=53) / DNS(id=9, rd=1, qd=DNSQR(qname="example.com"))
at(82.0, eth(mac(21), GW) / q)
at(82.001, eth(GW, mac(21)) / IP(src=GW_IP, dst=ip(21)) / UDP(sport=53, dport=42000)
   / DNS(id=9, qr=1, rd=1, ra=1, qd=DNSQR(qname="example.com"), an=DNSRR(rrname="example.com", type="A", ttl=60, rdata="203.0.113.99")))
q = IP(src=ip(21), dst=GW_IP) / UDP(sport=42001, dport=123) / NTP(version=4, mode=3)
at(83.0, eth(mac(21), GW) / q)
at(83.001, eth(GW, mac(21)) / IP(src=GW_IP, dst=ip(21)) / ICMP(type=3, code=3) / IPerror(bytes(q)[:28]))

# 18: a device that was never there before.
at(100.0, eth(mac(18), "ff:ff:ff:ff:ff:ff") / ARP(hwsrc=mac(18), psrc=ip(18), pdst=GW_IP))
at(100.1, eth(mac(18), GW) / IP(src=ip(18), dst="203.0.113.90") / UDP(sport=40000, dport=9999) / Raw(b"\x00\x01"))

frames.sort(key=lambda p: p.time)
wrpcap(sys.argv[1] + "/findings.pcap", frames)
doubled = []
for p in frames:
    doubled += [p, p.copy()]
wrpcap(sys.argv[1] + "/findings_doubled.pcap", doubled)

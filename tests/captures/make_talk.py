#!/usr/bin/python3
"""Writes talk.pcap into OUTDIR: the talk's findings as a capture (a camera that discovers
with SSDP, fetches another host's description, asks many NTP servers, sends cleartext to the
cloud; a DHCP hostname, DNS and TLS to a named host, MQTT with credentials, mDNS announcing).
Addresses: LAN 192.168.77.0/24, Internet from the documentation ranges. Deterministic."""
import struct, sys
from scapy.all import DNS, DNSQR, DNSRR, IP, IPv6, NTP, TCP, UDP, BOOTP, DHCP, Ether, Raw, wrpcap

CAM, DLINK, GW, HUB = "80:9f:9b:45:a3:28", "00:1c:34:2c:00:01", "02:77:00:00:00:01", "02:77:00:00:00:14"
CAM_IP, DLINK_IP, HUB_IP = "192.168.77.151", "192.168.77.44", "192.168.77.20"
out, t = [], 1620261673.0

def add(p):
    global t
    t += 0.25
    p.time = t
    out.append(p)

def client_hello(sni):
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    alpn = b"\x00\x10\x00\x0b\x00\x09\x08http/1.1"
    versions = b"\x00\x2b\x00\x03\x02\x03\x04"
    exts = sni_ext + alpn + versions
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs

# SSDP discovery, the answer from port 3075, and the description fetch (lateral movement).
add(Ether(src=CAM, dst="01:00:5e:7f:ff:fa") / IP(src=CAM_IP, dst="239.255.255.250") / UDP(sport=58002, dport=1900)
    / Raw(b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: upnp:rootdevice\r\n\r\n'))
add(Ether(src=DLINK, dst=CAM) / IP(src=DLINK_IP, dst=CAM_IP) / UDP(sport=3075, dport=58002)
    / Raw(b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nUSN: uuid:dlink::upnp:rootdevice\r\nLOCATION: http://192.168.77.44:8815/rootdesc.xml\r\nSERVER: Linux/2.6 UPnP/1.0\r\n\r\n"))
add(Ether(src=CAM, dst=DLINK) / IP(src=CAM_IP, dst=DLINK_IP) / TCP(sport=43412, dport=8815, flags="PA")
    / Raw(b"GET /rootdesc.xml HTTP/1.1\r\nHost: 192.168.77.44:8815\r\nUser-Agent: ezviz\r\n\r\n"))
add(Ether(src=DLINK, dst=CAM) / IP(src=DLINK_IP, dst=CAM_IP) / TCP(sport=8815, dport=43412, flags="PA")
    / Raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 900\r\n\r\n<?xml"))
# NTP fan-out: client requests to three servers, one answer.
for server in ["203.0.113.123", "198.51.100.123", "192.0.2.123"]:
    add(Ether(src=CAM, dst=GW) / IP(src=CAM_IP, dst=server) / UDP(sport=40123, dport=123) / NTP(version=4, mode=3, stratum=0))
add(Ether(src=GW, dst=CAM) / IP(src="203.0.113.123", dst=CAM_IP) / UDP(sport=123, dport=40123) / NTP(version=4, mode=4, stratum=2))
# Cleartext private data over UDP to the cloud, and a binary stream.
add(Ether(src=CAM, dst=GW) / IP(src=CAM_IP, dst="198.51.100.60") / UDP(sport=59191, dport=6002) / Raw(b"devSerial=e25105525&user=alice&passwd=hunter2&lat=45.07&lon=7.68"))
add(Ether(src=CAM, dst=GW) / IP(src=CAM_IP, dst="203.0.113.84") / UDP(sport=27091, dport=6000) / Raw(bytes(range(256))[:120]))
# DHCP with a hostname.
add(Ether(src=CAM, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
    / BOOTP(chaddr=bytes.fromhex("809f9b45a328")) / DHCP(options=[("message-type", "request"), ("hostname", "e25105525"), ("param_req_list", [1, 3, 6, 15, 28, 42]), "end"]))
# DNS: the camera asks for its cloud and gets an answer; then TLS to it with SNI.
add(Ether(src=CAM, dst=GW) / IP(src=CAM_IP, dst="192.168.77.1") / UDP(sport=41000, dport=53) / DNS(id=7, rd=1, qd=DNSQR(qname="dev.cloud.example.com")))
add(Ether(src=GW, dst=CAM) / IP(src="192.168.77.1", dst=CAM_IP) / UDP(sport=53, dport=41000)
    / DNS(id=7, qr=1, rd=1, ra=1, qd=DNSQR(qname="dev.cloud.example.com"), an=DNSRR(rrname="dev.cloud.example.com", type="A", ttl=60, rdata="203.0.113.80")))
add(Ether(src=CAM, dst=GW) / IP(src=CAM_IP, dst="203.0.113.80") / TCP(sport=50000, dport=443, flags="PA") / Raw(client_hello("dev.cloud.example.com")))
# MQTT CONNECT with credentials on a non-standard port (the talk has MQTT on 31006).
payload = b"\x00\x04MQTT\x04\xc2\x00\x3c" + b"\x00\x04cam1" + b"\x00\x05alice" + b"\x00\x07hunter2"
add(Ether(src=CAM, dst=GW) / IP(src=CAM_IP, dst="198.51.100.31") / TCP(sport=42533, dport=31006, flags="PA") / Raw(b"\x10" + bytes([len(payload)]) + payload))
# DHCPv6: a SOLICIT with a DUID-LL of the camera's MAC and an FQDN option.
duid = b"\x00\x03\x00\x01" + bytes.fromhex("809f9b45a328")
fqdn = b"\x00" + b"\x09e25105525\x00"
opts = struct.pack("!HH", 1, len(duid)) + duid + struct.pack("!HH", 39, len(fqdn)) + fqdn + struct.pack("!HHHH", 6, 4, 23, 24)
add(Ether(src=CAM, dst="33:33:00:01:00:02") / IPv6(src="fe80::829f:9bff:fe45:a328", dst="ff02::1:2") / UDP(sport=546, dport=547) / Raw(b"\x01\x12\x34\x56" + opts))
# An mDNS announcement (a response nobody asked for) from the hub.
add(Ether(src=HUB, dst="01:00:5e:00:00:fb") / IP(src=HUB_IP, dst="224.0.0.251") / UDP(sport=5353, dport=5353)
    / DNS(id=0, qr=1, aa=1, qd=None, an=DNSRR(rrname="hub-1.local", type="A", ttl=120, rdata=HUB_IP)))
wrpcap(sys.argv[1] + "/talk.pcap", out)

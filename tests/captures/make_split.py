#!/usr/bin/python3
"""Writes split.pcap and doubled.pcap into OUTDIR: HTTP requests whose head is split across
TCP segments at awkward places, as some stacks send them (`make_split.py OUTDIR`).

split.pcap holds three TCP conversations, each with its full handshake, an answer and the end:
- a camera's `POST ` alone in a 5-byte segment, the rest of the request in the next one;
- a GET whose URI is cut in the middle (`GET /firmware/cam-5.3` + `.0.bin HTTP/1.1...`);
- `P` alone, then `OST /...`;
and, as a control, a UDP datagram of plain text.

doubled.pcap holds every frame of split.pcap twice in a row (a capture taken where each frame
passes twice, or a retransmission of every segment): the same requests, not twice as many.

Addresses: LAN 192.168.77.0/24, Internet from the documentation ranges. Deterministic."""
import sys

from scapy.config import conf

conf.verb = 0
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402

CAM, GW = "80:9f:9b:45:a3:28", "02:77:00:00:00:01"
CAM_IP = "192.168.77.151"
out, t = [], 1_700_000_000.0


def add(p):
    global t
    t += 0.01
    p.time = t
    out.append(p)


def conversation(server, sport, dport, pieces, answer):
    """Handshake, the request in `pieces` (one segment each), the answer, FIN both ways."""
    c2s = Ether(src=CAM, dst=GW) / IP(src=CAM_IP, dst=server)
    s2c = Ether(src=GW, dst=CAM) / IP(src=server, dst=CAM_IP)
    cseq, sseq = 1_000_000 + sport, 7_000_000 + dport
    add(c2s / TCP(sport=sport, dport=dport, flags="S", seq=cseq))
    add(s2c / TCP(sport=dport, dport=sport, flags="SA", seq=sseq, ack=cseq + 1))
    cseq, sseq = cseq + 1, sseq + 1
    add(c2s / TCP(sport=sport, dport=dport, flags="A", seq=cseq, ack=sseq))
    for piece in pieces:
        add(c2s / TCP(sport=sport, dport=dport, flags="PA", seq=cseq, ack=sseq) / Raw(piece))
        cseq += len(piece)
        add(s2c / TCP(sport=dport, dport=sport, flags="A", seq=sseq, ack=cseq))
    add(s2c / TCP(sport=dport, dport=sport, flags="PA", seq=sseq, ack=cseq) / Raw(answer))
    sseq += len(answer)
    add(c2s / TCP(sport=sport, dport=dport, flags="FA", seq=cseq, ack=sseq))
    add(s2c / TCP(sport=dport, dport=sport, flags="FA", seq=sseq, ack=cseq + 1))
    add(c2s / TCP(sport=sport, dport=dport, flags="A", seq=cseq + 1, ack=sseq + 1))


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
conversation("198.51.100.20", 40001, 80,
             [b"POST ", b"/api/upload HTTP/1.1\r\nHost: cloud.example.com\r\nUser-Agent: cam/1.0\r\n"
              b"Content-Length: 11\r\n\r\nhello world"], OK)
conversation("203.0.113.8", 40002, 8080,
             [b"GET /firmware/cam-5.3", b".0.bin HTTP/1.1\r\nHost: fw.example.net:8080\r\nRange: bytes=0-4095\r\n\r\n"],
             b"HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\nabcd")
conversation("198.51.100.21", 40003, 80,
             [b"P", b"OST /x HTTP/1.1\r\nHost: h.example.org\r\nContent-Length: 0\r\n\r\n"], OK)
add(Ether(src=CAM, dst=GW) / IP(src=CAM_IP, dst="198.51.100.60") / UDP(sport=59191, dport=6002)
    / Raw(b"devSerial=e25105525&lat=45.07&lon=7.68"))

wrpcap(sys.argv[1] + "/split.pcap", out)
doubled = []
for p in out:
    doubled += [p, p.copy()]
wrpcap(sys.argv[1] + "/doubled.pcap", doubled)

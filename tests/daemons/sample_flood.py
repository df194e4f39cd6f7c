#!/usr/bin/env python3
"""A lab device that floods the bridge with small frames the agent samples: mDNS announcements
to 224.0.0.251:5353, SSDP M-SEARCHes to 239.255.255.250:1900 and DNS queries to --dns HOST:53, in
turn, as fast as it can. Multicast leaves with TTL 1 and the DNS host is a lab address, so
nothing leaves the lab. Runs until SIGTERM or --seconds, then prints how many datagrams of each
kind it sent as one JSON line (the test's oracle)."""

import argparse
import json
import signal
import socket
import struct
import sys
import time

def name(*labels):
    return b"".join(bytes([len(l)]) + l for l in labels) + b"\x00"


def record(owner, rtype, data):
    return owner + struct.pack("!HHIH", rtype, 0x8001, 120, len(data)) + data


# An unasked announcement with a few records, as devices send them: the agent parses every
# record and learns names from it, so each sample costs it something.
INSTANCE = name(b"iww-flood", b"_http", b"_tcp", b"local")


def mdns(src):
    return struct.pack("!HHHHHH", 0, 0x8400, 0, 0, 4, 0) + b"".join((
        record(name(b"_http", b"_tcp", b"local"), 12, INSTANCE),
        record(INSTANCE, 33, struct.pack("!HHH", 0, 0, 80) + name(b"iww-flood", b"local")),
        record(INSTANCE, 16, b"".join(bytes([len(t)]) + t for t in
                                      (b"model=flood", b"serial=0123456789", b"path=/index.html", b"fw=1.2.3"))),
        record(name(b"iww-flood", b"local"), 1, socket.inet_aton(src)),
    ))
SSDP = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
        b"MX: 1\r\nST: ssdp:all\r\n\r\n")


def dns_query(ident):
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--src", required=True, help="this device's address")
    p.add_argument("--dns", required=True, help="a lab address to send DNS queries to")
    p.add_argument("--seconds", type=float, required=True, help="stop after this many seconds")
    a = p.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.src, 0))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(a.src))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sent = {"mdns": 0, "ssdp": 0, "dns": 0}
    end = time.monotonic() + a.seconds
    print("flooding", flush=True)
    i, announcement = 0, mdns(a.src)
    while not stop and (i % 1024 or time.monotonic() < end):
        for kind, payload, dst in (("mdns", announcement, ("224.0.0.251", 5353)),
                                   ("ssdp", SSDP, ("239.255.255.250", 1900)),
                                   ("dns", dns_query(i & 0xffff), (a.dns, 53))):
            try:
                s.sendto(payload, dst)
                sent[kind] += 1
            except (BlockingIOError, ConnectionRefusedError):
                # ICMP port unreachable from the DNS host comes back as an error on a later send
                # (that datagram was not sent), or the socket's buffer was full.
                pass
        i += 1
    print(json.dumps(sent), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

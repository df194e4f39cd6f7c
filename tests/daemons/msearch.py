"""A UPnP control point's discovery: one SSDP M-SEARCH, then print each answer's LOCATION.

usage: msearch.py SEARCH_TARGET SECONDS
"""
import socket
import sys
import time

st, seconds = sys.argv[1], float(sys.argv[2])
msg = (
    "M-SEARCH * HTTP/1.1\r\n"
    "HOST: 239.255.255.250:1900\r\n"
    'MAN: "ssdp:discover"\r\n'
    "MX: 1\r\n"
    f"ST: {st}\r\n"
    "USER-AGENT: iwd/1.0 UPnP/1.1 msearch/1.0\r\n"
    "\r\n"
).encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
s.sendto(msg, ("239.255.255.250", 1900))
end = time.monotonic() + seconds
seen = set()
while time.monotonic() < end:
    s.settimeout(max(0.05, end - time.monotonic()))
    try:
        data, _ = s.recvfrom(4096)
    except socket.timeout:
        break
    for line in data.decode("latin-1").split("\r\n"):
        k, _, v = line.partition(":")
        if k.strip().lower() == "location" and v.strip() not in seen:
            seen.add(v.strip())
            print(v.strip(), flush=True)

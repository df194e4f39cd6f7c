#!/usr/bin/python3
"""Scripted, bounded traffic for `cargo xtask lab`: one process per lab namespace.

Standard library only (runs with Debian's /usr/bin/python3 on a fresh machine). Every
action is rate-limited and the process exits after --duration seconds; xtask also gives
it a parent-death signal, so nothing outlives the lab. Addresses come from xtask and stay
inside the lab's namespaces.
"""
import argparse
import socket
import sys
import threading
import time

STOP = threading.Event()


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def serve_udp(port):
    """Discard sink (plays an Internet service)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.5)
    while not STOP.is_set():
        try:
            s.recvfrom(65535)
        except socket.timeout:
            pass


def serve_tcp(port):
    """A tiny HTTP/1.0 responder (plays a device's or a cloud's web server)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    s.settimeout(0.5)
    body = b"<root><device><friendlyName>iotwatch lab</friendlyName></device></root>\n"
    while not STOP.is_set():
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        with c:
            c.settimeout(2)
            try:
                c.recv(4096)
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\nContent-Length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass


def udp_stream(target, rate, size):
    """A constant-rate UDP stream (a camera uploading video to its cloud)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"\x00" * size
    interval = 1.0 / max(rate, 0.1)
    while not STOP.wait(interval):
        try:
            s.sendto(payload, target)
        except OSError:
            pass


def udp_periodic(target, interval):
    """A small datagram every `interval` seconds (a hub's telemetry)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while True:
        try:
            s.sendto(b'{"hello":"cloud"}', target)
        except OSError:
            pass
        if STOP.wait(interval):
            return


def ssdp_notify(interval, location):
    """SSDP NOTIFY to 239.255.255.250:1900 with TTL 1 (stays on the LAN)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    msg = ("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
           "LOCATION: " + location + "\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
           "SERVER: Linux/6 UPnP/1.0 iotwatch-lab/1\r\nUSN: uuid:iotwatch-lab::upnp:rootdevice\r\n\r\n").encode()
    while True:
        try:
            s.sendto(msg, ("239.255.255.250", 1900))
        except OSError:
            pass
        if STOP.wait(interval):
            return


def http_get(target, interval):
    """An HTTP GET every `interval` seconds (LAN device fetching another's description)."""
    while True:
        try:
            with socket.create_connection(target, timeout=2) as c:
                c.sendall(b"GET /description.xml HTTP/1.0\r\nHost: %s:%d\r\nUser-Agent: iotwatch-lab\r\n\r\n"
                          % (target[0].encode(), target[1]))
                while c.recv(4096):
                    pass
        except OSError:
            pass
        if STOP.wait(interval):
            return


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, required=True, help="exit after this many seconds")
    p.add_argument("--serve-udp", type=int, action="append", default=[])
    p.add_argument("--serve-tcp", type=int, action="append", default=[])
    p.add_argument("--udp-stream", help="HOST:PORT")
    p.add_argument("--rate", type=float, default=20, help="datagrams per second of --udp-stream")
    p.add_argument("--size", type=int, default=800, help="payload bytes of --udp-stream")
    p.add_argument("--udp-periodic", help="HOST:PORT")
    p.add_argument("--interval", type=float, default=5)
    p.add_argument("--ssdp-notify", help="LOCATION url, sent every 2 x --interval")
    p.add_argument("--http-get", help="HOST:PORT")
    p.add_argument("--http-interval", type=float, default=10)
    a = p.parse_args()

    jobs = [(serve_udp, (port,)) for port in a.serve_udp] + [(serve_tcp, (port,)) for port in a.serve_tcp]
    if a.udp_stream:
        jobs.append((udp_stream, (addr(a.udp_stream), min(a.rate, 200), min(a.size, 1400))))
    if a.udp_periodic:
        jobs.append((udp_periodic, (addr(a.udp_periodic), max(a.interval, 0.5))))
    if a.ssdp_notify:
        jobs.append((ssdp_notify, (max(2 * a.interval, 1), a.ssdp_notify)))
    if a.http_get:
        jobs.append((http_get, (addr(a.http_get), max(a.http_interval, 0.5))))
    threads = [threading.Thread(target=f, args=args, daemon=True) for f, args in jobs]
    for t in threads:
        t.start()
    try:
        STOP.wait(a.duration)
    except KeyboardInterrupt:
        pass
    STOP.set()
    for t in threads:
        t.join(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Clients and small servers of the lab's finding scenarios (xtask/src/scenarios/play.rs).

One subcommand per role, standard library only (Debian's /usr/bin/python3). Every
subcommand is bounded: one-shot ones by their own timeouts (and xtask's `timeout`),
long-running ones by --duration. Addresses come from xtask and stay between the lab's
namespaces. Exit status 0 means the exchange happened as described; anything else says
why on stderr.
"""
import argparse
import concurrent.futures
import http.client
import random
import socket
import struct
import sys
import time
import urllib.request
import xml.etree.ElementTree

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
SSDP_GROUP = "239.255.255.250"


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def fail(msg):
    print(msg, file=sys.stderr, flush=True)
    return 1


# ------------------------------------------------------------------------------------------
# SSDP


def msearch(a):
    """One M-SEARCH to the SSDP group; print each answer's LOCATION; with --fetch, GET each
    description (what a control point, or a curious device, does after discovery)."""
    msg = (
        "M-SEARCH * HTTP/1.1\r\n"
        "HOST: 239.255.255.250:1900\r\n"
        'MAN: "ssdp:discover"\r\n'
        "MX: 1\r\n"
        f"ST: {a.st}\r\n"
        f"USER-AGENT: {a.user_agent}\r\n"
        "\r\n"
    ).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    s.sendto(msg, (SSDP_GROUP, 1900))
    end = time.monotonic() + a.wait
    locations = []
    while time.monotonic() < end:
        s.settimeout(max(0.05, end - time.monotonic()))
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            break
        for line in data.decode("latin-1").split("\r\n"):
            k, _, v = line.partition(":")
            if k.strip().lower() == "location" and v.strip() not in locations:
                locations.append(v.strip())
                print("location", v.strip(), flush=True)
    if not locations:
        return fail(f"no answer to M-SEARCH {a.st} within {a.wait} s")
    if a.fetch:
        for loc in locations:
            req = urllib.request.Request(loc, headers={"User-Agent": a.user_agent})
            with urllib.request.urlopen(req, timeout=5) as r:
                body = r.read()
            who = description(body)
            print(f"fetched {loc}: {len(body)} bytes: {who}", flush=True)
    return 0


def description(body):
    """friendlyName, manufacturer and modelName of a UPnP device description."""
    try:
        root = xml.etree.ElementTree.fromstring(body)
    except xml.etree.ElementTree.ParseError as e:
        return f"not XML ({e})"
    fields = {}
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag in ("friendlyName", "manufacturer", "modelName") and tag not in fields:
            fields[tag] = (el.text or "").strip()
    return ", ".join(f"{k} {v!r}" for k, v in fields.items())


# ------------------------------------------------------------------------------------------
# mDNS (RFC 6762), A records only


def dns_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def read_name(msg, off):
    """(name, offset after it), following compression pointers."""
    labels, jumped, end = [], False, off
    for _ in range(64):
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if not jumped:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumped = True
            continue
        if n == 0:
            if not jumped:
                end = off + 1
            return ".".join(labels), end
        labels.append(msg[off + 1:off + 1 + n].decode("latin-1"))
        off += 1 + n
    raise ValueError("name too long")


def questions(msg):
    """(flags, [(name, qtype)]) of a DNS message."""
    _, flags, qd = struct.unpack("!HHH", msg[:6])
    off, out = 12, []
    for _ in range(qd):
        name, off = read_name(msg, off)
        qtype, _ = struct.unpack("!HH", msg[off:off + 4])
        off += 4
        out.append((name.lower(), qtype))
    return flags, out, off


def a_answers(msg):
    """A records in the answer section: [(name, ip)]."""
    _, flags, qd, an = struct.unpack("!HHHH", msg[:8])
    _, _, off = questions(msg)
    out = []
    for _ in range(an):
        name, off = read_name(msg, off)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        if rtype == 1 and rdlen == 4:
            out.append((name.lower(), socket.inet_ntoa(msg[off:off + 4])))
        off += rdlen
    return out


def mdns_socket(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", MDNS_PORT))
    mreq = socket.inet_aton(MDNS_GROUP) + socket.inet_aton(ip)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    return s


def rr(name, rtype, ttl, rdata, flush=True):
    """One resource record (class IN, the cache-flush bit for unique records)."""
    cls = 0x8001 if flush else 0x0001
    return dns_name(name) + struct.pack("!HHIH", rtype, cls, ttl, len(rdata)) + rdata


def txt_rdata(items):
    out = b""
    for t in items:
        b = t.encode()[:255]
        out += bytes([len(b)]) + b
    return out or b"\x00"


def mdns_respond(a):
    """A responder that only answers, multicast to the group as RFC 6762 says (no question
    section), or unicast with the question to a legacy querier (source port not 5353). A query
    for --name (A or ANY) gets its A record; with --service, a browse (PTR or ANY) for the
    service type gets the PTR to --instance, with the instance's SRV and TXT records and the A
    record as additional records. It never announces and never probes."""
    name = a.name.lower().rstrip(".")
    service = (a.service or "").lower().rstrip(".")
    instance = f"{a.instance}.{a.service.rstrip('.')}" if a.service else ""
    s = mdns_socket(a.ip)
    s.settimeout(0.5)
    end = time.monotonic() + a.duration
    answered = 0
    while time.monotonic() < end:
        try:
            msg, src = s.recvfrom(9000)
            flags, qs, _ = questions(msg)
        except socket.timeout:
            continue
        except (ValueError, IndexError, struct.error):
            continue
        if flags & 0x8000:
            continue
        host_rr = rr(a.name, 1, 120, socket.inet_aton(a.ip))
        answers, additional = [], []
        asked = [(q, t) for q, t in qs if q == name and t in (1, 255)]
        if asked:
            answers.append(host_rr)
        browse = [(q, t) for q, t in qs if service and q == service and t in (12, 255)]
        if browse:
            answers.append(rr(a.service, 12, 4500, dns_name(instance), flush=False))
            srv = struct.pack("!HHH", 0, 0, a.port) + dns_name(a.name)
            additional += [rr(instance, 33, 120, srv), rr(instance, 16, 4500, txt_rdata(a.txt))]
            if not asked:
                additional.append(host_rr)
            asked += browse
        if not answers:
            continue
        if src[1] != MDNS_PORT:
            qid = msg[:2]
            q, t = asked[0]
            head = qid + struct.pack("!HHHHH", 0x8400, 1, len(answers), 0, len(additional))
            reply = head + dns_name(q) + struct.pack("!HH", t, 1) + b"".join(answers + additional)
            s.sendto(reply, src)
        else:
            # RFC 6762: a unique record may be answered at once, a shared one (PTR) after
            # 20-120 ms.
            time.sleep(random.uniform(0.02, 0.12) if browse else 0.02)
            head = struct.pack("!HHHHHH", 0, 0x8400, 0, len(answers), 0, len(additional))
            s.sendto(head + b"".join(answers + additional), (MDNS_GROUP, MDNS_PORT))
        answered += 1
        print(f"answered {src[0]}:{src[1]} ({answered})", flush=True)
    return 0


def ptr_answers(msg):
    """PTR records anywhere in a DNS message: [(owner, target)]."""
    _, _, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    _, _, off = questions(msg)
    out = []
    for _ in range(an + ns + ar):
        owner, off = read_name(msg, off)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        if rtype == 12:
            target, _ = read_name(msg, off)
            out.append((owner.lower(), target))
        off += rdlen
    return out


def mdns_responses(s, timeout):
    """The mDNS responses (QR bit set) that reach `s` within `timeout` seconds, as (message,
    sender); queries and messages too short for a header are skipped."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s.settimeout(max(0.05, end - time.monotonic()))
        try:
            msg, src = s.recvfrom(9000)
            flags, _, _ = questions(msg)
        except socket.timeout:
            return
        except (ValueError, IndexError, struct.error):
            continue
        if flags & 0x8000:
            yield msg, src


def mdns_browse(a):
    """One multicast query (QM, from port 5353) with a PTR question for each --service, as a
    home hub browsing for the LAN's devices does; waits until every service type is answered."""
    kinds = [k.lower().rstrip(".") for k in a.service]
    s = mdns_socket(a.ip)
    query = struct.pack("!HHHHHH", 0, 0, len(kinds), 0, 0, 0)
    for k in kinds:
        query += dns_name(k) + struct.pack("!HH", 12, 1)
    s.sendto(query, (MDNS_GROUP, MDNS_PORT))
    found = {}
    for msg, src in mdns_responses(s, a.timeout):
        try:
            answers = ptr_answers(msg)
        except (ValueError, IndexError, struct.error):
            continue
        for owner, target in answers:
            if owner in kinds:
                found.setdefault(owner, set()).add(target)
                print(f"{owner}: {target} (from {src[0]})", flush=True)
        if len(found) == len(kinds):
            break
    missing = [k for k in kinds if k not in found]
    if missing:
        return fail(f"no answer for {', '.join(missing)} within {a.timeout} s")
    return 0


def mdns_query(a):
    """One multicast query (QM, from port 5353) for --name's A record; waits for the answer."""
    name = a.name.lower().rstrip(".")
    s = mdns_socket(a.ip)
    query = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", 1, 1)
    s.sendto(query, (MDNS_GROUP, MDNS_PORT))
    for msg, src in mdns_responses(s, a.timeout):
        try:
            answers = a_answers(msg)
        except (ValueError, IndexError, struct.error):
            continue
        for n, ip in answers:
            if n == name:
                print(f"{name} is {ip} (answer from {src[0]})", flush=True)
                return 0
    return fail(f"no answer for {name} within {a.timeout} s")


# ------------------------------------------------------------------------------------------
# UDP


def udp_sink(a):
    """Discards datagrams on --port (an Internet service)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", a.port))
    s.settimeout(0.5)
    end = time.monotonic() + a.duration
    while time.monotonic() < end:
        try:
            s.recvfrom(65535)
        except socket.timeout:
            pass
    return 0


def udp_xml(a):
    """Cleartext XML status with a serial number, MAC and public IP to an Internet host every
    --interval seconds (the talk found exactly this from a camera)."""
    payload = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<DeviceStatus>"
        f"<SerialNumber>{a.serial}</SerialNumber>"
        f"<MacAddress>{a.mac}</MacAddress>"
        "<PublicIP>203.0.113.77</PublicIP>"
        "<Model>IWLAB-CAM-2</Model><Firmware>2.1.7</Firmware>"
        "<Status>online</Status>"
        "</DeviceStatus>\n"
    ).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end = time.monotonic() + a.duration
    sent = 0
    while time.monotonic() < end:
        s.sendto(payload, addr(a.target))
        sent += 1
        time.sleep(max(a.interval, 0.5))
    print(f"sent {sent} datagrams", flush=True)
    return 0


# ------------------------------------------------------------------------------------------
# TCP


def telnet_serve(a):
    """A Telnet login on --bind:--port: option negotiation, login and password prompts, a
    banner; no shell behind it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    s.listen(8)
    s.settimeout(0.5)
    end = time.monotonic() + a.duration
    IAC, WILL, DO = 255, 251, 253
    while time.monotonic() < end:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        with c:
            c.settimeout(3)
            try:
                c.sendall(bytes([IAC, WILL, 1, IAC, WILL, 3, IAC, DO, 24]) + b"\r\niwlab-router login: ")
                c.recv(1024)
                c.sendall(b"Password: ")
                c.recv(1024)
                c.sendall(b"\r\n\r\nBusyBox v1.35.0 built-in shell (ash)\r\n# ")
                c.recv(1024)
            except OSError:
                pass
    return 0


def telnet_session(a):
    """Logs in over Telnet with a user name and a password, in cleartext, then leaves."""
    with socket.create_connection(addr(a.target), timeout=3) as c:
        got = c.recv(1024)
        if b"login:" not in got:
            got += c.recv(1024)
        c.sendall(b"admin\r\n")
        c.recv(1024)
        c.sendall(b"iwlab-secret\r\n")
        banner = b""
        deadline = time.monotonic() + 3
        while b"# " not in banner and time.monotonic() < deadline:
            part = c.recv(1024)
            if not part:
                break
            banner += part
        c.sendall(b"exit\r\n")
    if b"BusyBox" not in banner:
        return fail(f"no shell banner after the login: {banner!r}")
    print("logged in", flush=True)
    return 0


def noise(n, seed):
    return random.Random(seed).randbytes(n)


def tcp_serve_binary(a):
    """A device's control port: reads a command, answers with binary status bytes."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", a.port))
    s.listen(8)
    s.settimeout(0.5)
    end = time.monotonic() + a.duration
    n = 0
    while time.monotonic() < end:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        with c:
            c.settimeout(3)
            try:
                if c.recv(4096):
                    n += 1
                    c.sendall(noise(512, n))
            except OSError:
                pass
    return 0


def tcp_exchange(a):
    """From the Internet side: opens a connection to a device, sends a binary command, reads
    the answer (a cloud telling a camera to do something)."""
    with socket.create_connection(addr(a.target), timeout=3, source_address=(a.bind, 0)) as c:
        c.sendall(noise(96, 7))
        c.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            part = c.recv(4096)
            if not part:
                break
            got += part
    if len(got) != 512:
        return fail(f"expected 512 bytes back, got {len(got)}")
    print(f"sent 96, received {len(got)} bytes", flush=True)
    return 0


def ranged_get(a):
    """Downloads --url in --chunks Range requests, each on a new connection (how devices fetch
    firmware), and checks the pieces add up to the whole file."""
    host, _, path = a.url.removeprefix("http://").partition("/")
    host, port = (host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1])) if ":" in host else (host, 80)
    path = "/" + path
    total, got, size = None, 0, None
    i = 0
    while size is None or got < size:
        chunk = a.chunk
        start, end = got, got + chunk - 1
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", path, headers={"Range": f"bytes={start}-{end}", "User-Agent": a.user_agent})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        if r.status != 206:
            return fail(f"range {start}-{end}: status {r.status}")
        cr = r.getheader("Content-Range", "")
        size = int(cr.rsplit("/", 1)[1])
        got += len(body)
        i += 1
        if i > 64:
            return fail("more than 64 chunks")
    print(f"{path}: {got} bytes in {i} range requests", flush=True)
    if a.expect_size and got != a.expect_size:
        return fail(f"expected {a.expect_size} bytes")
    return 0


def scan(a):
    """A Telnet sweep: one connection attempt to --port on every host of a /24, in parallel,
    with a short time-out (254 SYNs, no retries)."""
    prefix = a.net.rsplit(".", 1)[0]

    def probe(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        try:
            return s.connect_ex((f"{prefix}.{i}", a.port)) == 0
        except OSError:
            return False
        finally:
            s.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=a.parallel) as pool:
        results = list(pool.map(probe, range(1, 255)))
    print(f"probed {len(results)} hosts on port {a.port}: {sum(results)} open", flush=True)
    return 0


def dns_refused(a):
    """One DNS query (A iwlab.example) to SERVER:53 over a connected UDP socket: success is the
    server's host refusing it with ICMP port unreachable (ECONNREFUSED), as the talk's gateway did."""
    query = struct.pack("!HHHHHH", 0x1f2e, 0x0100, 1, 0, 0, 0) + dns_name("iwlab.example") + struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(a.timeout)
    s.connect((a.server, 53))
    s.send(query)
    try:
        s.recv(512)
    except ConnectionRefusedError:
        print(f"{a.server}:53 refused the query (ICMP port unreachable)", flush=True)
        return 0
    except socket.timeout:
        return fail(f"{a.server}:53: no answer and no ICMP error within {a.timeout} s")
    return fail(f"{a.server}:53 answered: a DNS server listens there")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("msearch")
    c.add_argument("--st", required=True)
    c.add_argument("--wait", type=float, default=3)
    c.add_argument("--fetch", action="store_true")
    c.add_argument("--user-agent", default="iwlab/1.0 UPnP/1.1 scenario/1.0")
    c.set_defaults(f=msearch)

    for name, f in (("mdns-respond", mdns_respond), ("mdns-query", mdns_query)):
        c = sub.add_parser(name)
        c.add_argument("--name", required=True)
        c.add_argument("--ip", required=True, help="this host's address (multicast interface)")
        c.add_argument("--duration", type=float, default=60)
        c.add_argument("--timeout", type=float, default=3)
        if f is mdns_respond:
            c.add_argument("--service", help="a service type to answer browses for: _http._tcp.local")
            c.add_argument("--instance", help="the service's instance name")
            c.add_argument("--port", type=int, default=80, help="the service's port (SRV)")
            c.add_argument("--txt", action="append", default=[], help="a TXT string, key=value")
        c.set_defaults(f=f)

    c = sub.add_parser("mdns-browse")
    c.add_argument("--ip", required=True, help="this host's address (multicast interface)")
    c.add_argument("--service", action="append", required=True, help="a service type: _http._tcp.local")
    c.add_argument("--timeout", type=float, default=3)
    c.set_defaults(f=mdns_browse)

    c = sub.add_parser("udp-sink")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.set_defaults(f=udp_sink)

    c = sub.add_parser("udp-xml")
    c.add_argument("--target", required=True)
    c.add_argument("--serial", required=True)
    c.add_argument("--mac", required=True)
    c.add_argument("--interval", type=float, default=5)
    c.add_argument("--duration", type=float, required=True)
    c.set_defaults(f=udp_xml)

    c = sub.add_parser("telnet-serve")
    c.add_argument("--bind", required=True)
    c.add_argument("--port", type=int, default=23)
    c.add_argument("--duration", type=float, required=True)
    c.set_defaults(f=telnet_serve)

    c = sub.add_parser("telnet-session")
    c.add_argument("--target", required=True)
    c.set_defaults(f=telnet_session)

    c = sub.add_parser("tcp-serve-binary")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.set_defaults(f=tcp_serve_binary)

    c = sub.add_parser("tcp-exchange")
    c.add_argument("--bind", required=True)
    c.add_argument("--target", required=True)
    c.set_defaults(f=tcp_exchange)

    c = sub.add_parser("ranged-get")
    c.add_argument("--url", required=True)
    c.add_argument("--chunk", type=int, default=512 * 1024)
    c.add_argument("--expect-size", type=int, default=0)
    c.add_argument("--user-agent", default="iwlab-updater/1.0")
    c.set_defaults(f=ranged_get)

    c = sub.add_parser("dns-refused")
    c.add_argument("--server", required=True)
    c.add_argument("--timeout", type=float, default=2)
    c.set_defaults(f=dns_refused)

    c = sub.add_parser("scan")
    c.add_argument("--net", required=True, help="a /24, e.g. 203.0.113.0")
    c.add_argument("--port", type=int, default=23)
    c.add_argument("--timeout", type=float, default=0.3)
    c.add_argument("--parallel", type=int, default=32)
    c.set_defaults(f=scan)

    a = p.parse_args()
    return a.f(a)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Reads an `iotwatch replay --format json` report on stdin and prints the parts the replay
tests compare, one fact per line, tab-separated, so that the Rust side needs no JSON parser
(the tests crate has no serde_json and must not add one):

    capture  packets wire_bytes captured_bytes truncated_frames first_ts last_ts skipped_frames
    linktype KEY COUNT
    file     PATH FORMAT PACKETS ERRORS
    invalid  FILE OFFSET MESSAGE
    lan      PREFIX
    mac      MAC tx_packets tx_bytes rx_packets rx_bytes
    ip       IP scope tx_packets tx_bytes rx_packets rx_bytes
    port     PROTO PORT packets bytes
    device   MAC

Timestamps are printed with repr() (shortest round-trip form); a missing one is `-`.
The schema is checked on the way.
"""

import json
import sys


def main():
    r = json.load(sys.stdin)
    if r.get("schema") != "iotwatch.report/v1":
        sys.exit(f"unexpected schema {r.get('schema')!r}")
    out = []
    c = r.get("capture") or {}
    ts = lambda v: "-" if v is None else repr(float(v))  # noqa: E731
    out.append(["capture", c["packets"], c["wire_bytes"], c["captured_bytes"], c["truncated_frames"], ts(c["first_ts"]), ts(c["last_ts"]), c["skipped_frames"]])
    for k, v in sorted(c["skipped_link_types"].items()):
        out.append(["linktype", k, v])
    for f in c["files"]:
        out.append(["file", f["path"], f["format"] or "-", f["packets"], f["errors"]])
    for i in c["invalid"]:
        out.append(["invalid", i["file"], i["offset"], i["message"]])
    for p in r["lan_prefixes"]:
        out.append(["lan", p])
    for m in r["macs"]:
        out.append(["mac", m["mac"], m["tx_packets"], m["tx_bytes"], m["rx_packets"], m["rx_bytes"]])
    for i in r["ips"]:
        out.append(["ip", i["ip"], i["scope"], i["tx_packets"], i["tx_bytes"], i["rx_packets"], i["rx_bytes"]])
    for p in r["ports"]:
        out.append(["port", p["proto"], p["port"], p["packets"], p["bytes"]])
    for d in r["devices"]:
        out.append(["device", d["mac"]])
    for row in out:
        print("\t".join(str(x).replace("\t", " ").replace("\n", " ") for x in row))


if __name__ == "__main__":
    main()

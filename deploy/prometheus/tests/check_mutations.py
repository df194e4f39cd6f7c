#!/usr/bin/env python3
"""Prove that the promtool tests can fail: break each alert rule in the obvious way
(a filter dropped, a threshold or `for` changed, a branch removed) and expect
`promtool test rules` to fail for every such mutant.

Usage: python3 deploy/prometheus/tests/check_mutations.py   (needs promtool on PATH)
Each mutant runs against the test groups that check its alert (the first word of its
name), in parallel. Exit 0: every mutant caught. 1: a mutant passed the tests (a test cannot fail).
2: a mutation no longer matches the rules file exactly once: update it here.
Standard library only.
"""
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "..", "iotwatch.rules.yml")
TESTS = os.path.join(HERE, "iotwatch.rules.test.yml")

DOWN_FOR = ('        for: 5m\n        labels:\n          severity: critical\n        annotations:\n'
            '          summary: "iotwatch on {{ $labels.instance }} is down"')
ATTACHED_FOR = ('        for: 5m\n        labels:\n          severity: critical\n        annotations:\n'
                '          summary: "iotwatch on {{ $labels.instance }} is attached')
MUTANTS = {
    "IotwatchDown without job filter": ('up{job="iotwatch"} == 0', "up == 0"),
    "IotwatchDown without for": (DOWN_FOR, DOWN_FOR.replace("        for: 5m\n", "")),
    "IotwatchBpfMapFull without event filter": (
        'iotwatch_bpf_events_total{event=~"device_insert_failed|conversation_insert_failed"}',
        "iotwatch_bpf_events_total"),
    "IotwatchBpfMapFull with the wrong flag in the text": (
        'if eq $labels.event \\"device_insert_failed\\"', 'if eq $labels.event \\"conversation_insert_failed\\"'),
    "IotwatchSamplesDropped counting suppressed samples too": (
        'iotwatch_samples_total{outcome="dropped"}', 'iotwatch_samples_total{outcome=~"dropped|suppressed"}'),
    "IotwatchSamplesDropped without for": ('{outcome="dropped"}[5m])) > 0\n        for: 5m\n', '{outcome="dropped"}[5m])) > 0\n'),
    "IotwatchSamplesCapped counting suppressed samples too": (
        'iotwatch_samples_total{outcome="capped"}', 'iotwatch_samples_total{outcome=~"capped|suppressed"}'),
    "IotwatchSamplesCapped without for": ('{outcome="capped"}[5m])) > 0\n        for: 10m\n', '{outcome="capped"}[5m])) > 0\n'),
    "IotwatchXdpSkbUndercounting without event filter": (
        'iotwatch_bpf_events_total{event="xdp_oversized"}', "iotwatch_bpf_events_total"),
    "IotwatchXdpSkbUndercounting without for": ('{event="xdp_oversized"}[5m])) > 0\n        for: 5m\n', '{event="xdp_oversized"}[5m])) > 0\n'),
    "IotwatchBpfMapNearlyFull at 9%": ("iotwatch_bpf_map_capacity > 0.9", "iotwatch_bpf_map_capacity > 0.09"),
    "IotwatchBpfMapNearlyFull without for": ("> 0.9\n        for: 15m\n", "> 0.9\n"),
    "IotwatchBpfMapNearlyFull on DEVICE_STATS too": ('iotwatch_bpf_map_entries{map!="DEVICE_STATS"}', "iotwatch_bpf_map_entries"),
    "IotwatchMacMapNearlyFull without map filter": ('iotwatch_bpf_map_entries{map="DEVICE_STATS"}', "iotwatch_bpf_map_entries"),
    "IotwatchMacMapNearlyFull at 90%": ('iotwatch_bpf_map_capacity > 0.8', 'iotwatch_bpf_map_capacity > 0.9'),
    "IotwatchMacMapNearlyFull without for": ("> 0.8\n        for: 10m\n", "> 0.8\n"),
    "IotwatchConversationEvictions on the raw counter": (
        "increase(iotwatch_bpf_conversation_evictions_total[10m]) > 0",
        "iotwatch_bpf_conversation_evictions_total > 0"),
    "IotwatchConversationEvictions >= 0": (
        "increase(iotwatch_bpf_conversation_evictions_total[10m]) > 0",
        "increase(iotwatch_bpf_conversation_evictions_total[10m]) >= 0"),
    "IotwatchLabelOverflow without label filter": (
        'iotwatch_label_overflow_total{label="device"}', "iotwatch_label_overflow_total"),
    "IotwatchDeviceChattyToInternet without direction": (
        '{direction="tx",scope="internet"}[1h])) > 1e6', '{scope="internet"}[1h])) > 1e6'),
    "IotwatchDeviceChattyToInternet without scope": (
        '{direction="tx",scope="internet"}[1h])) > 1e6', '{direction="tx"}[1h])) > 1e6'),
    "IotwatchDeviceChattyToInternet at 100 kB": ("[1h])) > 1e6", "[1h])) > 1e5"),
    "IotwatchDeviceChattyToInternet at 2 MB": ("[1h])) > 1e6", "[1h])) > 2e6"),
    "IotwatchDeviceChattyToInternet without for": ("> 1e6\n        for: 15m\n", "> 1e6\n"),
    "IotwatchNewInternetTalker with a plain offset 1h": (
        'max by (job, instance, mac) (max_over_time(iotwatch_device_bytes_total{scope="internet"}[1d] offset 1h)) > 0',
        'sum by (job, instance, mac) (iotwatch_device_bytes_total{scope="internet"} offset 1h) > 0'),
    "IotwatchNewInternetTalker without start-up guard": (
        "          and on (job, instance)\n          (\n            iotwatch_build_info offset 75m\n          )\n", ""),
    "IotwatchNewInternetTalker with guard at offset 1h": (
        "            iotwatch_build_info offset 75m\n", "            iotwatch_build_info offset 1h\n"),
    "IotwatchNewInternetTalker without scope": (
        'sum by (job, instance, mac) (iotwatch_device_bytes_total{scope="internet"}) > 0',
        "sum by (job, instance, mac) (iotwatch_device_bytes_total) > 0"),
    "IotwatchNewInternetTalker with and instead of unless": (
        "          unless on (job, instance, mac)\n", "          and on (job, instance, mac)\n"),
    "IotwatchNoAttachedInterfaces without the absent branch": (
        "          or on (job, instance)\n          (\n            group by (job, instance) (iotwatch_build_info)\n"
        "            unless on (job, instance)\n            group by (job, instance) (iotwatch_attached_interfaces)\n"
        "          )\n", ""),
    "IotwatchNoAttachedInterfaces without the sum == 0 branch": (
        "(sum by (job, instance) (iotwatch_attached_interfaces) == 0)\n          or on (job, instance)\n", ""),
    "IotwatchNoAttachedInterfaces without for": (ATTACHED_FOR, ATTACHED_FOR.replace("        for: 5m\n", "")),
    # Findings alerts: generated the same way for each rule.
    "IotwatchDeviceOffline without max_over_time (forgets devices on an agent restart)": (
        "max_over_time(iotwatch_device_last_seen_timestamp_seconds[1d])", "iotwatch_device_last_seen_timestamp_seconds"),
    "IotwatchDeviceOffline at 5 minutes": (") > 900 < 86400", ") > 300 < 86400"),
    "IotwatchDeviceOffline without the one-day limit": (") > 900 < 86400", ") > 900"),
    "IotwatchDeviceOffline without the agent guard": (
        "          and on (job, instance)\n          iotwatch_build_info\n", ""),
    "IotwatchDeviceOffline with for": (
        "          iotwatch_build_info\n        labels:\n", "          iotwatch_build_info\n        for: 15m\n        labels:\n"),
    "IotwatchAbnormalUpload without the floor": (
        "          instance_mac:iotwatch_device_internet_tx_bytes:increase1h > 10e6\n          and on (job, instance, mac)\n", ""),
    "IotwatchAbnormalUpload at twice the baseline": (
        "> 4 * instance_mac:iotwatch_device_internet_tx_bytes:avg7d_increase1h", "> 2 * instance_mac:iotwatch_device_internet_tx_bytes:avg7d_increase1h"),
    "IotwatchAbnormalUpload without a day of history": (
        "          and on (job, instance, mac)\n          instance_mac:iotwatch_device_internet_tx_bytes:increase1h offset 1d\n", ""),
    "IotwatchAbnormalUpload without for": ("offset 1d\n        for: 30m\n", "offset 1d\n"),
}


# One alert per detector rule, all of one form (see the rules file): (alert, rule, severity,
# summary). Each gets the same seven mutants.
FINDING_ALERTS = [
    ("IotwatchLateralMovement", "lateral_movement", "warning", 'Device {{ $labels.mac }} explored the LAN and fetched from other devices'),
    ("IotwatchUnsolicitedMdns", "unsolicited_mdns", "warning", 'Device {{ $labels.mac }} advertises itself over mDNS unasked'),
    ("IotwatchNtpFanout", "ntp_fanout", "warning", 'Device {{ $labels.mac }} asks many NTP servers'),
    ("IotwatchFirmwareOverHttp", "firmware_over_http", "warning", 'Device {{ $labels.mac }} downloaded firmware over plain HTTP'),
    ("IotwatchCleartext", "cleartext", "warning", 'Device {{ $labels.mac }} sends data in cleartext'),
    ("IotwatchGatewayPing", "gateway_ping", "info", 'Device {{ $labels.mac }} pings its gateway periodically'),
    ("IotwatchCloudInitiated", "cloud_initiated", "warning", 'Device {{ $labels.mac }} accepted a conversation opened from the Internet'),
    ("IotwatchNewDevice", "new_device", "info", 'New device {{ $labels.mac }} on the network'),
    ("IotwatchScan", "scan", "critical", 'Device {{ $labels.mac }} is scanning hosts or ports'),
    ("IotwatchLargeUpload", "large_upload", "warning", 'Device {{ $labels.mac }} uploaded a lot to one Internet host'),
    ("IotwatchDnsUnreachable", "dns_unreachable", "warning", 'Device {{ $labels.mac }} asks DNS of a host that serves none'),
    ("IotwatchNewDestination", "new_destination", "warning", 'Device {{ $labels.mac }} talks to a new country or provider'),
]


def finding_mutants(alert, rule, severity, summary):
    """The ways a findings alert breaks: a rule filter dropped, 1h instead of 2h, the new-series
    branch removed, the raw counter instead of its increase, a `for:` added."""
    f = f'iotwatch_findings_total{{rule="{rule}"}}'
    tail = (f'offset 2h)\n          ) > 0\n        labels:\n          severity: {severity}\n'
            f'        annotations:\n          summary: "{summary}"')
    return {
        f"{alert} without rule filter in increase": (f"increase({f}[2h])", "increase(iotwatch_findings_total[2h])"),
        f"{alert} without rule filter on new series": (f"({f} unless", "(iotwatch_findings_total unless"),
        f"{alert} over 1h": (f"increase({f}[2h]) > 0", f"increase({f}[1h]) > 0"),
        f"{alert} with new series for 1h": (f"unless {f} offset 2h)", f"unless {f} offset 1h)"),
        f"{alert} missing new series": (f"            or\n            ({f} unless {f} offset 2h)\n", ""),
        f"{alert} on the raw counter": (f"increase({f}[2h]) > 0", f"{f} > 0"),
        f"{alert} with for": (tail, tail.replace("\n        labels:", "\n        for: 15m\n        labels:", 1)),
    }


for _alert in FINDING_ALERTS:
    MUTANTS.update(finding_mutants(*_alert))


def run(rules_text, tests_text):
    """promtool test rules on these rules and tests; True when the tests pass."""
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "tests"))
        open(os.path.join(tmp, "tests", "t.yml"), "w", encoding="utf-8").write(tests_text)
        open(os.path.join(tmp, "iotwatch.rules.yml"), "w", encoding="utf-8").write(rules_text)
        return subprocess.run(["promtool", "test", "rules", os.path.join(tmp, "tests", "t.yml")],
                              capture_output=True, text=True).returncode == 0


def tests_for(tests, alert):
    """The test file with only the test groups that check `alert` (a mutant breaks one alert;
    its own tests must catch it, and running only them keeps this quick). The whole file when
    no group names it."""
    head, sep, body = tests.partition("\ntests:\n")
    groups = re.split(r"(?m)^(?=  - name: )", body)
    mine = [g for g in groups if re.search(rf"(?m)^\s+alertname: {re.escape(alert)}$", g)]
    return head + sep + "".join(mine) if mine else tests


def main():
    src = open(RULES, encoding="utf-8").read()
    tests = open(TESTS, encoding="utf-8").read()
    if not run(src, tests):
        print("the unmodified rules fail their tests", file=sys.stderr)
        return 1
    missed = stale = 0
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for name, (old, new) in MUTANTS.items():
            if src.count(old) != 1:
                print(f"STALE   {name}: pattern found {src.count(old)} times")
                stale += 1
                continue
            jobs[name] = pool.submit(run, src.replace(old, new), tests_for(tests, name.split()[0]))
        for name, job in jobs.items():
            caught = not job.result()
            missed += not caught
            print(f"{'caught' if caught else 'MISSED'}  {name}")
    print(f"{len(MUTANTS) - missed - stale}/{len(MUTANTS)} mutants caught")
    return 1 if missed else 2 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

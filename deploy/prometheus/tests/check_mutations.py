#!/usr/bin/env python3
"""Prove that the promtool tests can fail: break each alert rule in the obvious way
(a filter dropped, a threshold or `for` changed, a branch removed) and expect
`promtool test rules` to fail for every such mutant.

Usage: python3 deploy/prometheus/tests/check_mutations.py   (needs promtool on PATH)
Exit 0: every mutant caught. 1: a mutant passed the tests (a test cannot fail).
2: a mutation no longer matches the rules file exactly once: update it here.
Standard library only.
"""
import os
import shutil
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
}


def run(tmp):
    return subprocess.run(["promtool", "test", "rules", os.path.join(tmp, "tests", "t.yml")],
                          capture_output=True, text=True).returncode


def main():
    src = open(RULES, encoding="utf-8").read()
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "tests"))
        shutil.copy(TESTS, os.path.join(tmp, "tests", "t.yml"))
        rules = os.path.join(tmp, "iotwatch.rules.yml")
        open(rules, "w", encoding="utf-8").write(src)
        if run(tmp) != 0:
            print("the unmodified rules fail their tests", file=sys.stderr)
            return 1
        missed = stale = 0
        for name, (old, new) in MUTANTS.items():
            if src.count(old) != 1:
                print(f"STALE   {name}: pattern found {src.count(old)} times")
                stale += 1
                continue
            open(rules, "w", encoding="utf-8").write(src.replace(old, new))
            caught = run(tmp) != 0
            missed += not caught
            print(f"{'caught' if caught else 'MISSED'}  {name}")
    print(f"{len(MUTANTS) - missed - stale}/{len(MUTANTS)} mutants caught")
    return 1 if missed else 2 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

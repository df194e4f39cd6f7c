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
    'IotwatchLateralMovement without rule filter in increase': ('increase(iotwatch_findings_total{rule="lateral_movement"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchLateralMovement without rule filter on new series': ('(iotwatch_findings_total{rule="lateral_movement"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchLateralMovement over 1h': ('increase(iotwatch_findings_total{rule="lateral_movement"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="lateral_movement"}[1h]) > 0'),
    'IotwatchLateralMovement with new series for 1h': ('unless iotwatch_findings_total{rule="lateral_movement"} offset 2h)',
        'unless iotwatch_findings_total{rule="lateral_movement"} offset 1h)'),
    'IotwatchLateralMovement missing new series': ('            or\n            (iotwatch_findings_total{rule="lateral_movement"} unless iotwatch_findings_total{rule="lateral_movement"} offset 2h)\n',
        ''),
    'IotwatchLateralMovement on the raw counter': ('increase(iotwatch_findings_total{rule="lateral_movement"}[2h]) > 0',
        'iotwatch_findings_total{rule="lateral_movement"} > 0'),
    'IotwatchLateralMovement with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} explored the LAN and fetched from other devices"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} explored the LAN and fetched from other devices"'),
    'IotwatchUnsolicitedMdns without rule filter in increase': ('increase(iotwatch_findings_total{rule="unsolicited_mdns"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchUnsolicitedMdns without rule filter on new series': ('(iotwatch_findings_total{rule="unsolicited_mdns"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchUnsolicitedMdns over 1h': ('increase(iotwatch_findings_total{rule="unsolicited_mdns"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="unsolicited_mdns"}[1h]) > 0'),
    'IotwatchUnsolicitedMdns with new series for 1h': ('unless iotwatch_findings_total{rule="unsolicited_mdns"} offset 2h)',
        'unless iotwatch_findings_total{rule="unsolicited_mdns"} offset 1h)'),
    'IotwatchUnsolicitedMdns missing new series': ('            or\n            (iotwatch_findings_total{rule="unsolicited_mdns"} unless iotwatch_findings_total{rule="unsolicited_mdns"} offset 2h)\n',
        ''),
    'IotwatchUnsolicitedMdns on the raw counter': ('increase(iotwatch_findings_total{rule="unsolicited_mdns"}[2h]) > 0',
        'iotwatch_findings_total{rule="unsolicited_mdns"} > 0'),
    'IotwatchUnsolicitedMdns with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} advertises itself over mDNS unasked"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} advertises itself over mDNS unasked"'),
    'IotwatchNtpFanout without rule filter in increase': ('increase(iotwatch_findings_total{rule="ntp_fanout"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchNtpFanout without rule filter on new series': ('(iotwatch_findings_total{rule="ntp_fanout"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchNtpFanout over 1h': ('increase(iotwatch_findings_total{rule="ntp_fanout"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="ntp_fanout"}[1h]) > 0'),
    'IotwatchNtpFanout with new series for 1h': ('unless iotwatch_findings_total{rule="ntp_fanout"} offset 2h)',
        'unless iotwatch_findings_total{rule="ntp_fanout"} offset 1h)'),
    'IotwatchNtpFanout missing new series': ('            or\n            (iotwatch_findings_total{rule="ntp_fanout"} unless iotwatch_findings_total{rule="ntp_fanout"} offset 2h)\n',
        ''),
    'IotwatchNtpFanout on the raw counter': ('increase(iotwatch_findings_total{rule="ntp_fanout"}[2h]) > 0',
        'iotwatch_findings_total{rule="ntp_fanout"} > 0'),
    'IotwatchNtpFanout with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} asks many NTP servers"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} asks many NTP servers"'),
    'IotwatchFirmwareOverHttp without rule filter in increase': ('increase(iotwatch_findings_total{rule="firmware_over_http"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchFirmwareOverHttp without rule filter on new series': ('(iotwatch_findings_total{rule="firmware_over_http"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchFirmwareOverHttp over 1h': ('increase(iotwatch_findings_total{rule="firmware_over_http"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="firmware_over_http"}[1h]) > 0'),
    'IotwatchFirmwareOverHttp with new series for 1h': ('unless iotwatch_findings_total{rule="firmware_over_http"} offset 2h)',
        'unless iotwatch_findings_total{rule="firmware_over_http"} offset 1h)'),
    'IotwatchFirmwareOverHttp missing new series': ('            or\n            (iotwatch_findings_total{rule="firmware_over_http"} unless iotwatch_findings_total{rule="firmware_over_http"} offset 2h)\n',
        ''),
    'IotwatchFirmwareOverHttp on the raw counter': ('increase(iotwatch_findings_total{rule="firmware_over_http"}[2h]) > 0',
        'iotwatch_findings_total{rule="firmware_over_http"} > 0'),
    'IotwatchFirmwareOverHttp with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} downloaded firmware over plain HTTP"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} downloaded firmware over plain HTTP"'),
    'IotwatchCleartext without rule filter in increase': ('increase(iotwatch_findings_total{rule="cleartext"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchCleartext without rule filter on new series': ('(iotwatch_findings_total{rule="cleartext"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchCleartext over 1h': ('increase(iotwatch_findings_total{rule="cleartext"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="cleartext"}[1h]) > 0'),
    'IotwatchCleartext with new series for 1h': ('unless iotwatch_findings_total{rule="cleartext"} offset 2h)',
        'unless iotwatch_findings_total{rule="cleartext"} offset 1h)'),
    'IotwatchCleartext missing new series': ('            or\n            (iotwatch_findings_total{rule="cleartext"} unless iotwatch_findings_total{rule="cleartext"} offset 2h)\n',
        ''),
    'IotwatchCleartext on the raw counter': ('increase(iotwatch_findings_total{rule="cleartext"}[2h]) > 0',
        'iotwatch_findings_total{rule="cleartext"} > 0'),
    'IotwatchCleartext with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} sends data in cleartext"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} sends data in cleartext"'),
    'IotwatchGatewayPing without rule filter in increase': ('increase(iotwatch_findings_total{rule="gateway_ping"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchGatewayPing without rule filter on new series': ('(iotwatch_findings_total{rule="gateway_ping"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchGatewayPing over 1h': ('increase(iotwatch_findings_total{rule="gateway_ping"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="gateway_ping"}[1h]) > 0'),
    'IotwatchGatewayPing with new series for 1h': ('unless iotwatch_findings_total{rule="gateway_ping"} offset 2h)',
        'unless iotwatch_findings_total{rule="gateway_ping"} offset 1h)'),
    'IotwatchGatewayPing missing new series': ('            or\n            (iotwatch_findings_total{rule="gateway_ping"} unless iotwatch_findings_total{rule="gateway_ping"} offset 2h)\n',
        ''),
    'IotwatchGatewayPing on the raw counter': ('increase(iotwatch_findings_total{rule="gateway_ping"}[2h]) > 0',
        'iotwatch_findings_total{rule="gateway_ping"} > 0'),
    'IotwatchGatewayPing with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: info\n        annotations:\n          summary: "Device {{ $labels.mac }} pings its gateway periodically"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: info\n        annotations:\n          summary: "Device {{ $labels.mac }} pings its gateway periodically"'),
    'IotwatchCloudInitiated without rule filter in increase': ('increase(iotwatch_findings_total{rule="cloud_initiated"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchCloudInitiated without rule filter on new series': ('(iotwatch_findings_total{rule="cloud_initiated"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchCloudInitiated over 1h': ('increase(iotwatch_findings_total{rule="cloud_initiated"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="cloud_initiated"}[1h]) > 0'),
    'IotwatchCloudInitiated with new series for 1h': ('unless iotwatch_findings_total{rule="cloud_initiated"} offset 2h)',
        'unless iotwatch_findings_total{rule="cloud_initiated"} offset 1h)'),
    'IotwatchCloudInitiated missing new series': ('            or\n            (iotwatch_findings_total{rule="cloud_initiated"} unless iotwatch_findings_total{rule="cloud_initiated"} offset 2h)\n',
        ''),
    'IotwatchCloudInitiated on the raw counter': ('increase(iotwatch_findings_total{rule="cloud_initiated"}[2h]) > 0',
        'iotwatch_findings_total{rule="cloud_initiated"} > 0'),
    'IotwatchCloudInitiated with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} accepted a conversation opened from the Internet"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} accepted a conversation opened from the Internet"'),
    'IotwatchNewDevice without rule filter in increase': ('increase(iotwatch_findings_total{rule="new_device"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchNewDevice without rule filter on new series': ('(iotwatch_findings_total{rule="new_device"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchNewDevice over 1h': ('increase(iotwatch_findings_total{rule="new_device"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="new_device"}[1h]) > 0'),
    'IotwatchNewDevice with new series for 1h': ('unless iotwatch_findings_total{rule="new_device"} offset 2h)',
        'unless iotwatch_findings_total{rule="new_device"} offset 1h)'),
    'IotwatchNewDevice missing new series': ('            or\n            (iotwatch_findings_total{rule="new_device"} unless iotwatch_findings_total{rule="new_device"} offset 2h)\n',
        ''),
    'IotwatchNewDevice on the raw counter': ('increase(iotwatch_findings_total{rule="new_device"}[2h]) > 0',
        'iotwatch_findings_total{rule="new_device"} > 0'),
    'IotwatchNewDevice with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: info\n        annotations:\n          summary: "New device {{ $labels.mac }} on the network"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: info\n        annotations:\n          summary: "New device {{ $labels.mac }} on the network"'),
    'IotwatchScan without rule filter in increase': ('increase(iotwatch_findings_total{rule="scan"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchScan without rule filter on new series': ('(iotwatch_findings_total{rule="scan"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchScan over 1h': ('increase(iotwatch_findings_total{rule="scan"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="scan"}[1h]) > 0'),
    'IotwatchScan with new series for 1h': ('unless iotwatch_findings_total{rule="scan"} offset 2h)',
        'unless iotwatch_findings_total{rule="scan"} offset 1h)'),
    'IotwatchScan missing new series': ('            or\n            (iotwatch_findings_total{rule="scan"} unless iotwatch_findings_total{rule="scan"} offset 2h)\n',
        ''),
    'IotwatchScan on the raw counter': ('increase(iotwatch_findings_total{rule="scan"}[2h]) > 0',
        'iotwatch_findings_total{rule="scan"} > 0'),
    'IotwatchScan with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: critical\n        annotations:\n          summary: "Device {{ $labels.mac }} is scanning hosts or ports"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: critical\n        annotations:\n          summary: "Device {{ $labels.mac }} is scanning hosts or ports"'),
    'IotwatchLargeUpload without rule filter in increase': ('increase(iotwatch_findings_total{rule="large_upload"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchLargeUpload without rule filter on new series': ('(iotwatch_findings_total{rule="large_upload"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchLargeUpload over 1h': ('increase(iotwatch_findings_total{rule="large_upload"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="large_upload"}[1h]) > 0'),
    'IotwatchLargeUpload with new series for 1h': ('unless iotwatch_findings_total{rule="large_upload"} offset 2h)',
        'unless iotwatch_findings_total{rule="large_upload"} offset 1h)'),
    'IotwatchLargeUpload missing new series': ('            or\n            (iotwatch_findings_total{rule="large_upload"} unless iotwatch_findings_total{rule="large_upload"} offset 2h)\n',
        ''),
    'IotwatchLargeUpload on the raw counter': ('increase(iotwatch_findings_total{rule="large_upload"}[2h]) > 0',
        'iotwatch_findings_total{rule="large_upload"} > 0'),
    'IotwatchLargeUpload with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} uploaded a lot to one Internet host"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} uploaded a lot to one Internet host"'),
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
    'IotwatchDnsUnreachable without rule filter in increase': ('increase(iotwatch_findings_total{rule="dns_unreachable"}[2h])',
        'increase(iotwatch_findings_total[2h])'),
    'IotwatchDnsUnreachable without rule filter on new series': ('(iotwatch_findings_total{rule="dns_unreachable"} unless',
        '(iotwatch_findings_total unless'),
    'IotwatchDnsUnreachable over 1h': ('increase(iotwatch_findings_total{rule="dns_unreachable"}[2h]) > 0',
        'increase(iotwatch_findings_total{rule="dns_unreachable"}[1h]) > 0'),
    'IotwatchDnsUnreachable with new series for 1h': ('unless iotwatch_findings_total{rule="dns_unreachable"} offset 2h)',
        'unless iotwatch_findings_total{rule="dns_unreachable"} offset 1h)'),
    'IotwatchDnsUnreachable missing new series': ('            or\n            (iotwatch_findings_total{rule="dns_unreachable"} unless iotwatch_findings_total{rule="dns_unreachable"} offset 2h)\n',
        ''),
    'IotwatchDnsUnreachable on the raw counter': ('increase(iotwatch_findings_total{rule="dns_unreachable"}[2h]) > 0',
        'iotwatch_findings_total{rule="dns_unreachable"} > 0'),
    'IotwatchDnsUnreachable with for': ('offset 2h)\n          ) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} asks DNS of a host that serves none"',
        'offset 2h)\n          ) > 0\n        for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Device {{ $labels.mac }} asks DNS of a host that serves none"'),
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

//! The lab's finding scenarios end to end (issue 12): every scenario of
//! `xtask::scenarios::SCENARIOS` on a device of its own (prefix `iwf`), the agent on the bridge
//! with an event log, a real Prometheus (Debian's) scraping it every second with
//! deploy/prometheus's rules, and then:
//!
//! - traffic (independent of the detectors): every client ran and succeeded (each device's DHCP
//!   exchange among them), and each scenario's traffic shows in the agent's protocol events and
//!   per-peer counts;
//! - identity: each device has the vendor of its OUI (none for the randomised phone), its DHCP
//!   hostname and mDNS host name among its names, and its DHCP options in the event log;
//! - peers: the lab's Internet peers carry the ASN, organisation, country and provider that
//!   the lab's own peer databases give them (`scenarios::LAB_NETWORKS`), live and in replay;
//! - detectors: each positive scenario's device has its finding in the report, in the event
//!   log (with evidence that names logged events) and in `iotwatch_findings_total`; each
//!   negative twin's device has none of the rules it must not raise, in any of the three;
//! - Prometheus: the findings alert rules are loaded and healthy, each positive's alert fires with
//!   the device's `mac`, no negative twin's does;
//! - dashboard: every panel's query of deploy/grafana/iotwatch.json, and every variable's,
//!   returns data from that Prometheus.
//! - replay: the lab's traffic, captured on the bridge from before the agent started until
//!   just before the report is read, through `iotwatch replay` raises the same rules per device
//!   as the live agent (`new_device` aside: see [`replay_checks`]).
//!
//! All checks are evaluated and printed as one table before the test fails on any of them, so
//! that a run shows which side (traffic or detectors) is missing. The run lasts at least
//! [`MIN_RUN`] (every client has run and the negative twins had time to misfire) and at most
//! [`MAX_RUN`], ending early once every positive shows in the report and in Prometheus.
//! Run it alone: `flock /tmp/iwt-netns.lock ... --test findings_lab`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use iotwatch_tests::{agent_bin, privileged_test, temp_dir};
use serde_json::Value;
use xtask::{
    dashboard,
    metrics::scrape,
    prometheus::{self, Alert},
    scenarios::{
        self, EARLY_DEVICES, Expect, Finding, LATE_DEVICE, RULES, SCENARIOS, ScenarioLab, ScenarioLabOptions,
        alert_name,
    },
};

const PREFIX: &str = "iwf";
/// Every client's first round is over by 20 s (chronyd's 25 servers take 15 s from 5 s); the
/// rest is the agent's poll interval (5 s), a scrape and a rule evaluation, with room.
const MIN_RUN: Duration = Duration::from_secs(45);
const MAX_RUN: Duration = Duration::from_secs(90);
/// `iotwatch replay`'s flags for the lab's capture: a small conversation map makes replay poll
/// every 64 frames, so that its first poll (the baseline of `new_device`) comes early and the
/// late device is new (see [`replay_checks`]).
const REPLAY_FLAGS: [&str; 2] = ["--bpf.max-conversations", "256"];

struct Check {
    group: &'static str,
    name: String,
    result: Result<String, String>,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, group: &'static str, name: impl Into<String>, result: Result<String, String>) {
        self.0.push(Check { group, name: name.into(), result });
    }

    fn table(&self) -> String {
        let mut out = String::new();
        for group in ["traffic", "identity", "peers", "detectors", "prometheus", "dashboard", "replay"] {
            let of: Vec<&Check> = self.0.iter().filter(|c| c.group == group).collect();
            let ok = of.iter().filter(|c| c.result.is_ok()).count();
            out.push_str(&format!("== {group}: {ok} of {} pass\n", of.len()));
            for c in of {
                let (mark, detail) = match &c.result {
                    Ok(d) => ("ok  ", d),
                    Err(d) => ("FAIL", d),
                };
                out.push_str(&format!("  {mark} {}: {detail}\n", c.name));
            }
        }
        out
    }

    fn failed(&self) -> usize {
        self.0.iter().filter(|c| c.result.is_err()).count()
    }
}

fn mac(device: usize) -> String {
    scenarios::device_mac(device)
}

fn has(findings: &[Finding], rule: &str, mac: &str) -> bool {
    findings.iter().any(|f| f.rule == rule && f.mac == mac)
}

fn alert_for<'a>(alerts: &'a [Alert], rule: &str, mac: &str) -> Option<&'a Alert> {
    let name = alert_name(rule);
    alerts.iter().find(|a| a.name == name && a.label("mac") == Some(mac))
}

/// Whether every positive scenario shows in the report and fires in Prometheus (the early end).
fn positives_done(sl: &ScenarioLab) -> bool {
    let (Ok(report), Some(p)) = (sl.report(), sl.prometheus.as_ref()) else { return false };
    let Ok(alerts) = p.alerts() else { return false };
    let findings = scenarios::report_findings(&report);
    SCENARIOS.iter().enumerate().all(|(i, s)| match s.expect {
        Expect::Finding(rule) => {
            let m = mac(i + 1);
            has(&findings, rule, &m) && alert_for(&alerts, rule, &m).is_some_and(|a| a.state == "firing")
        }
        Expect::Quiet(_) => true,
    })
}

fn ok_if(ok: bool, detail: String) -> Result<String, String> {
    if ok { Ok(detail) } else { Err(detail) }
}

/// Rules per MAC.
fn rules_by_mac(findings: &[Finding]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in findings {
        out.entry(f.mac.clone()).or_default().insert(f.rule.clone());
    }
    out
}

fn who(m: &str) -> String {
    match scenarios::device_of(m) {
        Some(d) => format!("d{d} {}", SCENARIOS[d - 1].name),
        None if m == xtask::lab::GATEWAY_MAC => "gateway".to_owned(),
        None => m.to_owned(),
    }
}

/// The capture of the lab's bridge through `iotwatch replay`: every MAC the live agent saw send
/// is in it, and every MAC has the same rules in replay as live, `new_device` included: with no
/// known devices remembered, both learn the devices present in their first
/// `--detect.startup-grace` seconds (by the clock each runs on) and raise `new_device` for the
/// late device alone, which joins after both learning periods. Replay polls every 64 frames
/// (`--bpf.max-conversations 256`, as tests/tests/replay_findings.rs does) so that its polls
/// follow the capture's time closely.
///
/// Replay gets the lab's flags ([`ScenarioLab::lab_flags`]: its peer databases and its
/// `new_destination` baseline). That baseline starts at each device's first conversation with
/// the Internet, by the conversations' own times, so live and replay end it at the same point
/// of the traffic, 8 s before the new-destination and same-cloud devices reach their later host.
///
/// Everything else is compared as is. `cloud_initiated` ignores conversations first seen within
/// `--detect.startup-grace` (30 s) of the first conversation: the capture starts before the
/// agent, so replay's grace ends one or two seconds before the live one. The cloud's exchanges
/// come every 15 s from 6 s after the scenarios start (in one capture at 12.6, 27.6 and 42.7 s
/// of it): the second may fall on either side of the grace, in replay as live, the third is
/// past both, so the cloud-initiated device has the rule in both, and no other device is
/// opened from the Internet. The capture holds GSO buffers as one frame each where the live
/// agent (tc) counts their segments, which changes frame counts, not findings. Without
/// `--lan.prefix` replay takes the private ranges for the LAN, which gives the same findings
/// here (the lab's Internet is in documentation and benchmarking ranges); the prefix is given all the same, as
/// the live agent takes it from the bridge.
fn replay_checks(
    checks: &mut Checks,
    captured: anyhow::Result<scenarios::CaptureStats>,
    file: &Path,
    lab_flags: &[String],
    live_report: &Value,
) {
    let stats = match captured {
        Ok(s) => s,
        Err(e) => {
            checks.add("replay", "capture of the bridge", Err(format!("{e:#}")));
            return;
        }
    };
    checks.add(
        "replay",
        "capture of the bridge: no frame dropped",
        ok_if(
            stats.captured > 0 && stats.dropped == 0,
            format!("{} frames, {} dropped by the kernel", stats.captured, stats.dropped),
        ),
    );
    let t = Instant::now();
    let out = Command::new(agent_bin())
        .args(["replay", "--format", "json", "--lan.prefix", xtask::lab::LAN_PREFIX])
        .args(REPLAY_FLAGS)
        .args(lab_flags)
        .arg(file)
        .output();
    let replayed = match out {
        Ok(o) if o.status.success() => {
            serde_json::from_slice::<Value>(&o.stdout).map_err(|e| format!("not a JSON report: {e}"))
        }
        Ok(o) => Err(format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("cannot run {}: {e}", agent_bin().display())),
    };
    let replayed = match replayed {
        Ok(r) => {
            checks.add("replay", "iotwatch replay of the capture", Ok(format!("{:.1} s", t.elapsed().as_secs_f64())));
            r
        }
        Err(e) => {
            checks.add("replay", "iotwatch replay of the capture", Err(e));
            return;
        }
    };

    // The lab's peer databases enrich the replay's peers as they do the live agent's.
    checks.add(
        "replay",
        "Internet peers in replay: the lab's ASN, org, country, provider",
        scenarios::peer_db_check(&replayed),
    );

    // Replay knows each device as the live agent does: vendor, names, the name shown and why.
    let events: Vec<Value> = replayed["events"].as_array().cloned().unwrap_or_default();
    for i in 0..scenarios::SCENARIOS.len() {
        checks.add(
            "replay",
            format!("identity in replay: d{}", i + 1),
            scenarios::identity_check(i + 1, &replayed, &events),
        );
    }

    // The capture is complete: every MAC that sent a frame live sent one in the capture.
    let senders = |r: &Value| -> BTreeSet<String> {
        r["macs"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter(|m| m["tx_packets"].as_u64().is_some_and(|n| n > 0))
                    .filter_map(|m| m["mac"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (live_senders, replay_senders) = (senders(live_report), senders(&replayed));
    let missing: Vec<&String> = live_senders.difference(&replay_senders).collect();
    checks.add(
        "replay",
        "every MAC that sent live sent in the capture",
        ok_if(
            !live_senders.is_empty() && missing.is_empty(),
            if missing.is_empty() {
                format!("{} MACs live, {} in replay", live_senders.len(), replay_senders.len())
            } else {
                format!("missing from the capture: {missing:?}")
            },
        ),
    );

    let live = rules_by_mac(&scenarios::report_findings(live_report));
    let replay = rules_by_mac(&scenarios::report_findings(&replayed));
    let late = mac(LATE_DEVICE);
    for (how, rules) in [("live", &live), ("in replay", &replay)] {
        let new: BTreeSet<&String> = rules.iter().filter(|(_, r)| r.contains("new_device")).map(|(m, _)| m).collect();
        checks.add(
            "replay",
            format!("new_device {how}: the late device ({late}) only"),
            ok_if(new == BTreeSet::from([&late]), format!("{:?}", new.iter().map(|m| who(m)).collect::<Vec<_>>())),
        );
    }
    let macs: BTreeSet<&String> = live.keys().chain(replay.keys()).collect();
    let none = BTreeSet::new();
    for m in macs {
        let (l, r) = (live.get(m).unwrap_or(&none), replay.get(m).unwrap_or(&none));
        checks.add(
            "replay",
            format!("{}: the same rules live and in replay", who(m)),
            ok_if(l == r, format!("live {l:?}, replay {r:?}")),
        );
    }
}

privileged_test! {
    fn every_finding_with_its_negative_twin() {
        let t0 = Instant::now();
        let dir = temp_dir("iotwatch-findings-lab");
        let listen = format!("127.0.0.1:{}", prometheus::free_port().expect("free port"));
        let mut sl = ScenarioLab::start(&ScenarioLabOptions {
            prefix: PREFIX.to_owned(),
            agent_bin: agent_bin(),
            attach: "tc".to_owned(),
            agent_listen: listen.clone(),
            agent_extra: Vec::new(),
            work_dir: dir.join("agent"),
            prometheus_port: Some(prometheus::free_port().expect("free port")),
            duration: MAX_RUN + Duration::from_secs(10),
            capture: Some(dir.join("lab.pcap")),
        })
        .expect("start the lab, the agent, Prometheus and the scenarios' servers");
        assert_eq!(sl.lab.devices.len(), EARLY_DEVICES);
        eprintln!("findings_lab: lab, agent, Prometheus and servers up after {:.1} s", t0.elapsed().as_secs_f64());

        let mut next_look = Instant::now();
        loop {
            for line in sl.tick().expect("lab step") {
                eprintln!("findings_lab: {line}");
            }
            let ran = sl.scenarios.elapsed();
            if ran >= MAX_RUN {
                break;
            }
            if ran >= MIN_RUN && Instant::now() >= next_look {
                next_look = Instant::now() + Duration::from_secs(3);
                if positives_done(&sl) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let ran = sl.scenarios.elapsed();
        // The capture ends before the report is read (every report reads the maps anew), so
        // the live report has seen every frame the replay will.
        let captured = sl.capture.as_mut().expect("the capture").stop();

        let report = sl.report().expect("the report");
        let events = sl.events();
        let samples = scrape(&listen).expect("scrape /metrics");
        let prom = sl.prometheus.as_ref().expect("prometheus");
        let alerts = prom.alerts().expect("Prometheus alerts");
        let mut checks = Checks::default();

        // ---- traffic: the clients, and each scenario's traffic as the agent's events show it.
        for s in sl.scenarios.status() {
            let detail = format!(
                "{} runs, {} ok, {} failed{}{}",
                s.runs,
                s.ok,
                s.failed,
                if s.running { ", running" } else { "" },
                s.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
            );
            checks.add("traffic", format!("d{} {} client `{}`", s.device, s.scenario, s.what), ok_if(s.healthy(), detail));
        }
        for (i, s) in SCENARIOS.iter().enumerate() {
            checks.add("traffic", format!("d{} {} traffic", i + 1, s.name), scenarios::traffic_check(i + 1, &report, &events));
        }

        // ---- identity: vendor, DHCP and mDNS names, as each device's identity in the table says.
        for (i, s) in SCENARIOS.iter().enumerate() {
            checks.add(
                "identity",
                format!("d{} {} ({})", i + 1, s.name, s.identity.model),
                scenarios::identity_check(i + 1, &report, &events),
            );
        }

        // ---- peers: the lab's Internet as its peer databases say (the replay's under replay).
        checks.add("peers", "Internet peers live: the lab's ASN, org, country, provider", scenarios::peer_db_check(&report));

        // ---- detectors: report, event log (with evidence), metric.
        let in_report = scenarios::report_findings(&report);
        let logged = scenarios::logged_findings(&events);
        let event_ids: BTreeSet<String> = events
            .iter()
            .filter(|e| e["kind"] != "finding")
            .filter_map(|e| match &e["id"] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                v => Some(v.to_string()),
            })
            .collect();
        // None: no such series.
        let metric = |rule: &str, m: &str| -> Option<f64> {
            let of: Vec<f64> = samples
                .iter()
                .filter(|x| {
                    x.name == "iotwatch_findings_total" && x.label("rule") == Some(rule) && x.label("mac") == Some(m)
                })
                .map(|x| x.value)
                .collect();
            (!of.is_empty()).then(|| of.iter().sum())
        };
        for (i, s) in SCENARIOS.iter().enumerate() {
            let (d, m) = (i + 1, mac(i + 1));
            let who = format!("d{d} {}", s.name);
            match s.expect {
                Expect::Finding(rule) => {
                    let r = in_report.iter().find(|f| f.rule == rule && f.mac == m);
                    checks.add(
                        "detectors",
                        format!("{who}: {rule} in the report"),
                        ok_if(r.is_some(), r.map_or_else(|| "no such finding".to_owned(), |f| f.summary.clone())),
                    );
                    let line = events.iter().find(|e| e["kind"] == "finding" && e["rule"] == rule && e["mac"] == m.as_str());
                    let evidence: Vec<String> = line
                        .and_then(|e| e["evidence"].as_array())
                        .map(|v| v.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).collect())
                        .unwrap_or_default();
                    let missing: Vec<&String> = evidence.iter().filter(|id| !event_ids.contains(*id)).collect();
                    // Rules over counted conversations have no events to cite: their evidence is
                    // the conversations, as excerpts.
                    let counted = matches!(rule, "gateway_ping" | "cloud_initiated" | "scan" | "new_device" | "large_upload" | "new_destination");
                    let excerpts = line.and_then(|e| e["excerpts"].as_array()).map_or(0, Vec::len);
                    let cited = if counted { excerpts > 0 } else { !evidence.is_empty() };
                    checks.add(
                        "detectors",
                        format!("{who}: {rule} in the event log, with evidence that is logged"),
                        ok_if(
                            line.is_some() && cited && missing.is_empty(),
                            match line {
                                None => "no \"kind\": \"finding\" line".to_owned(),
                                Some(_) => format!(
                                    "{} evidence ids, {} not among the logged events' ids, {excerpts} excerpts",
                                    evidence.len(),
                                    missing.len()
                                ),
                            },
                        ),
                    );
                    let n = metric(rule, &m);
                    checks.add(
                        "detectors",
                        format!("{who}: iotwatch_findings_total{{rule=\"{rule}\",mac=\"{m}\"}}"),
                        ok_if(n.is_some_and(|n| n > 0.0), n.map_or_else(|| "no such series".to_owned(), |n| n.to_string())),
                    );
                }
                Expect::Quiet(rules) => {
                    let raised: Vec<String> = rules
                        .iter()
                        .filter(|r| has(&in_report, r, &m) || has(&logged, r, &m) || metric(r, &m).is_some_and(|n| n > 0.0))
                        .map(|r| r.to_string())
                        .collect();
                    checks.add(
                        "detectors",
                        format!("{who}: none of {}", rules.join(", ")),
                        ok_if(raised.is_empty(), if raised.is_empty() { "none".to_owned() } else { format!("raised {raised:?}") }),
                    );
                }
            }
        }

        // ---- Prometheus: rules loaded, alerts for the positives only.
        let loaded = prom.alert_rules().expect("Prometheus rules");
        for rule in RULES {
            let name = alert_name(rule);
            let r = loaded.iter().find(|(n, _)| *n == name);
            checks.add(
                "prometheus",
                format!("alert rule {name} loaded and healthy"),
                ok_if(r.is_some_and(|(_, h)| h != "err"), r.map_or_else(|| "not in deploy/prometheus".to_owned(), |(_, h)| format!("health {h}"))),
            );
        }
        for (i, s) in SCENARIOS.iter().enumerate() {
            let (d, m) = (i + 1, mac(i + 1));
            match s.expect {
                Expect::Finding(rule) => {
                    let a = alert_for(&alerts, rule, &m);
                    checks.add(
                        "prometheus",
                        format!("d{d} {}: {} firing for mac {m}", s.name, alert_name(rule)),
                        ok_if(a.is_some_and(|a| a.state == "firing"), a.map_or_else(|| "not active".to_owned(), |a| a.state.clone())),
                    );
                }
                Expect::Quiet(rules) => {
                    let active: Vec<String> =
                        rules.iter().filter_map(|r| alert_for(&alerts, r, &m)).map(|a| format!("{} {}", a.name, a.state)).collect();
                    checks.add(
                        "prometheus",
                        format!("d{d} {}: no alert of {}", s.name, rules.iter().map(|r| alert_name(r)).collect::<Vec<_>>().join(", ")),
                        ok_if(active.is_empty(), if active.is_empty() { "none".to_owned() } else { format!("{active:?}") }),
                    );
                }
            }
        }

        // ---- dashboard: every query returns data.
        let dash_path = xtask::workspace_root().join("deploy/grafana/iotwatch.json");
        let dash = dashboard::load(&dash_path).expect("the dashboard");
        let vars = [("instance", listen.as_str()), ("device", ".+"), ("DS_PROMETHEUS", "prometheus")];
        let queries: Vec<dashboard::Query> =
            dashboard::variable_queries(&dash).into_iter().chain(dashboard::panel_queries(&dash)).collect();
        assert!(!queries.is_empty(), "no queries in {}", dash_path.display());
        for q in queries {
            let expr = dashboard::substitute(&q.expr, &vars);
            let r = match prom.query(&expr) {
                Ok(v) if !v.is_empty() => Ok(format!("{} series", v.len())),
                Ok(_) => Err(format!("no data for {expr}")),
                Err(e) => Err(format!("{e:#}")),
            };
            checks.add("dashboard", q.what, r);
        }

        // ---- replay: the lab's own traffic, captured, raises the same findings.
        replay_checks(&mut checks, captured, &dir.join("lab.pcap"), &sl.lab_flags, &report);

        eprintln!(
            "findings_lab: scenarios ran {:.0} s; verdicts:\n{}\nclients:\n{}",
            ran.as_secs_f64(),
            scenarios::verdict_table(&scenarios::verdicts(&report, &events)),
            sl.scenarios.status_table()
        );
        eprintln!("findings_lab: checks:\n{}", checks.table());
        let prom_log = prom.log_text();
        sl.stop().expect("the agent stops cleanly");
        drop(sl);
        eprintln!("findings_lab: {:.0} s in all, lab removed", t0.elapsed().as_secs_f64());
        let failed = checks.failed();
        assert!(failed == 0, "{failed} of {} checks failed (table above); Prometheus log:\n{prom_log}", checks.0.len());
    }
}

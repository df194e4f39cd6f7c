//! A real Prometheus (Debian's `/usr/bin/prometheus`) scraping the agent, for the lab and the
//! privileged tests: it loads `deploy/prometheus/*.rules.yml` as a user would, scrapes every
//! second and evaluates the rules every second, so the alerts and the dashboard's queries are
//! checked by Prometheus itself rather than by a reading of the rules.
//!
//! It runs in the root namespace on 127.0.0.1 (where the agent listens), with its
//! configuration and storage in a temporary directory; the guard stops it (SIGTERM, then
//! SIGKILL) and removes the directory, also on panic.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{cmd, metrics::http_get_any, tmp::TempDir, workspace_root};

pub const BIN: &str = "/usr/bin/prometheus";
/// The job name the rules expect (`up{job="iotwatch"}`, see prometheus.example.yml).
pub const JOB: &str = "iotwatch";

/// A free TCP port on 127.0.0.1 (bound, then released: the caller binds it again at once).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?.local_addr()?.port())
}

/// `port` when it is free, otherwise any free one.
pub fn port_or_free(port: u16) -> Result<u16> {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(port),
        Err(_) => free_port(),
    }
}

/// The rule files Prometheus loads: every `deploy/prometheus/*.rules.yml`.
pub fn rule_files() -> Result<Vec<PathBuf>> {
    let dir = workspace_root().join("deploy/prometheus");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".rules.yml")))
        .collect();
    v.sort();
    Ok(v)
}

/// The configuration: one job scraping `target` every second, rules evaluated every second.
pub fn config(target: &str, rules: &[PathBuf]) -> String {
    config_with(target, rules, "")
}

/// [`config`] with more settings for the job (YAML at the job's indentation, each line
/// starting with four spaces: `scheme`, `tls_config`, `basic_auth`, `metrics_path`).
pub fn config_with(target: &str, rules: &[PathBuf], job: &str) -> String {
    let mut s = String::from(
        "# Written by xtask (prometheus.rs) for the lab: scrape and evaluate every second.\n\
         global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n",
    );
    for r in rules {
        s.push_str(&format!("  - {}\n", yaml_quote(&r.display().to_string())));
    }
    s.push_str(&format!(
        "scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{}]\n{job}",
        yaml_quote(target)
    ));
    s
}

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Percent-encodes a query-string value (everything but RFC 3986's unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An alert as `/api/v1/alerts` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: String,
    pub state: String,
    pub labels: serde_json::Map<String, Value>,
}

impl Alert {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).and_then(Value::as_str)
    }
}

/// A running Prometheus; stopped and its directory removed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    pub listen: String,
    log: PathBuf,
    // Last: removed after the process is gone.
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus on 127.0.0.1:`port` scraping `target` (host:port) with every rule file
    /// of deploy/prometheus, and waits (at most `timeout`) until it is ready, has loaded the
    /// rules and has scraped the target once.
    pub fn start(target: &str, port: u16, timeout: Duration) -> Result<Self> {
        Self::start_with(target, "", port, timeout)
    }

    /// [`Prometheus::start`] with more settings for the job (see [`config_with`]).
    pub fn start_with(target: &str, job: &str, port: u16, timeout: Duration) -> Result<Self> {
        if !Path::new(BIN).exists() {
            bail!("{BIN} is missing: `cargo xtask setup` installs Debian's prometheus package");
        }
        let dir = TempDir::new("iotwatch-prometheus")?;
        let rules = rule_files()?;
        let conf = dir.join("prometheus.yml");
        fs::write(&conf, config_with(target, &rules, job))?;
        let listen = format!("127.0.0.1:{port}");
        let log = dir.join("prometheus.log");
        let f = fs::File::create(&log)?;
        let mut c = Command::new(BIN);
        c.arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--storage.tsdb.retention.time=1d")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f);
        cmd::supervised(&mut c, libc::SIGTERM);
        let child = c.spawn().with_context(|| format!("cannot start `{}`", cmd::display(&c)))?;
        let mut p = Self { child: Some(child), listen, log, dir };
        p.wait_ready(target, timeout)?;
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Prometheus's own log (warnings and errors).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The directory with its configuration and storage.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else { bail!("prometheus was already stopped") };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            bail!("prometheus exited ({status}); its log:\n{}", self.log_text());
        }
        Ok(())
    }

    fn wait_ready(&mut self, target: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let last = match self.target_up(target) {
                Ok(true) => return Ok(()),
                Ok(false) => format!("target {target} not scraped yet"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > end {
                bail!(
                    "prometheus not ready on {} within {timeout:?}: {last}\nits log:\n{}",
                    self.listen,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether `up{job="iotwatch",instance=target}` is 1.
    pub fn target_up(&self, target: &str) -> Result<bool> {
        let v = self.query(&format!("up{{job=\"{JOB}\",instance=\"{target}\"}}"))?;
        Ok(v.iter().any(|s| s["value"][1].as_str() == Some("1")))
    }

    /// GET an API path; returns `data` of a `"status": "success"` answer.
    pub fn api(&self, path: &str) -> Result<Value> {
        let (status, line, body) = http_get_any(&self.listen, path, Duration::from_secs(5))?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("GET {}{path}: {line}: not JSON: {}", self.url(), body.trim()))?;
        if status != 200 || v["status"] != "success" {
            bail!("GET {}{path}: {line}: {} {}", self.url(), v["errorType"], v["error"]);
        }
        Ok(v["data"].clone())
    }

    /// An instant query; returns the result vector (or the scalar/string as one element).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        Ok(match &data["result"] {
            Value::Array(v) if data["resultType"] != "scalar" && data["resultType"] != "string" => v.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        })
    }

    /// Every active (pending or firing) alert.
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        let data = self.api("/api/v1/alerts")?;
        Ok(data["alerts"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|a| {
                        let labels = a["labels"].as_object().cloned().unwrap_or_default();
                        Alert {
                            name: labels.get("alertname").and_then(Value::as_str).unwrap_or("").to_owned(),
                            state: a["state"].as_str().unwrap_or("").to_owned(),
                            labels,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Names of the alerting rules Prometheus loaded, with the health it reports for each.
    pub fn alert_rules(&self) -> Result<Vec<(String, String)>> {
        let data = self.api("/api/v1/rules?type=alert")?;
        let mut v = Vec::new();
        for g in data["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                v.push((r["name"].as_str().unwrap_or("").to_owned(), r["health"].as_str().unwrap_or("").to_owned()));
            }
        }
        Ok(v)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            cmd::stop(&mut child, libc::SIGTERM, Duration::from_secs(10));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql() {
        assert_eq!(url_encode(r#"up{job="x"}[5m] > 0"#), "up%7Bjob%3D%22x%22%7D%5B5m%5D%20%3E%200");
        assert_eq!(url_encode("a.b-c_d~"), "a.b-c_d~");
    }

    #[test]
    fn config_names_rules_and_target() {
        let c = config("127.0.0.1:9477", &[PathBuf::from("/w/deploy/prometheus/iotwatch.rules.yml")]);
        assert!(c.contains("scrape_interval: 1s") && c.contains("evaluation_interval: 1s"), "{c}");
        assert!(c.contains("  - '/w/deploy/prometheus/iotwatch.rules.yml'\n"), "{c}");
        assert!(c.contains("job_name: iotwatch") && c.contains("targets: ['127.0.0.1:9477']"), "{c}");
    }
}

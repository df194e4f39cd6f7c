//! The Grafana dashboard's queries (deploy/grafana/iotwatch.json), read as Grafana reads them,
//! with its variables replaced, so that they can be run against a real Prometheus (the lab's,
//! see prometheus.rs). deploy/grafana/check_dashboard.py checks the same file's names offline.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;

/// One PromQL expression of the dashboard: a panel's target or a variable's query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `panel "Title" target A` or `variable "device"`.
    pub what: String,
    pub expr: String,
}

/// Every target of every panel, rows' nested panels included, in the file's order.
pub fn panel_queries(dashboard: &Value) -> Vec<Query> {
    fn walk(panels: &Value, out: &mut Vec<Query>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                    let r = t["refId"].as_str().unwrap_or("?");
                    out.push(Query { what: format!("panel {title:?} target {r}"), expr: expr.to_owned() });
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The PromQL inside each query variable: `label_values(EXPR, label)` gives EXPR (the series
/// whose label values Grafana lists), `query_result(EXPR)` gives EXPR.
pub fn variable_queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for v in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or_else(|| v["query"].as_str()).unwrap_or("").trim();
        let inner = if let Some(rest) = q.strip_prefix("label_values(") {
            // The metric selector is everything before the last comma.
            rest.rsplit_once(',').map(|(e, _)| e.trim())
        } else if let Some(rest) = q.strip_prefix("query_result(") {
            rest.strip_suffix(')')
        } else {
            Some(q)
        };
        if let Some(expr) = inner.filter(|e| !e.is_empty()) {
            out.push(Query {
                what: format!("variable {:?}", v["name"].as_str().unwrap_or("?")),
                expr: expr.to_owned(),
            });
        }
    }
    out
}

/// Reads a dashboard file.
pub fn load(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Replaces Grafana's variables: `vars` (name, value) for the dashboard's own (`$name` and
/// `${name}`), longest names first so that `$device` does not eat `$devices`; then the
/// built-in intervals with what Grafana would pick for a 1-second scrape over a short range.
pub fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = vars.to_vec();
    all.extend([("__rate_interval", "1m"), ("__interval", "15s"), ("__range", "5m"), ("__range_s", "300")]);
    all.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut s = expr.to_owned();
    for (name, value) in all {
        s = s.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_panels_and_variables() {
        let d: Value = serde_json::json!({
            "panels": [
                {"type": "row", "title": "R", "panels": [
                    {"title": "Inner", "targets": [{"refId": "A", "expr": "up"}]}
                ]},
                {"title": "Top", "targets": [{"refId": "A", "expr": "sum(x)"}, {"refId": "B", "expr": ""}]}
            ],
            "templating": {"list": [
                {"name": "DS", "type": "datasource", "query": "prometheus"},
                {"name": "instance", "type": "query",
                 "query": {"query": "label_values(iotwatch_build_info, instance)"}},
                {"name": "device", "type": "query",
                 "query": "label_values(iotwatch_device_packets_total{instance=~\"$instance\"}, mac)"}
            ]}
        });
        let p = panel_queries(&d);
        assert_eq!(p.iter().map(|q| q.expr.as_str()).collect::<Vec<_>>(), ["up", "sum(x)"]);
        assert_eq!(p[0].what, "panel \"Inner\" target A");
        let v = variable_queries(&d);
        assert_eq!(
            v.iter().map(|q| q.expr.as_str()).collect::<Vec<_>>(),
            ["iotwatch_build_info", "iotwatch_device_packets_total{instance=~\"$instance\"}"]
        );
    }

    #[test]
    fn substitutes() {
        let e = r#"rate(x{instance=~"$instance",mac=~"${device}"}[$__rate_interval]) $devices"#;
        assert_eq!(
            substitute(e, &[("instance", "127.0.0.1:1"), ("device", ".+"), ("devices", "D")]),
            r#"rate(x{instance=~"127.0.0.1:1",mac=~".+"}[1m]) D"#
        );
    }
}

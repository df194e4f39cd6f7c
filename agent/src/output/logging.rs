//! The agent's own log on stderr, in node_exporter's style: `--log.level` and `--log.format`
//! (`logfmt` or `json`), one line per event with `time`, `level`, `source` (the module) and
//! `msg` first, then the event's fields. Never colour codes: journald, files and pipes get
//! plain text, and so does a terminal.

use std::{fmt, io::Write as _};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    registry::LookupSpan,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// `--log.level`: one of error, warn, info, debug, trace; or, for debugging, a list of
/// `target=level` directives besides one (`info,iotwatch::pipeline=debug`). Anything else is
/// an error at the start, not a silent `info`.
pub fn parse_level(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not a level: use one of {}, or TARGET=LEVEL directives", LEVELS.join(", "));
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Err(bad());
    }
    for d in s.split(',') {
        let level = match d.split_once('=') {
            Some((target, level)) => {
                if target.is_empty() || !target.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    return Err(bad());
                }
                level
            }
            None => d,
        };
        if !LEVELS.contains(&level) {
            return Err(bad());
        }
    }
    Ok(s)
}

/// Installs the log for the process (once, at the start).
pub fn init(level: &str, format: LogFormat) {
    // parse_level checked it; the fallback is for a caller that did not.
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .event_format(Format(format))
        .with_writer(std::io::stderr)
        .init();
}

/// An event's fields in order, the message first.
#[derive(Default)]
struct Fields(Vec<(&'static str, Value)>);

enum Value {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Fields {
    fn push(&mut self, field: &Field, v: Value) {
        let name = if field.name() == "message" { "msg" } else { field.name() };
        if name == "msg" {
            self.0.insert(0, (name, v));
        } else {
            self.0.push((name, v));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::Text(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::Text(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::Number(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::Number(value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        match serde_json::Number::from_f64(value) {
            Some(n) => self.push(field, Value::Number(n)),
            None => self.push(field, Value::Text(value.to_string())),
        }
    }
}

struct Format(LogFormat);

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let head = [
            ("time", Value::Text(time)),
            ("level", Value::Text(meta.level().as_str().to_owned())),
            ("source", Value::Text(meta.target().to_owned())),
        ];
        let all = head.into_iter().chain(fields.0);
        let line = match self.0 {
            LogFormat::Logfmt => logfmt(all),
            LogFormat::Json => json(all),
        };
        writeln!(w, "{line}")
    }
}

fn logfmt(fields: impl Iterator<Item = (&'static str, Value)>) -> String {
    let mut out = Vec::new();
    for (i, (k, v)) in fields.enumerate() {
        let v = match v {
            Value::Text(t) => t,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
        };
        let plain = !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
        let _ = write!(out, "{}{k}=", if i > 0 { " " } else { "" });
        if plain {
            out.extend_from_slice(v.as_bytes());
        } else {
            // Quoted as a Go string (escapes for quote, backslash and control characters).
            out.extend_from_slice(serde_json::Value::String(v).to_string().as_bytes());
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// One JSON object, its keys in the order of the fields (time, level, source, msg first).
fn json(fields: impl Iterator<Item = (&'static str, Value)>) -> String {
    let mut out = String::from("{");
    let mut seen = Vec::new();
    for (k, v) in fields {
        // A field named like the head does not replace it.
        if seen.contains(&k) {
            continue;
        }
        seen.push(k);
        let v = match v {
            Value::Text(t) => serde_json::Value::String(t),
            Value::Number(n) => serde_json::Value::Number(n),
            Value::Bool(b) => serde_json::Value::Bool(b),
        };
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(k.to_owned()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked() {
        for ok in ["info", "WARN", "debug", "trace", "error", "info,iotwatch::pipeline=debug", "aya=trace"] {
            assert!(parse_level(ok).is_ok(), "{ok}");
        }
        for bad in ["", "inf", "verbose", "information", "iotwatch=loud", "=debug", "info,", "a b=info"] {
            assert!(parse_level(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(parse_level("Debug").as_deref(), Ok("debug"));
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    #[test]
    fn logfmt_quotes_what_needs_it() {
        let line = logfmt(
            [
                ("level", text("WARN")),
                ("msg", text("cannot read \"x\"\nnext")),
                ("interface", text("veth0")),
                ("n", Value::Number(3.into())),
                ("empty", text("")),
            ]
            .into_iter(),
        );
        assert_eq!(line, r#"level=WARN msg="cannot read \"x\"\nnext" interface=veth0 n=3 empty="""#);
    }

    #[test]
    fn json_keeps_types_and_the_head() {
        let line = json(
            [("level", text("INFO")), ("msg", text("hi")), ("level", text("x")), ("ok", Value::Bool(true))].into_iter(),
        );
        assert!(line.starts_with(r#"{"level":"INFO","msg":"hi""#), "in the fields' order: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!((v["level"].as_str(), v["msg"].as_str(), v["ok"].as_bool()), (Some("INFO"), Some("hi"), Some(true)));
    }
}

//! Every iotwatch flag and file that deploy/ and the README name must exist, so that the documents a person
//! follows from a fresh Raspberry Pi to the dashboard stay true:
//! - the command lines (the defaults file's IOTWATCH_ARGS and each option it lists, the
//!   unit's ExecStart with those arguments, `iotwatch run ...` and `iotwatch replay ...` in
//!   deploy/**/*.md and the README) go through the agent's own parser, values included:
//!   `iotwatch check-args run ARGS...` exits 0 when clap accepts them, so a removed flag or a
//!   value the flag no longer takes fails the check;
//! - every dotted flag (`--web.listen-address`, the agent's style) named anywhere in deploy/
//!   is one that `iotwatch run --help` lists;
//! - every file the Markdown names exists: in the repository, or among the package's
//!   installed paths (dist.rs) when it is an iotwatch path on the target system.
//!
//! Unit syntax is `systemd-analyze verify`'s job, on the staged package (test.rs).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{dist, workspace_root};

/// A command line some document names, with where it is.
#[derive(Debug, PartialEq)]
pub struct Named {
    pub source: String,
    /// The arguments after `iotwatch`: the subcommand (`run`, `replay`), then its arguments.
    pub args: Vec<String>,
}

/// IOTWATCH_ARGS of the defaults file (the uncommented assignment).
pub fn defaults_args(defaults: &str) -> Option<Vec<String>> {
    defaults.lines().find_map(|l| {
        Some(unquote(l.trim().strip_prefix("IOTWATCH_ARGS=")?).split_whitespace().map(str::to_owned).collect())
    })
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('"').trim_matches('\'')
}

/// The command lines of the defaults file: IOTWATCH_ARGS, and IOTWATCH_ARGS plus each option
/// of its commented list (`#   --flag VALUE   what it does`: the example ends at two spaces).
pub fn from_defaults(defaults: &str, source: &str) -> Result<Vec<Named>> {
    let base = defaults_args(defaults).with_context(|| format!("{source} sets no IOTWATCH_ARGS"))?;
    let run = |args: Vec<String>| std::iter::once("run".to_owned()).chain(args).collect::<Vec<_>>();
    let mut v = vec![Named { source: format!("{source}: IOTWATCH_ARGS"), args: run(base.clone()) }];
    for (i, l) in defaults.lines().enumerate() {
        let Some(rest) = l.strip_prefix('#').map(str::trim_start) else { continue };
        if let Some(a) = rest.strip_prefix("IOTWATCH_ARGS=") {
            v.push(Named {
                source: format!("{source}:{}", i + 1),
                args: run(unquote(a).split_whitespace().map(str::to_owned).collect()),
            });
        } else if rest.starts_with("--") {
            let example = rest.split("  ").next().unwrap_or(rest);
            let mut args = base.clone();
            args.extend(example.split_whitespace().map(str::to_owned));
            v.push(Named { source: format!("{source}:{}", i + 1), args: run(args) });
        }
    }
    Ok(v)
}

/// The unit's ExecStart with `$IOTWATCH_ARGS` (or `${IOTWATCH_ARGS}`) replaced by the
/// defaults' arguments, split as systemd splits an unquoted variable.
pub fn from_unit(unit: &str, defaults: &[String], source: &str) -> Result<Named> {
    let exec = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
        .with_context(|| format!("{source} has no ExecStart="))?;
    let mut words = Vec::new();
    for w in exec.split_whitespace() {
        if w == "$IOTWATCH_ARGS" || w == "${IOTWATCH_ARGS}" {
            words.extend(defaults.iter().cloned());
        } else {
            words.push(w.to_owned());
        }
    }
    match words.as_slice() {
        [bin, args @ ..] if bin == "/usr/bin/iotwatch" && args.first().is_some_and(|a| a == "run") => {
            Ok(Named { source: format!("{source}: ExecStart"), args: args.to_vec() })
        }
        _ => {
            bail!("{source}: ExecStart={exec} is not `/usr/bin/iotwatch run ...`, where the package installs the agent")
        }
    }
}

/// The subcommands whose command lines the documents show.
const COMMANDS: [&str; 2] = ["run", "replay"];

/// `iotwatch run ARGS` (or `replay`) wherever a line of Markdown has it (code blocks, or
/// inline code ended by a backtick); a `#` comment or a shell operator (`|`, `>`, `;`, `&`)
/// ends it; `...` (a placeholder) and `--help` lines are not configurations and are left out.
/// `IOTWATCH_ARGS="ARGS"` (the defaults file's line, shown in a document) is `iotwatch run ARGS`.
pub fn from_markdown(md: &str, source: &str) -> Vec<Named> {
    let mut v = Vec::new();
    for (i, l) in md.lines().enumerate() {
        // `IOTWATCH_ARGS="..."` shown for /etc/default/iotwatch: the unit's `iotwatch run`.
        for (at, _) in l.match_indices("IOTWATCH_ARGS=\"") {
            let rest = &l[at + "IOTWATCH_ARGS=\"".len()..];
            let Some((args, _)) = rest.split_once('"') else { continue };
            if !args.contains("...") && !args.contains('$') {
                v.push(Named {
                    source: format!("{source}:{}", i + 1),
                    args: std::iter::once("run".to_owned()).chain(args.split_whitespace().map(str::to_owned)).collect(),
                });
            }
        }
        for command in COMMANDS {
            let start = format!("iotwatch {command} ");
            for (at, _) in l.match_indices(&start) {
                // Not a path or a longer name ending in iotwatch (cargo xtask run is not the agent).
                if l[..at].ends_with(|c: char| c.is_alphanumeric() || c == '-' || c == '_') {
                    continue;
                }
                let rest = &l[at + start.len()..];
                let rest = rest.split(['`', '#', '|', '>', '<', ';', '&']).next().unwrap_or("");
                if rest.contains("...") || rest.split_whitespace().any(|w| w == "--help") {
                    continue; // a placeholder or a request for help, not a configuration
                }
                v.push(Named {
                    source: format!("{source}:{}", i + 1),
                    args: std::iter::once(command.to_owned())
                        .chain(rest.split_whitespace().map(|w| unquote(w).to_owned()))
                        .collect(),
                });
            }
        }
    }
    v.sort_by_key(|n| n.source.split(':').next_back().and_then(|l| l.parse::<usize>().ok()));
    v
}

/// Dotted long flags (`--web.listen-address`): the agent's style, and no other program's in
/// deploy/. Flags of other programs (`systemctl enable --now`) are not checked.
pub fn dotted_flags(text: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for (at, _) in text.match_indices("--") {
        let name: String =
            text[at + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-').collect();
        let name = name.trim_end_matches(['.', '-']);
        if name.contains('.') && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            set.insert(format!("--{name}"));
        }
    }
    set
}

/// Path-like words of Markdown: in backticks or a link's target, with a file extension of
/// ours; absolute ones only under the package's own prefixes.
pub fn named_paths(md: &str) -> BTreeSet<String> {
    const EXTENSIONS: &[&str] =
        &[".md", ".yml", ".yaml", ".json", ".service", ".netdev", ".network", ".conf", ".default", ".deb"];
    let mut set = BTreeSet::new();
    for w in md.split(|c: char| {
        c.is_whitespace() || matches!(c, '`' | '(' | ')' | '[' | ']' | '"' | '\'' | '<' | '>' | ',' | ';' | '=')
    }) {
        // `ID:PATH` (systemd's LoadCredential=) names two; a URL is none of ours.
        let parts: Vec<&str> = if w.contains("://") { vec![w] } else { w.split(':').collect() };
        for w in parts {
            let w = w.trim_end_matches([':', '.']);
            let ours = EXTENSIONS.iter().any(|e| w.ends_with(e)) || OWN_PREFIXES.iter().any(|p| w.starts_with(p));
            // `.network` alone is a kind of file, not a file.
            let bare_extension = w.starts_with('.') && !w.starts_with("./") && !w.starts_with("../");
            if ours && !bare_extension && !w.contains("://") && !w.contains('*') && !w.starts_with(['$', '~', '-']) {
                set.insert(w.to_owned());
            }
        }
    }
    set
}

/// Paths on the target system that the package owns: named ones must be in it.
const OWN_PREFIXES: &[&str] = &[
    "/usr/share/iotwatch",
    "/usr/share/doc/iotwatch",
    "/etc/default/iotwatch",
    "/lib/systemd/system/iotwatch",
    "/usr/bin/iotwatch",
];

/// Files of the user's system (not ours) that docs name without a directory, and the files the
/// agent itself writes in its state directory (agent/src/output/state.rs).
const SYSTEM_FILES: &[&str] = &[
    "prometheus.yml",
    "hostapd.conf",
    "grafana.ini",
    "web-config.yml",
    "known-devices.json",
    "identities.json",
    "destinations.json",
];

/// Checks one named path; `dir` is the Markdown file's directory.
fn path_exists(
    p: &str,
    dir: &Path,
    root: &Path,
    installed: &BTreeSet<String>,
    deploy_files: &BTreeSet<String>,
) -> bool {
    // A package built by `cargo xtask dist`: named with this version.
    if let Some(name) = p.rsplit('/').next().filter(|n| n.ends_with(".deb")) {
        return dist::Arch::ALL.iter().any(|a| name == format!("iotwatch_{}_{}.deb", dist::VERSION, a.deb()));
    }
    // What a build or a bench writes under the cargo target directory.
    if p.starts_with("target/") {
        return true;
    }
    if let Some(abs) = p.strip_prefix('/') {
        if !OWN_PREFIXES.iter().any(|o| p.starts_with(o)) {
            return true; // the user's system: not ours to check
        }
        let abs = abs.trim_end_matches('/');
        return installed.iter().any(|i| i == abs || i.starts_with(&format!("{abs}/")));
    }
    if !p.contains('/') {
        return SYSTEM_FILES.contains(&p) || dir.join(p).exists() || deploy_files.contains(p);
    }
    dir.join(p).exists() || root.join(p).exists()
}

/// File names under deploy/, any depth.
fn deploy_file_names(dir: &Path, out: &mut BTreeSet<String>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            deploy_file_names(&p, out);
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            out.insert(n.to_owned());
        }
    }
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "md") {
            out.push(p);
        }
    }
}

/// Runs every check against the agent `bin`; fails listing every problem found.
pub fn check(bin: &Path) -> Result<()> {
    let root = workspace_root();
    let deploy = root.join("deploy");
    let rel = |p: &Path| p.strip_prefix(&root).unwrap_or(p).display().to_string();
    let defaults_path = deploy.join("systemd/iotwatch.default");
    let defaults = fs::read_to_string(&defaults_path)?;
    let mut lines = from_defaults(&defaults, &rel(&defaults_path))?;
    let unit_path = deploy.join("systemd/iotwatch.service");
    lines.push(from_unit(
        &fs::read_to_string(&unit_path)?,
        &defaults_args(&defaults).unwrap_or_default(),
        &rel(&unit_path),
    )?);
    let mut mds = Vec::new();
    markdown_files(&deploy, &mut mds);
    mds.sort();
    // The README a person reads first is held to the same standard.
    mds.push(root.join("README.md"));
    let mut problems = Vec::new();
    let installed = dist::installed_paths()?;
    let mut deploy_files = BTreeSet::new();
    deploy_file_names(&deploy, &mut deploy_files);
    let mut flags = dotted_flags(&defaults);
    flags.extend(dotted_flags(&fs::read_to_string(&unit_path)?));
    let default_args = defaults_args(&defaults).unwrap_or_default();
    for md in &mds {
        let text = fs::read_to_string(md)?;
        // `iotwatch run $IOTWATCH_ARGS` is the unit's line: expanded as systemd does.
        lines.extend(from_markdown(&text, &rel(md)).into_iter().map(|mut n| {
            n.args = n
                .args
                .into_iter()
                .flat_map(|a| if a == "$IOTWATCH_ARGS" { default_args.clone() } else { vec![a] })
                .collect();
            n
        }));
        flags.extend(dotted_flags(&text));
        let dir = md.parent().unwrap_or(&deploy);
        for p in named_paths(&text) {
            if !path_exists(&p, dir, &root, &installed, &deploy_files) {
                problems.push(format!("{} names {p}, which neither the repository nor the package has", rel(md)));
            }
        }
    }
    for f in [
        "prometheus/prometheus.example.yml",
        "grafana/provisioning/dashboards/iotwatch.yaml",
        "grafana/provisioning/datasources/prometheus.yaml",
    ] {
        flags.extend(dotted_flags(&fs::read_to_string(deploy.join(f))?));
    }

    let help =
        Command::new(bin).args(["run", "--help"]).output().with_context(|| format!("cannot run {}", bin.display()))?;
    let help = String::from_utf8_lossy(&help.stdout);
    for f in &flags {
        if !help.contains(&format!("{f} ")) && !help.contains(&format!("{f}=")) && !help.contains(&format!("{f}\n")) {
            problems.push(format!("deploy/ names {f}, which `iotwatch run --help` does not list"));
        }
    }
    for n in &lines {
        println!("  {}: iotwatch {}", n.source, n.args.join(" "));
    }
    for n in &lines {
        let out = Command::new(bin)
            .arg("check-args")
            .args(&n.args)
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            problems.push(format!(
                "{}: `iotwatch {}` is refused by the agent's parser: {}",
                n.source,
                n.args.join(" "),
                err.lines().next().unwrap_or("").trim()
            ));
        }
    }
    if !problems.is_empty() {
        bail!("deploy/ and the README name what does not exist:\n  {}", problems.join("\n  "));
    }
    println!(
        "deploy check: {} command lines accepted by the agent's parser; {} dotted flags known; the paths {} documents name exist",
        lines.len(),
        flags.len(),
        mds.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_defaults_file() {
        let d = "# comment\n#   --attach xdp-skb     how to attach\n#   --log.level debug\n#   IOTWATCH_ARGS=\"--bridge br1\"\nIOTWATCH_ARGS=\"--bridge br0\"\n";
        let v = from_defaults(d, "d").expect("has IOTWATCH_ARGS");
        let args: Vec<String> = v.iter().map(|n| n.args.join(" ")).collect();
        assert_eq!(
            args,
            [
                "run --bridge br0",
                "run --bridge br0 --attach xdp-skb",
                "run --bridge br0 --log.level debug",
                "run --bridge br1"
            ]
        );
        assert_eq!(v[1].source, "d:2");
        assert!(from_defaults("# nothing\n", "d").is_err());
    }

    #[test]
    fn expands_the_unit() {
        let unit = "[Service]\nExecStart=/usr/bin/iotwatch run $IOTWATCH_ARGS\n";
        let n = from_unit(unit, &["--bridge".to_owned(), "br0".to_owned()], "u").expect("ExecStart");
        assert_eq!(n.args, ["run", "--bridge", "br0"]);
        assert!(
            from_unit("ExecStart=/usr/local/bin/iotwatch run\n", &[], "u").is_err(),
            "not where the package puts it"
        );
    }

    #[test]
    fn finds_command_lines_flags_and_paths_in_markdown() {
        let md = "```sh\niotwatch run --bridge br0 --attach tc   # comment\ncargo xtask run --bridge br0\niotwatch replay --format json *.pcap | jq .devices\nIOTWATCH_ARGS=\"--bridge br0 --web.listen-address :9477\"\nIOTWATCH_ARGS=\"--bridge br0 ...\"\n```\n`iotwatch run ...` is a placeholder, `iotwatch run --help` too.\nUse `iotwatch run --bridge br0 --lan.prefix 10.0.0.0/8` or see [the unit](../systemd/iotwatch.service) and `/usr/share/iotwatch/grafana/`.\n";
        let v = from_markdown(md, "m");
        assert_eq!(
            v.iter().map(|n| n.args.join(" ")).collect::<Vec<_>>(),
            [
                "run --bridge br0 --attach tc",
                "replay --format json *.pcap",
                "run --bridge br0 --web.listen-address :9477",
                "run --bridge br0 --lan.prefix 10.0.0.0/8"
            ]
        );
        assert_eq!(v[3].source, "m:9");
        assert_eq!(dotted_flags(md).into_iter().collect::<Vec<_>>(), ["--lan.prefix", "--web.listen-address"]);
        assert_eq!(
            dotted_flags("--web.listen-address=0.0.0.0:9477, --now --x.y."),
            BTreeSet::from(["--web.listen-address".to_owned(), "--x.y".to_owned()])
        );
        let paths = named_paths(md);
        assert!(
            paths.contains("../systemd/iotwatch.service") && paths.contains("/usr/share/iotwatch/grafana/"),
            "{paths:?}"
        );
        assert_eq!(
            named_paths("LoadCredential=web-config.yml:/etc/iotwatch/web-config.yml, README.md:12"),
            BTreeSet::from([
                "web-config.yml".to_owned(),
                "/etc/iotwatch/web-config.yml".to_owned(),
                "README.md".to_owned()
            ])
        );
        assert!(!named_paths("http://localhost:9477/metrics or 10.0.0.0/8").iter().any(|p| p.contains("http")));
        assert!(named_paths("wlan0 has no .network file").is_empty());
    }

    #[test]
    fn checks_paths_against_repository_and_package() {
        let root = workspace_root();
        let installed = BTreeSet::from(["usr/share/iotwatch/grafana/dashboards/iotwatch.json".to_owned()]);
        let files = BTreeSet::from(["10-br0.netdev".to_owned()]);
        let dir = root.join("deploy/raspberry-pi");
        assert!(path_exists("/usr/share/iotwatch/grafana/dashboards/", &dir, &root, &installed, &files));
        assert!(!path_exists("/usr/share/iotwatch/nothing.json", &dir, &root, &installed, &files));
        assert!(path_exists("/etc/prometheus/prometheus.yml", &dir, &root, &installed, &files), "the user's system");
        assert!(path_exists("../systemd/iotwatch.service", &dir, &root, &installed, &files));
        assert!(path_exists("deploy/systemd/iotwatch.service", &dir, &root, &installed, &files));
        assert!(path_exists("10-br0.netdev", &dir, &root, &installed, &files));
        assert!(!path_exists("deploy/nothing.yml", &dir, &root, &installed, &files));
        let deb = format!("./iotwatch_{}_arm64.deb", dist::VERSION);
        assert!(path_exists(&deb, &dir, &root, &installed, &files));
        assert!(
            !path_exists("target/dist/iotwatch_0.0.1_arm64.deb", &dir, &root, &installed, &files),
            "another version"
        );
    }
}

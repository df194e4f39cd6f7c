//! `cargo xtask test`: lints, host tests, rule tests, then the privileged tests, streaming
//! output and stopping at the first failure.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{agent, cmd, deploycheck, dist, setup, structure, vm, workspace_root};

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.args(args).current_dir(workspace_root());
    c
}

fn step(name: &str, done: &mut Vec<String>, mut c: Command) -> Result<()> {
    println!("\n==> {name}: {}", cmd::display(&c));
    let t = Instant::now();
    cmd::stream(&mut c)
        .with_context(|| format!("step `{name}` failed; steps passed before it: {}", done.join(", ")))?;
    done.push(format!("{name} ({:.0} s)", t.elapsed().as_secs_f64()));
    Ok(())
}

/// Files in `dir` whose names end with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .collect();
    v.sort();
    v
}

/// Groups of steps that `--skip` can leave out (for a quicker loop while developing).
pub const GROUPS: [&str; 7] = ["clippy", "host", "promtool", "deploy", "fuzz", "privileged", "vm"];

/// Seconds each fuzz target runs in the test command: a smoke run that replays the corpus and
/// explores a little; long runs are `cargo +nightly fuzz run TARGET` by hand.
const FUZZ_SECONDS: u32 = 15;

pub fn test(skip: &[String]) -> Result<()> {
    for s in skip {
        if !GROUPS.contains(&s.as_str()) {
            bail!("unknown step group {s:?}; known: {}", GROUPS.join(", "));
        }
    }
    let run = |g: &str| !skip.iter().any(|s| s == g);
    setup::setup()?;
    let root = workspace_root();
    let mut done = Vec::new();
    let mut skipped: Vec<String> = skip.iter().map(|s| format!("{s} (--skip)")).collect();

    if run("clippy") {
        step(
            "clippy (host)",
            &mut done,
            cargo(&["clippy", "--workspace", "--exclude", "agent-ebpf", "--all-targets", "--", "-D", "warnings"]),
        )?;
        // Linted for the target it is built for (cfg(target_arch = "bpf") code included);
        // needs nightly and rust-src, not bpf-linker (clippy does not link).
        step(
            "clippy (eBPF)",
            &mut done,
            cargo(&[
                "+nightly",
                "clippy",
                "-p",
                "agent-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    if run("clippy") {
        // Nightly rustfmt: rustfmt.toml uses aya's unstable import options.
        step("format", &mut done, cargo(&["+nightly", "fmt", "--all", "--", "--check"]))?;
        let mut fuzz_fmt = cargo(&["+nightly", "fmt", "--", "--check"]);
        fuzz_fmt.current_dir(root.join("fuzz"));
        step("format (fuzz)", &mut done, fuzz_fmt)?;
        structure::core_is_pure(&root)?;
        for src in ["agent/src", "agent-core/src", "xtask/src"] {
            structure::no_import_cycle(&root.join(src))?;
        }
        done.push("core free of kernel and runtime crates; no import cycle".to_owned());
    }
    if run("host") {
        step("host tests", &mut done, cargo(&["test"]))?;
    }
    if run("promtool") {
        promtool(&root, &mut done, &mut skipped)?;
        metric_names(&root, &mut done)?;
    }
    if run("deploy") {
        deploy(&mut done)?;
    }
    if run("fuzz") {
        fuzz(&root, &mut done)?;
    }
    if run("privileged") {
        privileged(&root, &mut done)?;
    }
    if run("vm") {
        vm_boot(&mut done)?;
    }
    println!("\ntest: all {} steps passed: {}", done.len(), done.join(", "));
    if !skipped.is_empty() {
        println!("test: skipped: {}", skipped.join("; "));
    }
    Ok(())
}

fn promtool(root: &Path, done: &mut Vec<String>, skipped: &mut Vec<String>) -> Result<()> {
    let rules = files_ending(&root.join("deploy/prometheus"), ".rules.yml");
    if rules.is_empty() {
        skipped.push("promtool check rules (no deploy/prometheus/*.rules.yml)".to_owned());
    } else {
        let mut c = Command::new("promtool");
        c.args(["check", "rules"]).args(&rules).current_dir(root);
        step("promtool check rules", done, c)?;
    }
    let rule_tests = files_ending(&root.join("deploy/prometheus/tests"), ".yml");
    if rule_tests.is_empty() {
        skipped.push("promtool test rules (no deploy/prometheus/tests/*.yml)".to_owned());
    } else {
        let mut c = Command::new("promtool");
        c.args(["test", "rules"]).args(&rule_tests).current_dir(root);
        step("promtool test rules", done, c)?;
        // The rule tests must catch each rule broken in the obvious ways.
        let mut c = Command::new("python3");
        c.arg(root.join("deploy/prometheus/tests/check_mutations.py")).current_dir(root);
        step("rule tests catch broken rules", done, c)?;
    }
    Ok(())
}

/// The dashboard and the alert rules may only use metrics the agent exports: the agent lists
/// its own (`iotwatch metric-names`), so the list has one source.
fn metric_names(root: &Path, done: &mut Vec<String>) -> Result<()> {
    let bin = agent::build_agent()?;
    let names = cmd::output(&mut cmd::command(&bin.to_string_lossy(), &["metric-names"]))?;
    let list = agent::target_dir().join("metric-names.txt");
    std::fs::write(&list, &names)?;
    let mut c = Command::new("python3");
    c.arg(root.join("deploy/grafana/check_dashboard.py")).arg(&list).current_dir(root);
    step("dashboard uses only exported metrics", done, c)?;
    // Recording rules define names of their own (level:metric:operation); those are allowed.
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/iotwatch.rules.yml"))?;
    let unknown: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("iotwatch_") && !names.lines().any(|n| n == *w))
        .collect();
    if !unknown.is_empty() {
        bail!("deploy/prometheus/iotwatch.rules.yml uses metrics the agent does not export: {}", unknown.join(", "));
    }
    done.push("rules use only exported metrics".to_owned());
    Ok(())
}

/// Every target of fuzz/ for FUZZ_SECONDS with nightly, starting from the corpus in the repo.
/// New inputs go to a scratch directory, so the committed corpus only changes by hand.
fn fuzz(root: &Path, done: &mut Vec<String>) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    let targets = files_ending(&fuzz_dir.join("fuzz_targets"), ".rs");
    if targets.is_empty() {
        bail!("no fuzz targets in {}", fuzz_dir.display());
    }
    let scratch = agent::target_dir().join("fuzz-corpus");
    for t in targets {
        let name = t.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let new = scratch.join(&name);
        std::fs::create_dir_all(&new)?;
        let mut c = cargo(&["+nightly", "fuzz", "run", &name]);
        c.arg(&new)
            .arg(fuzz_dir.join("corpus").join(&name))
            .args(["--", &format!("-max_total_time={FUZZ_SECONDS}"), "-print_final_stats=1"])
            // The fuzz crate depends on the core alone: no eBPF object is built.
            .current_dir(&fuzz_dir);
        step(&format!("fuzz {name}"), done, c)?;
    }
    Ok(())
}

fn privileged(root: &Path, done: &mut Vec<String>) -> Result<()> {
    let bin = agent::build_agent()?;
    done.push("agent release build".to_owned());
    let binaries = privileged_test_binaries()?;
    if binaries.is_empty() {
        bail!("cargo built iotwatch-tests but reported no test executables");
    }
    for b in &binaries {
        let mut c = Command::new(b);
        c.arg("--test-threads=1").env("IOTWATCH_BIN", &bin).env("IOTWATCH_ROOT", root).current_dir(root);
        // CI=true turns the tests' SKIPs into failures; it is inherited, shown for clarity.
        if let Ok(ci) = std::env::var("CI") {
            c.env("CI", ci);
        }
        let name = b.file_name().and_then(|n| n.to_str()).unwrap_or("test").to_owned();
        step(&format!("privileged {name}"), done, c)?;
    }
    Ok(())
}

/// The agent on the stock kernels users run: this machine's newer verifier accepts programs
/// theirs refuse. No skip: a machine without QEMU fails here (setup installs it).
fn vm_boot(done: &mut Vec<String>) -> Result<()> {
    for k in vm::TEST_KERNELS {
        let name = format!("kernel boot: {k}");
        println!("\n==> {name}: cargo xtask vm-test --kernel {k}");
        let t = Instant::now();
        let args = vm::VmArgs {
            bin: None,
            kernels: vec![(*k).to_owned()],
            timeout: std::time::Duration::from_secs(vm::DEFAULT_TIMEOUT_S),
        };
        vm::vm_test(&args)
            .with_context(|| format!("step `{name}` failed; steps passed before it: {}", done.join(", ")))?;
        done.push(format!("{name} ({:.0} s)", t.elapsed().as_secs_f64()));
    }
    Ok(())
}

/// What a person installs: the unit passes `systemd-analyze verify` in the staged package,
/// the flags and files deploy/ names exist (deploycheck.rs), and the package installs,
/// starts, stops and purges in a throw-away Debian root.
fn deploy(done: &mut Vec<String>) -> Result<()> {
    let t = Instant::now();
    let fail =
        |name: &str, done: &Vec<String>| format!("step `{name}` failed; steps passed before it: {}", done.join(", "));
    println!("\n==> package: cargo xtask dist");
    let deb = dist::dist(None).with_context(|| fail("package", done))?;
    done.push(format!("package ({:.0} s)", t.elapsed().as_secs_f64()));

    println!("\n==> systemd-analyze verify of the packaged unit");
    let root = agent::target_dir().join("dist/verify-root");
    let _ = std::fs::remove_dir_all(&root);
    // --root makes the unit's /usr/bin/iotwatch the package's; the root needs systemd's own
    // units (sysinit.target and the like) too.
    std::fs::create_dir_all(root.join("lib/systemd"))?;
    cmd::output(cmd::command("cp", &["-a", "/lib/systemd/system"]).arg(root.join("lib/systemd/")))?;
    cmd::output(cmd::command("dpkg-deb", &["-x"]).arg(&deb).arg(&root))?;
    let mut c = cmd::command("systemd-analyze", &["verify", "--man=no"]);
    c.arg(format!("--root={}", root.display())).arg("/lib/systemd/system/iotwatch.service");
    let out = c.output().context("cannot run systemd-analyze: `cargo xtask setup` installs systemd")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !said.trim().is_empty() {
        bail!(
            "{}: systemd-analyze verify of deploy/systemd/iotwatch.service: {}",
            fail("systemd-analyze verify", done),
            said.trim()
        );
    }
    std::fs::remove_dir_all(&root)?;
    done.push("systemd-analyze verify".to_owned());

    // The Pi's prometheus.yml names the rules where the package installs them.
    let pi = std::fs::read_to_string(workspace_root().join("deploy/raspberry-pi/prometheus.yml"))?;
    let rules = workspace_root().join("deploy/prometheus/iotwatch.rules.yml");
    let config = agent::target_dir().join("dist/prometheus-pi.yml");
    std::fs::write(&config, pi.replace("/usr/share/iotwatch/prometheus/iotwatch.rules.yml", &rules.to_string_lossy()))?;
    let mut c = Command::new("promtool");
    c.args(["check", "config"]).arg(&config);
    step("promtool check config deploy/raspberry-pi/prometheus.yml (with the rules)", done, c)?;

    let t = Instant::now();
    println!("\n==> deploy/ names only flags and files that exist");
    deploycheck::check(&agent::target_dir().join("release/iotwatch")).with_context(|| fail("deploy check", done))?;
    done.push(format!("deploy check ({:.0} s)", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    println!("\n==> package install, start, stop, purge in a throw-away root");
    dist::install_test(&deb).with_context(|| fail("package install test", done))?;
    done.push(format!("package install test ({:.0} s)", t.elapsed().as_secs_f64()));
    Ok(())
}

/// Builds the privileged test crate and returns its test executables, from cargo's JSON
/// messages (`compiler-artifact` with `profile.test` and an `executable`).
fn privileged_test_binaries() -> Result<Vec<PathBuf>> {
    println!("\n==> build privileged tests");
    let out = cargo(&["test", "--release", "-p", "iotwatch-tests", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("building the privileged tests (iotwatch-tests) failed: see the compiler output above");
    }
    parse_test_executables(&String::from_utf8_lossy(&out.stdout))
}

/// Pure part of the above, for a unit test.
pub fn parse_test_executables(json_lines: &str) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for line in json_lines.lines().filter(|l| l.starts_with('{')) {
        let msg: serde_json::Value = serde_json::from_str(line).context("cargo printed invalid JSON")?;
        if msg["reason"] == "compiler-artifact"
            && msg["profile"]["test"] == true
            && let Some(exe) = msg["executable"].as_str()
        {
            v.push(PathBuf::from(exe));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_test_executables() {
        let text = r#"{"reason":"compiler-artifact","profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/release/deps/netns-abc"}
{"reason":"compiler-artifact","profile":{"test":false},"executable":"/t/release/iotwatch"}
{"reason":"build-finished","success":true}"#;
        let v = super::parse_test_executables(text).expect("valid JSON");
        assert_eq!(v, vec![std::path::PathBuf::from("/t/release/deps/netns-abc")]);
    }
}

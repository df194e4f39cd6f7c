//! `cargo xtask setup`: installs what a fresh Debian bookworm machine lacks for building
//! and testing iotwatch (shared/toolchain.md), and only that. Idempotent: every item is
//! checked first and reported as `present`, `installing` or `installed`.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// Debian packages, each with why it is needed.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links against the LLVM of nightly"),
    ("libpolly-22-dev", "needed to link bpf-linker against LLVM 22"),
    ("clang-22", "C toolchain of the same LLVM"),
    ("bpftool", "inspecting loaded programs and links"),
    ("iproute2", "network namespaces, veth, bridge (lab, tests)"),
    ("ethtool", "switching offloads on and off (tests)"),
    ("tcpdump", "reference captures and bench"),
    ("tshark", "decoding captures in tests"),
    ("iputils-ping", "lab and test traffic"),
    ("iperf3", "throughput bench"),
    ("pmacct", "pmacctd, the bench's comparison"),
    ("prometheus", "promtool for the alert rules' tests; /usr/bin/prometheus for the lab and its findings test"),
    ("ieee-data", "IEEE OUI registry for vendor names"),
    ("python3-scapy", "crafting test captures with /usr/bin/python3"),
    ("nginx-light", "real HTTP(S) server with Range (daemon tests; the lab's firmware, image and HTTPS downloads)"),
    ("openssl", "a real TLS server (s_server) and certificates for the TLS test and the lab's TLS servers"),
    ("curl", "real HTTP client for the daemon tests and the lab"),
    ("dnsmasq-base", "real DHCP and DNS server, without the dnsmasq service (daemon tests)"),
    ("busybox", "udhcpc, a DHCP client that sends a hostname (daemon tests)"),
    ("bind9-dnsutils", "dig, a real DNS client (daemon tests)"),
    ("chrony", "real NTP server and client (chronyd -x, chronyd -Q) for the daemon tests and the lab's NTP fan-out"),
    ("mosquitto", "real MQTT broker, cleartext and TLS (daemon tests, lab)"),
    ("mosquitto-clients", "mosquitto_pub, a real MQTT client (daemon tests, lab)"),
    ("avahi-daemon", "real mDNS responder announcing a host and a service (daemon tests, lab)"),
    ("minidlna", "real UPnP device: SSDP answers and an HTTP description (daemon tests, lab)"),
    // Depends on seabios, the BIOS that boots -kernel, so --no-install-recommends suffices.
    ("qemu-system-x86", "boots Debian's 6.1 kernel for the BPF verifier of older kernels (cargo xtask vm-test)"),
    ("cpio", "packs the initramfs of cargo xtask vm-test"),
    (
        "qemu-system-arm",
        "qemu-system-aarch64 boots Debian's arm64 kernels, the Pi 4's architecture (cargo xtask vm-test)",
    ),
    ("xz-utils", "decompresses the 6.12 kernels' modules for the vm-test initramfs"),
    ("binutils", "readelf finds the libraries each program of the vm-test initramfs needs; strip for dist"),
    (
        "gcc-aarch64-linux-gnu",
        "links the agent for aarch64 (cargo xtask dist --target aarch64-unknown-linux-gnu); strips it",
    ),
    ("libc6-dev-arm64-cross", "glibc for that link (only recommended by the cross gcc, so named here)"),
    ("systemd", "systemd-analyze verify checks the unit offline (no running systemd needed)"),
    ("debootstrap", "a throw-away Debian root in which cargo xtask dist --install-test installs the package"),
];

/// Foreign Debian architectures: arm64 packages (kernels, busybox, iproute2) are downloaded,
/// never installed, for the arm64 vm-test guests.
pub const FOREIGN_ARCHITECTURES: &[&str] = &["arm64"];

/// Rust targets besides the host's: the Raspberry Pi 4's.
pub const RUST_TARGETS: &[&str] = &["aarch64-unknown-linux-gnu"];

/// The bpf-linker release that builds with our nightly (LLVM 22) and rustc 1.95.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// cargo-fuzz, for the bounded fuzz run of `cargo xtask test` (with nightly).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Checks and installs everything; every other subcommand calls this first.
pub fn setup() -> Result<()> {
    foreign_architectures()?;
    apt_packages()?;
    rust_src()?;
    rust_targets()?;
    bpf_linker()?;
    cargo_fuzz()?;
    Ok(())
}

fn cargo_fuzz() -> Result<()> {
    let what = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if present {
        item(&what, "present");
        return Ok(());
    }
    item(&what, "installing");
    cmd::stream(
        cmd::command("cargo", &["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked"])
            .env("CARGO_TERM_PROGRESS_WHEN", "never"),
    )
    .context("cargo install cargo-fuzz failed: is ~/.cargo/bin writable and crates.io reachable?")?;
    item(&what, "installed");
    Ok(())
}

fn foreign_architectures() -> Result<()> {
    let known = cmd::output(&mut cmd::command("dpkg", &["--print-foreign-architectures"]))?;
    for arch in FOREIGN_ARCHITECTURES {
        let what = format!("dpkg architecture {arch}");
        if known.lines().any(|l| l.trim() == *arch) {
            item(&what, "present");
            continue;
        }
        item(&what, "adding");
        cmd::output(&mut cmd::command("dpkg", &["--add-architecture", arch]))?;
        // Without it apt knows no package of the new architecture.
        cmd::stream(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))
            .context("apt-get update failed: check network access to the Debian mirrors and /etc/apt/sources.list")?;
        item(&what, "added");
    }
    Ok(())
}

fn rust_targets() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("cannot list the Rust targets: is rustup installed?")?;
    for t in RUST_TARGETS {
        let what = format!("rust target {t}");
        if installed.lines().any(|l| l.trim() == *t) {
            item(&what, "present");
            continue;
        }
        item(&what, "installing");
        cmd::stream(Command::new("rustup").args(["target", "add", t]))
            .with_context(|| format!("could not add the target: check network access, then `rustup target add {t}`"))?;
        item(&what, "installed");
    }
    Ok(())
}

fn item(what: &str, state: &str) {
    println!("setup: {what:<28} {state}");
}

/// Whether dpkg knows the package as fully installed.
pub fn dpkg_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages() -> Result<()> {
    let mut missing = Vec::new();
    for (name, _) in DEBIAN_PACKAGES {
        if dpkg_installed(name) {
            item(name, "present");
        } else {
            missing.push(*name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    for name in &missing {
        item(name, "installing");
    }
    // Package services (prometheus) must not start: there is no systemd here, and a
    // Prometheus server started by dpkg would hold port 9090 for no reason.
    let _policy = PolicyRcD::forbid_service_starts()?;
    let apt_env = [("DEBIAN_FRONTEND", "noninteractive")];
    cmd::stream(Command::new("apt-get").arg("update").envs(apt_env))
        .context("apt-get update failed: check network access to the Debian mirrors and /etc/apt/sources.list")?;
    cmd::stream(
        Command::new("apt-get").args(["install", "-y", "--no-install-recommends"]).args(&missing).envs(apt_env),
    )
    .with_context(|| {
        format!(
            "apt-get install of {} failed: run `apt-get install {}` by hand to see why \
             (held packages, a dpkg lock, a missing bookworm-security source for LLVM 22)",
            missing.join(" "),
            missing.join(" ")
        )
    })?;
    let still: Vec<&str> = missing.iter().copied().filter(|n| !dpkg_installed(n)).collect();
    if !still.is_empty() {
        bail!(
            "apt-get reported success but dpkg does not show {} as installed: \
             run `dpkg --configure -a` and `cargo xtask setup` again",
            still.join(" ")
        );
    }
    for name in &missing {
        item(name, "installed");
    }
    Ok(())
}

/// Installs a policy-rc.d that forbids service starts while packages install, and
/// removes it again, but only when the machine had none (a Docker image ships one).
struct PolicyRcD {
    created: bool,
}

impl PolicyRcD {
    fn forbid_service_starts() -> Result<Self> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(Self { created: false });
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(POLICY_RC_D, "#!/bin/sh\n# written by cargo xtask setup for the install only\nexit 101\n")
            .with_context(|| format!("cannot write {POLICY_RC_D} (are you root?)"))?;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { created: true })
    }
}

impl Drop for PolicyRcD {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

fn rust_src() -> Result<()> {
    const ITEM: &str = "rust-src (nightly)";
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "cannot list nightly's components: install the nightly toolchain with `rustup toolchain install nightly`",
    )?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        item(ITEM, "present");
        return Ok(());
    }
    item(ITEM, "installing");
    cmd::stream(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"])).context(
        "could not add rust-src: check network access, then `rustup component add rust-src --toolchain nightly`",
    )?;
    item(ITEM, "installed");
    Ok(())
}

/// `bpf-linker --version` prints `bpf-linker 0.13.0`.
fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_owned)
}

fn bpf_linker() -> Result<()> {
    let what = format!("bpf-linker {BPF_LINKER_VERSION}");
    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => {
            item(&what, "present");
            return Ok(());
        }
        Some(v) => item(&what, &format!("installing (found {v})")),
        None => item(&what, "installing"),
    }
    // Without llvm-config 22 first on PATH the build fails with "unable to find -lLLVM".
    let path = format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default());
    cmd::stream(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path),
    )
    .context("cargo install bpf-linker failed: is llvm-22-dev installed (see above)? Is ~/.cargo/bin writable?")?;
    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => {
            item(&what, "installed");
            Ok(())
        }
        other => bail!(
            "bpf-linker was installed but `bpf-linker --version` reports {other:?}: \
             put ~/.cargo/bin first on PATH"
        ),
    }
}

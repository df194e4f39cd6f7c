//! `cargo xtask dist [--target TRIPLE]`: the release agent (agent/build.rs embeds the eBPF
//! object) for this machine or for the Raspberry Pi 4 (`aarch64-unknown-linux-gnu`), and a
//! Debian package of it in `target/dist/`: the binary, the systemd unit and its defaults
//! (a conffile), the Prometheus rules, the Grafana dashboard and provisioning, the peer
//! databases (ip-location-db's ASN and country files, from where set-up installed them), the
//! docs and the licences.
//!
//! Packed with `dpkg-deb` from a staged tree rather than with cargo-deb: cargo-deb reads its
//! configuration from the agent's Cargo.toml, while everything the package holds besides the
//! binary lives under deploy/, and dpkg-deb needs no tool that set-up must build. The
//! maintainer scripts (deploy/debian/) are those dh_installsystemd would write.
//!
//! `install_test` installs, starts, stops and purges the package in a throw-away Debian root
//! (debootstrap, cached in target/dist/) with a systemctl stand-in that records what the
//! maintainer scripts asked systemd to do.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{agent, cmd, setup, workspace_root};

/// The architectures the package is built for; the row of a kernel in vm.rs names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Self; 2] = [Self::Amd64, Self::Arm64];

    /// Debian's name (the package's Architecture, `apt-get download PKG:ARCH`).
    pub fn deb(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    pub fn rust_target(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-unknown-linux-gnu",
            Self::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// Debian's multiarch triplet: the directory of its libraries, the prefix of cross tools.
    pub fn triplet(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-linux-gnu",
            Self::Arm64 => "aarch64-linux-gnu",
        }
    }

    pub fn from_target(target: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|a| a.rust_target() == target || a.deb() == target).with_context(|| {
            format!("unsupported target {target:?}; supported: {}", Self::ALL.map(|a| a.rust_target()).join(", "))
        })
    }

    /// The machine xtask runs on.
    pub fn host() -> Result<Self> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Self::Amd64),
            "aarch64" => Ok(Self::Arm64),
            other => bail!("this machine ({other}) is not one iotwatch is built on: use x86_64 or aarch64"),
        }
    }

    /// A binutils program for this architecture: the host's own, or the cross one.
    fn binutil(self, tool: &str) -> Result<String> {
        Ok(if self == Self::host()? { tool.to_owned() } else { format!("{}-{tool}", self.triplet()) })
    }
}

/// The package's version: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn dist_dir() -> PathBuf {
    agent::target_dir().join("dist")
}

/// `cargo build --release -p iotwatch` for `arch` (plain, so it is shared with the other
/// commands, on the host's); returns the binary.
pub fn build_release(arch: Arch) -> Result<PathBuf> {
    if arch == Arch::host()? {
        return agent::build_agent();
    }
    let t = arch.rust_target();
    println!("dist: building the release agent for {t}");
    cmd::stream(Command::new("cargo").args(["build", "--release", "-p", "iotwatch", "--target", t]).current_dir(workspace_root())).with_context(|| {
        format!(
            "building the agent for {t} failed (see above): `cargo xtask setup` adds the Rust target and Debian's cross linker gcc-{}",
            arch.triplet()
        )
    })?;
    let bin = agent::target_dir().join(t).join("release/iotwatch");
    if !bin.is_file() {
        bail!("cargo built the agent for {t} but {} is missing", bin.display());
    }
    Ok(bin)
}

/// `cargo xtask dist`: the binary and the package for `target` (default: this machine).
pub fn dist(target: Option<&str>) -> Result<PathBuf> {
    let arch = match target {
        Some(t) => Arch::from_target(t)?,
        None => Arch::host()?,
    };
    let bin = build_release(arch)?;
    let out = dist_dir();
    fs::create_dir_all(&out)?;
    let plain = out.join(format!("iotwatch-{VERSION}-{}", arch.rust_target()));
    fs::copy(&bin, &plain).with_context(|| format!("cannot copy {} to {}", bin.display(), plain.display()))?;
    let deb = package(&bin, arch, &out)?;
    check_contents(&deb)?;
    println!("dist: {}\ndist: {}", plain.display(), deb.display());
    Ok(deb)
}

/// Files of the repository in the package: (source, installed path). A directory's files
/// are all taken, so a new example in deploy/raspberry-pi/ ships without a change here.
const FILES: &[(&str, &str)] = &[
    ("deploy/systemd/iotwatch.service", "lib/systemd/system/iotwatch.service"),
    ("deploy/systemd/iotwatch.default", "etc/default/iotwatch"),
    ("deploy/prometheus/iotwatch.rules.yml", "usr/share/iotwatch/prometheus/iotwatch.rules.yml"),
    ("deploy/prometheus/prometheus.example.yml", "usr/share/iotwatch/prometheus/prometheus.example.yml"),
    ("deploy/prometheus/web-config.example.yml", "usr/share/iotwatch/prometheus/web-config.example.yml"),
    ("deploy/grafana/iotwatch.json", "usr/share/iotwatch/grafana/dashboards/iotwatch.json"),
    ("deploy/grafana/provisioning/dashboards", "usr/share/iotwatch/grafana/provisioning/dashboards"),
    ("deploy/grafana/provisioning/datasources", "usr/share/iotwatch/grafana/provisioning/datasources"),
    ("deploy/raspberry-pi", "usr/share/iotwatch/raspberry-pi"),
    ("deploy/README.md", "usr/share/iotwatch/README.md"),
    ("README.md", "usr/share/doc/iotwatch/README.md"),
    ("deploy/debian/copyright", "usr/share/doc/iotwatch/copyright"),
];

/// Files of this machine in the package, not of the repository (no third-party database is
/// committed): (source, installed path). Set-up installs them (`setup::ip_location_db_files`).
/// The package installs them where set-up installs them on a development machine, so the
/// agent's defaults hold for both.
pub fn machine_files() -> Vec<(PathBuf, String)> {
    let dir = setup::IP_LOCATION_DB_DIR;
    setup::ip_location_db_files()
        .into_iter()
        .map(|f| (Path::new(dir).join(f), format!("{}/{f}", dir.trim_start_matches('/'))))
        .collect()
}

/// Installed paths `check_contents` requires (and the docs may name: deploycheck.rs).
pub const REQUIRED: &[&str] = &[
    "usr/bin/iotwatch",
    "lib/systemd/system/iotwatch.service",
    "etc/default/iotwatch",
    "usr/share/iotwatch/prometheus/iotwatch.rules.yml",
    "usr/share/iotwatch/grafana/dashboards/iotwatch.json",
    "usr/share/iotwatch/grafana/provisioning/dashboards/iotwatch.yaml",
    "usr/share/iotwatch/grafana/provisioning/datasources/prometheus.yaml",
    "usr/share/doc/iotwatch/copyright",
    "usr/share/iotwatch/ip-location-db/asn-ipv4.csv",
    "usr/share/iotwatch/ip-location-db/asn-ipv6.csv",
    "usr/share/iotwatch/ip-location-db/geo-whois-asn-country.mmdb",
    "usr/share/iotwatch/ip-location-db/DBIP-LICENSE",
    "usr/share/iotwatch/ip-location-db/ROUTEVIEWS-LICENSE",
    "usr/share/iotwatch/ip-location-db/NRO_LICENSE",
    "usr/share/iotwatch/ip-location-db/VERSION",
];

const CONFFILES: &[&str] = &["/etc/default/iotwatch"];
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// Every installed path of the package (files only), relative to /, sorted.
pub fn installed_paths() -> Result<BTreeSet<String>> {
    let root = workspace_root();
    let mut set = BTreeSet::from(["usr/bin/iotwatch".to_owned()]);
    for (src, dest) in FILES {
        let p = root.join(src);
        if p.is_dir() {
            for e in fs::read_dir(&p)?.flatten().filter(|e| e.path().is_file()) {
                set.insert(format!("{dest}/{}", e.file_name().to_string_lossy()));
            }
        } else {
            set.insert((*dest).to_owned());
        }
    }
    set.extend(machine_files().into_iter().map(|(_, dest)| dest));
    Ok(set)
}

/// Stages the tree and packs it into `out/iotwatch_VERSION_ARCH.deb`.
pub fn package(bin: &Path, arch: Arch, out: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    let stage = out.join(format!("stage-{}", arch.deb()));
    let _ = fs::remove_dir_all(&stage);
    let put = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let dest = stage.join(to);
        fs::create_dir_all(dest.parent().context("a path under the stage")?)?;
        fs::copy(from, &dest).with_context(|| format!("cannot copy {} to {}", from.display(), dest.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for (src, dest) in FILES {
        let p = root.join(src);
        if p.is_dir() {
            for e in fs::read_dir(&p)?.flatten().filter(|e| e.path().is_file()) {
                put(&e.path(), &format!("{dest}/{}", e.file_name().to_string_lossy()), 0o644)?;
            }
        } else {
            put(&p, dest, 0o644)?;
        }
    }
    for (src, dest) in machine_files() {
        if !src.is_file() {
            bail!("{} is missing: `cargo xtask setup` installs the peer databases the package ships", src.display());
        }
        put(&src, &dest, 0o644)?;
    }
    for s in SCRIPTS {
        put(&root.join("deploy/debian").join(s), &format!("DEBIAN/{s}"), 0o755)?;
    }
    put(bin, "usr/bin/iotwatch", 0o755)?;
    let strip = arch.binutil("strip")?;
    let installed = stage.join("usr/bin/iotwatch");
    cmd::output(Command::new(&strip).arg("--strip-unneeded").arg(&installed))
        .with_context(|| format!("{strip} failed: `cargo xtask setup` installs binutils for {}", arch.deb()))?;
    let mut size = 0;
    for p in tree(&stage)?.iter().filter(|p| !p.starts_with("DEBIAN")) {
        let m = fs::metadata(stage.join(p))?;
        size += if m.is_file() { m.len() } else { 0 };
    }
    let libc =
        libc_depends(&cmd::output(Command::new("readelf").args(["--dynamic", "--version-info"]).arg(&installed))?)?;
    let control = fs::read_to_string(root.join("deploy/debian/control"))?
        .replace("@VERSION@", VERSION)
        .replace("@ARCH@", arch.deb())
        .replace("@INSTALLED_SIZE@", &size.div_ceil(1024).to_string())
        .replace("@LIBC_DEPENDS@", &libc);
    fs::write(stage.join("DEBIAN/control"), control)?;
    fs::write(stage.join("DEBIAN/conffiles"), CONFFILES.iter().map(|c| format!("{c}\n")).collect::<String>())?;
    // md5sums lets `dpkg --verify iotwatch` find changed files.
    let mut c = cmd::command(
        "bash",
        &[
            "-o",
            "pipefail",
            "-c",
            "find . -type f ! -path './DEBIAN/*' -printf '%P\\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums",
        ],
    );
    cmd::output(c.current_dir(&stage))?;
    let deb = out.join(format!("iotwatch_{VERSION}_{}.deb", arch.deb()));
    println!("dist: packing {}", deb.display());
    cmd::output(cmd::command("dpkg-deb", &["--root-owner-group", "-Zxz", "--build"]).arg(&stage).arg(&deb))?;
    fs::remove_dir_all(&stage)?;
    Ok(deb)
}

/// `Depends:` for the C libraries the binary links, from `readelf --dynamic --version-info`:
/// libc6 at the newest GLIBC_ symbol version it uses, libgcc-s1 when it links libgcc_s.
pub fn libc_depends(readelf: &str) -> Result<String> {
    let newest = readelf
        .split(|c: char| c.is_whitespace())
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next().flatten().unwrap_or(0)))
        })
        .max()
        .context("the binary uses no GLIBC_ symbol version: is it dynamically linked against glibc?")?;
    let mut deps = format!("libc6 (>= {}.{})", newest.0, newest.1);
    if readelf.contains("[libgcc_s.so.1]") {
        deps.push_str(", libgcc-s1");
    }
    Ok(deps)
}

/// The package holds what REQUIRED names and depends on ieee-data.
pub fn check_contents(deb: &Path) -> Result<()> {
    let list = cmd::output(cmd::command("dpkg-deb", &["--contents"]).arg(deb))?;
    let paths: BTreeSet<&str> =
        list.lines().filter_map(|l| l.split_whitespace().nth(5)).map(|p| p.trim_start_matches("./")).collect();
    let missing: Vec<&&str> = REQUIRED.iter().filter(|r| !paths.contains(**r)).collect();
    if !missing.is_empty() {
        bail!("{} lacks {missing:?}: see FILES in xtask/src/dist.rs", deb.display());
    }
    let depends = cmd::output(cmd::command("dpkg-deb", &["--field"]).arg(deb).arg("Depends"))?;
    if !depends.split(',').any(|d| d.trim() == "ieee-data") {
        bail!("{} does not depend on ieee-data (Depends: {})", deb.display(), depends.trim());
    }
    Ok(())
}

/// A systemctl that records its arguments in /systemctl.log and reports the unit enabled and
/// inactive, so that deb-systemd-invoke passes the start and stop on.
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
echo "$*" >> /systemctl.log
case "$*" in
--version*) echo "systemd 252 (252)" ;;
*is-enabled*) echo enabled ;;
*is-active*) exit 3 ;;
esac
exit 0
"#;

/// Paths dpkg and the systemd helpers may leave after a purge: their own records.
const BOOKKEEPING: &[&str] =
    &["var/lib/dpkg/", "var/log/", "var/cache/", "var/lib/systemd/deb-systemd-helper-", "systemctl.log"];

/// Installs, "starts", removes and purges `deb` in a copy of a minimal bookworm root.
pub fn install_test(deb: &Path) -> Result<()> {
    let base = debootstrap_root()?;
    let root = dist_dir().join("install-test");
    let _ = fs::remove_dir_all(&root);
    cmd::output(cmd::command("cp", &["-a"]).arg(&base).arg(&root))?;
    let result = install_steps(deb, &root);
    if result.is_ok() {
        fs::remove_dir_all(&root)?;
    }
    result.with_context(|| format!("package test of {} (the root is left in {})", deb.display(), root.display()))
}

fn install_steps(deb: &Path, root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    // deb-systemd-invoke acts only where systemd runs, which /run/systemd/system says.
    fs::create_dir_all(root.join("run/systemd/system"))?;
    fs::write(root.join("usr/local/bin/systemctl"), FAKE_SYSTEMCTL)?;
    fs::set_permissions(root.join("usr/local/bin/systemctl"), fs::Permissions::from_mode(0o755))?;
    // systemd's, for every DynamicUser= service: not the package's to remove.
    for d in ["var/lib/private", "var/log/private"] {
        fs::create_dir_all(root.join(d))?;
    }
    let before = tree(root)?;
    fs::copy(deb, root.join("tmp/iotwatch.deb"))?;
    let chroot = |args: &[&str]| {
        cmd::output(
            cmd::command("chroot", &[root.to_str().context("a UTF-8 path")?])
                .args(args)
                .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        )
    };
    let log = || fs::read_to_string(root.join("systemctl.log")).unwrap_or_default();

    println!("dist: install test: dpkg -i in {}", root.display());
    chroot(&["dpkg", "-i", "/tmp/iotwatch.deb"])?;
    fs::remove_file(root.join("tmp/iotwatch.deb"))?;
    if !chroot(&["dpkg-query", "-W", "-f=${Status}", "iotwatch"])?.contains("install ok installed") {
        bail!("dpkg -i succeeded but iotwatch is not `install ok installed`");
    }
    // The binary runs in a root that has only what the package depends on.
    let names = chroot(&["/usr/bin/iotwatch", "metric-names"])
        .context("the installed binary does not run in a plain bookworm root")?;
    if !names.lines().any(|l| l.starts_with("iotwatch_")) {
        bail!("`iotwatch metric-names` printed no metric name");
    }
    let wants = root.join("etc/systemd/system/multi-user.target.wants/iotwatch.service");
    if fs::symlink_metadata(&wants).is_err() {
        bail!("the unit was not enabled: {} is missing", wants.display());
    }
    if !log().lines().any(|l| l.ends_with("start iotwatch.service")) {
        bail!("postinst did not start iotwatch.service; systemctl was called with:\n{}", log());
    }
    println!("dist: install test: installed, enabled and started");

    // What the service would have written: purge must remove it.
    for d in ["var/lib/private/iotwatch", "var/log/private/iotwatch"] {
        fs::create_dir_all(root.join(d))?;
        fs::write(root.join(d).join("iotwatch-verifier-tc.log"), "state\n")?;
    }
    chroot(&["dpkg", "--remove", "iotwatch"])?;
    if !log().lines().any(|l| l.ends_with("stop iotwatch.service")) {
        bail!("prerm did not stop iotwatch.service; systemctl was called with:\n{}", log());
    }
    if root.join("usr/bin/iotwatch").exists() || !root.join("etc/default/iotwatch").is_file() {
        bail!("after dpkg --remove the binary must be gone and the conffile /etc/default/iotwatch kept");
    }
    chroot(&["dpkg", "--purge", "iotwatch"])?;
    let after = tree(root)?;
    let left: Vec<&String> =
        after.difference(&before).filter(|p| !BOOKKEEPING.iter().any(|b| p.starts_with(b))).collect();
    if !left.is_empty() {
        bail!("dpkg --purge left {left:?}");
    }
    println!("dist: install test: stopped on remove; purge left nothing behind");
    Ok(())
}

/// Every path under `root`, relative, directories included.
fn tree(root: &Path) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?.flatten() {
            let p = e.path();
            if e.file_type()?.is_dir() {
                todo.push(p.clone());
            }
            set.insert(p.strip_prefix(root)?.to_string_lossy().into_owned());
        }
    }
    Ok(set)
}

/// A minimal bookworm root with ieee-data (the package's dependency), made once.
fn debootstrap_root() -> Result<PathBuf> {
    let dir = dist_dir().join("bookworm-root");
    if dir.join("usr/bin/dpkg").is_file() && dir.join("usr/share/ieee-data").is_dir() {
        return Ok(dir);
    }
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    println!("dist: debootstrap of a minimal bookworm root into {} (once; about 2 minutes)", dir.display());
    cmd::output(cmd::command("debootstrap", &["--variant=minbase", "--include=ieee-data", "bookworm"]).arg(&tmp))
        .context("debootstrap failed: `cargo xtask setup` installs it; it needs the Debian mirror")?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_dependency_from_readelf() {
        let out = " 0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]\n  0x0010:   Name: GLIBC_2.17  Flags: none\n  0x0020:   Name: GLIBC_2.34  Flags: none\n  Name: GLIBC_2.3.4\n";
        assert_eq!(libc_depends(out).expect("versions").as_str(), "libc6 (>= 2.34), libgcc-s1");
        assert!(libc_depends("static").is_err());
    }

    #[test]
    fn every_packaged_file_exists_and_required_ones_are_packaged() {
        let root = workspace_root();
        for (src, _) in FILES {
            assert!(root.join(src).exists(), "{src}");
        }
        for s in SCRIPTS {
            assert!(root.join("deploy/debian").join(s).is_file(), "{s}");
        }
        let paths = installed_paths().expect("deploy/ is readable");
        for r in REQUIRED {
            assert!(paths.contains(*r), "{r} is not installed by FILES");
        }
        for c in CONFFILES {
            assert!(paths.contains(c.trim_start_matches('/')), "conffile {c} is not installed");
        }
    }

    #[test]
    fn peer_databases_are_packaged_where_set_up_installs_them() {
        let files = machine_files();
        assert_eq!(files.len(), setup::ip_location_db_files().len());
        for (src, dest) in &files {
            assert_eq!(Path::new("/").join(dest).parent(), Some(Path::new(setup::IP_LOCATION_DB_DIR)), "{dest}");
            assert_eq!(src.file_name(), Path::new(dest).file_name());
        }
        // Every required data file is one set-up installs.
        for r in REQUIRED.iter().filter(|r| r.starts_with(setup::IP_LOCATION_DB_DIR.trim_start_matches('/'))) {
            assert!(files.iter().any(|(_, d)| d == r), "{r} is required but set-up does not install it");
        }
        // Where set-up ran, every file is there.
        if Path::new(setup::IP_LOCATION_DB_DIR).join("VERSION").is_file() {
            for (src, _) in &files {
                assert!(src.is_file(), "{} is missing: run `cargo xtask setup`", src.display());
            }
        }
    }

    #[test]
    fn targets() {
        assert_eq!(Arch::from_target("aarch64-unknown-linux-gnu").expect("known"), Arch::Arm64);
        assert_eq!(Arch::from_target("amd64").expect("known"), Arch::Amd64);
        assert!(Arch::from_target("riscv64gc-unknown-linux-gnu").is_err());
    }
}

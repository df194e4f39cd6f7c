//! `cargo xtask vm-test`: boots Debian's stock kernels (6.1 and 6.12, amd64 and arm64) under
//! QEMU with a throw-away initramfs (busybox, iproute2 and bpftool of the kernel's
//! architecture, downloaded, never installed here; the iotwatch package for that
//! architecture, unpacked) and runs `xtask/vm/agent-test.sh` in it. This machine's kernel
//! (6.18) accepts BPF programs that the kernels users run (Debian 12's 6.1, Raspberry Pi OS's
//! 6.1-6.12) refuse, so a kernel change is not done before this passes.
//!
//! Software emulation only (`-accel tcg`): KVM hangs on the nested machines we run on.

use std::{
    ffi::OsStr,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    agent, cmd,
    dist::{self, Arch},
    tmp::TempDir,
};

/// A kernel to boot: a Debian kernel package, booted with the userland and the agent package
/// of its architecture.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    /// `--kernel` value and cache directory name.
    pub name: &'static str,
    pub title: &'static str,
    /// Debian meta package whose dependency is the current kernel package of the series...
    pub meta_package: &'static str,
    /// ...the one whose name starts with this.
    pub package_prefix: &'static str,
    pub arch: Arch,
    /// The kernel image in the extracted package; `{kver}` is the modules directory's name.
    /// arm64's is an uncompressed Image, which QEMU's -kernel boots as it is.
    pub image: &'static str,
}

/// Debian 12's kernels: 6.1 and 6.12 are the first and the last series Raspberry Pi OS ships;
/// 6.1 attaches TC through clsact, 6.12 through tcx.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "debian-6.1-amd64",
        title: "Debian 6.1 amd64",
        meta_package: "linux-image-amd64",
        package_prefix: "linux-image-6.1.",
        arch: Arch::Amd64,
        image: "boot/vmlinuz-{kver}",
    },
    Kernel {
        name: "debian-6.12-amd64",
        title: "Debian 6.12 amd64",
        meta_package: "linux-image-6.12-amd64",
        package_prefix: "linux-image-6.12.",
        arch: Arch::Amd64,
        image: "boot/vmlinuz-{kver}",
    },
    Kernel {
        name: "debian-6.1-arm64",
        title: "Debian 6.1 arm64",
        meta_package: "linux-image-arm64",
        package_prefix: "linux-image-6.1.",
        arch: Arch::Arm64,
        image: "boot/vmlinuz-{kver}",
    },
    Kernel {
        name: "debian-6.12-arm64",
        title: "Debian 6.12 arm64",
        meta_package: "linux-image-6.12-arm64",
        package_prefix: "linux-image-6.12.",
        arch: Arch::Arm64,
        image: "boot/vmlinuz-{kver}",
    },
];

/// The rows `cargo xtask test` boots (its `vm` group): all four, measured to fit CI's budget
/// (times in deploy/README.md).
pub const TEST_KERNELS: &[&str] = &["debian-6.1-amd64", "debian-6.12-amd64", "debian-6.1-arm64", "debian-6.12-arm64"];

/// QEMU for an architecture: program, machine options, console. The Pi 4's CPU is a
/// Cortex-A72; arm64 needs a machine (`virt`), amd64's default (pc) boots -kernel directly.
fn qemu(arch: Arch) -> (&'static str, &'static [&'static str], &'static str) {
    match arch {
        Arch::Amd64 => ("qemu-system-x86_64", &["-accel", "tcg"], "ttyS0"),
        Arch::Arm64 => ("qemu-system-aarch64", &["-M", "virt", "-cpu", "cortex-a72", "-accel", "tcg"], "ttyAMA0"),
    }
}

/// Debian packages of the guest's userland, downloaded for the kernel's architecture (never
/// installed here): busybox, iproute2's ip and tc (busybox's lack bridges, netns and
/// filters), bpftool (counting programs), ethtool (switching the veths' offloads for xdp-skb),
/// and the libraries those and the agent link.
/// `build_initramfs` fails naming any library missing from this list.
const USERLAND: &[&str] = &[
    "busybox-static",
    "iproute2",
    "bpftool",
    "ethtool",
    "libc6",
    "libgcc-s1",
    "libbpf1",
    "libbsd0",
    "libmd0",
    "libcap2",
    "libelf1",
    "libmnl0",
    "libxtables12",
    "zlib1g",
];

/// Programs of the userland packages copied into the guest: (path in the package, in the guest).
const PROGRAMS: &[(&str, &str)] = &[
    ("bin/ip", "usr/sbin/ip"),
    ("sbin/tc", "usr/sbin/tc"),
    ("usr/sbin/bpftool", "usr/sbin/bpftool"),
    ("sbin/ethtool", "usr/sbin/ethtool"),
];

/// Modules the test needs, in load order (bridge needs llc and stp). Built in on most
/// kernels, modules on Debian's.
const MODULES: &[&str] = &[
    "net/llc/llc",
    "net/802/stp",
    "net/bridge/bridge",
    "drivers/net/veth",
    "net/sched/sch_ingress",
    "net/sched/cls_bpf",
];

/// Where the package puts the agent; the scripts use $BIN.
const GUEST_BIN: &str = "/usr/bin/iotwatch";
const INIT: &str = include_str!("../vm/init");
const AGENT_TEST: &str = include_str!("../vm/agent-test.sh");

/// Seconds before QEMU is killed. A boot with every check took 24-30 s here on each row,
/// arm64 included (TCG on 2 cores); ten times that is room for a slower machine.
pub const DEFAULT_TIMEOUT_S: u64 = 300;

#[derive(Debug, Clone)]
pub struct VmArgs {
    /// The agent for the kernels' architecture; built (release) when `None`.
    pub bin: Option<PathBuf>,
    /// Kernel names, or `all`.
    pub kernels: Vec<String>,
    pub timeout: Duration,
}

pub fn kernel_by_name(name: &str) -> Result<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        format!(
            "unknown kernel {name:?}; known: all, {}",
            KERNELS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        )
    })
}

/// `all`, or names separated by commas (or given several times).
pub fn kernels_by_names(names: &[String]) -> Result<Vec<&'static Kernel>> {
    if names.iter().any(|n| n == "all") {
        return Ok(KERNELS.iter().collect());
    }
    names.iter().flat_map(|n| n.split(',')).filter(|n| !n.is_empty()).map(kernel_by_name).collect()
}

/// Boots each kernel in turn; fails after all ran if any failed, with a line per kernel.
pub fn vm_test(args: &VmArgs) -> Result<()> {
    let kernels = kernels_by_names(&args.kernels)?;
    if kernels.is_empty() {
        bail!(
            "no kernel given: --kernel all or one of {}",
            KERNELS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        );
    }
    if args.bin.is_some() && kernels.windows(2).any(|w| w[0].arch != w[1].arch) {
        bail!("--bin is one architecture's binary: give kernels of one architecture with it");
    }
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for k in kernels {
        let t = Instant::now();
        let r = boot_kernel(k, args);
        let secs = t.elapsed().as_secs_f64();
        match r {
            Ok((kver, checks, boot_s)) => lines.push(format!(
                "{:<18} {kver:<30} {checks:>3} checks passed  boot {boot_s:>4.0} s, all {secs:>4.0} s",
                k.name
            )),
            Err(e) => {
                lines.push(format!("{:<18} FAILED after {secs:.0} s", k.name));
                failed.push(format!("{e:#}"));
            }
        }
    }
    println!("\nvm-test summary:");
    for l in &lines {
        println!("  {l}");
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n\n"));
    }
    Ok(())
}

/// One kernel: returns its release, the checks passed and the seconds QEMU ran.
fn boot_kernel(kernel: &Kernel, args: &VmArgs) -> Result<(String, usize, f64)> {
    let (qemu_bin, ..) = qemu(kernel.arch);
    if !cmd::exists(qemu_bin) {
        bail!("{qemu_bin} is missing: `cargo xtask setup` installs it");
    }
    let bin = match &args.bin {
        Some(b) => fs::canonicalize(b).with_context(|| format!("--bin {}: no such file", b.display()))?,
        None => dist::build_release(kernel.arch)?,
    };
    let vm_dir = agent::target_dir().join("vm");
    let cache = vm_dir.join(kernel.name);
    let kdir = fetch_kernel(kernel, &cache)?;
    let sysroot = fetch_userland(kernel.arch, &vm_dir.join(format!("userland-{}", kernel.arch.deb())))?;
    let kver = modules_version(&kdir)?;
    // The package users install, built from this binary: the guest runs what it installs.
    let deb = dist::package(&bin, kernel.arch, &cache)?;
    println!("vm-test: building initramfs (kernel {kver}, {})", deb.display());
    let initrd = cache.join("initrd.gz");
    build_initramfs(&kdir, &kver, &sysroot, kernel.arch, &deb, &initrd)?;
    let image = kdir.join(kernel.image.replace("{kver}", &kver));
    let log = cache.join("console.log");
    println!(
        "vm-test: booting {} under QEMU (software emulation, timeout {} s); console in {}",
        kernel.title,
        args.timeout.as_secs(),
        log.display()
    );
    let t = Instant::now();
    let timed_out = boot(kernel, &image, &initrd, &log, args.timeout)?;
    let boot_s = t.elapsed().as_secs_f64();
    let console = String::from_utf8_lossy(&fs::read(&log)?).into_owned();
    let v = Verdict::parse(&console);
    let kname = v.kernel.clone().unwrap_or_else(|| kernel.title.to_owned());
    if v.ok() && !timed_out {
        println!("vm-test: {} checks passed on {kname} in {boot_s:.0} s", v.passed.len());
        return Ok((kname, v.passed.len(), boot_s));
    }
    for l in &v.agent_log {
        println!("  {l}");
    }
    let mut why = Vec::new();
    if timed_out {
        why.push(format!(
            "QEMU did not finish within {} s and was killed (raise --timeout if the guest was only slow)",
            args.timeout.as_secs()
        ));
    }
    if !v.failed.is_empty() {
        why.push(format!("{} failed: {}", v.failed.len(), v.failed.join("; ")));
    }
    if v.passed.is_empty() {
        why.push("no check passed".to_owned());
    }
    if !v.done {
        why.push("the guest script did not finish (no `VMTEST: DONE`: a crash, a panic or a hang)".to_owned());
    }
    let stderr = fs::read_to_string(cache.join("qemu.stderr")).unwrap_or_default();
    let stderr = if stderr.trim().is_empty() { String::new() } else { format!("\nQEMU's stderr: {}", stderr.trim()) };
    bail!("vm-test on {}: {}\nthe console is in {}{stderr}", kernel.title, why.join("; "), log.display())
}

/// The checks a guest reported on its console.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub kernel: Option<String>,
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub done: bool,
    /// Lines of the agent's log that the guest echoed (`agent| ...`) after a failure.
    pub agent_log: Vec<String>,
}

impl Verdict {
    /// Reads `VMTEST: ...` lines wherever they start (kernel messages can share the line).
    pub fn parse(console: &str) -> Self {
        let mut v = Self::default();
        for line in console.lines().map(|l| l.trim_end_matches('\r')) {
            if line.starts_with("agent| ") {
                v.agent_log.push(line.to_owned());
            }
            let Some(i) = line.find("VMTEST: ") else { continue };
            let msg = &line[i + "VMTEST: ".len()..];
            if let Some(m) = msg.strip_prefix("PASS ") {
                v.passed.push(m.to_owned());
            } else if let Some(m) = msg.strip_prefix("FAIL ") {
                v.failed.push(m.to_owned());
            } else if let Some(k) = msg.strip_prefix("kernel ") {
                v.kernel = Some(k.to_owned());
            } else if msg.trim() == "DONE" {
                v.done = true;
            }
        }
        v
    }

    pub fn ok(&self) -> bool {
        !self.passed.is_empty() && self.failed.is_empty() && self.done
    }
}

/// The kernel package a meta package depends on, from `apt-cache depends META`, without the
/// `:arch` that apt adds for a foreign architecture.
pub fn kernel_package(apt_cache_depends: &str, prefix: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends: ")?.trim();
        let dep = dep.split_once(':').map_or(dep, |(name, _)| name);
        dep.starts_with(prefix).then(|| dep.to_owned())
    })
}

fn resolve_package(kernel: &Kernel) -> Result<Option<String>> {
    let meta = format!("{}:{}", kernel.meta_package, kernel.arch.deb());
    let out = cmd::output(&mut cmd::command("apt-cache", &["depends", &meta]))?;
    Ok(kernel_package(&out, kernel.package_prefix))
}

fn apt_update() -> Result<()> {
    cmd::stream(cmd::command("apt-get", &["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get update failed: check network access to the Debian mirrors")
}

/// Downloads `packages` (for `arch`) and extracts them all into `dest`, unless `dest` is
/// there; an interrupted download or extraction is never taken for a cache.
fn download_extract(packages: &[String], arch: Arch, dest: &Path) -> Result<()> {
    let tmp = dest.with_extension("tmp");
    let dl = dest.with_extension("download");
    for d in [&tmp, &dl] {
        let _ = fs::remove_dir_all(d);
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let names: Vec<String> = packages.iter().map(|p| format!("{p}:{}", arch.deb())).collect();
    // Downloaded, not installed: busybox-static conflicts with the busybox the tests use, and
    // arm64 packages are not for this machine. The sandbox user `_apt` could not write into
    // a directory under root's home.
    let download = || {
        cmd::output(
            cmd::command("apt-get", &["-o", "APT::Sandbox::User=root", "download"]).args(&names).current_dir(&dl),
        )
    };
    if download().is_err() {
        apt_update()?; // stale package lists name versions the mirror no longer has
        download().context("apt-get download failed: check access to the Debian mirrors; for arm64, `cargo xtask setup` runs `dpkg --add-architecture arm64`")?;
    }
    for p in packages {
        let deb = fs::read_dir(&dl)?
            .flatten()
            .map(|e| e.path())
            .find(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{p}_"))))
            .with_context(|| format!("apt-get download left no {p}_*.deb in {}", dl.display()))?;
        cmd::output(&mut cmd::command("dpkg-deb", &[OsStr::new("-x"), deb.as_os_str(), tmp.as_os_str()]))?;
    }
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest)?;
    fs::remove_dir_all(&dl)?;
    Ok(())
}

/// The extracted kernel package of a row, fetched once into `cache/kernel`.
fn fetch_kernel(kernel: &Kernel, cache: &Path) -> Result<PathBuf> {
    let kdir = cache.join("kernel");
    let name_file = cache.join("package");
    if kdir.join("boot").is_dir() {
        let name = fs::read_to_string(&name_file).unwrap_or_default();
        println!("vm-test: kernel package {} (cached in {})", name.trim(), cache.display());
        return Ok(kdir);
    }
    let pkg = match resolve_package(kernel)? {
        Some(p) => p,
        None => {
            apt_update()?;
            resolve_package(kernel)?.with_context(|| {
                format!(
                    "`apt-cache depends {}:{}` names no {}* package: is bookworm in the apt sources (and, for arm64, `dpkg --add-architecture arm64` done by `cargo xtask setup`)?",
                    kernel.meta_package,
                    kernel.arch.deb(),
                    kernel.package_prefix
                )
            })?
        }
    };
    println!("vm-test: downloading kernel package {pkg} into {}", cache.display());
    download_extract(std::slice::from_ref(&pkg), kernel.arch, &kdir)?;
    fs::write(&name_file, format!("{pkg}\n"))?;
    Ok(kdir)
}

/// The userland packages of `arch`, extracted into one tree (a sysroot) once.
fn fetch_userland(arch: Arch, dir: &Path) -> Result<PathBuf> {
    let done = dir.join(".packages");
    let want = USERLAND.join("\n");
    if fs::read_to_string(&done).is_ok_and(|s| s == want) {
        return Ok(dir.to_path_buf());
    }
    println!("vm-test: downloading the guest's userland for {} into {}", arch.deb(), dir.display());
    download_extract(&USERLAND.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), arch, dir)?;
    fs::write(&done, want)?;
    Ok(dir.to_path_buf())
}

/// Debian packages put modules under lib/modules (bookworm) or usr/lib/modules (trixie).
fn modules_dir(kdir: &Path) -> PathBuf {
    let usr = kdir.join("usr/lib/modules");
    if usr.is_dir() { usr } else { kdir.join("lib/modules") }
}

fn modules_version(kdir: &Path) -> Result<String> {
    let dir = modules_dir(kdir);
    fs::read_dir(&dir)
        .with_context(|| {
            format!("no {} in the extracted kernel package: remove {} to fetch it again", dir.display(), kdir.display())
        })?
        .flatten()
        .find_map(|e| e.file_name().to_str().map(str::to_owned))
        .with_context(|| format!("{} is empty: remove {} to fetch it again", dir.display(), kdir.display()))
}

/// The program interpreter and the NEEDED libraries of an ELF file, from
/// `readelf --program-headers --dynamic` (neither for a static one).
pub fn elf_deps(readelf: &str) -> (Option<String>, Vec<String>) {
    let between = |l: &str, start: &str| {
        l.split_once(start).and_then(|(_, r)| r.split_once(']')).map(|(v, _)| v.trim().to_owned())
    };
    let interp = readelf.lines().find_map(|l| between(l, "[Requesting program interpreter:"));
    let needed =
        readelf.lines().filter(|l| l.contains("(NEEDED)")).filter_map(|l| between(l, "Shared library: [")).collect();
    (interp, needed)
}

/// `rel` inside `sysroot` with symbolic links followed there, absolute ones included (an
/// absolute link in a package points into the package's root, not this machine's).
fn resolve_in(sysroot: &Path, rel: &Path) -> Option<PathBuf> {
    let mut rel = rel.to_path_buf();
    for _ in 0..16 {
        let p = sysroot.join(&rel);
        match fs::read_link(&p) {
            Ok(target) if target.is_absolute() => rel = target.strip_prefix("/").ok()?.to_path_buf(),
            Ok(target) => rel = rel.parent()?.join(target),
            Err(_) => return p.is_file().then_some(p),
        }
    }
    None
}

/// Copies into `root` the libraries `elf` needs, and theirs, from `sysroot`.
fn copy_libraries(elf: &Path, sysroot: &Path, arch: Arch, root: &Path) -> Result<()> {
    let dirs = [
        format!("lib/{}", arch.triplet()),
        format!("usr/lib/{}", arch.triplet()),
        "lib".to_owned(),
        "usr/lib".to_owned(),
    ];
    let mut todo = vec![elf.to_path_buf()];
    while let Some(f) = todo.pop() {
        let out = cmd::output(Command::new("readelf").args(["--program-headers", "--dynamic", "--wide"]).arg(&f))?;
        let (interp, needed) = elf_deps(&out);
        let mut wanted: Vec<PathBuf> = interp.iter().map(|i| PathBuf::from(i.trim_start_matches('/'))).collect();
        for lib in needed {
            let rel = dirs.iter().map(|d| Path::new(d).join(&lib)).find(|r| resolve_in(sysroot, r).is_some()).with_context(|| {
                format!("{} needs {lib}, which no package in USERLAND (xtask/src/vm.rs) holds: add its Debian package there", f.display())
            })?;
            wanted.push(rel);
        }
        for rel in wanted {
            let dest = root.join(&rel);
            if dest.exists() {
                continue;
            }
            let src = resolve_in(sysroot, &rel)
                .with_context(|| format!("{} is not in {}", rel.display(), sysroot.display()))?;
            copy(&src, &dest)?;
            todo.push(dest);
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(d) = to.parent() {
        fs::create_dir_all(d)?;
    }
    // fs::copy follows symlinks and keeps the mode (executables stay executable).
    fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn build_initramfs(kdir: &Path, kver: &str, sysroot: &Path, arch: Arch, deb: &Path, out: &Path) -> Result<()> {
    let root = TempDir::new("iotwatch-vm")?;
    let r = root.path();
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "tmp", "etc", "modules", "var/run"] {
        fs::create_dir_all(r.join(d)).with_context(|| format!("cannot create {}", r.join(d).display()))?;
    }
    // The package, as dpkg would unpack it: the agent, its unit and /etc/default/iotwatch.
    cmd::output(&mut cmd::command("dpkg-deb", &[OsStr::new("-x"), deb.as_os_str(), r.as_os_str()]))?;
    copy(&sysroot.join("bin/busybox"), &r.join("bin/busybox"))?;
    copy_libraries(&r.join(GUEST_BIN.trim_start_matches('/')), sysroot, arch, r)?;
    for (from, to) in PROGRAMS {
        let src = resolve_in(sysroot, Path::new(from))
            .with_context(|| format!("{from} is not in the userland packages ({})", sysroot.display()))?;
        copy(&src, &r.join(to))?;
        copy_libraries(&r.join(to), sysroot, arch, r)?;
    }
    let mods = modules_dir(kdir).join(kver).join("kernel");
    let mut order = String::new();
    for m in MODULES {
        let name = m.rsplit('/').next().unwrap_or(m);
        let base = mods.join(m);
        let ko = ["ko", "ko.xz", "ko.zst"].iter().map(|e| base.with_extension(e)).find(|p| p.is_file()).with_context(
            || {
                format!(
                    "module {m} not in {}: built in on this kernel? Then drop it from MODULES for this row",
                    mods.display()
                )
            },
        )?;
        let dest = r.join("modules").join(format!("{name}.ko"));
        // insmod of busybox-static cannot read compressed modules.
        match ko.extension().and_then(|e| e.to_str()) {
            Some(e @ ("xz" | "zst")) => {
                let tool = if e == "xz" { "xz" } else { "zstd" };
                cmd::stream(cmd::command(tool, &[OsStr::new("-dc"), ko.as_os_str()]).stdout(fs::File::create(&dest)?))
                    .with_context(|| format!("cannot decompress {}: install {tool}", ko.display()))?;
            }
            _ => copy(&ko, &dest)?,
        }
        order.push_str(name);
        order.push('\n');
    }
    fs::write(r.join("modules/order"), order)?;
    // The agent's default --enrich.oui-file (the package depends on ieee-data).
    for name in ["oui.csv", "mam.csv", "oui36.csv", "iab.csv"] {
        let oui = Path::new("/usr/share/ieee-data").join(name);
        if oui.is_file() {
            copy(&oui, &r.join("usr/share/ieee-data").join(name))?;
        }
    }
    fs::write(r.join("replay.pcap"), replay_capture())?;
    fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(r.join("init"), INIT.replace("@BIN@", GUEST_BIN))?;
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(r.join("init"), fs::Permissions::from_mode(0o755))?;
    fs::write(r.join("test.sh"), AGENT_TEST)?;
    if let Some(d) = out.parent() {
        fs::create_dir_all(d)?;
    }
    let mut c = cmd::command("bash", &["-o", "pipefail", "-c", r#"find . | cpio -o -H newc --quiet | gzip -1 > "$0""#]);
    c.arg(out).current_dir(r);
    cmd::output(&mut c).context("packing the initramfs failed: `cargo xtask setup` installs cpio")?;
    Ok(())
}

/// Frames of the capture the guest replays (`agent-test.sh` checks these counts): replay loads
/// the programs with other globals, so the verifier walks other paths than live.
pub const REPLAY_PINGS: usize = 10;
/// The source of every frame in it.
pub const REPLAY_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

/// A pcap of REPLAY_PINGS ICMP echo requests, one of them in an 802.1Q tag, and a DNS query,
/// all from REPLAY_SRC_MAC (192.168.77.10) to 192.168.77.20.
pub fn replay_capture() -> Vec<u8> {
    fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
        let len = (20 + payload.len()) as u16;
        let mut ip =
            vec![0x45, 0, (len >> 8) as u8, len as u8, 0, 1, 0, 0, 64, proto, 0, 0, 192, 168, 77, 10, 192, 168, 77, 20];
        ip.extend_from_slice(payload);
        ip
    }
    fn ethernet(vlan: Option<u16>, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x14];
        f.extend_from_slice(&REPLAY_SRC_MAC);
        if let Some(id) = vlan {
            f.extend_from_slice(&[0x81, 0x00, (id >> 8) as u8, id as u8]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(ip);
        f
    }
    let echo: Vec<u8> = [8u8, 0, 0, 0, 0, 1, 0, 1].into_iter().chain((0..56).map(|i| i as u8)).collect();
    // A query for iotwatch.test, type A, from port 40000 to 53.
    let mut dns = vec![0x9c, 0x40, 0, 53, 0, 38, 0, 0, 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x08iotwatch\x04test\x00\x00\x01\x00\x01");
    let mut frames: Vec<Vec<u8>> =
        (0..REPLAY_PINGS).map(|i| ethernet((i == 3).then_some(77), &ipv4(1, &echo))).collect();
    frames.push(ethernet(None, &ipv4(17, &dns)));
    // pcap: little-endian, microseconds, snaplen 65535, Ethernet.
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for v in [1_700_000_000 + i as u32, 0, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

/// Boots and copies the console to `log`, printing the VMTEST lines as they come. Returns
/// whether QEMU had to be killed at the timeout.
fn boot(kernel: &Kernel, image: &Path, initrd: &Path, log: &Path, timeout: Duration) -> Result<bool> {
    let (program, machine, console) = qemu(kernel.arch);
    let mut c = Command::new(program);
    c.args(machine)
        .args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(image)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console={console} rdinit=/init panic=-1 loglevel=3"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log.with_file_name("qemu.stderr"))?);
    // QEMU dies with xtask (Ctrl-C, kill) instead of running on for minutes.
    cmd::supervised(&mut c, libc::SIGKILL);
    let mut child =
        c.spawn().with_context(|| format!("cannot start {}: `cargo xtask setup` installs it", cmd::display(&c)))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut file = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = file.write_all(&line);
            let text = String::from_utf8_lossy(&line);
            if let Some(i) = text.find("VMTEST: ") {
                println!("  {}", text[i..].trim_end());
            }
            line.clear();
        }
    });
    let deadline = Instant::now() + timeout;
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = reader.join();
    Ok(timed_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_kernel_package() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(kernel_package(out, "linux-image-6.1.").as_deref(), Some("linux-image-6.1.0-57-amd64"));
        let arm = "linux-image-6.12-arm64:arm64\n  Depends: linux-image-6.12.117+deb12-arm64:arm64\n";
        assert_eq!(kernel_package(arm, "linux-image-6.12.").as_deref(), Some("linux-image-6.12.117+deb12-arm64"));
        assert_eq!(kernel_package(out, "linux-image-6.12."), None);
        assert_eq!(kernel_package("linux-image-amd64\n", "linux-image-6.1."), None);
    }

    #[test]
    fn verdict_needs_a_pass_no_fail_and_done() {
        let console = "\x1b[0m[ 1.2] random: crng init\r\nVMTEST: kernel 6.1.0-57-amd64\r\n[ 3.0] x VMTEST: PASS tc: a tx 50\r\nVMTEST: DONE\r\n";
        let v = Verdict::parse(console);
        assert_eq!(v.kernel.as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(v.passed, vec!["tc: a tx 50"]);
        assert!(v.done && v.ok());

        let v = Verdict::parse("VMTEST: PASS a\nVMTEST: FAIL tc: no /metrics\nagent| Error: verifier\nVMTEST: DONE\n");
        assert!(!v.ok());
        assert_eq!(v.failed, vec!["tc: no /metrics"]);
        assert_eq!(v.agent_log, vec!["agent| Error: verifier"]);

        assert!(!Verdict::parse("VMTEST: PASS a\n").ok(), "a guest that stopped half-way fails");
        assert!(!Verdict::parse("VMTEST: DONE\n").ok(), "nothing passed");
    }

    #[test]
    fn reads_readelf() {
        let out = "  INTERP  0x000238 ...\n      [Requesting program interpreter: /lib/ld-linux-aarch64.so.1]\n 0x0000000000000001 (NEEDED)             Shared library: [libbpf.so.1]\n 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n 0x000000000000000e (SONAME)             Library soname: [libx.so.1]\n";
        let (interp, needed) = elf_deps(out);
        assert_eq!(interp.as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
        assert_eq!(needed, vec!["libbpf.so.1", "libc.so.6"]);
        assert_eq!(elf_deps("There is no dynamic section in this file.\n"), (None, vec![]));
    }

    #[test]
    fn follows_links_inside_the_sysroot() {
        let tmp = TempDir::new("iotwatch-vm-links").expect("temp dir");
        let dir = tmp.path();
        fs::create_dir_all(dir.join("lib/x86_64-linux-gnu")).expect("mkdir");
        fs::create_dir_all(dir.join("lib64")).expect("mkdir");
        fs::write(dir.join("lib/x86_64-linux-gnu/ld.so"), "x").expect("write");
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/ld.so", dir.join("lib64/ld-abs")).expect("symlink");
        std::os::unix::fs::symlink("../lib/x86_64-linux-gnu/ld.so", dir.join("lib64/ld-rel")).expect("symlink");
        for l in ["lib64/ld-abs", "lib64/ld-rel"] {
            let found = resolve_in(dir, Path::new(l)).map(|p| fs::canonicalize(p).expect("exists"));
            assert_eq!(found, Some(fs::canonicalize(dir.join("lib/x86_64-linux-gnu/ld.so")).expect("exists")), "{l}");
        }
        assert_eq!(resolve_in(dir, Path::new("lib64/none")), None);
    }

    #[test]
    fn the_replay_capture_is_what_the_guest_expects() {
        let pcap = replay_capture();
        let (mut off, mut frames) = (24, 0);
        while off < pcap.len() {
            let len = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().expect("4 bytes")) as usize;
            assert_eq!(&pcap[off + 16 + 6..off + 16 + 12], &REPLAY_SRC_MAC);
            off += 16 + len;
            frames += 1;
        }
        assert_eq!((off, frames), (pcap.len(), REPLAY_PINGS + 1));
        let script = AGENT_TEST;
        assert!(
            script.contains(&format!("REPLAY_FRAMES={}", REPLAY_PINGS + 1)),
            "agent-test.sh counts the frames written here"
        );
        assert!(script.contains("02:00:00:00:00:0a"), "agent-test.sh names REPLAY_SRC_MAC");
    }

    #[test]
    fn every_kernel_row_is_complete() {
        for k in KERNELS {
            assert!(kernel_by_name(k.name).is_ok());
            assert!(k.package_prefix.starts_with("linux-image-") && k.image.contains("{kver}"), "{}", k.name);
        }
        assert!(kernel_by_name("nonsense").is_err());
        assert_eq!(kernels_by_names(&["all".to_owned()]).expect("all").len(), KERNELS.len());
        let two = kernels_by_names(&["debian-6.1-amd64,debian-6.12-arm64".to_owned()]).expect("known");
        assert_eq!(two.iter().map(|k| k.arch).collect::<Vec<_>>(), vec![Arch::Amd64, Arch::Arm64]);
        for k in TEST_KERNELS {
            assert!(kernel_by_name(k).is_ok(), "{k}");
        }
    }
}

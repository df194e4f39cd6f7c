//! `cargo xtask <command>` (alias in .cargo/config.toml).

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use xtask::{bench, dist, run, setup, test, vm};

#[derive(Parser)]
#[command(name = "xtask", about = "iotwatch orchestration: setup, lab, run, test, vm-test, dist, bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Attach {
    Tc,
    Xdp,
    XdpSkb,
}

impl Attach {
    fn as_str(self) -> &'static str {
        match self {
            Self::Tc => "tc",
            Self::Xdp => "xdp",
            Self::XdpSkb => "xdp-skb",
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (Debian packages, nightly rust-src, bpf-linker); idempotent.
    Setup,
    /// Home network in namespaces with the finding scenarios (a device each), the agent on its
    /// bridge and a Prometheus scraping it; findings printed as they appear.
    Lab {
        /// End after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        #[arg(long, value_enum, default_value = "tc")]
        attach: Attach,
        /// The four scripted roles (camera, plug, lamp, hub) instead of the finding scenarios.
        #[arg(long)]
        classic: bool,
        /// Devices of the classic lab (the scenarios have one device each).
        #[arg(long, default_value_t = 4, requires = "classic")]
        devices: usize,
    },
    /// Build and run the agent on a real bridge (`--bridge BR`), or the lab without it.
    Run {
        #[arg(long)]
        bridge: Option<String>,
        #[arg(long, value_enum, default_value = "tc")]
        attach: Attach,
        #[arg(long)]
        duration: Option<u64>,
        /// Extra agent arguments, after `--`.
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Self-test of the namespace lab (no agent): connectivity, offloads, teardown, sweep.
    LabCheck,
    /// Lints, host tests, rule tests and the privileged tests; stops at the first failure.
    Test {
        /// Comma-separated step groups to leave out: clippy, host, promtool, deploy, fuzz, privileged, vm.
        #[arg(long, value_delimiter = ',')]
        skip: Vec<String>,
    },
    /// Boots Debian's stock kernels under QEMU with the agent's package and runs its checks.
    VmTest {
        /// The agent binary, of the kernels' architecture (default: build it).
        #[arg(long)]
        bin: Option<std::path::PathBuf>,
        /// Kernels to boot, comma-separated, or `all`: debian-6.1-amd64, debian-6.12-amd64,
        /// debian-6.1-arm64, debian-6.12-arm64.
        #[arg(long, value_delimiter = ',', default_value = "debian-6.1-amd64")]
        kernel: Vec<String>,
        /// Seconds before QEMU is killed.
        #[arg(long, default_value_t = vm::DEFAULT_TIMEOUT_S)]
        timeout: u64,
    },
    /// Release binary and Debian package in target/dist/ (default: for this machine).
    Dist {
        /// Rust target, e.g. aarch64-unknown-linux-gnu for the Raspberry Pi 4.
        #[arg(long)]
        target: Option<String>,
        /// Then install, start, stop and purge the package in a throw-away Debian root
        /// (this machine's architecture only).
        #[arg(long)]
        install_test: bool,
    },
    /// TCP throughput across the lab bridge with and without observers.
    Bench {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Comma-separated parts to run: `kernel` (programs under BPF_PROG_TEST_RUN), `replay` (replay
        /// against tshark), `memory` (the agent's resident memory, idle and with 10k devices and 100k
        /// conversations) and throughput configurations (bare, agent-tc, agent-xdp-skb, agent-xdp,
        /// tcpdump, pmacctd; bare is required with any); default: everything.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// BPF_PROG_TEST_RUN repetitions per program and frame (kernel part).
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(),
        Cmd::Lab { duration, attach, classic, devices } => run::lab(&run::LabArgs {
            duration,
            attach: attach.as_str().to_owned(),
            classic,
            devices,
            extra: Vec::new(),
        }),
        Cmd::Run { bridge: Some(bridge), attach, agent_args, .. } => {
            run::run_on_bridge(&bridge, attach.as_str(), &agent_args)
        }
        Cmd::Run { bridge: None, attach, duration, agent_args } => run::lab(&run::LabArgs {
            duration,
            attach: attach.as_str().to_owned(),
            classic: false,
            devices: 4,
            extra: agent_args,
        }),
        Cmd::LabCheck => xtask::labcheck::lab_check(),
        Cmd::Test { skip } => test::test(&skip),
        Cmd::VmTest { bin, kernel, timeout } => {
            vm::kernels_by_names(&kernel)?; // before the set-up's minutes
            setup::setup()?;
            vm::vm_test(&vm::VmArgs { bin, kernels: kernel, timeout: std::time::Duration::from_secs(timeout) })
        }
        Cmd::Dist { target, install_test } => {
            let arch = target.as_deref().map(dist::Arch::from_target).transpose()?;
            if install_test && arch.is_some_and(|a| dist::Arch::host().is_ok_and(|h| h != a)) {
                anyhow::bail!("--install-test runs the package's scripts here: only for this machine's architecture");
            }
            setup::setup()?;
            let deb = dist::dist(target.as_deref())?;
            if install_test {
                dist::install_test(&deb)?;
            }
            Ok(())
        }
        Cmd::Bench { rounds, seconds, only, repeat } => {
            bench::bench(&bench::BenchArgs { repeat, rounds, seconds, only })
        }
    }
}

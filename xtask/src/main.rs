//! `cargo xtask <command>` (alias in .cargo/config.toml).

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use xtask::{bench, run, setup, test};

#[derive(Parser)]
#[command(name = "xtask", about = "iotwatch orchestration: setup, lab, run, test, bench")]
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
    /// Home network in namespaces with scripted devices, the agent attached to its bridge.
    Lab {
        /// End after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        #[arg(long, value_enum, default_value = "tc")]
        attach: Attach,
        #[arg(long, default_value_t = 4)]
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
        /// Comma-separated step groups to leave out: clippy, host, promtool, privileged.
        #[arg(long, value_delimiter = ',')]
        skip: Vec<String>,
    },
    /// TCP throughput across the lab bridge with and without observers.
    Bench {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Comma-separated configurations (bare, agent-tc, agent-xdp-skb, agent-xdp, tcpdump, pmacctd).
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
        Cmd::Lab { duration, attach, devices } => {
            run::lab(&run::LabArgs { duration, attach: attach.as_str().to_owned(), devices, extra: Vec::new() })
        }
        Cmd::Run { bridge: Some(bridge), attach, agent_args, .. } => run::run_on_bridge(&bridge, attach.as_str(), &agent_args),
        Cmd::Run { bridge: None, attach, duration, agent_args } => {
            run::lab(&run::LabArgs { duration, attach: attach.as_str().to_owned(), devices: 4, extra: agent_args })
        }
        Cmd::LabCheck => xtask::labcheck::lab_check(),
        Cmd::Test { skip } => test::test(&skip),
        Cmd::Bench { rounds, seconds, only, repeat } => bench::bench(&bench::BenchArgs { repeat, rounds, seconds, only }),
    }
}

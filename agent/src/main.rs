use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use iotwatch::{
    cli::{Cli, Command},
    cmd::{replay, run},
    kernel::bench,
    output::metrics,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: not into journald, files or pipes.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iotwatch: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run::run(args)),
        Command::BenchKernel { repeat } => bench::run(repeat).map(|v| println!("{v:#}")),
        Command::Replay(args) => return replay::main(&args),
        Command::CheckArgs { args } => {
            return match Cli::try_parse_from(std::iter::once("iotwatch".to_owned()).chain(args)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = e.print();
                    ExitCode::from(2)
                }
            };
        }
        Command::MetricNames => {
            let limits = metrics::Limits {
                max_devices: 1,
                top_ports: 1,
                top_destinations: 1,
                peer_window_ns: 1,
                map_capacity_macs: 1,
                map_capacity_conversations: 1,
            };
            metrics::Metrics::new(limits).names().iter().for_each(|n| println!("{n}"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iotwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

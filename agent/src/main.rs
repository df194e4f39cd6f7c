use std::process::ExitCode;

use clap::Parser as _;
use iotwatch::{
    cli::{Cli, Command},
    cmd::{replay, run},
    kernel::bench,
    output::{logging, metrics},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    // Blocking threads: one map read at a time, the ring reader, two password checks
    // (output/web.rs); the cap keeps a burst of requests from parking hundreds of threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
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

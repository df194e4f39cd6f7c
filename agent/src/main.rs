use std::{io::IsTerminal as _, process::ExitCode, time::Instant};

use clap::Parser as _;
use iotwatch::{
    cli::{Cli, Command, ReplayArgs, ReportFormat},
    cmd::{replay, run},
    kernel::bench,
    output::{logging, metrics},
};
use iotwatch_core::text;

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
        Command::Replay(args) => return replay(&args),
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

/// Exit 0 when every frame was read; 1 when invalid input was skipped; 2 when replay failed.
fn replay(args: &ReplayArgs) -> ExitCode {
    let start = Instant::now();
    let outcome = match replay::run(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("iotwatch: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.stats {
        let frames = outcome.report.capture.as_ref().map_or(0, |c| c.packets);
        let secs = start.elapsed().as_secs_f64();
        eprintln!("replayed {frames} frames in {secs:.3} s: {:.0} frames/s", frames as f64 / secs);
    }
    let format =
        args.format.unwrap_or(if std::io::stdout().is_terminal() { ReportFormat::Text } else { ReportFormat::Json });
    match format {
        ReportFormat::Text => print!("{}", text::render(&outcome.report)),
        ReportFormat::Json => match serde_json::to_string_pretty(&outcome.report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("iotwatch: encoding the report: {e}");
                return ExitCode::from(2);
            }
        },
    }
    if outcome.invalid { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

//! Command line, in node_exporter's style: `--<area>.<option>`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use iotwatch_core::{detect::Config, oui::DEFAULT_OUI_FILES, peerdb, scope::Prefix};

use crate::{
    kernel::{
        attach::AttachMode,
        load::{LoadOptions, SampleOptions},
    },
    output::{
        logging::{self, LogFormat},
        web::{self, ListenAddress},
    },
};

/// Default listen port: outside the well-known exporter ports (9090-9093 Prometheus and
/// Alertmanager, 9100 node_exporter).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

#[derive(Debug, Parser)]
#[command(
    name = "iotwatch",
    version,
    about = "See what the devices on a home network really do: eBPF traffic accounting on a Linux bridge, for Prometheus"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level: error, warn, info, debug, trace (or TARGET=LEVEL directives, comma-separated).
    #[arg(long = "log.level", default_value = "info", global = true, value_parser = logging::parse_level)]
    pub log_level: String,
    /// Log format on stderr: logfmt or json (one line per event, no colour codes).
    #[arg(long = "log.format", value_enum, default_value = "logfmt", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a bridge and serve /metrics until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Replay pcap/pcapng files through the kernel program and print a per-device report.
    Replay(ReplayArgs),
    /// Every metric name the agent exports, one per line (for checks of dashboards and rules).
    #[command(hide = true)]
    MetricNames,
    /// Exits 0 when `iotwatch ARGS...` would be accepted, else prints the parser's error and
    /// exits 2 (for the checks of deploy/ files: `iotwatch check-args run --bridge br0`).
    #[command(hide = true)]
    CheckArgs {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Kernel benchmark for `cargo xtask bench`: JSON on stdout.
    #[command(hide = true)]
    BenchKernel {
        /// BPF_PROG_TEST_RUN repetitions per program and frame.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
}

/// Header sampling and the event log (both `run` and `replay`).
#[derive(Debug, Args, Clone)]
pub struct SampleArgs {
    /// Size of the SAMPLES ring buffer in bytes (a power of two, a multiple of the page size).
    #[arg(long = "bpf.ring-bytes", default_value_t = agent_common::sample::DEFAULT_RING_BYTES)]
    pub ring_bytes: u32,
    /// Bytes of each sampled frame kept, from its Ethernet header (at most 1536).
    #[arg(long = "sample.snaplen", default_value_t = agent_common::sample::SAMPLE_MAX as u32)]
    pub snaplen: u32,
    /// First packets with payload sampled of every conversation (for cleartext detection).
    #[arg(long = "sample.first-packets", default_value_t = agent_common::sample::DEFAULT_FIRST_PACKETS)]
    pub first_packets: u32,
    /// Samples per second per source device and CPU (0 = no limit).
    #[arg(long = "sample.rate", default_value_t = agent_common::sample::DEFAULT_RATE)]
    pub rate: u32,
    /// Samples a source may save up and send at once (a new source starts with 5).
    #[arg(long = "sample.burst", default_value_t = agent_common::sample::DEFAULT_BURST)]
    pub burst: u32,
    /// Event log: NDJSON, one event per line, to this file or `-` for stdout.
    #[arg(long)]
    pub events: Option<String>,
    /// Size at which the event log file is rotated to FILE.1.
    #[arg(long = "events.max-bytes", default_value_t = 64 << 20)]
    pub events_max_bytes: u64,
}

impl SampleArgs {
    /// The per-CPU budgets are off here: they are flags of `run` only (see [`RunArgs`]). Replay
    /// reads the ring after every frame, so a cap would protect nothing, and a per-CPU budget
    /// would make its output depend on how many test-run workers share the frames.
    pub fn options(&self) -> SampleOptions {
        SampleOptions {
            ring_bytes: self.ring_bytes,
            snaplen: self.snaplen,
            first_packets: self.first_packets,
            rate: self.rate,
            burst: self.burst,
            cpu_rate: 0,
            new_source_rate: 0,
        }
    }
}

/// The kernel maps' sizes and how long conversations stay in them (both `run` and `replay`).
#[derive(Debug, Args, Clone)]
pub struct MapArgs {
    /// Capacity of the per-MAC map (MACs, including multicast and broadcast destinations).
    #[arg(long = "bpf.max-macs", default_value_t = agent_common::DEFAULT_MAX_MACS)]
    pub max_macs: u32,
    /// Conversations the LRU map holds before it evicts (the kernel map gets one batch of 128
    /// entries per CPU on top, the free entries the kernel's LRU keeps per CPU).
    #[arg(long = "bpf.max-conversations", default_value_t = agent_common::DEFAULT_MAX_CONVERSATIONS)]
    pub max_conversations: u32,
    /// Seconds a conversation may be idle (capture time in replay) before the agent removes it
    /// from the kernel map.
    #[arg(long = "bpf.conversation-idle", default_value_t = 120)]
    pub conversation_idle: u64,
}

/// What the agent knows of the network besides traffic (both `run` and `replay`).
#[derive(Debug, Args, Clone)]
pub struct EnrichArgs {
    /// LAN prefix (repeatable). Live, the bridge's own subnets are LAN as well; in replay,
    /// without one, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and fc00::/7 are.
    #[arg(long = "lan.prefix", value_parser = parse_prefix)]
    pub lan_prefixes: Vec<Prefix>,
    /// IEEE registries for vendor names (repeatable): MA-L, MA-M, MA-S and IAB, in their CSV
    /// form (or MA-L's oui.txt).
    #[arg(long = "enrich.oui-file", default_values = DEFAULT_OUI_FILES)]
    pub oui_files: Vec<PathBuf>,
    /// ASN and organisation of Internet peers (repeatable): CSV ranges (ip-location-db's asn)
    /// or MMDB (MaxMind GeoLite2-ASN), recognised by content; '' for none.
    #[arg(long = "enrich.asn-db", default_values = peerdb::DEFAULT_ASN_PATHS, value_parser = any_path)]
    pub asn_dbs: Vec<PathBuf>,
    /// Country of Internet peers (repeatable): MMDB (ip-location-db's, MaxMind GeoLite2-Country
    /// or City) or CSV ranges; '' for none.
    #[arg(long = "enrich.country-db", default_values = peerdb::DEFAULT_COUNTRY_PATHS, value_parser = any_path)]
    pub country_dbs: Vec<PathBuf>,
}

/// A path, or '' for none (clap's own path parser refuses an empty one).
fn any_path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

impl EnrichArgs {
    /// The peer database of the flags (a missing file is a warning, and its part stays empty).
    pub fn peer_db(&self) -> peerdb::PeerDb {
        let given = |paths: &[PathBuf]| paths.iter().filter(|p| !p.as_os_str().is_empty()).cloned().collect::<Vec<_>>();
        let (db, warnings) = peerdb::PeerDb::load(&given(&self.asn_dbs), &given(&self.country_dbs));
        for w in warnings {
            tracing::warn!("{w}");
        }
        db
    }
}

impl MapArgs {
    /// How to load the programs: live, or for frames replayed with BPF_PROG_TEST_RUN. Replay runs
    /// its own program only; live, TC always and XDP when `xdp`.
    pub fn load_options(&self, sampling: &SampleArgs, replay: bool, xdp: bool) -> LoadOptions {
        LoadOptions {
            max_macs: self.max_macs,
            max_conversations: self.max_conversations,
            replay,
            tc: !replay,
            xdp: xdp && !replay,
            batch: replay,
            sampling: sampling.options(),
        }
    }
}

impl RunArgs {
    /// What the programs are loaded with live: the shared flags, the per-CPU sample budgets, and
    /// the XDP program only where it will be attached.
    pub fn load_options(&self) -> LoadOptions {
        let mut load = self.maps.load_options(&self.sampling, false, self.attach != AttachMode::Tc);
        load.sampling.cpu_rate = self.cpu_rate;
        load.sampling.new_source_rate = self.new_source_rate;
        load
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The bridge whose ports to watch (e.g. br0).
    #[arg(long)]
    pub bridge: String,
    /// How to attach to the bridge ports.
    #[arg(long, value_enum, default_value = "tc")]
    pub attach: AttachMode,
    /// Address to serve the metrics on, HOST:PORT (repeatable): `:9477` is every address of
    /// the machine, IPv4 and IPv6; a host name listens on each of its addresses.
    #[arg(long = "web.listen-address", default_value = DEFAULT_LISTEN)]
    pub listen: Vec<ListenAddress>,
    /// Path under which the metrics are served.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_parser = web::parse_telemetry_path)]
    pub telemetry_path: String,
    /// Prometheus exporter-toolkit web configuration (YAML): TLS (tls_server_config) and basic
    /// auth (basic_auth_users with bcrypt hashes). Without it: plain HTTP, no authentication.
    #[arg(long = "web.config.file")]
    pub web_config: Option<PathBuf>,
    /// Seconds between reads of the maps (also done on every scrape) and port checks.
    #[arg(long = "bpf.poll-interval", default_value_t = 5)]
    pub poll_interval: u64,
    /// Seconds a MAC's counters must stand still before the agent removes it from the per-MAC
    /// map, keeping its totals (0 = never): room for new devices when spoofed, randomised or
    /// IPv6 multicast MACs pile up.
    #[arg(long = "bpf.mac-idle", default_value_t = 3600)]
    pub mac_idle: u64,
    /// Devices with their own series; the rest are summed as mac="other".
    #[arg(long = "metrics.max-devices", default_value_t = 256)]
    pub max_devices: usize,
    /// Service ports with their own series per device; the rest are port="other".
    #[arg(long = "metrics.top-ports", default_value_t = 10)]
    pub top_ports: usize,
    /// Seconds back in which the distinct peers of a device count (iotwatch_device_peers).
    #[arg(long = "metrics.peer-window", default_value_t = 3600)]
    pub peer_window: u64,
    /// Countries, and providers, of Internet peers with their own series per device; the rest
    /// are "other".
    #[arg(long = "metrics.top-destinations", default_value_t = 10)]
    pub top_destinations: usize,
    /// Samples per second per CPU, whatever the number of sources (0 = no cap).
    #[arg(long = "sample.cpu-rate", default_value_t = agent_common::sample::DEFAULT_CPU_RATE)]
    pub cpu_rate: u32,
    /// Samples per second per CPU from all sources first seen less than a second ago: what a
    /// flood of spoofed MACs gets (0 = no cap).
    #[arg(long = "sample.new-source-rate", default_value_t = agent_common::sample::DEFAULT_NEW_SOURCE_RATE)]
    pub new_source_rate: u32,
    /// Directory for what the agent remembers across restarts (the known devices of
    /// new_device). systemd's StateDirectory= sets it; without it nothing is remembered.
    #[arg(long = "state.dir", env = "STATE_DIRECTORY")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub detect: DetectArgs,
    #[command(flatten)]
    pub maps: MapArgs,
    #[command(flatten)]
    pub enrich: EnrichArgs,
    #[command(flatten)]
    pub sampling: SampleArgs,
}

/// The detectors' thresholds and windows (both `run` and `replay`); the README's Findings
/// section says what each rule does with them.
#[derive(Debug, Args, Clone)]
pub struct DetectArgs {
    /// Seconds in which a device raises one finding per rule (more occurrences raise its count);
    /// also the window of ntp_fanout and large_upload.
    #[arg(long = "detect.window", default_value_t = Config::DEFAULT.window_s as u64)]
    pub window: u64,
    /// lateral_movement: seconds after a device's discovery in which HTTP to other LAN hosts counts.
    #[arg(long = "detect.lateral-window", default_value_t = Config::DEFAULT.lateral_window_s as u64)]
    pub lateral_window: u64,
    /// ntp_fanout: more distinct NTP servers than this within the window.
    #[arg(long = "detect.ntp-servers", default_value_t = Config::DEFAULT.ntp_servers)]
    pub ntp_servers: usize,
    /// firmware_over_http: a binary download without a firmware-like name counts from this size.
    #[arg(long = "detect.firmware-min-bytes", default_value_t = Config::DEFAULT.firmware_min_bytes)]
    pub firmware_min_bytes: u64,
    /// scan: distinct hosts a device opens conversations to within the scan window.
    #[arg(long = "detect.scan-hosts", default_value_t = Config::DEFAULT.scan_hosts)]
    pub scan_hosts: usize,
    /// scan: distinct ports of one host within the scan window.
    #[arg(long = "detect.scan-ports", default_value_t = Config::DEFAULT.scan_ports)]
    pub scan_ports: usize,
    /// scan: the window, in seconds.
    #[arg(long = "detect.scan-window", default_value_t = Config::DEFAULT.scan_window_s as u64)]
    pub scan_window: u64,
    /// gateway_ping: echo requests to the gateway that make a periodic ping.
    #[arg(long = "detect.ping-min-packets", default_value_t = Config::DEFAULT.ping_min_packets)]
    pub ping_min_packets: u64,
    /// large_upload: bytes sent to one Internet host within the window.
    #[arg(long = "detect.upload-bytes", default_value_t = Config::DEFAULT.upload_bytes)]
    pub upload_bytes: u64,
    /// Seconds after the start in which cloud_initiated leaves conversations alone (they may
    /// predate it) and, with no known devices remembered, new_device learns the devices present.
    #[arg(long = "detect.startup-grace", default_value_t = Config::DEFAULT.startup_grace_s as u64)]
    pub startup_grace: u64,
    /// new_destination: seconds from a device's first conversation with the Internet in which
    /// the countries and providers it talks to are its baseline.
    #[arg(long = "detect.destination-baseline", default_value_t = Config::DEFAULT.destination_baseline_s as u64)]
    pub destination_baseline: u64,
}

impl DetectArgs {
    pub fn config(&self) -> Config {
        Config {
            window_s: self.window as f64,
            lateral_window_s: self.lateral_window as f64,
            ntp_servers: self.ntp_servers,
            firmware_min_bytes: self.firmware_min_bytes,
            scan_hosts: self.scan_hosts,
            scan_ports: self.scan_ports,
            scan_window_s: self.scan_window as f64,
            ping_min_packets: self.ping_min_packets,
            upload_bytes: self.upload_bytes,
            startup_grace_s: self.startup_grace as f64,
            destination_baseline_s: self.destination_baseline as f64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng, recognised by content).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output format; default: text on a terminal, JSON otherwise.
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
    /// Benchmark: print frames per second on stderr.
    #[arg(long, hide = true)]
    pub stats: bool,
    /// BPF_PROG_TEST_RUN workers, each pinned to its own CPU (0: one per CPU this process may
    /// use but one, which the replay's own thread keeps busy, and at least one; at most one per
    /// CPU). The report is the same whatever the number.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    #[command(flatten)]
    pub detect: DetectArgs,
    #[command(flatten)]
    pub maps: MapArgs,
    #[command(flatten)]
    pub enrich: EnrichArgs,
    #[command(flatten)]
    pub sampling: SampleArgs,
}

fn parse_prefix(s: &str) -> Result<Prefix, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent_and_parses_dotted_flags() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "iotwatch",
            "run",
            "--bridge",
            "br0",
            "--lan.prefix",
            "10.0.0.0/8",
            "--web.listen-address",
            "0.0.0.0:9477",
            "--attach",
            "xdp-skb",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else { panic!("parsed as run") };
        assert_eq!(run.bridge, "br0");
        assert_eq!(run.attach, AttachMode::XdpSkb);
        assert_eq!(run.enrich.lan_prefixes.len(), 1);
        assert_eq!(run.listen, [ListenAddress { host: Some("0.0.0.0".to_owned()), port: 9477 }]);
        assert_eq!((run.top_ports, run.max_devices, run.peer_window), (10, 256, 3600), "the metrics' caps and window");
        assert!(Cli::try_parse_from(["iotwatch", "run", "--bridge", "br0", "--lan.prefix", "nonsense"]).is_err());
    }

    fn run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["iotwatch", "run", "--bridge", "br0"].iter().chain(args))?;
        let Command::Run(run) = cli.command else { panic!("parsed as run") };
        Ok(run)
    }

    fn host(h: &str, port: u16) -> ListenAddress {
        ListenAddress { host: Some(h.to_owned()), port }
    }

    /// `--web.listen-address` as node_exporter takes it: `:PORT`, host names, IPv6 in
    /// brackets, repeated.
    #[test]
    fn listen_addresses_in_go_form() {
        assert_eq!(run(&[]).unwrap().listen, [host("127.0.0.1", 9477)], "the default: this machine only");
        assert_eq!(run(&["--web.listen-address", ":9477"]).unwrap().listen, [ListenAddress { host: None, port: 9477 }]);
        assert_eq!(run(&["--web.listen-address=localhost:9100"]).unwrap().listen, [host("localhost", 9100)]);
        assert_eq!(run(&["--web.listen-address", "[::1]:9477"]).unwrap().listen, [host("::1", 9477)]);
        assert_eq!(
            run(&["--web.listen-address", "192.168.1.2:9477", "--web.listen-address", "iot-pi.lan:9478"])
                .unwrap()
                .listen,
            [host("192.168.1.2", 9477), host("iot-pi.lan", 9478)],
            "repeats listen on each"
        );
        for bad in ["9477", "::1:9477", "localhost:99999", "localhost:", "bad_host!:9477", "[nope]:9477", "a..b:1"] {
            let e = run(&["--web.listen-address", bad]).expect_err(bad);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}: {e}");
        }
        assert_eq!(host("::1", 9477).to_string(), "[::1]:9477");
        assert_eq!(ListenAddress { host: None, port: 1 }.to_string(), ":1");
    }

    #[test]
    fn telemetry_path_and_web_config() {
        let r = run(&[]).unwrap();
        assert_eq!((r.telemetry_path.as_str(), r.web_config), ("/metrics", None));
        let r = run(&["--web.telemetry-path", "/prometheus/metrics", "--web.config.file", "/etc/iotwatch/web.yml"])
            .unwrap();
        assert_eq!(r.telemetry_path, "/prometheus/metrics");
        assert_eq!(r.web_config, Some(PathBuf::from("/etc/iotwatch/web.yml")));
        for bad in ["metrics", "/a b", "/{x}", "/api/v1/report", ""] {
            assert!(run(&["--web.telemetry-path", bad]).is_err(), "{bad:?}");
        }
    }

    /// A wrong `--log.level` or `--log.format` stops the agent at the start (clap's usage
    /// error, exit status 2), wherever it is given.
    #[test]
    fn log_flags_are_checked() {
        let cli = Cli::try_parse_from(["iotwatch", "run", "--bridge", "br0"]).unwrap();
        assert_eq!((cli.log_level.as_str(), cli.log_format), ("info", LogFormat::Logfmt));
        let cli =
            Cli::try_parse_from(["iotwatch", "--log.format", "json", "run", "--bridge", "br0", "--log.level", "DEBUG"])
                .unwrap();
        assert_eq!((cli.log_level.as_str(), cli.log_format), ("debug", LogFormat::Json));
        for bad in
            [["--log.level", "verbose"], ["--log.level", "inf"], ["--log.format", "text"], ["--log.format", "logfmt2"]]
        {
            let e = Cli::try_parse_from(["iotwatch", "run", "--bridge", "br0", bad[0], bad[1]]).expect_err(bad[1]);
            assert_eq!(e.exit_code(), 2, "{bad:?}: a usage error");
        }
    }

    /// The flags `run` and `replay` share have one definition and one default.
    #[test]
    fn run_and_replay_share_their_defaults() {
        let Command::Run(run) = Cli::try_parse_from(["iotwatch", "run", "--bridge", "br0"]).unwrap().command else {
            panic!("run")
        };
        let Command::Replay(replay) = Cli::try_parse_from(["iotwatch", "replay", "x.pcap"]).unwrap().command else {
            panic!("replay")
        };
        assert_eq!(format!("{:?}", run.maps), format!("{:?}", replay.maps));
        assert_eq!(format!("{:?}", run.enrich), format!("{:?}", replay.enrich));
        assert_eq!(format!("{:?}", run.sampling), format!("{:?}", replay.sampling));
        assert_eq!(run.load_options().sampling, crate::kernel::load::SampleOptions::default());
    }
}

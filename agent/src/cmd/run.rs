//! `iotwatch run`: attach to a bridge, keep the counters fresh, serve them, detach on exit.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use iotwatch_core::{
    clock::Clock,
    scope::{Prefix, ScopeClassifier},
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::RunArgs,
    cmd::live::{Agent, Live, read_samples},
    kernel::{attach::Attacher, netif},
    output::{
        metrics::{Limits, Metrics},
        web,
        web_config::WebConfig,
    },
    pipeline::{self, Pipeline},
};

/// What serving needs, checked before anything is loaded: the web configuration file (an
/// error names the file and the key) and the listening sockets.
struct Endpoint {
    listeners: Vec<tokio::net::TcpListener>,
    options: web::Options,
}

async fn endpoint(args: &RunArgs) -> anyhow::Result<Endpoint> {
    let config = match &args.web_config {
        Some(path) => Some(Arc::new(WebConfig::open(path)?)),
        None => None,
    };
    if let Some(c) = &config {
        let users = c.current().map(|l| l.users.len()).unwrap_or(0);
        if !c.tls() && users > 0 {
            tracing::warn!(
                "--web.config.file {} has basic_auth_users but no tls_server_config: passwords cross the network in clear text",
                c.path().display()
            );
        }
    }
    let listeners = web::bind(&args.listen).await?;
    Ok(Endpoint { listeners, options: web::Options::new(&args.telemetry_path, config) })
}

fn preflight(args: &RunArgs) -> anyhow::Result<()> {
    if !netif::is_bridge(&args.bridge) {
        let found = netif::bridges();
        let hint = if found.is_empty() {
            "there is no bridge on this machine: create one (see deploy/raspberry-pi/) or try the lab with `cargo xtask lab`".to_owned()
        } else {
            format!("bridges here: {}", found.join(", "))
        };
        bail!("{} is not a bridge (no /sys/class/net/{}/bridge); {hint}", args.bridge, args.bridge);
    }
    kernel_features()?;
    if args.poll_interval == 0 {
        bail!("--bpf.poll-interval must be at least 1 second");
    }
    Ok(())
}

/// What the programs need of the kernel, checked before loading so that a missing feature is one
/// line, not a verifier dump. Kernel BTF is not among them (nothing is relocated with CO-RE).
fn kernel_features() -> anyhow::Result<()> {
    let floor = aya::util::KernelVersion::new(5, 18, 0);
    match aya::util::KernelVersion::current() {
        // bpf_xdp_load_bytes (5.18) is the newest helper the programs call; ring buffers are 5.8.
        Ok(v) if v < floor => bail!(
            "kernel {v} is older than 5.18, which iotwatch needs (BPF ring buffer, bpf_xdp_load_bytes): use a newer kernel"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the kernel's version ({e}); going on"),
    }
    if !std::path::Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        bail!("this kernel has no bpf() system call (CONFIG_BPF_SYSCALL): iotwatch cannot run on it");
    }
    // Without the JIT the programs run interpreted: correct, several times slower.
    match std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").map(|s| s.trim().to_owned()) {
        Ok(v) if v != "0" => {}
        _ => tracing::warn!(
            "the BPF JIT is off or missing (/proc/sys/net/core/bpf_jit_enable): programs run interpreted, much slower; `sysctl net.core.bpf_jit_enable=1`"
        ),
    }
    Ok(())
}

fn lan_prefixes(bridge: &str, extra: &[Prefix]) -> Vec<Prefix> {
    let mut lan = netif::interface_prefixes(bridge).unwrap_or_else(|e| {
        tracing::warn!("cannot read the addresses of {bridge}: {e}; only --lan.prefix counts as LAN");
        Vec::new()
    });
    lan.extend_from_slice(extra);
    lan
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    preflight(&args)?;
    let endpoint = endpoint(&args).await?;
    let (pipeline, mut collector, mut ebpf) = Pipeline::open(pipeline::Options {
        load: args.load_options(),
        scopes: ScopeClassifier::new(lan_prefixes(&args.bridge, &args.enrich.lan_prefixes)),
        enrich: args.enrich.clone(),
        events: args.sampling.events.clone(),
        events_max_bytes: args.sampling.events_max_bytes,
        clock: Clock::live(),
        ring_view: false,
        detect: args.detect.config(),
        state_dir: args.state_dir.clone(),
    })?;
    collector.set_mac_idle((args.mac_idle > 0).then(|| args.mac_idle.saturating_mul(1_000_000_000)));
    let mut attacher = Attacher::new(&args.bridge, args.attach);
    if let Err(e) = attacher.attach_all(&mut ebpf) {
        attacher.detach_all(&mut ebpf);
        return Err(e.into());
    }
    let limits = Limits {
        max_devices: args.max_devices,
        top_ports: args.top_ports,
        top_destinations: args.top_destinations,
        peer_window_ns: args.peer_window.saturating_mul(1_000_000_000),
        map_capacity_macs: args.maps.max_macs,
        map_capacity_conversations: args.maps.max_conversations,
    };
    let samples_fd = pipeline.samples_fd()?;
    let mut agent = Agent::new(pipeline, Metrics::new(limits));
    agent.attached = attacher.attached();
    agent.refused = attacher.refused();
    agent.failures = attacher.failures();
    let live = Arc::new(Live::new(collector, agent, Duration::from_secs(args.maps.conversation_idle)));

    let reader = tokio::spawn(read_samples(samples_fd, live.clone()));
    let result = serve_until_signal(&args, endpoint, &live, &mut attacher, &mut ebpf).await;
    reader.abort();
    attacher.detach_all(&mut ebpf);
    // What is left in the ring, then the heads held for a continuation, reach the event log.
    {
        let mut a = live.agent.lock().await;
        a.pipeline.drain_samples(usize::MAX);
        a.pipeline.flush_samples();
        a.pipeline.close_event_log();
        a.pipeline.save_state(true);
    }
    tracing::info!("detached from {}; exiting", args.bridge);
    result
}

/// Wakes the main loop whenever the kernel reports a link change.
async fn watch_links(fd: std::os::fd::OwnedFd, changed: Arc<tokio::sync::Notify>) {
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open, and refers to the same
    // socket, for as long as the registration lives.
    let fd = match unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("cannot wait on link notifications ({e}); ports are followed on the tick only");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable().await else { return };
        guard.clear_ready();
        netif::drain(fd.get_ref());
        changed.notify_one();
    }
}

/// Attaches to ports that joined or came back, forgets those that left, and brings the LAN
/// prefixes and the counters up to date.
async fn follow_the_bridge(args: &RunArgs, live: &Arc<Live>, attacher: &mut Attacher, ebpf: &mut aya::Ebpf) {
    match attacher.sync_ports(ebpf) {
        Ok(changes) => {
            for (iface, joined) in changes {
                tracing::info!(interface = iface, "port {} the bridge", if joined { "joined" } else { "left" });
            }
        }
        Err(e) => tracing::warn!("following the bridge's ports: {e:#}"),
    }
    let scopes = ScopeClassifier::new(lan_prefixes(&args.bridge, &args.enrich.lan_prefixes));
    {
        let mut a = live.agent.lock().await;
        a.attached = attacher.attached();
        a.refused = attacher.refused();
        a.failures = attacher.failures();
        a.pipeline.set_scopes(scopes);
    }
    let live = Arc::clone(live);
    match tokio::task::spawn_blocking(move || live.refresh(|_| ())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("reading the maps: {e:#}"),
        Err(e) => tracing::warn!("reading the maps: {e}"),
    }
}

async fn serve_until_signal(
    args: &RunArgs,
    endpoint: Endpoint,
    live: &Arc<Live>,
    attacher: &mut Attacher,
    ebpf: &mut aya::Ebpf,
) -> anyhow::Result<()> {
    let scheme = endpoint.options.scheme();
    let urls: Vec<String> = endpoint
        .listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| format!("{scheme}://{a}{}", args.telemetry_path))
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(web::serve(endpoint.listeners, live.clone(), endpoint.options, async {
        let _ = stop_rx.await;
    }));
    eprintln!("iotwatch: watching bridge {}; listening on {}", args.bridge, urls.join(", "));

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // SIGHUP: the event log's file is opened anew (logrotate's postrotate), nothing else.
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(args.poll_interval));
    // Link notifications attach a port that joined or came back at once; the tick catches
    // anything they miss (and is all there is where netlink is unavailable).
    let changed = Arc::new(tokio::sync::Notify::new());
    let watcher = match netif::link_changes() {
        Ok(fd) => Some(tokio::spawn(watch_links(fd, changed.clone()))),
        Err(e) => {
            tracing::warn!("no link notifications ({e}); ports are followed every {} s only", args.poll_interval);
            None
        }
    };
    let result = loop {
        tokio::select! {
            _ = tick.tick() => follow_the_bridge(args, live, attacher, ebpf).await,
            () = changed.notified() => follow_the_bridge(args, live, attacher, ebpf).await,
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = sighup.recv() => live.agent.lock().await.pipeline.reopen_event_log(),
            ended = &mut server => {
                let why = match ended {
                    Ok(Err(e)) => format!("{e:#}"),
                    Ok(Ok(())) => "it ended".to_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(anyhow::anyhow!("the web server stopped unexpectedly: {why}"));
            }
        }
    };
    if let Some(w) = watcher {
        w.abort();
    }
    let _ = stop_tx.send(());
    // Let in-flight scrapes finish, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    result
}

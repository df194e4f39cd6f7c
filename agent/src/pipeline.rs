//! One pipeline for the live agent and for replay: the kernel's maps and samples go into the
//! core's state (ledger, events, names). Only the source of frames and the clock differ, and
//! both are options.

use std::{os::fd::OwnedFd, path::PathBuf, sync::Arc};

use aya::Ebpf;
use iotwatch_core::{
    clock::{self, Clock, Jumps},
    detect::{self, Detectors},
    events::{Event, EventStore},
    identity::Identities,
    ledger::Ledger,
    mac::Mac,
    oui::Oui,
    peerdb::PeerDb,
    report::{self, Capture, Report},
    scope::{Scope, ScopeClassifier},
    snapshot::Snapshot,
    view::View,
};

use crate::{
    kernel::{
        collect::{Collector, Maps},
        load::{self, LoadOptions},
        ring::{RingView, Samples},
    },
    output::{
        event_log::{self, EventLog},
        state::State,
    },
};

pub struct Options {
    /// Map sizes, sampling, and whether the programs run on replayed frames.
    pub load: LoadOptions,
    pub scopes: ScopeClassifier,
    /// The enrichment flags: the OUI registries and the peer databases (ASN, country).
    pub enrich: crate::cli::EnrichArgs,
    /// Event log (`-` for stdout) and its size bound.
    pub events: Option<String>,
    pub events_max_bytes: u64,
    /// Capture time in replay, the monotonic clock live.
    pub clock: Clock,
    /// Read the sample ring through a [`RingView`] (replay with test-run workers, which hands
    /// records on in frame order itself) instead of aya's reader.
    pub ring_view: bool,
    pub detect: detect::Config,
    /// Where the known devices are remembered across restarts (live only).
    pub state_dir: Option<PathBuf>,
}

/// The maps' reader is not part of it ([`Pipeline::open`] hands it out): live, the maps are read
/// without the lock that the sample ring's reader takes, and the snapshot applied after.
pub struct Pipeline {
    samples: Samples,
    ledger: Ledger,
    events: EventStore,
    identities: Identities,
    log: Option<EventLog>,
    scopes: ScopeClassifier,
    oui: Oui,
    peers: PeerDb,
    clock: Clock,
    last: Snapshot,
    detectors: Detectors,
    /// What is remembered across restarts (live only).
    state: Option<State>,
    /// The detectors' clock: wall time live, the latest capture time in replay.
    now: f64,
    /// The latest last-seen of a conversation (program clock): replay's now.
    latest_ns: u64,
    /// The wall clock's jumps (live).
    jumps: Jumps,
}

/// Everything one sample goes through: an event, the detectors, the event log.
struct Sinks<'a> {
    events: &'a mut EventStore,
    identities: &'a mut Identities,
    detectors: &'a mut Detectors,
    log: &'a mut Option<EventLog>,
    scopes: &'a ScopeClassifier,
    oui: &'a Oui,
    peers: &'a PeerDb,
    clock: Clock,
}

impl Sinks<'_> {
    /// A record makes none, one or a few events (TCP heads joined, retransmissions dropped).
    fn handle(&mut self, record: &[u8]) {
        let Sinks { events, identities, detectors, log, scopes, oui, peers, clock } = self;
        events.handle(record, *clock, |ev| on_event(identities, detectors, log, scopes, oui, peers, ev));
    }

    /// The TCP heads held longer than the reassembly's bound (program clock `now_ns`) become events.
    fn expire(&mut self, now_ns: u64) {
        let Sinks { events, identities, detectors, log, scopes, oui, peers, clock } = self;
        events.expire(now_ns, *clock, |ev| on_event(identities, detectors, log, scopes, oui, peers, ev));
    }

    /// The TCP heads still held for their continuation become events.
    fn flush(&mut self) {
        let Sinks { events, identities, detectors, log, scopes, oui, peers, clock } = self;
        events.flush(*clock, |ev| on_event(identities, detectors, log, scopes, oui, peers, ev));
    }
}

/// An event just made: to the device identities, the detectors, then to the event log with the
/// findings it raised.
fn on_event(
    identities: &mut Identities,
    detectors: &mut Detectors,
    log: &mut Option<EventLog>,
    scopes: &ScopeClassifier,
    oui: &Oui,
    peers: &PeerDb,
    ev: &Event,
) {
    identities.learn(ev, scopes);
    let cx = detect::Context { scopes, oui, identities, peers };
    detectors.on_event(ev, &cx);
    if let Some(log) = log.as_mut() {
        log.write(ev);
    }
    write_findings(detectors, log);
}

/// New findings go to the event log as they are raised.
fn write_findings(detectors: &mut Detectors, log: &mut Option<EventLog>) {
    let fresh = detectors.findings.take_fresh();
    if let Some(log) = log.as_mut() {
        for f in &fresh {
            log.write_finding(f);
        }
    }
}

impl Pipeline {
    /// Loads the programs and opens everything the pipeline reads and writes. Returns the maps'
    /// reader and the programs too: live attaches them, replay runs them on frames.
    pub fn open(opts: Options) -> anyhow::Result<(Self, Collector, Ebpf)> {
        // The vendor registry is read while the verifier works (a replay's start-up is mostly
        // the two).
        let (oui, peers, loaded) = std::thread::scope(|s| {
            let oui = s.spawn(|| Oui::load(&opts.enrich.oui_files));
            let peers = s.spawn(|| opts.enrich.peer_db());
            let loaded = load::load(&opts.load);
            (oui.join(), peers.join(), loaded)
        });
        let mut ebpf = loaded?;
        let oui = oui.map_err(|_| anyhow::anyhow!("reading the OUI registry panicked"))?;
        let peers = peers.map_err(|_| anyhow::anyhow!("reading the peer databases panicked"))?;
        // Parsing the ASN CSVs leaves some 5 MB of freed heap that glibc keeps: give it back.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory at the top of the heaps and in free chunks.
        unsafe {
            libc::malloc_trim(0);
        }
        let collector = Collector::new(Maps::take(&mut ebpf)?);
        let samples = if opts.ring_view {
            Samples::take_view(&mut ebpf, opts.load.sampling.ring_bytes)?
        } else {
            Samples::take(&mut ebpf)?
        };
        // Live, a writer thread takes the lines, so that the pipeline (under the agent's lock)
        // never waits on the disk; replay waits for it and loses nothing.
        let log_mode =
            if matches!(opts.clock, Clock::Live(_)) { event_log::Mode::Background } else { event_log::Mode::Inline };
        let log =
            opts.events.as_deref().map(|spec| EventLog::open(spec, opts.events_max_bytes, log_mode)).transpose()?;
        let mut detectors = Detectors::new(opts.detect);
        let mut identities = Identities::default();
        let state = opts.state_dir.map(|dir| State::open(&dir, &mut detectors, &mut identities));
        let pipeline = Self {
            samples,
            ledger: Ledger::default(),
            events: EventStore::default(),
            identities,
            log,
            scopes: opts.scopes,
            oui,
            peers,
            clock: opts.clock,
            last: Snapshot::default(),
            detectors,
            state,
            now: 0.0,
            latest_ns: 0,
            jumps: Jumps::default(),
        };
        Ok((pipeline, collector, ebpf))
    }

    pub fn view(&self) -> View<'_> {
        View {
            ledger: &self.ledger,
            last: &self.last,
            oui: &self.oui,
            peers: &self.peers,
            scopes: &self.scopes,
            events: &self.events,
            identities: &self.identities,
            detectors: &self.detectors,
            sample_counts: &self.last.samples,
            event_log_errors: self.log.as_ref().map_or(0, EventLog::errors),
            event_log_dropped: self.log.as_ref().map_or(0, EventLog::dropped),
            clock_jumps: self.jumps,
        }
    }

    /// The report of everything seen so far.
    pub fn report(&self, capture: Option<Capture>) -> Report {
        report::build(&self.view(), capture, self.clock)
    }

    /// The program's clock now (the clock of conversations' first and last seen): monotonic
    /// live, the latest capture time seen in replay.
    pub fn program_now_ns(&self) -> u64 {
        match self.clock {
            Clock::Live(_) => clock::monotonic_ns(),
            Clock::Epoch => self.latest_ns,
        }
    }

    /// What the latest poll saw.
    pub fn last(&self) -> &Snapshot {
        &self.last
    }

    /// Keeps these devices in the ledger and the event counts whatever their bounds: the
    /// metrics' devices with series of their own (at most their cap), whose counters must only
    /// rise (the collector's MAC table pins them too: `Collector::pin_macs`).
    pub fn pin_devices(&mut self, macs: &[Mac]) {
        self.ledger.pin(macs.iter().copied());
        self.events.pin(macs.iter().copied());
    }

    /// Live, the bridge's addresses (the LAN) can change while the agent runs.
    pub fn set_scopes(&mut self, scopes: ScopeClassifier) {
        self.scopes = scopes;
    }

    /// A descriptor that becomes readable when samples wait in the ring.
    pub fn samples_fd(&self) -> anyhow::Result<OwnedFd> {
        self.samples.ready_fd()
    }

    fn sinks(&mut self) -> (Sinks<'_>, &mut Samples) {
        let sinks = Sinks {
            events: &mut self.events,
            identities: &mut self.identities,
            detectors: &mut self.detectors,
            log: &mut self.log,
            scopes: &self.scopes,
            oui: &self.oui,
            peers: &self.peers,
            clock: self.clock,
        };
        (sinks, &mut self.samples)
    }

    /// Live, reads the wall clock before events are stamped: after a jump (an agent started
    /// before NTP synchronised, on a Pi without a real-time clock), every time already stamped
    /// moves by it, once, before any event is stamped with the new offset.
    fn follow_wall_clock(&mut self) {
        let before = self.clock.seconds(clock::monotonic_ns());
        let Some(delta) = self.clock.follow(clock::Offsets::read()) else { return };
        tracing::warn!(
            "the wall clock jumped by {delta:+.3} s (from {} to {} UTC; NTP synchronised?): \
             the times of kept events, findings and device state move with it; lines already \
             in the event log stay as written",
            clock::utc(before),
            clock::utc(before + delta),
        );
        self.events.shift_times(delta);
        self.identities.shift_times(delta);
        self.detectors.shift_times(delta);
        self.now += delta;
        self.jumps = Jumps { count: self.jumps.count + 1, last_s: delta };
    }

    /// Turns the samples waiting in the ring into events, at most `max` of them (fewer: the
    /// ring was empty).
    pub fn drain_samples(&mut self, max: usize) -> usize {
        self.follow_wall_clock();
        let (mut sinks, samples) = self.sinks();
        samples.drain(max, |record| sinks.handle(record))
    }

    /// The ring, when it is read through a view ([`Options::ring_view`]).
    pub fn ring_view(&self) -> Option<Arc<RingView>> {
        self.samples.view()
    }

    /// Turns one sample record into an event (records read through the ring view).
    pub fn handle_sample(&mut self, record: &[u8]) {
        self.sinks().0.handle(record);
    }

    /// Turns the TCP heads still held for their continuation into events (replay's end, the
    /// agent's exit), so that none is lost.
    pub fn flush_samples(&mut self) {
        self.sinks().0.flush();
    }

    /// Opens the event log's file anew before its next lines (SIGHUP, after an outside rotation).
    pub fn reopen_event_log(&self) {
        if let Some(log) = &self.log {
            log.reopen();
        }
    }

    /// The event log goes to stdout and its reader went away.
    pub fn event_log_closed(&self) -> bool {
        self.log.as_ref().is_some_and(EventLog::closed_pipe)
    }

    /// Writes what the event log still holds and waits for it to be written (at exit).
    pub fn close_event_log(&mut self) {
        if let Some(log) = &mut self.log {
            log.close();
        }
    }

    /// Saves what changed to the state files (`now`: whatever their pace, at exit).
    pub fn save_state(&mut self, now: bool) {
        if let Some(state) = &mut self.state {
            state.save(&mut self.detectors, &mut self.identities, now);
        }
    }

    /// Reads the maps once with `collector` after every sample waiting in the ring (replay:
    /// exact); conversations idle since before `idle_before_ns` leave the map.
    pub fn poll(&mut self, collector: &mut Collector, idle_before_ns: Option<u64>) -> anyhow::Result<()> {
        self.drain_samples(usize::MAX);
        let snap = collector.poll(idle_before_ns)?;
        self.apply(snap);
        Ok(())
    }

    /// Brings the ledger and the detectors up to date with a read of the maps.
    pub fn apply(&mut self, snap: Snapshot) {
        self.follow_wall_clock();
        if matches!(self.clock, Clock::Live(_)) {
            // Replay lets its held heads go at the end; live, a quiet network might never.
            self.sinks().0.expire(clock::monotonic_ns());
        }
        for delta in &snap.deltas {
            self.ledger.apply(delta, &self.scopes);
            self.latest_ns = self.latest_ns.max(delta.last_seen_ns);
        }
        let (scopes, peers) = (&self.scopes, &self.peers);
        self.ledger.enforce_bounds(|ip| (scopes.of_ip(ip) == Scope::Internet).then(|| peers.place(ip)));
        self.now = match self.clock {
            Clock::Live(_) => self.clock.seconds(clock::monotonic_ns()),
            Clock::Epoch => snap.deltas.iter().map(|d| self.clock.seconds(d.last_seen_ns)).fold(self.now, f64::max),
        };
        let macs: Vec<_> = snap.macs.iter().map(|(mac, c)| (*mac, c.tx_packets)).collect();
        let cx =
            detect::Context { scopes: &self.scopes, oui: &self.oui, identities: &self.identities, peers: &self.peers };
        self.detectors.on_poll(&snap.deltas, &macs, self.now, self.clock, &cx);
        write_findings(&mut self.detectors, &mut self.log);
        self.save_state(false);
        // The deltas are applied: keeping them would hold a poll's worth (up to the map's size).
        self.last = Snapshot { deltas: Vec::new(), ..snap };
    }
}

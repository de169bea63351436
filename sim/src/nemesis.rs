//! The nemesis: a fault schedule drawn from the seed.
//!
//! The run alternates quiet periods and fault windows. For each window the nemesis draws a
//! subset (one to `concurrent_max` kinds) of the scenario's [`FaultKind`]s, starts them all,
//! holds them for the window, then heals them. When the fault phase ends, everything is healed
//! (brokers running, network unclogged, latency and loss back to normal, strobing off, object
//! stores available at their base fault rates) for the final phase, in which every
//! acknowledged record must be read back.

use std::ops::Range;
use std::time::{Duration, Instant};

use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId;

use crate::clock::Strobe;
use crate::node::SimCluster;
use crate::object_store::ObjectStoreFaults;
use crate::rng::SimRng;
use crate::trace::Trace;

/// The kinds of faults the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Kill a broker node for the window (its tasks die, its connections reset); when it comes
    /// back its disk has lost everything unsynced, unsynced tails possibly torn.
    Kill,
    /// Pause a broker node for the window (a long GC or VM stall): its connections stay up.
    Pause,
    /// Clog a broker node: both ways, or only its inbound or outbound traffic.
    ClogBroker,
    /// Clog the links between a subset of client nodes and a broker, one way or both.
    ClogClients,
    /// Partition every node of the run (brokers and clients) in a seeded shape: one node
    /// isolated, a random split in two (minority/majority), a ring (each node reaches only its two
    /// neighbours), or a one-way split (one side cannot reach the other, the reverse works).
    Partition,
    /// Raise the network's send latency to 50–500 ms.
    Latency,
    /// Drop 5–30% of packets (madsim retransmits over TCP with backoff).
    Loss,
    /// Step a broker's wall clock by up to 10 minutes either way (stays after the window).
    ClockJump,
    /// Make a broker's wall clock oscillate (±0.1–30 s every 50–1000 ms) for the window.
    ClockStrobe,
    /// Make 5–100% of a broker's disk syncs fail with `EIO` for the window: the broker crashes
    /// (it must not retry a failed fsync), madsim restarts it 1–10 s later, and its disk loses
    /// everything unsynced; a restart inside the window may crash again while recovering.
    SyncEio,
    /// The object store is unavailable for the window: every request of every broker fails
    /// without effect (a region outage). Offload stalls and retries; remote reads fail with a
    /// retriable error.
    StoreOutage,
    /// An error burst: 20–100% of a broker's object-store requests fail without effect.
    StoreErrors,
    /// A broker's object-store requests take 100–3000 ms, and 30% of them 5 s more.
    StoreLatency,
    /// 20–80% of a broker's object-store writes (puts, copies) take effect and then report an
    /// error (the reply was lost): the broker cannot tell them from failed writes.
    StoreLostReplies,
}

impl FaultKind {
    /// Every kind of node, network, clock and disk fault (the object store's are
    /// [`FaultKind::OBJECT_STORE`]).
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::ClogBroker,
        FaultKind::ClogClients,
        FaultKind::Partition,
        FaultKind::Latency,
        FaultKind::Loss,
        FaultKind::ClockJump,
        FaultKind::ClockStrobe,
        FaultKind::SyncEio,
    ];

    /// The object-store kinds (no effect on brokers without an object store).
    pub const OBJECT_STORE: [FaultKind; 4] = [
        FaultKind::StoreOutage,
        FaultKind::StoreErrors,
        FaultKind::StoreLatency,
        FaultKind::StoreLostReplies,
    ];

    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::ClogBroker => "clog-broker",
            FaultKind::ClogClients => "clog-clients",
            FaultKind::Partition => "partition",
            FaultKind::Latency => "latency",
            FaultKind::Loss => "loss",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::ClockStrobe => "clock-strobe",
            FaultKind::SyncEio => "sync-eio",
            FaultKind::StoreOutage => "store-outage",
            FaultKind::StoreErrors => "store-errors",
            FaultKind::StoreLatency => "store-latency",
            FaultKind::StoreLostReplies => "store-lost-replies",
        }
    }
}

/// The schedule's shape.
#[derive(Debug, Clone)]
pub struct NemesisConfig {
    /// The kinds drawn from.
    pub kinds: Vec<FaultKind>,
    /// How many kinds at most in one window.
    pub concurrent_max: usize,
    /// Quiet period before each window, in ms.
    pub quiet_ms: Range<u64>,
    /// Length of a window, in ms.
    pub window_ms: Range<u64>,
}

/// A fault in force, and how to heal it.
#[derive(Debug)]
enum Active {
    Killed(NodeId, String),
    Paused(NodeId, String),
    Clogged(Vec<Clog>),
    Latency,
    Loss,
    Strobe(usize),
    /// Broker index, and the sync EIO rate to restore.
    SyncEio(usize, f64),
    /// Every object store is in an outage.
    StoreOutage,
    /// Broker index, and the object-store fault kind whose rates to restore (only its own
    /// rates: two kinds on one store heal in any order).
    StoreFaults(usize, FaultKind),
}

#[derive(Debug, Clone, Copy)]
enum Clog {
    Node(NodeId),
    NodeIn(NodeId),
    NodeOut(NodeId),
    Link(NodeId, NodeId),
}

/// Runs a fault schedule against a cluster and its client nodes.
pub struct Nemesis {
    handle: Handle,
    cluster: SimCluster,
    clients: Vec<NodeId>,
    config: NemesisConfig,
    base_net: madsim::net::Config,
    rng: SimRng,
    trace: Trace,
    start: Instant,
    active: Vec<Active>,
    /// Each broker's object-store fault rates when the nemesis started (restored on heal).
    store_base: Vec<Option<ObjectStoreFaults>>,
    /// Faults injected so far.
    pub faults: u64,
    /// What happened, one line per event (`<simulated s> <event>`).
    pub log: Vec<String>,
}

impl Nemesis {
    /// A nemesis for `cluster` and the `clients` nodes; `base_net` is the network config
    /// restored when latency and loss heal.
    pub fn new(
        cluster: SimCluster,
        clients: Vec<NodeId>,
        config: NemesisConfig,
        base_net: madsim::net::Config,
        seed: u64,
        trace: Trace,
    ) -> Nemesis {
        assert!(!cluster.brokers.is_empty(), "a nemesis needs brokers");
        let store_base = cluster
            .brokers
            .iter()
            .map(|b| b.object_store.as_ref().map(|s| s.faults()))
            .collect();
        Nemesis {
            store_base,
            handle: Handle::current(),
            cluster,
            clients,
            config,
            base_net,
            rng: SimRng::new(seed),
            trace,
            start: Instant::now(),
            active: Vec::new(),
            faults: 0,
            log: Vec::new(),
        }
    }

    fn note(&mut self, event: String) {
        let at = self.start.elapsed().as_secs_f64();
        self.trace.event("nemesis", &[event.as_bytes()]);
        self.log.push(format!("{at:9.3}s {event}"));
    }

    /// Runs quiet periods and fault windows until `until`, then heals everything.
    pub async fn run(&mut self, until: Instant) {
        if self.config.kinds.is_empty() {
            tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
            return;
        }
        loop {
            let quiet = Duration::from_millis(self.rng.range(self.config.quiet_ms.clone()));
            if Instant::now() + quiet >= until {
                break;
            }
            tokio::time::sleep(quiet).await;
            let window = Duration::from_millis(self.rng.range(self.config.window_ms.clone()));
            let mut kinds = self.config.kinds.clone();
            let count = 1 + self.rng.index(self.config.concurrent_max.min(kinds.len()));
            let mut chosen = Vec::new();
            for _ in 0..count {
                chosen.push(kinds.remove(self.rng.index(kinds.len())));
            }
            chosen.sort();
            for kind in chosen {
                self.start_fault(kind);
            }
            let end = (Instant::now() + window).min(until);
            tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
            self.heal();
            if Instant::now() >= until {
                break;
            }
        }
        self.heal();
    }

    fn broker_index(&mut self) -> usize {
        self.rng.index(self.cluster.brokers.len())
    }

    fn start_fault(&mut self, kind: FaultKind) {
        self.faults += 1;
        let b = self.broker_index();
        let broker = self.cluster.brokers[b].clone();
        let net = NetSim::current();
        match kind {
            FaultKind::Kill => {
                self.handle.kill(broker.sim_id);
                self.active
                    .push(Active::Killed(broker.sim_id, broker.name.clone()));
                self.note(format!("kill {}", broker.name));
            }
            FaultKind::Pause => {
                self.handle.pause(broker.sim_id);
                self.active
                    .push(Active::Paused(broker.sim_id, broker.name.clone()));
                self.note(format!("pause {}", broker.name));
            }
            FaultKind::ClogBroker => {
                let (clog, how) = match self.rng.range(0..3) {
                    0 => (Clog::Node(broker.sim_id), "both ways"),
                    1 => (Clog::NodeIn(broker.sim_id), "inbound"),
                    _ => (Clog::NodeOut(broker.sim_id), "outbound"),
                };
                apply_clog(&net, clog, true);
                self.active.push(Active::Clogged(vec![clog]));
                self.note(format!("clog {} {how}", broker.name));
            }
            FaultKind::ClogClients => {
                let mut clogs = Vec::new();
                let mut names = Vec::new();
                for (i, client) in self.clients.clone().into_iter().enumerate() {
                    if !self.rng.chance(0.5) {
                        continue;
                    }
                    let (links, how): (Vec<Clog>, &str) = match self.rng.range(0..3) {
                        0 => (vec![Clog::Link(client, broker.sim_id)], "->"),
                        1 => (vec![Clog::Link(broker.sim_id, client)], "<-"),
                        _ => (
                            vec![
                                Clog::Link(client, broker.sim_id),
                                Clog::Link(broker.sim_id, client),
                            ],
                            "<->",
                        ),
                    };
                    for link in links {
                        apply_clog(&net, link, true);
                        clogs.push(link);
                    }
                    names.push(format!("client{i}{how}"));
                }
                self.note(format!("clog links {} {}", broker.name, names.join(" ")));
                self.active.push(Active::Clogged(clogs));
            }
            FaultKind::Partition => {
                let (clogs, shape) = self.partition_shape();
                for clog in &clogs {
                    apply_clog(&net, *clog, true);
                }
                self.note(format!("partition {shape}"));
                self.active.push(Active::Clogged(clogs));
            }
            FaultKind::Latency => {
                let low = self.rng.range(50..200);
                let high = low + self.rng.range(1..300);
                net.update_config(|c| {
                    c.send_latency = Duration::from_millis(low)..Duration::from_millis(high)
                });
                self.active.push(Active::Latency);
                self.note(format!("latency {low}..{high} ms"));
            }
            FaultKind::Loss => {
                let rate = 0.05 + 0.25 * self.rng.unit();
                net.update_config(|c| c.packet_loss_rate = rate);
                self.active.push(Active::Loss);
                self.note(format!("loss {:.0}%", rate * 100.0));
            }
            FaultKind::ClockJump => {
                let by_ms = self.rng.range_i64(-600_000..600_001);
                broker.clock.jump(by_ms);
                self.note(format!("clock {} jumps {by_ms} ms", broker.name));
            }
            FaultKind::ClockStrobe => {
                let strobe = Strobe {
                    amplitude_ms: self.rng.range_i64(100..30_001),
                    period_ms: self.rng.range(50..1_001),
                };
                broker.clock.set_strobe(Some(strobe));
                self.active.push(Active::Strobe(b));
                self.note(format!(
                    "clock {} strobes ±{} ms every {} ms",
                    broker.name, strobe.amplitude_ms, strobe.period_ms
                ));
            }
            FaultKind::SyncEio => {
                let mut faults = broker.disk.faults();
                let base_rate = faults.sync_eio_rate;
                faults.sync_eio_rate = 0.05 + 0.95 * self.rng.unit();
                let rate = faults.sync_eio_rate;
                broker.disk.set_faults(faults);
                self.active.push(Active::SyncEio(b, base_rate));
                self.note(format!(
                    "disk of {} fails {:.0}% of syncs with EIO",
                    broker.name,
                    rate * 100.0
                ));
            }
            FaultKind::StoreOutage => {
                for store in self
                    .cluster
                    .brokers
                    .iter()
                    .filter_map(|b| b.object_store.as_ref())
                {
                    store.set_outage(true);
                }
                self.active.push(Active::StoreOutage);
                self.note("object store outage".to_string());
            }
            FaultKind::StoreErrors | FaultKind::StoreLatency | FaultKind::StoreLostReplies => {
                let Some(store) = broker.object_store.clone() else {
                    self.note(format!("{} has no object store", broker.name));
                    return;
                };
                let mut faults = store.faults();
                let what = match kind {
                    FaultKind::StoreErrors => {
                        faults.error_rate = 0.2 + 0.8 * self.rng.unit();
                        faults.part_error_rate = faults.error_rate;
                        format!("fails {:.0}% of requests", faults.error_rate * 100.0)
                    }
                    FaultKind::StoreLatency => {
                        let low = self.rng.range(100..1_000);
                        let high = low + self.rng.range(1..2_000);
                        faults.latency_ms = low..high;
                        faults.slow_rate = 0.3;
                        faults.slow_part_rate = 0.3;
                        faults.slow_ms = 5_000;
                        format!("answers in {low}..{high} ms (30% 5 s more)")
                    }
                    _ => {
                        faults.lost_reply_rate = 0.2 + 0.6 * self.rng.unit();
                        format!(
                            "loses the replies of {:.0}% of writes",
                            faults.lost_reply_rate * 100.0
                        )
                    }
                };
                store.set_faults(faults);
                self.active.push(Active::StoreFaults(b, kind));
                self.note(format!("object store of {} {what}", broker.name));
            }
        }
    }

    /// Every node of the run with a printable name: brokers, then clients.
    fn all_nodes(&self) -> Vec<(NodeId, String)> {
        let brokers = self
            .cluster
            .brokers
            .iter()
            .map(|b| (b.sim_id, b.name.clone()));
        let clients = self
            .clients
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, format!("client{i}")));
        brokers.chain(clients).collect()
    }

    /// Draws a partition shape over every node; returns the links to clog and a description.
    fn partition_shape(&mut self) -> (Vec<Clog>, String) {
        let mut nodes = self.all_nodes();
        // A seeded shuffle (Fisher-Yates).
        for i in (1..nodes.len()).rev() {
            let j = self.rng.index(i + 1);
            nodes.swap(i, j);
        }
        let names = |side: &[(NodeId, String)]| {
            side.iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut clogs = Vec::new();
        if nodes.len() < 2 {
            return (clogs, "of a single node (no effect)".to_string());
        }
        let shape = self.rng.range(0..4);
        let description = match shape {
            0 | 1 | 3 => {
                // Isolate one node, or split at a random point.
                let cut = if shape == 0 {
                    1
                } else {
                    1 + self.rng.index(nodes.len() - 1)
                };
                let (a, b) = nodes.split_at(cut);
                for (x, _) in a {
                    for (y, _) in b {
                        clogs.push(Clog::Link(*x, *y));
                        if shape != 3 {
                            clogs.push(Clog::Link(*y, *x));
                        }
                    }
                }
                let how = match shape {
                    0 => "isolate",
                    1 => "split",
                    _ => "one-way",
                };
                format!(
                    "{how} [{}] {} [{}]",
                    names(a),
                    if shape == 3 { "-/->" } else { "|" },
                    names(b)
                )
            }
            _ => {
                // Ring: node i reaches only i-1 and i+1 (mod n).
                let n = nodes.len();
                for i in 0..n {
                    for j in 0..n {
                        let neighbours = (i + 1) % n == j || (j + 1) % n == i;
                        if i != j && !neighbours {
                            clogs.push(Clog::Link(nodes[i].0, nodes[j].0));
                        }
                    }
                }
                format!("ring [{}]", names(&nodes))
            }
        };
        (clogs, description)
    }

    /// Heals every fault in force.
    pub fn heal(&mut self) {
        let net = NetSim::current();
        for active in std::mem::take(&mut self.active) {
            match active {
                Active::Killed(id, name) => {
                    self.handle.restart(id);
                    self.note(format!("restart {name}"));
                }
                Active::Paused(id, name) => {
                    self.handle.resume(id);
                    self.note(format!("resume {name}"));
                }
                Active::Clogged(clogs) => {
                    for clog in clogs {
                        apply_clog(&net, clog, false);
                    }
                    self.note("unclog".to_string());
                }
                Active::Latency => {
                    let latency = self.base_net.send_latency.clone();
                    net.update_config(|c| c.send_latency = latency);
                    self.note("latency normal".to_string());
                }
                Active::Loss => {
                    let rate = self.base_net.packet_loss_rate;
                    net.update_config(|c| c.packet_loss_rate = rate);
                    self.note("loss normal".to_string());
                }
                Active::Strobe(b) => {
                    self.cluster.brokers[b].clock.set_strobe(None);
                    self.note(format!("clock {} steady", self.cluster.brokers[b].name));
                }
                Active::SyncEio(b, base_rate) => {
                    let disk = &self.cluster.brokers[b].disk;
                    let mut faults = disk.faults();
                    faults.sync_eio_rate = base_rate;
                    disk.set_faults(faults);
                    self.note(format!(
                        "disk of {} syncs normally",
                        self.cluster.brokers[b].name
                    ));
                }
                Active::StoreOutage => {
                    for store in self
                        .cluster
                        .brokers
                        .iter()
                        .filter_map(|b| b.object_store.as_ref())
                    {
                        store.set_outage(false);
                    }
                    self.note("object store back".to_string());
                }
                Active::StoreFaults(b, kind) => {
                    if let (Some(store), Some(base)) =
                        (&self.cluster.brokers[b].object_store, &self.store_base[b])
                    {
                        let mut faults = store.faults();
                        match kind {
                            FaultKind::StoreErrors => {
                                faults.error_rate = base.error_rate;
                                faults.part_error_rate = base.part_error_rate;
                            }
                            FaultKind::StoreLatency => {
                                faults.latency_ms = base.latency_ms.clone();
                                faults.slow_rate = base.slow_rate;
                                faults.slow_part_rate = base.slow_part_rate;
                                faults.slow_ms = base.slow_ms;
                            }
                            _ => faults.lost_reply_rate = base.lost_reply_rate,
                        }
                        store.set_faults(faults);
                    }
                    self.note(format!(
                        "object store of {} normal",
                        self.cluster.brokers[b].name
                    ));
                }
            }
        }
    }
}

fn apply_clog(net: &NetSim, clog: Clog, on: bool) {
    match (clog, on) {
        (Clog::Node(id), true) => net.clog_node(id),
        (Clog::Node(id), false) => net.unclog_node(id),
        (Clog::NodeIn(id), true) => net.clog_node_in(id),
        (Clog::NodeIn(id), false) => net.unclog_node_in(id),
        (Clog::NodeOut(id), true) => net.clog_node_out(id),
        (Clog::NodeOut(id), false) => net.unclog_node_out(id),
        (Clog::Link(a, b), true) => net.clog_link(a, b),
        (Clog::Link(a, b), false) => net.unclog_link(a, b),
    }
}

//! Brokers on simulated nodes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use madsim::task::NodeId;
use object_store::ObjectStore;
use strata_cluster::{server, Broker, BrokerConfig};
use strata_storage::{Clock, Disk, MemDisk, SystemClock};

use crate::clock::SimClock;
use crate::disk::{FaultyDisk, INJECTED_EIO_MARK};
use crate::object_store::FaultyObjectStore;

/// The Kafka port every simulated broker listens on.
pub const BROKER_PORT: u16 = 9092;

/// A broker panic whose message contains this is a node crash, not a finding: madsim kills the
/// node and restarts it 1–10 s later (its disk then loses everything unsynced). Meant for the
/// broker's reaction to a failed fsync, once it panics under `cfg(madsim)` with this text
/// instead of calling `std::process::abort()` (which would end the whole simulator).
pub const CRASH_PANIC_MARK: &str = "crashing the broker node";

/// The broker config used in simulation: the defaults (fsync before acks=all answers), the data
/// dir `/data` on the node's disk, listening on `ip`, no initial rebalance delay, segments of
/// any size.
pub fn broker_config(node_id: i32, ip: IpAddr) -> BrokerConfig {
    BrokerConfig {
        node_id,
        listen: SocketAddr::new(ip, BROKER_PORT),
        advertised_host: Some(ip.to_string()),
        data_dir: PathBuf::from("/data"),
        // Groups rebalance at once: the workloads' timings (and recorded traces) predate
        // `group.initial.rebalance.delay.ms`.
        group_initial_rebalance_delay_ms: 0,
        // The workloads roll segments every few KB.
        segment_bytes_min: strata_cluster::config::SEGMENT_BYTES_MIN_FLOOR,
        ..BrokerConfig::default()
    }
}

/// Creates node `name` at `ip` that runs a broker on `disk` and serves Kafka until the node is
/// killed. On `Handle::restart` the broker starts again on the same `disk`, running crash recovery
/// on whatever the disk kept (call `MemDisk::crash` between kill and restart to drop unsynced data).
///
/// The node panics if the broker cannot open its data dir: in simulation that is a finding.
pub fn start_broker_node(
    handle: &Handle,
    name: &str,
    node_id: i32,
    ip: IpAddr,
    disk: MemDisk,
) -> NodeHandle {
    start_node(
        handle,
        name,
        broker_config(node_id, ip),
        Arc::new(disk),
        Arc::new(SystemClock::new()),
        Arc::new(|_boot| {}),
    )
}

/// Creates node `name` running a broker with `config` on `disk`, reading time from `clock`.
/// `on_boot(boot)` runs at the start of every boot (0 for the first, then 1, 2, ... after each
/// `Handle::restart`), before the broker opens its data dir.
pub fn start_node(
    handle: &Handle,
    name: &str,
    config: BrokerConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    on_boot: Arc<dyn Fn(u64) + Send + Sync>,
) -> NodeHandle {
    start_node_with_tier(
        handle,
        name,
        config,
        disk,
        clock,
        on_boot,
        NodeTier::default(),
    )
}

/// A simulated broker's remote tier: the object store it opens the broker with, and where the
/// harness finds the running broker.
#[derive(Clone, Default)]
pub struct NodeTier {
    /// The object store handed to `Broker::open_with_store` (`None`: no remote tier).
    pub store: Option<Arc<dyn ObjectStore>>,
    /// Set to the broker of every boot once it is open.
    pub slot: BrokerSlot,
}

/// Where the harness finds a node's current broker (for `strata_cluster::tier::status`). It
/// holds a weak reference: a killed node's broker is dropped with its tasks, as in a real crash.
#[derive(Clone, Default)]
pub struct BrokerSlot {
    broker: Arc<Mutex<Weak<Broker>>>,
}

impl BrokerSlot {
    /// The broker of the node's latest boot, if it opened and its node has not been killed
    /// since.
    pub fn get(&self) -> Option<Arc<Broker>> {
        self.broker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
    }

    fn set(&self, broker: &Arc<Broker>) {
        *self.broker.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(broker);
    }
}

impl std::fmt::Debug for BrokerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSlot")
            .field("running", &self.get().is_some())
            .finish()
    }
}

/// [`start_node`] with a remote tier: the broker opens with `tier.store` (every boot, the same
/// store: what it offloaded survives the node's crashes) and is published in `tier.slot`.
pub fn start_node_with_tier(
    handle: &Handle,
    name: &str,
    config: BrokerConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    on_boot: Arc<dyn Fn(u64) + Send + Sync>,
    tier: NodeTier,
) -> NodeHandle {
    let boots = Arc::new(AtomicU64::new(0));
    let ip = config.listen.ip();
    // madsim's `restart` does not close the node's sockets (only `kill` does), so a restart of
    // a running node — the restart madsim schedules after a crash panic can come after the
    // nemesis already restarted the node — would find the old listener still bound. Every boot
    // closes them first, as a real process's death does.
    let own_id: Arc<OnceLock<NodeId>> = Arc::new(OnceLock::new());
    let own_id_at_boot = Arc::clone(&own_id);
    let node = handle
        .create_node()
        .name(name)
        .ip(ip)
        .restart_on_panic_matching(CRASH_PANIC_MARK)
        .init(move || {
            let (disk, clock, config) = (disk.clone(), clock.clone(), config.clone());
            let tier = tier.clone();
            let boot = boots.fetch_add(1, Ordering::SeqCst);
            on_boot(boot);
            let own_id = own_id_at_boot.get().copied();
            async move {
                if let Some(id) = own_id {
                    NetSim::current().reset_node(id);
                }
                let node_id = config.node_id;
                let listen = config.listen;
                let broker = match Broker::open_with_store(config, disk, clock, tier.store).await
                {
                    Ok(broker) => broker,
                    // The process exits on an fsync failure while opening (it must not retry
                    // one); a supervisor restarts it: a node crash, not a finding.
                    Err(error) if mentions(&error, INJECTED_EIO_MARK) => {
                        panic!("broker {node_id} failed to open its data dir: {error}; {CRASH_PANIC_MARK}")
                    }
                    Err(error) => panic!("broker {node_id} failed to open its data dir: {error}"),
                };
                tier.slot.set(&broker);
                let listener = match tokio::net::TcpListener::bind(listen).await {
                    Ok(listener) => listener,
                    Err(error) => panic!("broker {node_id} cannot bind {listen}: {error}"),
                };
                if let Err(error) = server::serve(broker, listener, std::future::pending()).await {
                    panic!("broker {node_id} stopped serving: {error}");
                }
            }
        })
        .build();
    own_id
        .set(node.id())
        .expect("the node id is set once, after the node is built");
    node
}

/// Whether `error` or one of its sources says `text`.
fn mentions(error: &dyn std::error::Error, text: &str) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.to_string().contains(text) {
            return true;
        }
        next = e.source();
    }
    false
}

/// One simulated broker of a [`SimCluster`]: its node, disk and clock.
#[derive(Debug, Clone)]
pub struct SimBroker {
    /// Kafka node id.
    pub node_id: i32,
    /// madsim node name (`broker-<node_id>`).
    pub name: String,
    /// The node's IP address.
    pub ip: IpAddr,
    /// madsim's id of the node (stable across restarts).
    pub sim_id: NodeId,
    /// The node's disk; survives restarts, crashed at every boot after the first.
    pub disk: FaultyDisk,
    /// The node's clock; survives restarts.
    pub clock: SimClock,
    /// The node's view of the run's object store (`None`: the broker has no remote tier);
    /// survives restarts.
    pub object_store: Option<FaultyObjectStore>,
    /// The node's running broker.
    pub broker: BrokerSlot,
}

impl SimBroker {
    /// `ip:port` of the broker's Kafka listener.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, BROKER_PORT)
    }
}

/// The brokers of one simulation. Broker `i` (node id `i`) is at `10.0.0.<i + 1>`.
#[derive(Debug, Clone)]
pub struct SimCluster {
    /// The brokers, by node id.
    pub brokers: Vec<SimBroker>,
}

/// The IP address of broker `node_id`.
pub fn broker_ip(node_id: i32) -> IpAddr {
    let host = u8::try_from(node_id + 1).expect("at most 254 brokers");
    IpAddr::from([10, 0, 0, host])
}

impl SimCluster {
    /// Starts one broker per `(disk, clock)`. Every boot after the first begins with a power
    /// loss of the node's disk ([`FaultyDisk::crash`]), so a kill followed by a restart loses
    /// whatever was not fsynced, and may tear unsynced tails.
    /// `configure` adjusts each broker's config (e.g. its flush policy) before it starts.
    pub fn start(
        handle: &Handle,
        disks_and_clocks: Vec<(FaultyDisk, SimClock)>,
        configure: impl Fn(&mut BrokerConfig),
    ) -> SimCluster {
        let nodes = disks_and_clocks
            .into_iter()
            .map(|(disk, clock)| (disk, clock, None))
            .collect();
        SimCluster::start_with_stores(handle, nodes, configure)
    }

    /// [`SimCluster::start`] where broker `i` opens with the object store given with its disk
    /// and clock, if any (its remote tier; see [`start_node_with_tier`]).
    pub fn start_with_stores(
        handle: &Handle,
        nodes: Vec<(FaultyDisk, SimClock, Option<FaultyObjectStore>)>,
        configure: impl Fn(&mut BrokerConfig),
    ) -> SimCluster {
        let mut brokers = Vec::new();
        for (index, (disk, clock, object_store)) in nodes.into_iter().enumerate() {
            let node_id = i32::try_from(index).expect("few brokers");
            let ip = broker_ip(node_id);
            let name = format!("broker-{node_id}");
            let crash_disk = disk.clone();
            let mut config = broker_config(node_id, ip);
            configure(&mut config);
            let slot = BrokerSlot::default();
            let tier = NodeTier {
                store: object_store
                    .clone()
                    .map(|store| Arc::new(store) as Arc<dyn ObjectStore>),
                slot: slot.clone(),
            };
            let node = start_node_with_tier(
                handle,
                &name,
                config,
                Arc::new(disk.clone()),
                Arc::new(clock.clone()),
                Arc::new(move |boot| {
                    if boot > 0 {
                        crash_disk.crash();
                    }
                }),
                tier,
            );
            brokers.push(SimBroker {
                node_id,
                name,
                ip,
                sim_id: node.id(),
                disk,
                clock,
                object_store,
                broker: slot,
            });
        }
        SimCluster { brokers }
    }

    /// The bootstrap list of every broker (`ip:port,ip:port,...`).
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(SimBroker::addr)
            .collect::<Vec<_>>()
            .join(",")
    }
}

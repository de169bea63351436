//! A broker on a simulated node.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use madsim::runtime::{Handle, NodeHandle};
use strata_cluster::{server, Broker, BrokerConfig};
use strata_storage::{MemDisk, SystemClock};

/// The Kafka port every simulated broker listens on.
pub const BROKER_PORT: u16 = 9092;

/// The broker config used in simulation: the defaults (fsync before acks=all answers), the data
/// dir `/data` on the node's `MemDisk`, listening on `ip`.
pub fn broker_config(node_id: i32, ip: IpAddr) -> BrokerConfig {
    BrokerConfig {
        node_id,
        listen: SocketAddr::new(ip, BROKER_PORT),
        advertised_host: Some(ip.to_string()),
        data_dir: PathBuf::from("/data"),
        ..BrokerConfig::default()
    }
}

/// Creates node `name` at `ip` that runs a broker on `disk` and serves Kafka until the node is
/// killed. On `Handle::restart` the broker starts again on the same `disk`, running crash recovery
/// on whatever the disk kept (call `MemDisk::crash` between kill and restart to drop unsynced data).
///
/// The node panics if the broker cannot open its data dir: in simulation that is a finding.
pub fn start_broker_node(handle: &Handle, name: &str, node_id: i32, ip: IpAddr, disk: MemDisk) -> NodeHandle {
    handle
        .create_node()
        .name(name)
        .ip(ip)
        .init(move || {
            let disk = disk.clone();
            async move {
                let config = broker_config(node_id, ip);
                let listen = config.listen;
                let broker = match Broker::open(config, Arc::new(disk), Arc::new(SystemClock::new())).await {
                    Ok(broker) => broker,
                    Err(error) => panic!("broker {node_id} failed to open its data dir: {error}"),
                };
                let listener = match tokio::net::TcpListener::bind(listen).await {
                    Ok(listener) => listener,
                    Err(error) => panic!("broker {node_id} cannot bind {listen}: {error}"),
                };
                if let Err(error) = server::serve(broker, listener, std::future::pending()).await {
                    panic!("broker {node_id} stopped serving: {error}");
                }
            }
        })
        .build()
}

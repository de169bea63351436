//! Test helper: a broker served on 127.0.0.1:0 over a `MemDisk` (data dir `/data`), optionally
//! with a remote-tier object store, and Strata's client connected to it.
#![allow(dead_code)]

use std::sync::Arc;

use object_store::ObjectStore;
use strata_cluster::client::{Client, ClientConfig};
use strata_cluster::{Broker, BrokerConfig};
use strata_storage::{Clock, Disk, MemDisk, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running broker; `stop` shuts it down cleanly.
pub struct Server {
    pub broker: Arc<Broker>,
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Starts a broker with `config` (its data dir and listen address are set here; segments of
    /// any size from 14 bytes unless `config` sets a floor) on `disk`.
    pub async fn start(
        mut config: BrokerConfig,
        disk: Arc<MemDisk>,
        store: Option<Arc<dyn ObjectStore>>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        config.data_dir = "/data".into();
        config.listen = addr;
        // Tests roll segments every few KB (see TestBroker::start_with).
        if config.segment_bytes_min == strata_cluster::config::SEGMENT_BYTES_MIN_DEFAULT {
            config.segment_bytes_min = strata_cluster::config::SEGMENT_BYTES_MIN_FLOOR;
        }
        let disk: Arc<dyn Disk> = disk;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let broker = Broker::open_with_store(config, disk, clock, store)
            .await
            .expect("broker opens");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(strata_cluster::server::serve(
            Arc::clone(&broker),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            broker,
            addr: addr.to_string(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client of this broker.
    pub async fn client(&self) -> Client {
        Client::connect(
            &self.addr,
            ClientConfig {
                request_timeout_ms: 10_000,
                client_id: "server-util".to_string(),
            },
        )
        .await
        .expect("client connects")
    }

    /// Stops serving and shuts the broker down (flush and close).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

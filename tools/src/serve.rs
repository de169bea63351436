//! `strata serve`: run the broker until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use strata_cluster::broker::Broker;
use strata_storage::{Clock, Disk, RealDisk, SystemClock};

use crate::object_store_url::open_object_store;
use crate::serve_config::{self, FileConfig, FlagOverrides};

/// Flags of `strata serve`; each overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:9092).
    #[arg(long)]
    listen: Option<String>,
    /// Directory of the partition logs and metadata (default ./strata-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML config file (fields mirror the broker config; flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Host advertised to clients in Metadata (default: the listen IP).
    #[arg(long)]
    advertised_host: Option<String>,
    /// This broker's node id (default 0).
    #[arg(long)]
    node_id: Option<i32>,
    /// When to fsync: ack (default: before acks=all answers), never, interval:MS.
    #[arg(long)]
    flush: Option<String>,
    /// Address of the Prometheus metrics endpoint (GET /metrics; default 127.0.0.1:9644), or
    /// `none` to serve no metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// The remote tier's object store: `file:///abs/path`, `s3://bucket[/prefix]` (configured
    /// by AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP), or `none` (default: file://<data-dir>/remote).
    #[arg(long, value_name = "URL")]
    object_store: Option<String>,
    /// How often closed segments are offloaded and remote retention runs, in milliseconds
    /// (default 5000).
    #[arg(long, value_name = "MS")]
    tier_interval_ms: Option<u64>,
    /// fetch.max.bytes: the most record bytes one Fetch answer carries, whatever the client
    /// asks (default 57671680, Kafka's).
    #[arg(long, value_name = "BYTES")]
    fetch_max_bytes: Option<usize>,
    /// connections.max.idle.ms: close connections idle this long (default 600000).
    #[arg(long, value_name = "MS")]
    connections_max_idle_ms: Option<u64>,
    /// max.connections: close new connections past this many (default: half the open-files
    /// limit).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// max.connections.per.ip: close new connections past this many from one address (default:
    /// max-connections).
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// socket.request.read.timeout.ms: a request frame whose first byte arrived must arrive
    /// whole within this long, or its connection is closed (default 30000).
    #[arg(long, value_name = "MS")]
    socket_request_read_timeout_ms: Option<u64>,
    /// group.initial.rebalance.delay.ms: how long the first rebalance of a new (or emptied)
    /// consumer group waits for more members, in milliseconds (default 3000; 0: no wait).
    #[arg(long, value_name = "MS")]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// The smallest segment.bytes a client may give a topic (default 1048576, Kafka 4's
    /// minimum; at least 14). For tests that roll segments every few KB.
    #[arg(long, value_name = "BYTES")]
    segment_bytes_min: Option<u64>,
}

/// Runs the broker: open the data dir, bind, serve until a shutdown signal, then flush and
/// close every partition.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => serve_config::read_file(path)?,
        None => FileConfig::default(),
    };
    let flags = FlagOverrides {
        listen: args.listen,
        data_dir: args.data_dir,
        advertised_host: args.advertised_host,
        node_id: args.node_id,
        flush: args.flush,
        metrics_listen: args.metrics_listen,
        object_store: args.object_store,
        tier_interval_ms: args.tier_interval_ms,
        fetch_max_bytes: args.fetch_max_bytes,
        connections_max_idle_ms: args.connections_max_idle_ms,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        socket_request_read_timeout_ms: args.socket_request_read_timeout_ms,
        group_initial_rebalance_delay_ms: args.group_initial_rebalance_delay_ms,
        segment_bytes_min: args.segment_bytes_min,
    };
    let store_url = serve_config::object_store_url(&file, &flags);
    let config = serve_config::build(file, flags)?;
    let data_dir = config.data_dir.clone();
    let remote_store = match open_object_store(store_url.as_deref(), &data_dir)? {
        Some((store, description)) => {
            tracing::info!("remote tier: {description}");
            Some(store)
        }
        None => {
            tracing::info!("remote tier: none (topics with remote.storage.enable stay local)");
            None
        }
    };
    let listen = config.listen;
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let broker = Broker::open_with_store(config, disk, clock, remote_store)
        .await
        .with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("cannot read the bound address of {listen}"))?;
    tracing::info!("strata listening on {bound}");
    strata_cluster::server::serve(broker, listener, shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("strata stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    #[cfg(all(unix, not(madsim)))]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    biased;
                    _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
                }
                return;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops the broker")
            }
        }
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => tracing::info!("Ctrl-C: shutting down"),
        Err(e) => {
            tracing::warn!("cannot listen for Ctrl-C ({e}); the broker runs until killed");
            std::future::pending::<()>().await;
        }
    }
}

//! `strata`: the Strata broker (`strata serve`), a small Kafka client (`strata topic`,
//! `strata produce`, `strata consume`) and operator tools (`strata tier status`).

mod bench;
mod consume;
mod group;
mod object_store_url;
mod produce;
mod serve;
mod serve_config;
mod tier;
mod topic;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata_cluster::client::{Client, ClientConfig};

/// Huge allocations (e.g. kafka-protocol preallocating an array from a corrupt wire length) get
/// address space only, so a bad frame cannot abort the process.
#[global_allocator]
static ALLOC: strata_cluster::server::GuardedAllocator = strata_cluster::server::GuardedAllocator;

/// Strata: a Kafka-compatible event-streaming broker.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per stdin line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one value per line.
    Consume(consume::ConsumeArgs),
    /// List and describe consumer groups; reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Load tool: measure produce, consume and end-to-end throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The remote (tiered) storage of partitions: `strata tier status`.
    #[command(subcommand)]
    Tier(tier::TierCommand),
}

/// How the client commands reach a broker.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Broker address(es), `host:port[,host:port...]`.
    #[arg(
        long = "bootstrap-server",
        env = "STRATA_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_server: String,
    /// Timeout of each request to the broker, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
}

impl ConnectArgs {
    /// Connects a client to the bootstrap servers.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let config = ClientConfig {
            request_timeout_ms: self.request_timeout_ms,
            client_id: "strata-cli".to_string(),
        };
        Client::connect(&self.bootstrap_server, config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", self.bootstrap_server))
    }
}

/// Parses `key=value` (used by `--config` and `--header`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colours only on a terminal (and never with NO_COLOR): log files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// The error and its causes joined by ": ", skipping a cause whose text the previous message
/// already includes (many errors print their source in their own message).
fn error_chain_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !previous.is_empty() && previous.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
        previous = message;
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Topic(command) => topic::run(command).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Group(command) => group::run(command).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Tier(command) => tier::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {}", error_chain_text(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_skips_causes_already_in_the_message() {
        let inner = std::io::Error::other("disk on fire");
        let outer = anyhow::Error::new(inner).context("cannot open /data: disk on fire");
        assert_eq!(error_chain_text(&outer), "cannot open /data: disk on fire");
        let plain = anyhow::anyhow!("root cause").context("while opening");
        assert_eq!(error_chain_text(&plain), "while opening: root cause");
    }
}

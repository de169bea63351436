//! `strata topic ...`: topic administration.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use strata_cluster::client::{Client, OffsetSpec, TopicDescription};

use crate::{parse_key_value, ConnectArgs};

/// Topic subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's default).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// Topic config, Kafka name (repeatable), e.g. --config retention.ms=86400000.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List topic names, one per line.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a topic's partitions (leader, log start and end offsets) and configs.
    Describe {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Set or remove topic configs.
    Alter {
        /// Topic name.
        name: String,
        /// Config to set (repeatable), e.g. --config retention.ms=3600000.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Config to reset to the default (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Runs a topic subcommand.
pub async fn run(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            connect,
        } => {
            let client = connect.connect().await?;
            client
                .create_topics(
                    &name,
                    partitions.unwrap_or(-1),
                    replication_factor.unwrap_or(-1),
                    &configs,
                )
                .await?;
            println!("Created topic {name}.");
        }
        TopicCommand::List { connect } => {
            let client = connect.connect().await?;
            let names = client.list_topics().await.context("cannot list topics")?;
            let mut out = std::io::stdout().lock();
            for name in names {
                writeln!(out, "{name}")?;
            }
        }
        TopicCommand::Describe { name, connect } => {
            let client = connect.connect().await?;
            let description = client
                .describe_topic(&name)
                .await
                .with_context(|| format!("cannot describe topic {name}"))?;
            let text = describe_text(&client, &description).await?;
            print!("{text}");
        }
        TopicCommand::Delete { name, connect } => {
            let client = connect.connect().await?;
            client.delete_topics(&[name.as_str()]).await?;
            println!("Deleted topic {name}.");
        }
        TopicCommand::Alter {
            name,
            configs,
            delete_configs,
            connect,
        } => {
            if configs.is_empty() && delete_configs.is_empty() {
                anyhow::bail!("nothing to alter: give --config KEY=VALUE or --delete-config KEY");
            }
            let client = connect.connect().await?;
            let changes: Vec<(String, Option<String>)> = configs
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .chain(delete_configs.into_iter().map(|k| (k, None)))
                .collect();
            client.alter_topic_configs(&name, &changes).await?;
            println!("Altered configs of topic {name}.");
        }
    }
    Ok(())
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

async fn describe_text(client: &Client, d: &TopicDescription) -> anyhow::Result<String> {
    let mut text = format!(
        "Topic: {}\tPartitionCount: {}\n",
        d.name,
        d.partitions.len()
    );
    for p in &d.partitions {
        let start = client
            .list_offsets(&d.name, p.partition, OffsetSpec::Earliest)
            .await
            .with_context(|| format!("cannot read log start of {}-{}", d.name, p.partition))?;
        let end = client
            .list_offsets(&d.name, p.partition, OffsetSpec::Latest)
            .await
            .with_context(|| format!("cannot read log end of {}-{}", d.name, p.partition))?;
        text.push_str(&format!(
            "\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}\tLogStartOffset: {}\tLogEndOffset: {}\n",
            p.partition,
            p.leader_id,
            join_ids(&p.replicas),
            join_ids(&p.isr),
            start,
            end
        ));
    }
    text.push_str("Configs:\n");
    for c in &d.configs {
        text.push_str(&format!(
            "\t{}={}{}\n",
            c.name,
            c.value.as_deref().unwrap_or("(null)"),
            if c.is_default { "" } else { "\t(set on topic)" }
        ));
    }
    Ok(text)
}

//! `sluice cluster secret`: creates a cluster secret, the file every node of a cluster is given
//! (`--cluster-secret-file`) to prove it is a member; it talks to no broker.
//!
//! `sluice cluster status`: the cluster id, the controller, the brokers (fenced ones flagged: the
//! controller stopped hearing from them), topic and partition counts, and partitions that are
//! under-replicated (fewer in-sync replicas than replicas) or offline (no leader).
//! DescribeCluster gives the cluster and its brokers (v2 with fenced brokers when the broker
//! serves it); Metadata v12 the partitions.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_meta::membership::ClusterSecret;
use sluice_protocol::messages::{DescribeClusterRequest, MetadataRequest};

use crate::cli_common::{json, kafka_error, or_dash, table, CommonArgs, Output};
use crate::client::Client;

/// Flags shared by every `sluice cluster` subcommand.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Show the cluster id, controller, brokers, and topic and partition health.
    Status,
    /// Create a new cluster secret: give every node of one cluster the same file with
    /// `sluice serve --cluster-secret-file FILE`.
    Secret(SecretArgs),
}

#[derive(Debug, Args)]
struct SecretArgs {
    /// Write the secret to FILE, created readable by its owner only (0600); it must not exist.
    /// Without it the secret is printed on stdout.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

/// Runs a `sluice cluster` subcommand to completion.
pub(crate) fn run(args: ClusterArgs) -> anyhow::Result<()> {
    if let ClusterCommand::Secret(secret_args) = &args.command {
        return secret(secret_args);
    }
    let output = args.common.output;
    crate::cli_common::run(&args.common, move |mut client| async move {
        match args.command {
            ClusterCommand::Status => status(&mut client, output).await,
            ClusterCommand::Secret(_) => unreachable!("handled before connecting"),
        }
    })
}

/// `sluice cluster secret`: a new secret into `--file` (0600, never overwriting) or on stdout.
fn secret(args: &SecretArgs) -> anyhow::Result<()> {
    match &args.file {
        Some(path) => {
            let secret = ClusterSecret::create(path)?;
            eprintln!(
                "wrote a new cluster secret to {} (fingerprint {}); copy it to every node of the \
                 cluster and start each with --cluster-secret-file {}",
                path.display(),
                secret.fingerprint(),
                path.display()
            );
        }
        None => println!("{}", ClusterSecret::generate()?.to_hex()),
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct ClusterStatus {
    cluster_id: String,
    controller_id: i32,
    brokers: Vec<BrokerStatus>,
    topics: usize,
    partitions: usize,
    under_replicated_partitions: Vec<String>,
    offline_partitions: Vec<String>,
}

#[derive(Debug, Serialize)]
struct BrokerStatus {
    node_id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
    /// Fenced by the controller (missed its heartbeats): it leads nothing and clients are not
    /// sent to it.
    fenced: bool,
}

async fn status(client: &mut Client, output: Output) -> anyhow::Result<String> {
    // v2 lists fenced brokers too; an older broker answers v0 with the live ones.
    let cluster = match client
        .send(
            2,
            &DescribeClusterRequest::default().with_include_fenced_brokers(true),
        )
        .await
    {
        Ok(answer) => answer,
        Err(_) => client.send(0, &DescribeClusterRequest::default()).await?,
    };
    if let Some(error) = kafka_error(cluster.error_code, cluster.error_message.as_ref()) {
        bail!("cannot describe the cluster: {error}");
    }
    let metadata = client
        .send(
            12,
            &MetadataRequest::default()
                .with_topics(None)
                .with_allow_auto_topic_creation(false),
        )
        .await?;
    let mut status = ClusterStatus {
        cluster_id: cluster.cluster_id.to_string(),
        controller_id: cluster.controller_id.0,
        brokers: cluster
            .brokers
            .iter()
            .map(|b| BrokerStatus {
                node_id: b.broker_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.as_ref().map(|r| r.to_string()),
                fenced: b.is_fenced,
            })
            .collect(),
        topics: 0,
        partitions: 0,
        under_replicated_partitions: Vec::new(),
        offline_partitions: Vec::new(),
    };
    status.brokers.sort_by_key(|b| b.node_id);
    for topic in &metadata.topics {
        let Some(name) = &topic.name else { continue };
        status.topics += 1;
        for p in &topic.partitions {
            status.partitions += 1;
            let id = format!("{}-{}", name.0.as_str(), p.partition_index);
            if p.leader_id.0 < 0 {
                status.offline_partitions.push(id.clone());
            }
            if p.isr_nodes.len() < p.replica_nodes.len() {
                status.under_replicated_partitions.push(id);
            }
        }
    }
    status.under_replicated_partitions.sort();
    status.offline_partitions.sort();
    if output == Output::Json {
        return json(&status);
    }
    Ok(status_text(&status))
}

fn status_text(status: &ClusterStatus) -> String {
    let mut out = format!(
        "Cluster id:     {}\nController:     {}\nTopics:         {}\nPartitions:     {}\n\
         Under-replicated partitions: {}\nOffline partitions:          {}\n",
        status.cluster_id,
        status.controller_id,
        status.topics,
        status.partitions,
        status.under_replicated_partitions.len(),
        status.offline_partitions.len(),
    );
    for (label, list) in [
        ("Under-replicated", &status.under_replicated_partitions),
        ("Offline", &status.offline_partitions),
    ] {
        if !list.is_empty() {
            out.push_str(&format!("{label}: {}\n", list.join(", ")));
        }
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = status
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.node_id.to_string(),
                format!("{}:{}", b.host, b.port),
                or_dash(b.rack.clone().unwrap_or_default()),
                match (b.node_id == status.controller_id, b.fenced) {
                    (true, _) => "controller".to_owned(),
                    (false, true) => "fenced".to_owned(),
                    (false, false) => String::new(),
                },
            ]
        })
        .collect();
    out.push_str(&table(&["BROKER", "ADDRESS", "RACK", ""], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_counts_then_brokers() {
        let status = ClusterStatus {
            cluster_id: "c1".to_owned(),
            controller_id: 1,
            brokers: vec![
                BrokerStatus {
                    node_id: 1,
                    host: "127.0.0.1".to_owned(),
                    port: 9092,
                    rack: None,
                    fenced: false,
                },
                BrokerStatus {
                    node_id: 2,
                    host: "127.0.0.1".to_owned(),
                    port: 9093,
                    rack: None,
                    fenced: true,
                },
            ],
            topics: 2,
            partitions: 5,
            under_replicated_partitions: vec![],
            offline_partitions: vec!["t-0".to_owned()],
        };
        let text = status_text(&status);
        assert!(text.starts_with("Cluster id:     c1\n"), "{text}");
        assert!(
            text.contains("Offline partitions:          1\nOffline: t-0\n"),
            "{text}"
        );
        assert!(
            text.contains("1       127.0.0.1:9092  -     controller"),
            "{text}"
        );
        assert!(
            text.contains("2       127.0.0.1:9093  -     fenced"),
            "{text}"
        );
    }
}

//! `sluice topic reassign` (AlterPartitionReassignments v0: move one partition to other brokers,
//! or cancel the move) and `sluice topic reassignments` (ListPartitionReassignments v0: the moves
//! under way), after Kafka's `kafka-reassign-partitions.sh`.

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use sluice_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use sluice_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest,
};

use super::topic_error;
use crate::cli_common::{json, table, topic_name, CommonArgs, Output};
use crate::client::Client;

#[derive(Debug, Args)]
pub(super) struct ReassignArgs {
    /// The topic's name.
    topic: String,
    /// The partition to move.
    #[arg(long)]
    partition: i32,
    /// The broker ids the partition should live on, the preferred leader first (`1,2,3`).
    #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
    replicas: Vec<i32>,
    /// Cancel the partition's reassignment instead: it goes back to its original replicas.
    #[arg(long, conflicts_with = "replicas")]
    cancel: bool,
}

#[derive(Debug, Args)]
pub(super) struct ReassignmentsArgs {}

#[derive(Debug, Serialize)]
struct Reassigned {
    topic: String,
    partition: i32,
    /// The target replicas; None when the reassignment was cancelled.
    replicas: Option<Vec<i32>>,
}

#[derive(Debug, Serialize)]
struct Ongoing {
    topic: String,
    partition: i32,
    /// Every replica for now: the target's, then those being removed.
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

/// Starts (or cancels) one partition's reassignment.
pub(super) async fn run_reassign(
    client: &mut Client,
    args: &ReassignArgs,
    common: &CommonArgs,
) -> anyhow::Result<String> {
    let topic = args.topic.as_str();
    let target = (!args.cancel).then(|| args.replicas.clone());
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(common.request_timeout_ms())
        .with_topics(vec![ReassignableTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(args.partition)
                .with_replicas(
                    target
                        .as_ref()
                        .map(|rs| rs.iter().copied().map(BrokerId).collect()),
                )])]);
    let response = client.send(0, &request).await?;
    let action = if args.cancel {
        "cancel reassigning"
    } else {
        "reassign"
    };
    if let Some(error) = topic_error(
        action,
        topic,
        response.error_code,
        response.error_message.as_ref(),
    ) {
        bail!(error);
    }
    let result = response
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == args.partition)
        .with_context(|| {
            format!(
                "the broker did not answer for partition {} of topic {topic}",
                args.partition
            )
        })?;
    if let Some(error) = topic_error(
        action,
        topic,
        result.error_code,
        result.error_message.as_ref(),
    ) {
        bail!(error);
    }
    let done = Reassigned {
        topic: topic.to_owned(),
        partition: args.partition,
        replicas: target,
    };
    match (common.output, &done.replicas) {
        (Output::Json, _) => json(&done),
        (Output::Text, Some(replicas)) => Ok(format!(
            "Reassigning partition {} of '{topic}' to replicas {}; `sluice topic reassignments` \
             lists it until the new replicas are in sync.\n",
            args.partition,
            join(replicas)
        )),
        (Output::Text, None) => Ok(format!(
            "Cancelled the reassignment of partition {} of '{topic}'.\n",
            args.partition
        )),
    }
}

/// Lists the reassignments under way, by topic and partition.
pub(super) async fn run_list(
    client: &mut Client,
    _args: &ReassignmentsArgs,
    common: &CommonArgs,
) -> anyhow::Result<String> {
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(common.request_timeout_ms())
        .with_topics(None);
    let response = client.send(0, &request).await?;
    if let Some(error) =
        crate::cli_common::kafka_error(response.error_code, response.error_message.as_ref())
    {
        bail!("cannot list reassignments: {error}");
    }
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    let mut ongoing: Vec<Ongoing> = response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Ongoing {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        })
        .collect();
    ongoing.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    match common.output {
        Output::Json => json(&ongoing),
        Output::Text => Ok(list_text(&ongoing)),
    }
}

fn list_text(ongoing: &[Ongoing]) -> String {
    if ongoing.is_empty() {
        return "No partition reassignments in progress.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = ongoing
        .iter()
        .map(|o| {
            vec![
                o.topic.clone(),
                o.partition.to_string(),
                join(&o.replicas),
                join(&o.adding),
                join(&o.removing),
            ]
        })
        .collect();
    table(
        &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
        &rows,
    )
}

/// `2,3` (or `-` when empty).
fn join(ids: &[i32]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ongoing_reassignments_are_tabled() {
        assert_eq!(list_text(&[]), "No partition reassignments in progress.\n");
        let text = list_text(&[Ongoing {
            topic: "orders".into(),
            partition: 0,
            replicas: vec![2, 3, 1],
            adding: vec![3],
            removing: vec![1],
        }]);
        assert_eq!(
            text,
            "TOPIC   PARTITION  REPLICAS  ADDING  REMOVING\n\
             orders  0          2,3,1     3       1\n"
        );
    }
}

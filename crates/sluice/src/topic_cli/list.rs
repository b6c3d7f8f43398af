//! `sluice topic list`: every topic (Metadata v12 for all topics) with its partition count.

use clap::Args;
use serde::Serialize;
use sluice_protocol::messages::MetadataRequest;

use crate::cli_common::{json, table, CommonArgs, Output};
use crate::client::{error_name, Client};

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Leave out internal topics such as `__consumer_offsets`.
    #[arg(long)]
    exclude_internal: bool,
}

#[derive(Debug, Serialize)]
struct ListedTopic {
    topic: String,
    topic_id: String,
    partitions: usize,
    /// Replicas of the first partition (every partition has as many in a healthy cluster).
    replication_factor: usize,
    internal: bool,
    /// The broker's error for this topic (e.g. LEADER_NOT_AVAILABLE while it is created).
    error: Option<String>,
}

/// Lists the broker's topics, sorted by name.
pub(super) async fn run(
    client: &mut Client,
    args: &ListArgs,
    common: &CommonArgs,
) -> anyhow::Result<String> {
    let request = MetadataRequest::default()
        .with_topics(None)
        .with_allow_auto_topic_creation(false);
    let response = client.send(12, &request).await?;
    let mut topics: Vec<ListedTopic> = response
        .topics
        .into_iter()
        .filter(|t| !(args.exclude_internal && t.is_internal))
        .filter_map(|t| {
            Some(ListedTopic {
                topic: t.name?.0.to_string(),
                topic_id: t.topic_id.to_string(),
                partitions: t.partitions.len(),
                replication_factor: t.partitions.first().map_or(0, |p| p.replica_nodes.len()),
                internal: t.is_internal,
                error: error_name(t.error_code),
            })
        })
        .collect();
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    if common.output == Output::Json {
        return json(&topics);
    }
    Ok(list_text(&topics))
}

fn list_text(topics: &[ListedTopic]) -> String {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            let mut notes = Vec::new();
            if t.internal {
                notes.push("internal".to_owned());
            }
            notes.extend(t.error.clone());
            vec![
                t.topic.clone(),
                t.partitions.to_string(),
                t.replication_factor.to_string(),
                notes.join(", "),
            ]
        })
        .collect();
    table(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR", ""], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_topics_are_marked() {
        let topic = |name: &str, internal: bool| ListedTopic {
            topic: name.into(),
            topic_id: "id".into(),
            partitions: 2,
            replication_factor: 1,
            internal,
            error: None,
        };
        let text = list_text(&[topic("__consumer_offsets", true), topic("orders", false)]);
        assert_eq!(
            text,
            "TOPIC               PARTITIONS  REPLICATION-FACTOR\n\
             __consumer_offsets  2           1                   internal\n\
             orders              2           1\n"
        );
    }
}

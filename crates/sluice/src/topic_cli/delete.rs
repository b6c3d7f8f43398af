//! `sluice topic delete`: DeleteTopics v6 for one topic, by name.

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use sluice_protocol::messages::delete_topics_request::DeleteTopicState;
use sluice_protocol::messages::DeleteTopicsRequest;

use super::topic_error;
use crate::cli_common::{json, topic_name, CommonArgs, Output};
use crate::client::Client;

#[derive(Debug, Args)]
pub(super) struct DeleteArgs {
    /// The topic's name.
    topic: String,
}

#[derive(Debug, Serialize)]
struct Deleted {
    topic: String,
    /// The deleted topic's id, when the broker reported it.
    topic_id: Option<String>,
}

/// Deletes one topic.
pub(super) async fn run(
    client: &mut Client,
    args: &DeleteArgs,
    common: &CommonArgs,
) -> anyhow::Result<String> {
    let topic = args.topic.as_str();
    let request = DeleteTopicsRequest::default()
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name(topic)))
        ])
        .with_timeout_ms(common.request_timeout_ms());
    let response = client.send(6, &request).await?;
    let result = response
        .responses
        .into_iter()
        .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .with_context(|| format!("the broker did not answer for topic {topic}"))?;
    if let Some(error) = topic_error(
        "delete",
        topic,
        result.error_code,
        result.error_message.as_ref(),
    ) {
        bail!(error);
    }
    let deleted = Deleted {
        topic: topic.to_owned(),
        topic_id: (!result.topic_id.is_nil()).then(|| result.topic_id.to_string()),
    };
    match common.output {
        Output::Json => json(&deleted),
        Output::Text => Ok(format!("Deleted topic '{topic}'.\n")),
    }
}

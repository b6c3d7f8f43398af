//! DeleteTopics: by name (all versions) or by topic id (v6+). Internal topics are refused
//! (`crate::internal_topics`).

use std::sync::Arc;

use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::delete_topics_response::DeletableTopicResult;
use sluice_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use sluice_protocol::StrBytes;
use uuid::Uuid;

use crate::broker::Broker;
use crate::errors;
use crate::internal_topics;
use crate::request::{Ctx, Reply};

pub(crate) fn handle(broker: &Arc<Broker>, ctx: Ctx, request: DeleteTopicsRequest) -> Reply {
    // (name if known, id if given)
    let mut wanted: Vec<(Option<String>, Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    wanted.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let broker = broker.clone();
    let version = ctx.version;
    ctx.reply_later(async move {
        let mut responses = Vec::with_capacity(wanted.len());
        for (name, id) in wanted {
            let result = DeletableTopicResult::default().with_topic_id(if version >= 6 {
                id
            } else {
                Uuid::nil()
            });
            let name = match name {
                Some(name) => name,
                None => match broker.metadata.topic_by_id(id) {
                    Some(topic) => topic.name,
                    None => {
                        responses
                            .push(result.with_error_code(ResponseError::UnknownTopicId.code()));
                        continue;
                    }
                },
            };
            let result = result.with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            if let Err((code, message)) = internal_topics::check_delete(&name) {
                responses.push(
                    result
                        .with_error_code(code.code())
                        .with_error_message(Some(StrBytes::from_string(message))),
                );
                continue;
            }
            let result = match broker.delete_topic(&name).await {
                Ok(Some(topic)) => {
                    if version >= 6 {
                        result.with_topic_id(topic.id)
                    } else {
                        result
                    }
                }
                Ok(None) => result.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Err(e) => result
                    .with_error_code(errors::metadata_error(&e).code())
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            };
            responses.push(result);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    })
}

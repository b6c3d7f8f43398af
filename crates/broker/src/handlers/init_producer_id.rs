//! InitProducerId: hands an idempotent producer a fresh producer id (epoch 0), as Kafka does for
//! producers without a transactional id (see `handlers::txn` for transactional ones).

use std::sync::Arc;

use sluice_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use crate::broker::Broker;

pub(crate) async fn handle(
    broker: Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    debug_assert!(
        request.transactional_id.is_none(),
        "transactional ids go to handlers::txn"
    );
    match broker.metadata.allocate_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            warn!(error = %e, "cannot allocate a producer id");
            InitProducerIdResponse::default()
                .with_error_code(crate::errors::metadata_error(&e).code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

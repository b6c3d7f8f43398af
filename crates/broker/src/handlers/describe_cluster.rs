//! DescribeCluster: the cluster id, the controller and the live brokers (v2: also the fenced
//! ones, flagged, when the request asks for them).

use std::sync::Arc;

use sluice_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use sluice_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use sluice_protocol::StrBytes;

use crate::broker::Broker;
use crate::handlers::metadata::{controller_id, live_brokers};

pub(crate) fn handle(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut brokers: Vec<DescribeClusterBroker> = live_brokers(broker)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    if request.include_fenced_brokers {
        let state = broker.metadata.state();
        for fenced in state.brokers.values().filter(|b| b.fenced) {
            let Some(listener) = fenced.listeners.first() else {
                continue;
            };
            brokers.push(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(fenced.id.0 as i32))
                    .with_host(StrBytes::from_string(listener.host.clone()))
                    .with_port(i32::from(listener.port))
                    .with_rack(fenced.rack.clone().map(StrBytes::from_string))
                    .with_is_fenced(true),
            );
        }
    }
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.metadata.cluster_id()))
        .with_controller_id(BrokerId(controller_id(broker)))
        .with_endpoint_type(1)
        .with_brokers(brokers)
}

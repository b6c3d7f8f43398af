//! DescribeCluster: the cluster id, the controller and the brokers (one, on a single node).

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

pub(crate) fn handle(
    broker: &Arc<Broker>,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let config = &broker.config;
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.metadata.cluster_id()))
        .with_controller_id(BrokerId(config.node_id))
        .with_endpoint_type(1)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(config.node_id))
            .with_host(StrBytes::from_string(config.advertised_host.clone()))
            .with_port(i32::from(config.advertised_port))])
}

//! `sluice cluster status` against a real broker: cluster id, controller, the one broker, topic and
//! partition counts and no under-replicated or offline partitions, as a table and as JSON.

use serde_json::Value;

use crate::harness::{assert_unreachable_broker_is_a_clear_error_for, cli_ok, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_reports_brokers_and_partition_health() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("alpha", 3, &[]).await;
    broker.create_topic("beta", 2, &[]).await;

    let status: Value =
        serde_json::from_str(&cli_ok("cluster", &broker, &["status", "--output", "json"]))
            .expect("JSON output");
    assert!(
        !status["cluster_id"].as_str().unwrap().is_empty(),
        "{status}"
    );
    assert_eq!(status["controller_id"], 1);
    assert_eq!(status["brokers"][0]["node_id"], 1);
    assert_eq!(status["brokers"][0]["host"], "127.0.0.1");
    assert_eq!(status["brokers"][0]["port"], broker.port);
    assert_eq!(status["brokers"][0]["rack"], Value::Null);
    assert_eq!(status["topics"], 2);
    assert_eq!(status["partitions"], 5);
    assert_eq!(status["under_replicated_partitions"], serde_json::json!([]));
    assert_eq!(status["offline_partitions"], serde_json::json!([]));

    let text = cli_ok("cluster", &broker, &["status"]);
    assert!(
        text.contains(&format!(
            "Cluster id:     {}\n",
            status["cluster_id"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("Partitions:     5\n"), "{text}");
    assert!(text.contains("Under-replicated partitions: 0\n"), "{text}");
    assert!(text.contains("Offline partitions:          0\n"), "{text}");
    assert!(
        text.contains(&format!("1       127.0.0.1:{}", broker.port)),
        "{text}"
    );
    assert!(text.contains("controller"), "{text}");
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    assert_unreachable_broker_is_a_clear_error_for("cluster", &["status"]);
}

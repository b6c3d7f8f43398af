//! Producer throughput with librdkafka against a running broker (until `sluice perf` lands):
//!
//! ```sh
//! cargo run --release --example produce_bench -- 127.0.0.1:9092 1000000 100 1
//! ```
//! Arguments: bootstrap, record count, record size in bytes, acks (0, 1 or all), and optionally
//! `compact`. Uses a fresh topic `bench-<acks>-<millis>` (auto-created with num.partitions) and
//! prints records/s and MB/s. With `compact` the topic is created with `cleanup.policy=compact`,
//! 8 MiB segments and `min.cleanable.dirty.ratio=0.1`, and records carry keys over 100 000 values,
//! so the broker's cleaner works while the producer runs.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use std::sync::atomic::{AtomicUsize, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

/// Counts delivery reports, so failures are reported instead of ignored.
#[derive(Default)]
struct Counting {
    delivered: AtomicUsize,
    failed: AtomicUsize,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bootstrap = args.get(1).map_or("127.0.0.1:9092", String::as_str);
    let count: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let acks = args.get(4).map_or("1", String::as_str);
    let compact = args.get(5).is_some_and(|a| a == "compact");
    let topic = format!(
        "bench-{}-{}",
        acks,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    if compact {
        create_compacted(bootstrap, &topic);
    }
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set(
            "enable.idempotence",
            if acks == "all" { "true" } else { "false" },
        )
        .create_with_context(Counting::default())
        .expect("producer");
    let payload = vec![b'x'; size];
    let start = Instant::now();
    let mut sent = 0;
    while sent < count {
        let key = format!("key-{}", sent % 100_000);
        let record = BaseRecord::<str, [u8]>::to(&topic).payload(&payload);
        let record = if compact {
            record.key(key.as_str())
        } else {
            record
        };
        match producer.send(record) {
            Ok(()) => sent += 1,
            Err((_, _)) => producer.poll(Duration::from_millis(1)),
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} records failed delivery");
    assert_eq!(context.delivered.load(Ordering::Relaxed), count);
    println!(
        "acks={acks} records={count} size={size}B: {:.0} records/s, {:.1} MB/s ({secs:.2} s)",
        count as f64 / secs,
        (count * size) as f64 / secs / 1e6
    );
}

fn create_compacted(bootstrap: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "8388608")
        .set("min.cleanable.dirty.ratio", "0.1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("create topic");
    assert!(result[0].is_ok(), "{result:?}");
}

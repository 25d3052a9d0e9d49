//! Kafka test support: the broker scripts/servers.sh starts, topics of a
//! test's own, and a paced producer.

use std::time::Duration;

use feedstorm::kafka::Producer;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// The broker (FEEDSTORM_KAFKA_BROKERS, default 127.0.0.1:9092).
pub fn brokers() -> String {
    std::env::var("FEEDSTORM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Creates `name` with `partitions` (rdkafka's admin client); fails, with
/// what to do, when the broker is not reachable.
pub fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        feedstorm::kafka::client_config(&brokers(), &Default::default())
            .create()
            .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for result in runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap_or_else(|e| {
            panic!(
                "kafka at {} is not reachable (scripts/servers.sh start): {e}",
                brokers()
            )
        })
    {
        result.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// Produces `lines` with feedstorm's producer, `per_chunk` at a time with
/// `pause` after each chunk (pacing, not synchronisation).
pub fn produce_paced(topic: &str, lines: &[String], per_chunk: usize, pause: Duration) {
    let producer = Producer::new(&brokers(), &Default::default()).unwrap();
    for chunk in lines.chunks(per_chunk) {
        let events = chunk
            .iter()
            .map(|l| feedstorm::event::decode(l.as_bytes(), 1 << 20).unwrap());
        feedstorm::kafka::produce::produce_events(&producer, topic, events, None, 1 << 20, false)
            .unwrap();
        std::thread::sleep(pause);
    }
}

/// A Kafka -> Redis topology named `name` reading `topic` as `group` into
/// `prefix` at `url`, small epochs, checkpoints every `interval` under
/// `dir/checkpoints` and dead letters in `dir`.
pub fn kafka_redis_toml(
    name: &str,
    topic: &str,
    group: &str,
    prefix: &str,
    url: &str,
    dir: &std::path::Path,
    interval: &str,
) -> String {
    format!(
        r#"name = "{name}"
[[spout]]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
[input]
epoch_events = 500
max_inflight_epochs = 2
[sink]
type = "redis"
url = "{url}"
prefix = "{prefix}"
[dead_letter]
path = "{dead}"
[checkpoint]
dir = "{checkpoints}"
interval = "{interval}"
"#,
        brokers = brokers(),
        dead = dir.join(format!("{name}-dead.jsonl")).display(),
        checkpoints = dir.join("checkpoints").display(),
    )
}

/// A topology reading `topic` as `group` into the embedded store (dead
/// letters in `dir`, checkpoints off).
pub fn kafka_topology(
    topic: &str,
    group: &str,
    dir: &std::path::Path,
) -> feedstorm::config::TopologyConfig {
    let mut topology = super::file_topology(
        &dir.join("unused.jsonl"),
        false,
        feedstorm::config::FeedConfig::default(),
        dir,
    );
    topology.spouts = vec![feedstorm::config::SpoutConfig::Kafka(
        feedstorm::config::KafkaSpoutConfig {
            brokers: brokers(),
            topics: vec![topic.to_owned()],
            group_id: group.to_owned(),
            options: Default::default(),
        },
    )];
    topology
}

/// How many messages `topic`'s partitions `0..partitions` hold, from the
/// broker's watermarks (a plain rdkafka consumer). A producer's retry after
/// a lost acknowledgement can write a batch twice, so after a broker outage
/// this, not the lines produced, is what a consumer reads exactly once.
pub fn messages_in(topic: &str, partitions: i32) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (high - low) as u64
        })
        .sum()
}

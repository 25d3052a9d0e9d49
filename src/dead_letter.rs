//! The dead-letter destination: bad events, each with its source position and
//! the reason, so none is lost and each can be replayed. A JSONL file, or
//! (feature `kafka`) a Kafka topic with the position in headers. A bad event
//! is written before its epoch enters the dataflow, so it is durable before
//! its offset can be acked.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::Mutex;

use serde_json::json;

use crate::config::DeadLetterConfig;
use crate::error::Result;
use crate::spout::{BadEvent, Position};

/// The dead-letter destination shared by the workers of a process.
pub struct DeadLetters {
    destination: Destination,
}

enum Destination {
    File(Mutex<BufWriter<File>>, std::path::PathBuf),
    #[cfg(feature = "kafka")]
    Kafka {
        producer: crate::kafka::Producer,
        topic: String,
    },
}

/// The headers (or JSON fields) that say where a bad event came from.
pub fn source_headers(position: &Position) -> Vec<(&'static str, String)> {
    match position {
        Position::Line { file, line } => {
            vec![
                ("source_file", file.clone()),
                ("source_line", line.to_string()),
            ]
        }
        Position::Generated { index } => vec![("source_index", index.to_string())],
        Position::Kafka {
            topic,
            partition,
            offset,
        } => vec![
            ("source_topic", topic.clone()),
            ("source_partition", partition.to_string()),
            ("source_offset", offset.to_string()),
        ],
    }
}

impl DeadLetters {
    /// Opens the configured destination: appends to `path`, creating it and
    /// its directory, or produces to `topic`.
    pub fn open(config: &DeadLetterConfig) -> Result<DeadLetters> {
        if let Some(topic) = &config.topic {
            return Self::kafka(config, topic);
        }
        let path = &config.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(DeadLetters {
            destination: Destination::File(Mutex::new(BufWriter::new(file)), path.clone()),
        })
    }

    #[cfg(feature = "kafka")]
    fn kafka(config: &DeadLetterConfig, topic: &str) -> Result<DeadLetters> {
        let brokers = config
            .brokers
            .as_deref()
            .ok_or_else(|| crate::Error::Setting {
                setting: "dead_letter.brokers",
                message: "a dead-letter topic needs its brokers".into(),
            })?;
        Ok(DeadLetters {
            destination: Destination::Kafka {
                producer: crate::kafka::Producer::new(brokers, &Default::default())?,
                topic: topic.to_owned(),
            },
        })
    }

    #[cfg(not(feature = "kafka"))]
    fn kafka(_: &DeadLetterConfig, _: &str) -> Result<DeadLetters> {
        Err(crate::Error::needs_kafka(
            "dead_letter.topic",
            "a dead-letter topic",
        ))
    }

    /// Writes one bad event and waits until it is stored (retrying while a
    /// broker is unreachable), logging where it came from.
    pub fn write(&self, bad: &BadEvent) -> Result<()> {
        tracing::warn!(position = ?bad.position, error = %bad.error, "bad event sent to dead letters");
        match &self.destination {
            Destination::File(file, path) => {
                let line = json!({"position": bad.position, "error": bad.error.to_string(), "raw": bad.raw});
                let mut file = file.lock().expect("dead-letter lock");
                writeln!(file, "{line}")
                    .and_then(|()| file.flush())
                    .map_err(|source| crate::Error::DeadLetter {
                        path: path.clone(),
                        source,
                    })?;
            }
            #[cfg(feature = "kafka")]
            Destination::Kafka { producer, topic } => {
                use rdkafka::message::{Header, OwnedHeaders};
                let error = bad.error.to_string();
                let send = || {
                    let mut headers = OwnedHeaders::new();
                    for (key, value) in source_headers(&bad.position)
                        .iter()
                        .map(|(k, v)| (*k, v.as_str()))
                        .chain([("error", error.as_str())])
                    {
                        headers = headers.insert(Header {
                            key,
                            value: Some(value),
                        });
                    }
                    producer
                        .send(topic, None, bad.raw.as_bytes(), Some(headers))
                        .and_then(|()| producer.flush(std::time::Duration::from_secs(30)))
                };
                crate::retry::retry(
                    crate::retry::Backoff::default(),
                    send,
                    crate::Error::is_retryable,
                    |error| tracing::warn!(%error, "dead-letter topic not reachable; retrying"),
                )?;
            }
        }
        Ok(())
    }
}

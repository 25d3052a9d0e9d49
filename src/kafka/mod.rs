//! Everything Kafka (feature `kafka`, on by default), in one place: client
//! settings, the spout ([`spout::KafkaSpout`], a [`crate::spout::Spout`]),
//! and a producer that knows whether its messages were delivered, which
//! the dead-letter topic and `feedstorm produce` ([`produce`]) use.

pub mod produce;
pub mod spout;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;

use crate::error::{Error, Result};

/// librdkafka settings for `brokers`, plus `options` (which win).
pub fn client_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

/// Counts the deliveries librdkafka reports.
#[derive(Default)]
pub struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().expect("delivery lock") = Some(error.to_string());
            }
        }
    }
}

/// A producer that waits for room when librdkafka's queue is full and
/// counts what was delivered.
pub struct Producer {
    inner: BaseProducer<Deliveries>,
}

impl Producer {
    /// A producer for `brokers` (`acks=all`: a message counts as delivered
    /// once the broker stored it).
    pub fn new(brokers: &str, options: &BTreeMap<String, String>) -> Result<Producer> {
        let mut config = client_config(brokers, options);
        config.set("acks", "all");
        config.set("linger.ms", "5");
        let inner = config
            .create_with_context(Deliveries::default())
            .map_err(Error::from)?;
        Ok(Producer { inner })
    }

    /// Queues one message, waiting while the local queue is full.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.inner.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }

    /// Serves delivery reports without waiting.
    pub fn poll(&self) {
        self.inner.poll(Duration::ZERO);
    }

    /// Waits up to `timeout` until every queued message is delivered or
    /// failed; an error if any failed since the last flush or some are
    /// still queued.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let flushed = self.inner.flush(timeout);
        let failed = self.inner.context().failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let last = self.inner.context().last_error.lock().expect("lock").take();
            return Err(Error::Kafka(format!(
                "{failed} message(s) not delivered: {}",
                last.unwrap_or_default()
            )));
        }
        flushed.map_err(|e| Error::Kafka(format!("messages still queued after {timeout:?}: {e}")))
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.inner.context().delivered.load(Ordering::Relaxed)
    }
}

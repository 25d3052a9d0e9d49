//! Typed errors of the library. The binary wraps them in `anyhow` at its edge.

use std::path::PathBuf;

/// Why an event was rejected. A rejected event is counted, logged with its
/// source position and written to the dead-letter destination; it is never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message is larger than `max_event_bytes`.
    #[error("event of {len} bytes exceeds max_event_bytes ({max})")]
    Oversize {
        /// Size of the message in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The message is not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// The `type` field names no known event type.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// A field is missing, null where required, or of the wrong type or shape.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Errors of configuration loading and of running a topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration or topology file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A configuration or topology file is not valid.
    #[error("invalid {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, as the TOML parser says it.
        message: String,
    },
    /// A checkpoint could not be written or does not fit this topology.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A setting has a value out of its range.
    #[error("invalid setting `{setting}`: {message}")]
    Setting {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A spout could not read its source. Retryable for network sources.
    #[error("spout {spout}: {message}")]
    Spout {
        /// Which spout.
        spout: String,
        /// What happened.
        message: String,
    },
    /// The sink could not write. Retryable: the topology backs off and retries.
    #[error("sink: {0}")]
    Sink(String),
    /// Messages to Kafka were not delivered (what the producer said).
    #[error("kafka: {0}")]
    Kafka(String),
    /// A Kafka client call failed (broker down, topic missing, not allowed).
    #[cfg(feature = "kafka")]
    #[error("kafka: {0}")]
    KafkaClient(#[from] rdkafka::error::KafkaError),
    /// A Redis command failed (server down, slot moved, wrong password).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The dead-letter file cannot take a bad event (a full disk, say): the
    /// topology stops rather than lose it or ack past it.
    #[error("dead letters: cannot write {path}: {source}")]
    DeadLetter {
        /// The dead-letter file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// I/O failure (dead-letter file, listener).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// timely could not start its workers.
    #[error("timely: {0}")]
    Timely(String),
}

impl Error {
    /// The error for a part of a topology (`what`, set by `setting`) that
    /// needs the `kafka` cargo feature this binary was built without.
    #[cfg(not(feature = "kafka"))]
    pub(crate) fn needs_kafka(setting: &'static str, what: &str) -> Error {
        Error::Setting {
            setting,
            message: format!("{what} needs feedstorm built with `--features kafka`"),
        }
    }

    /// Whether retrying the failed operation may succeed (a server that is down
    /// may come back); configuration, authentication and permission errors
    /// are final.
    ///
    /// ```
    /// use feedstorm::Error;
    /// use redis::{ErrorKind, RedisError};
    ///
    /// let down = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    /// assert!(Error::Redis(down).is_retryable());
    /// let denied = RedisError::from((ErrorKind::AuthenticationFailed, "WRONGPASS"));
    /// assert!(!Error::Redis(denied).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Sink(_) | Error::Spout { .. } | Error::Kafka(_) => true,
            #[cfg(feature = "kafka")]
            Error::KafkaClient(error) => kafka_retryable(error),
            Error::Redis(error) => !matches!(
                error.kind(),
                redis::ErrorKind::AuthenticationFailed
                    | redis::ErrorKind::InvalidClientConfig
                    | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
            ),
            _ => false,
        }
    }
}

/// Whether a failed Kafka request may succeed if tried again (a broker that
/// is down may come back); authentication, authorization and client
/// configuration errors are final.
///
/// ```
/// use rdkafka::error::{KafkaError, RDKafkaErrorCode};
/// use feedstorm::error::kafka_retryable as retryable;
/// assert!(retryable(&KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure)));
/// assert!(!retryable(&KafkaError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed)));
/// assert!(!retryable(&KafkaError::MetadataFetch(RDKafkaErrorCode::SaslAuthenticationFailed)));
/// ```
#[cfg(feature = "kafka")]
pub fn kafka_retryable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
    if matches!(
        error,
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)
    ) {
        return false;
    }
    !matches!(
        error.rdkafka_error_code(),
        Some(
            Code::Authentication
                | Code::SaslAuthenticationFailed
                | Code::TopicAuthorizationFailed
                | Code::GroupAuthorizationFailed
                | Code::ClusterAuthorizationFailed
                | Code::InvalidConfig
        )
    )
}

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

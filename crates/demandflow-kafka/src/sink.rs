//! The sink: messages produced to a topic with idempotence on, each returned
//! ok only once its delivery report says the brokers have it.

use std::fmt;
use std::time::Duration;

use demandflow_messages::Message;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

/// Produces messages to a Kafka topic, one record per message.
///
/// The producer runs with `enable.idempotence=true` (which implies
/// `acks=all`): a record retried by librdkafka after a lost reply is written
/// once, and records of a partition keep their order.
///
/// Call [`write`](Self::write) from
/// [`MessageHandler::handle_batch`](demandflow_messages::MessageHandler::handle_batch)
/// and return what it returns: each message comes back ok only when its
/// delivery report arrived without error, so its source acknowledges it only
/// after the brokers have its record. A message whose delivery failed comes
/// back failed.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Why [`KafkaSink::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[error("kafka sink for {topic:?} could not start: {source}")]
pub struct ConnectSinkError {
    /// The topic the sink was for.
    pub topic: String,
    /// Why.
    #[source]
    pub source: KafkaError,
}

/// One record to produce: its key (if any) and value.
pub type Record = (Option<Vec<u8>>, Vec<u8>);

impl KafkaSink {
    /// Starts a producer for `topic` on `brokers` and checks that a broker
    /// answers (within 10 seconds). `settings` are extra librdkafka producer
    /// properties (`linger.ms`, `compression.type`, …); idempotence is always
    /// on.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConnectSinkError`] when librdkafka rejects the settings or no broker
    /// answers.
    pub async fn connect(
        brokers: &str,
        topic: impl Into<String>,
        settings: &[(&str, &str)],
    ) -> Result<KafkaSink, ConnectSinkError> {
        let topic = topic.into();
        let error = |source| ConnectSinkError {
            topic: topic.clone(),
            source,
        };
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (key, value) in settings {
            config.set(*key, *value);
        }
        config.set("enable.idempotence", "true");
        let producer: FutureProducer = config.create().map_err(error)?;
        let probe = producer.clone();
        tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(drop)
        })
        .await
        .expect("the metadata probe does not panic")
        .map_err(error)?;
        Ok(KafkaSink { producer, topic })
    }

    /// Produces one record per ok message (key and value from `record`) and
    /// returns the messages: ok once delivered, failed if the delivery
    /// failed. Messages that had failed already are returned untouched and
    /// not produced.
    pub async fn write<T, F>(&self, mut messages: Vec<Message<T>>, record: F) -> Vec<Message<T>>
    where
        F: Fn(&T) -> Record,
    {
        // Enqueue everything first, then wait for the reports: librdkafka
        // batches the records of one call into few produce requests.
        let mut reports: Vec<(usize, DeliveryFuture)> = Vec::new();
        let mut failures: Vec<(usize, KafkaError)> = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if !message.is_ok() {
                continue;
            }
            let (key, value) = record(&message.data);
            match self.enqueue(key.as_deref(), &value).await {
                Ok(report) => reports.push((i, report)),
                Err(e) => failures.push((i, e)),
            }
        }
        for (i, report) in reports {
            match report.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => failures.push((i, e)),
                Err(_) => failures.push((i, KafkaError::Canceled)),
            }
        }
        for (i, error) in failures {
            tracing::warn!(topic = %self.topic, %error, "kafka sink: delivery failed");
            messages[i].fail(format!("kafka delivery failed: {error}"));
        }
        messages
    }

    /// Hands one record to librdkafka, waiting while its queue is full.
    async fn enqueue(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<DeliveryFuture, KafkaError> {
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(report) => return Ok(report),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The queue drains as deliveries complete.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits up to `timeout` for every record handed to the producer to be
    /// delivered (or to fail).
    ///
    /// # Errors
    ///
    /// When some were still undelivered at the timeout.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

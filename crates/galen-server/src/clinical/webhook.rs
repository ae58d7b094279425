//! Alarm notifications to webhooks: each endpoint has its own bounded queue and worker, so a slow
//! or failing receiver never delays evaluation or another endpoint. Every request is signed with
//! HMAC-SHA256 over `"{timestamp}.{body}"`, retried with exponential back-off, and every attempt
//! is recorded in the store (endpoint name, status, error; never the secret or URL).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::tls::OutboundClient;
use bytes::Bytes;
use galen_clinical::{AlarmEvent, Priority};
use galen_model::Clock;
use galen_store::{DeliveryRecord, Store};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use sha2::Sha256;
use tokio::sync::mpsc;

/// Jobs waiting per endpoint before new notifications are counted as dropped.
const QUEUE: usize = 4096;
/// Longest wait for one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One webhook receiver.
#[derive(Clone)]
pub struct WebhookEndpoint {
    /// Name used in delivery records and metrics.
    pub name: String,
    /// `http://` or `https://` URL (HTTPS verified against [`crate::OutboundTls`]).
    pub url: String,
    /// HMAC key shared with the receiver.
    pub secret: String,
    /// Only transitions of alarms at or above this priority are sent.
    pub min_priority: Priority,
    /// Attempts before giving up (at least 1).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, at most 60 s.
    pub first_retry: Duration,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WebhookEndpoint")
            .field("name", &self.name)
            .field("min_priority", &self.min_priority)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// The signature header value for `body` sent at `timestamp` (Unix seconds):
/// `v1=` and the lower-case hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn sign_webhook(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v1=");
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

struct Job {
    event: String,
    body: Arc<str>,
}

struct Queue {
    min_priority: Priority,
    sender: mpsc::Sender<Job>,
}

/// Counters of webhook delivery.
#[derive(Debug, Default)]
pub(crate) struct WebhookMetrics {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

/// The webhook workers; cheap to clone.
#[derive(Clone)]
pub(crate) struct Webhooks {
    queues: Arc<Vec<Queue>>,
    pub(crate) metrics: Arc<WebhookMetrics>,
}

impl Webhooks {
    pub(crate) fn start(
        endpoints: Vec<WebhookEndpoint>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        client: OutboundClient,
    ) -> Webhooks {
        let metrics = Arc::new(WebhookMetrics::default());
        let queues = endpoints
            .into_iter()
            .map(|endpoint| {
                let (sender, receiver) = mpsc::channel(QUEUE);
                let min_priority = endpoint.min_priority;
                tokio::spawn(worker(
                    endpoint,
                    receiver,
                    client.clone(),
                    store.clone(),
                    clock.clone(),
                    metrics.clone(),
                ));
                Queue {
                    min_priority,
                    sender,
                }
            })
            .collect();
        Webhooks {
            queues: Arc::new(queues),
            metrics,
        }
    }

    /// Queues `json` for every endpoint that wants `event`'s priority. Never waits: a full
    /// queue counts the notification as dropped.
    pub(crate) fn notify(&self, event: &AlarmEvent, json: &str) {
        if self.queues.is_empty() {
            return;
        }
        let id = format!(
            "{}:{}:{}",
            event.alarm,
            event.transition.code(),
            event.time.micros()
        );
        let body: Arc<str> = Arc::from(json);
        for queue in self.queues.iter() {
            if event.priority < queue.min_priority {
                continue;
            }
            let job = Job {
                event: id.clone(),
                body: body.clone(),
            };
            if queue.sender.try_send(job).is_err() {
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(event = %id, "webhook queue full; notification dropped");
            }
        }
    }
}

async fn worker(
    endpoint: WebhookEndpoint,
    mut receiver: mpsc::Receiver<Job>,
    client: OutboundClient,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<WebhookMetrics>,
) {
    while let Some(job) = receiver.recv().await {
        let mut delay = endpoint.first_retry;
        for attempt in 1..=endpoint.max_attempts.max(1) {
            let (status, error) = deliver(&client, &endpoint, &job, clock.as_ref()).await;
            let delivered = status.is_some_and(|status| (200..300).contains(&status));
            let record = DeliveryRecord {
                id: 0,
                endpoint: endpoint.name.clone(),
                event: job.event.clone(),
                attempt,
                time: clock.now(),
                status,
                error,
                delivered,
            };
            if let Err(error) = store.record_delivery(record).await {
                tracing::warn!(%error, endpoint = %endpoint.name, "recording a webhook delivery failed");
            }
            if delivered {
                metrics.delivered.fetch_add(1, Ordering::Relaxed);
                break;
            }
            metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
            if attempt == endpoint.max_attempts.max(1) {
                metrics.abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(endpoint = %endpoint.name, event = %job.event, "webhook delivery abandoned after {attempt} attempts");
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }
}

async fn deliver(
    client: &OutboundClient,
    endpoint: &WebhookEndpoint,
    job: &Job,
    clock: &dyn Clock,
) -> (Option<u16>, Option<String>) {
    let timestamp = clock.now().micros().div_euclid(1_000_000);
    let body = Bytes::copy_from_slice(job.body.as_bytes());
    let signature = sign_webhook(endpoint.secret.as_bytes(), timestamp, &body);
    let request = hyper::Request::post(&endpoint.url)
        .header("content-type", "application/json")
        .header("galen-event", &job.event)
        .header("galen-timestamp", timestamp.to_string())
        .header("galen-signature", signature)
        .body(Full::new(body));
    let request = match request {
        Ok(request) => request,
        Err(error) => return (None, Some(format!("invalid request: {error}"))),
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
        Err(_) => (None, Some("timed out".into())),
        Ok(Err(error)) => (
            None,
            Some(format!(
                "connection failed: {}",
                crate::tls::error_chain(&error)
            )),
        ),
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            let error = (!response.status().is_success()).then(|| format!("HTTP {status}"));
            (Some(status), error)
        }
    }
}

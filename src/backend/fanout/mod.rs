//! Fan-out of `POST /notify/ID` to every backend instance through Redis
//! pub/sub.
//!
//! Each instance keeps two connections to Redis: one subscribed to
//! [`CHANNEL`] (one subscriber connection per instance, as the Socket.IO Redis
//! adapter keeps) and one multiplexed connection for `PUBLISH`. The instance
//! that receives the request delivers to its own sockets first, whether Redis
//! is up or not, then publishes; every instance delivers what arrives on the
//! channel to its own sockets, except what it published itself: the message
//! names the instance that published it ([`message`] has the format).
//!
//! ```text
//!   POST /notify/ID ──▶ local sockets of ID
//!          └─ PUBLISH albatross:notify ──▶ Redis ──▶ every subscriber
//!                                                      └─▶ its sockets of ID
//!                                                          (not the publisher's)
//! ```
//!
//! One task ([`run`]) owns the connections. When the subscription ends (Redis
//! closed it, a PING went unanswered, or a publish found the connection
//! broken) it logs that once, stops publishing (requests answer
//! `published: false` without waiting) and reconnects with a delay that starts
//! at [`FIRST_RETRY_DELAY`] and doubles up to [`MAX_RETRY_DELAY`]; once
//! subscribed again it logs that once. Pub/sub keeps nothing: what was
//! published while an instance was not subscribed never reaches it.

mod message;

pub(super) use message::Notification;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Msg, RedisError};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::registry::Registry;
use super::server::Backend;

/// The channel every instance publishes notifications to and subscribes to.
pub const CHANNEL: &str = "albatross:notify";

/// How long opening both connections and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request waits for Redis to confirm its `PUBLISH`.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the subscriber connection is checked with a PING, so that a
/// Redis that stops answering without closing the connection is noticed.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long the answer to that PING may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The pause before the first reconnection attempt; it doubles after each
/// failure.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The longest pause between two reconnection attempts. A connection that
/// stayed up at least this long starts the next outage at the first delay
/// again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3);

/// The Redis side of one backend instance.
pub(super) struct Fanout {
    client: Client,
    /// Names this instance in what it publishes. Random, so that two instances
    /// given the same backend id still tell their own messages apart.
    instance: String,
    /// Set while subscribed; what a request publishes with.
    link: Mutex<Option<Link>>,
}

#[derive(Clone)]
struct Link {
    publisher: MultiplexedConnection,
    /// Tells [`run`] that a publish found the connection broken.
    broken: mpsc::Sender<RedisError>,
}

/// Both connections of one session with Redis, subscribed.
struct Connections {
    publisher: MultiplexedConnection,
    subscriber: PubSubSink,
    messages: PubSubStream,
}

/// The Redis URL given to the backend cannot be used.
#[derive(Debug)]
pub struct InvalidRedisUrl(RedisError);

impl fmt::Display for InvalidRedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL itself is not repeated: it may carry a password.
        write!(f, "the Redis URL cannot be used: {}", self.0)
    }
}

impl std::error::Error for InvalidRedisUrl {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Why there is no session with Redis.
#[derive(Debug)]
enum Failure {
    Connect(RedisError),
    ConnectTimeout,
    Closed,
    Ping(RedisError),
    PingTimeout,
    Publish(RedisError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "{e}"),
            Failure::ConnectTimeout => {
                write!(
                    f,
                    "no connection and subscription within {CONNECT_TIMEOUT:?}"
                )
            }
            Failure::Closed => write!(f, "the subscriber connection was closed"),
            Failure::Ping(e) => write!(f, "PING failed: {e}"),
            Failure::PingTimeout => write!(f, "no answer to PING within {PING_TIMEOUT:?}"),
            Failure::Publish(e) => write!(f, "publishing failed: {e}"),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Connect(e) | Failure::Ping(e) | Failure::Publish(e) => Some(e),
            Failure::ConnectTimeout | Failure::Closed | Failure::PingTimeout => None,
        }
    }
}

impl Fanout {
    /// Check the URL; nothing connects until [`run`].
    pub(super) fn new(url: &str) -> Result<Fanout, InvalidRedisUrl> {
        let client = Client::open(url).map_err(InvalidRedisUrl)?;
        Ok(Fanout {
            client,
            instance: format!("{:016x}", rand::random::<u64>()),
            link: Mutex::new(None),
        })
    }

    /// The id this instance publishes under.
    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether the instance is subscribed and can publish.
    pub(super) fn is_connected(&self) -> bool {
        self.link().is_some()
    }

    fn link(&self) -> MutexGuard<'_, Option<Link>> {
        // Every change is a single assignment: the value stays consistent
        // even if a holder panicked.
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publish `notification` to the other instances; whether Redis confirmed
    /// it. Returns at once while Redis is down, and within
    /// [`PUBLISH_TIMEOUT`] otherwise (an unconfirmed message may still
    /// arrive).
    pub(super) async fn publish(&self, notification: &Notification) -> bool {
        let Some(mut link) = self.link().clone() else {
            return false;
        };
        let mut command = redis::cmd("PUBLISH");
        command.arg(CHANNEL).arg(notification.payload());
        match timeout(
            PUBLISH_TIMEOUT,
            command.query_async::<u64>(&mut link.publisher),
        )
        .await
        {
            Ok(Ok(_subscribers)) => true,
            Ok(Err(e)) => {
                debug!("Publishing a notification to Redis failed: {e}.");
                if e.is_unrecoverable_error() {
                    // One report is enough: later ones find the queue full.
                    let _ = link.broken.try_send(e);
                }
                false
            }
            Err(_) => {
                debug!("Redis did not confirm a notification within {PUBLISH_TIMEOUT:?}.");
                false
            }
        }
    }

    /// Open the publisher connection and the subscriber connection, and
    /// subscribe.
    async fn connect(&self) -> Result<Connections, Failure> {
        let connecting = async {
            // The timeouts are applied here, and to each publish and PING.
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(None)
                .set_response_timeout(None);
            let publisher = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let (mut subscriber, messages) = self.client.get_async_pubsub().await?.split();
            subscriber.subscribe(CHANNEL).await?;
            Ok(Connections {
                publisher,
                subscriber,
                messages,
            })
        };
        match timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(connected) => connected.map_err(Failure::Connect),
            Err(_) => Err(Failure::ConnectTimeout),
        }
    }

    /// Publish through `connections` and deliver what arrives on them until
    /// the session fails (`Some`) or `cancel` fires (`None`).
    async fn relay(
        &self,
        connections: Connections,
        registry: &Registry,
        cancel: &CancellationToken,
    ) -> Option<Failure> {
        let Connections {
            publisher,
            mut subscriber,
            mut messages,
        } = connections;
        let (broken, mut publish_failures) = mpsc::channel(1);
        *self.link() = Some(Link { publisher, broken });
        let mut pings = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let failure = loop {
            tokio::select! {
                _ = cancel.cancelled() => break None,
                message = messages.next() => match message {
                    Some(message) => self.deliver(&message, registry),
                    None => break Some(Failure::Closed),
                },
                Some(e) = publish_failures.recv() => break Some(Failure::Publish(e)),
                _ = pings.tick() => {
                    let ping = timeout(PING_TIMEOUT, subscriber.ping::<()>());
                    let answer = tokio::select! {
                        _ = cancel.cancelled() => break None,
                        answer = ping => answer,
                    };
                    match answer {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break Some(Failure::Ping(e)),
                        Err(_) => break Some(Failure::PingTimeout),
                    }
                }
            }
        };
        *self.link() = None;
        failure
    }

    /// Deliver one message from the channel to this instance's sockets.
    fn deliver(&self, message: &Msg, registry: &Registry) {
        let received = match message::decode(message.get_payload_bytes()) {
            Ok(received) => received,
            Err(e) => {
                debug!("A message on {CHANNEL} was ignored: {e}.");
                return;
            }
        };
        if received.origin == self.instance {
            // Delivered here when it was published.
            return;
        }
        let user = &received.user;
        let delivered = registry.deliver_copy(user, received.message);
        if delivered > 0 {
            info!(
                "Notification for user {user} from instance {} delivered to {delivered} socket(s).",
                received.origin
            );
        }
    }
}

/// Keep the backend subscribed to Redis until its token is cancelled: connect,
/// relay, and after a failure reconnect with backoff. Logs one line when Redis
/// goes away and one when it is back.
pub(super) async fn run(backend: Arc<Backend>) {
    let Some(fanout) = &backend.fanout else {
        return;
    };
    let cancel = &backend.cancel;
    let mut retry_delay = FIRST_RETRY_DELAY;
    let mut connected_once = false;
    // Whether the current outage has been logged (each ends in a session).
    let mut outage_logged = false;
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            connected = fanout.connect() => connected,
        };
        match connected {
            Ok(connections) => {
                if connected_once {
                    info!("Reconnected to Redis: notifications reach the other instances again.");
                } else {
                    info!(
                        "Connected to Redis: notifications fan out on channel {CHANNEL} as instance {}.",
                        fanout.instance
                    );
                }
                connected_once = true;
                let up_since = Instant::now();
                let Some(failure) = fanout.relay(connections, &backend.registry, cancel).await
                else {
                    return;
                };
                warn!(
                    "Lost the connection to Redis ({failure}); notifications reach only this instance's sockets until it is back."
                );
                outage_logged = true;
                if up_since.elapsed() >= MAX_RETRY_DELAY {
                    retry_delay = FIRST_RETRY_DELAY;
                }
            }
            Err(failure) if outage_logged => {
                debug!(
                    "Reconnecting to Redis failed ({failure}); next attempt in {retry_delay:?}."
                );
            }
            Err(failure) => {
                warn!(
                    "Cannot connect to Redis ({failure}); notifications reach only this instance's sockets until it is reachable."
                );
                outage_logged = true;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep(retry_delay) => {}
        }
        retry_delay = next_retry_delay(retry_delay);
    }
}

/// The pause after `delay` when the attempt that followed it failed too.
fn next_retry_delay(delay: Duration) -> Duration {
    (delay * 2).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_up_to_the_cap() {
        let mut delay = FIRST_RETRY_DELAY;
        let mut delays = vec![delay];
        for _ in 0..7 {
            delay = next_retry_delay(delay);
            delays.push(delay);
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
    }

    #[test]
    fn a_url_that_is_not_redis_is_refused_without_echoing_it() {
        let error = Fanout::new("redis://:secret@").err().unwrap();
        assert!(!error.to_string().contains("secret"), "{error}");
        assert!(Fanout::new("redis://127.0.0.1:6379/0").is_ok());
    }

    #[test]
    fn instances_get_distinct_ids() {
        let a = Fanout::new("redis://127.0.0.1").unwrap();
        let b = Fanout::new("redis://127.0.0.1").unwrap();
        assert_ne!(a.instance(), b.instance());
        assert!(!a.is_connected());
    }
}

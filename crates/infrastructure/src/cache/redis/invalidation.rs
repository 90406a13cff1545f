//! Cross-node invalidation over pub/sub: the messages on [`INVALIDATION_CHANNEL`] that a
//! delete or a namespace invalidation sends, and the task that applies other nodes'
//! messages and follows the connections (see the messages' format in the parent module).

use std::sync::Arc;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike as _, KeysInterface as _, PubsubInterface as _};
use fred::types::Message;
use fred::types::config::Server;
use sba_application::ports::CacheKey;
use sba_domain::TenantId;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::{CONNECT_TIMEOUT, Inner};
use crate::cache::keys::{entry_key, version_key, versioned_key};
use crate::observe::Operation;

/// The pub/sub channel of invalidation messages.
pub const INVALIDATION_CHANNEL: &str = "sba:c:invalidate";

static DELETE: Operation = Operation::redis("cache.delete");
static INVALIDATE: Operation = Operation::redis("cache.invalidate");
static ANNOUNCE: Operation = Operation::redis("cache.announce");

impl Inner {
    /// `DEL` of the entry and the message that removes it from other nodes' L1, in one round
    /// trip.
    pub(super) async fn delete_in_redis(self: &Arc<Self>, key: &CacheKey, version: u64) -> bool {
        let message = format!("k|{}|{}|{version}|{}", key.tenant, key.namespace, key.key);
        let pipeline = self.client.pipeline();
        let command = async {
            pipeline.del::<(), _>(entry_key(key, version)).await?;
            pipeline.publish::<(), _, _>(INVALIDATION_CHANNEL, message).await?;
            pipeline.all::<()>().await
        };
        self.redis(&DELETE, command).await.is_some()
    }

    /// `INCR` of the namespace's version, then the message that moves every node to it.
    pub(super) async fn invalidate_in_redis(
        self: &Arc<Self>,
        tenant: TenantId,
        namespace: &'static str,
    ) -> bool {
        let Some(version) =
            self.redis(&INVALIDATE, self.client.incr::<u64, _>(version_key(tenant, namespace))).await
        else {
            return false;
        };
        if !self.versions.advance(tenant, namespace, version) {
            self.versions.confirm(tenant, namespace, version);
        }
        let message = format!("n|{tenant}|{namespace}|{version}");
        self.redis(&ANNOUNCE, self.client.publish::<(), _, _>(INVALIDATION_CHANNEL, message)).await.is_some()
    }

    /// Forgets what may have been invalidated without this node hearing of it.
    fn forget(&self, reason: &str) {
        tracing::debug!(reason, "cache: dropping L1 and namespace versions");
        self.versions.clear();
        self.l1.clear();
    }

    fn receive(&self, message: &Message) {
        if let Some(Ok(text)) = message.value.as_bytes().map(std::str::from_utf8) {
            self.apply(text);
        } else {
            tracing::debug!("cache: ignoring a non-text invalidation message");
        }
    }

    fn apply(&self, message: &str) {
        match Invalidation::parse(message) {
            Some(Invalidation::Namespace { tenant, namespace, version }) => {
                self.versions.advance(tenant, namespace, version);
            }
            Some(Invalidation::Key { tenant, namespace, version, key }) => {
                self.l1.remove(&versioned_key(tenant, namespace, version, key));
                if let Some(own) = self.versions.local(tenant, namespace)
                    && own != version
                {
                    self.l1.remove(&versioned_key(tenant, namespace, own, key));
                }
            }
            None => tracing::debug!(
                message = message.chars().take(200).collect::<String>(),
                "cache: ignoring a malformed invalidation message"
            ),
        }
    }
}

/// The streams the watcher follows.
pub(super) struct Events {
    pub(super) messages: Receiver<Message>,
    pub(super) subscriber_up: Receiver<Server>,
    pub(super) client_up: Receiver<Server>,
}

/// Applies invalidation messages; on every (re)connection, subscribes again (fred's
/// `manage_subscriptions` would too, but the node must forget after the subscription is
/// back, not before, or it could miss a message in between), forgets, and replays what
/// was kept.
pub(super) async fn watch(inner: Arc<Inner>, subscriber: SubscriberClient, mut events: Events) {
    loop {
        tokio::select! {
            message = events.messages.recv() => match message {
                Ok(message) if message.channel == INVALIDATION_CHANNEL => inner.receive(&message),
                Ok(_other_channel) => {}
                Err(RecvError::Lagged(_)) => inner.forget("invalidation messages were dropped"),
                Err(RecvError::Closed) => return,
            },
            up = events.subscriber_up.recv() => {
                if matches!(up, Err(RecvError::Closed)) {
                    return;
                }
                subscribe(&subscriber).await;
                inner.forget("the subscriber reconnected");
            },
            up = events.client_up.recv() => {
                if matches!(up, Err(RecvError::Closed)) {
                    return;
                }
                inner.forget("the client reconnected");
                tokio::spawn(Arc::clone(&inner).replay());
            },
        }
    }
}

/// Subscribes to the invalidation channel, retrying every second while the connection is
/// up (the first failure is a warning, later ones are debug lines).
async fn subscribe(subscriber: &SubscriberClient) {
    let mut failures = 0_u32;
    while subscriber.is_connected() {
        let error =
            match tokio::time::timeout(CONNECT_TIMEOUT, subscriber.subscribe(INVALIDATION_CHANNEL)).await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error.to_string(),
                Err(_elapsed) => "no answer in time".to_owned(),
            };
        failures += 1;
        if failures == 1 {
            tracing::warn!(error, "cache: cannot subscribe to invalidations; retrying every second");
        } else {
            tracing::debug!(error, failures, "cache: cannot subscribe to invalidations yet");
        }
        tokio::time::sleep(CONNECT_TIMEOUT).await;
    }
}

/// A message on [`INVALIDATION_CHANNEL`].
#[derive(Debug, PartialEq, Eq)]
enum Invalidation<'a> {
    Namespace { tenant: TenantId, namespace: &'a str, version: u64 },
    Key { tenant: TenantId, namespace: &'a str, version: u64, key: &'a str },
}

impl<'a> Invalidation<'a> {
    fn parse(message: &'a str) -> Option<Self> {
        let mut parts = message.splitn(5, '|');
        let kind = parts.next()?;
        let tenant = parts.next()?.parse().ok()?;
        let namespace = parts.next()?;
        let version = parts.next()?.parse().ok()?;
        match (kind, parts.next()) {
            ("n", None) => Some(Self::Namespace { tenant, namespace, version }),
            ("k", Some(key)) => Some(Self::Key { tenant, namespace, version, key }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn invalidation_messages_are_parsed_defensively() {
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        assert_eq!(
            Invalidation::parse(&format!("n|{tenant}|run|7")),
            Some(Invalidation::Namespace { tenant, namespace: "run", version: 7 })
        );
        assert_eq!(
            Invalidation::parse(&format!("k|{tenant}|run|7|a|b")),
            Some(Invalidation::Key { tenant, namespace: "run", version: 7, key: "a|b" })
        );
        for bad in [
            String::new(),
            "n".to_owned(),
            format!("n|{tenant}|run"),
            format!("n|{tenant}|run|x"),
            format!("n|{tenant}|run|7|extra"),
            format!("k|{tenant}|run|7"),
            "n|not-a-tenant|run|7".to_owned(),
            format!("x|{tenant}|run|7"),
        ] {
            assert_eq!(Invalidation::parse(&bad), None, "{bad}");
        }
    }
}

//! [`Idempotency`]: `Idempotency-Key` handling for mutations. A retry with the same key and
//! body replays the original response; the same key with another body is a conflict.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::Duration;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::RequestContext;
use crate::ports::{Clock, IdempotencyStore, RepositoryError, Reservation, StoredResponse};

/// How long a key is remembered.
pub const KEY_TTL: Duration = Duration::hours(24);

/// A client-chosen idempotency key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// A header value that is not a valid key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct InvalidKey;

impl IdempotencyKey {
    /// # Errors
    /// [`InvalidKey`] for an empty, overlong or non-visible-ASCII value.
    pub fn parse(value: &str) -> Result<Self, InvalidKey> {
        let ok = (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        if ok { Ok(Self(value.to_owned())) } else { Err(InvalidKey) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time: handle the request, then [`Idempotency::finish`] or [`Idempotency::abandon`].
    Proceed,
    /// Seen and completed with the same body: answer with this response.
    Replay(StoredResponse),
    /// The key was used with another body (or for another operation).
    Conflict,
    /// The same request is still being handled.
    InProgress,
}

/// Idempotency for the caller's tenant and user.
#[derive(Clone, Debug)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    clock: Arc<dyn Clock>,
}

/// The fingerprint of a request: the operation and its body, with object keys sorted so
/// that key order does not matter.
pub fn request_hash(operation: &str, body: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(body, &mut canonical);
    let digest =
        Sha256::new().chain_update(operation.as_bytes()).chain_update([0]).chain_update(canonical).finalize();
    digest.iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

impl Idempotency {
    pub fn new(store: Arc<dyn IdempotencyStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Reserves `key` for this request, or says how to answer instead.
    ///
    /// # Errors
    /// When the store fails (the request should then fail, not run unprotected).
    pub async fn begin(
        &self,
        ctx: &RequestContext,
        key: &IdempotencyKey,
        hash: &str,
    ) -> Result<Begin, RepositoryError> {
        let now = self.clock.now();
        let p = &ctx.principal;
        let reservation =
            self.store.reserve(p.tenant_id, &p.user_id, key.as_str(), hash, now, now + KEY_TTL).await?;
        Ok(match reservation {
            Reservation::Reserved => Begin::Proceed,
            Reservation::Completed { request_hash, response } if request_hash == hash => {
                Begin::Replay(response)
            }
            Reservation::InProgress { request_hash } if request_hash == hash => Begin::InProgress,
            Reservation::Completed { .. } | Reservation::InProgress { .. } => Begin::Conflict,
        })
    }

    /// Stores the response of a request that began with [`Begin::Proceed`].
    ///
    /// # Errors
    /// When the store fails; the mutation itself already happened.
    pub async fn finish(
        &self,
        ctx: &RequestContext,
        key: &IdempotencyKey,
        response: StoredResponse,
    ) -> Result<(), RepositoryError> {
        self.store.complete(ctx.principal.tenant_id, &ctx.principal.user_id, key.as_str(), &response).await
    }

    /// Frees the key of a request that failed, so a retry can run. Failures are logged: the
    /// reservation then expires with the key.
    pub async fn abandon(&self, ctx: &RequestContext, key: &IdempotencyKey) {
        if let Err(error) =
            self.store.release(ctx.principal.tenant_id, &ctx.principal.user_id, key.as_str()).await
        {
            tracing::warn!(error = format!("{error:#}"), "releasing an idempotency key failed");
        }
    }

    /// Deletes expired keys; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn purge_expired(&self) -> Result<u64, RepositoryError> {
        self.store.purge_expired(self.clock.now()).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use sba_domain::TenantId;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockClock, MockIdempotencyStore};
    use crate::testing::logs_of;

    #[test]
    fn hashes_ignore_key_order_but_not_values_or_operation() {
        let a = request_hash(
            "POST /v1/runs",
            &json!({"agent": "x", "input": {"b": 1, "a": [1, {"z": 0, "y": 1}]}}),
        );
        let b = request_hash(
            "POST /v1/runs",
            &json!({"input": {"a": [1, {"y": 1, "z": 0}], "b": 1}, "agent": "x"}),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, request_hash("POST /v1/runs", &json!({"agent": "x", "input": {"b": 2, "a": [1]}})));
        assert_ne!(
            a,
            request_hash(
                "POST /v1/other",
                &json!({"agent": "x", "input": {"b": 1, "a": [1, {"z": 0, "y": 1}]}})
            )
        );
    }

    /// Keys live for a day: a hash stored before an upgrade must still match the same
    /// request after it, so the form hashed is fixed: the operation, a NUL byte, and the
    /// body as compact JSON with every object's keys sorted.
    #[test]
    fn the_hash_is_of_the_operation_and_the_compact_body_with_sorted_keys() {
        let body = json!({"b": [1, 23, {"d": null, "c": "x"}, []], "a": {}});
        let canonical = r#"{"a":{},"b":[1,23,{"c":"x","d":null},[]]}"#;
        let digest =
            Sha256::new().chain_update("POST /v1/runs").chain_update([0]).chain_update(canonical).finalize();
        let expected = digest.iter().fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        });
        assert_eq!(request_hash("POST /v1/runs", &body), expected);
        assert_ne!(
            request_hash("POST /v1/runs", &json!({"n": [12, 3]})),
            request_hash("POST /v1/runs", &json!({"n": [1, 23]})),
            "items stay apart"
        );
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255_characters() {
        assert!(IdempotencyKey::parse("order-42_retry.1").is_ok());
        for bad in ["", "with space", "tab\t", "ü", &"k".repeat(256)] {
            assert_eq!(IdempotencyKey::parse(bad), Err(InvalidKey), "{bad}");
        }
    }

    // User `u` (authenticated) of tenant 1.
    use crate::testing::user_context as ctx;

    #[tokio::test]
    async fn a_completed_key_replays_for_the_same_body_and_conflicts_for_another() {
        let mut store = MockIdempotencyStore::new();
        store.expect_reserve().returning(|_, _, _, _, now, expires| {
            assert_eq!(expires - now, KEY_TTL);
            Ok(Reservation::Completed {
                request_hash: "h1".into(),
                response: StoredResponse { status: 201, body: json!({"id": 1}) },
            })
        });
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| Utc.timestamp_opt(1_800_000_000, 0).unwrap());
        let idempotency = Idempotency::new(Arc::new(store), Arc::new(clock));
        let key = IdempotencyKey::parse("k").unwrap();
        let replay = idempotency.begin(&ctx(), &key, "h1").await.unwrap();
        assert_eq!(replay, Begin::Replay(StoredResponse { status: 201, body: json!({"id": 1}) }));
        assert_eq!(idempotency.begin(&ctx(), &key, "h2").await.unwrap(), Begin::Conflict);
    }

    fn idempotency(store: MockIdempotencyStore) -> Idempotency {
        Idempotency::new(Arc::new(store), Arc::new(crate::testing::TestClock::at(1_800_000_000_000)))
    }

    fn outage() -> RepositoryError {
        RepositoryError::Unexpected(anyhow::anyhow!("connection lost"))
    }

    fn key() -> IdempotencyKey {
        IdempotencyKey::parse("k").unwrap()
    }

    #[tokio::test]
    async fn a_store_outage_while_reserving_is_an_error_so_the_request_does_not_run_unprotected() {
        let mut store = MockIdempotencyStore::new();
        store.expect_reserve().times(1).returning(|_, _, _, _, _, _| Err(outage()));
        let begun = idempotency(store).begin(&ctx(), &key(), "h1").await;
        assert!(matches!(begun, Err(RepositoryError::Unexpected(_))), "{begun:?}");
    }

    #[tokio::test]
    async fn a_free_key_proceeds_and_one_in_progress_waits_for_the_same_body_and_conflicts_for_another() {
        let mut store = MockIdempotencyStore::new();
        let mut calls = 0;
        store.expect_reserve().times(3).returning(move |_, _, _, _, _, _| {
            calls += 1;
            Ok(if calls == 1 {
                Reservation::Reserved
            } else {
                Reservation::InProgress { request_hash: "h1".into() }
            })
        });
        let idempotency = idempotency(store);
        assert_eq!(idempotency.begin(&ctx(), &key(), "h1").await.unwrap(), Begin::Proceed);
        assert_eq!(idempotency.begin(&ctx(), &key(), "h1").await.unwrap(), Begin::InProgress);
        assert_eq!(idempotency.begin(&ctx(), &key(), "h2").await.unwrap(), Begin::Conflict);
    }

    #[tokio::test]
    async fn finishing_reports_a_vanished_reservation_as_not_found_and_an_outage_as_unexpected() {
        let failures: [fn() -> RepositoryError; 2] = [|| RepositoryError::NotFound, outage];
        for failure in failures {
            let mut store = MockIdempotencyStore::new();
            store
                .expect_complete()
                .withf(|tenant, user, key, response| {
                    *tenant == TenantId::from_uuid(Uuid::from_u128(1))
                        && user.as_str() == "u"
                        && key == "k"
                        && response.status == 201
                })
                .times(1)
                .returning(move |_, _, _, _| Err(failure()));
            let response = StoredResponse { status: 201, body: json!({}) };
            let finished = idempotency(store).finish(&ctx(), &key(), response).await;
            let expected = failure();
            assert_eq!(
                std::mem::discriminant(&finished.unwrap_err()),
                std::mem::discriminant(&expected),
                "{expected:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_key_that_cannot_be_released_is_logged_with_its_cause_not_raised() {
        let mut store = MockIdempotencyStore::new();
        store
            .expect_release()
            .withf(|_, user, key| user.as_str() == "u" && key == "k")
            .times(1)
            .returning(|_, _, _| Err(outage()));
        let logs = logs_of(idempotency(store).abandon(&ctx(), &key())).await;
        assert!(
            logs.contains("releasing an idempotency key failed") && logs.contains("connection lost"),
            "{logs}"
        );
    }

    #[tokio::test]
    async fn a_store_outage_while_purging_expired_keys_is_an_error() {
        let mut store = MockIdempotencyStore::new();
        store
            .expect_purge_expired()
            .withf(|now| *now == Utc.timestamp_millis_opt(1_800_000_000_000).unwrap())
            .times(1)
            .returning(|_| Err(outage()));
        let purged = idempotency(store).purge_expired().await;
        assert!(matches!(purged, Err(RepositoryError::Unexpected(_))), "{purged:?}");
    }
}

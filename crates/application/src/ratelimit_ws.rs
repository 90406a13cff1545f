//! WebSocket operation limits: each client operation (`subscribe`, `unsubscribe`, `ping`,
//! `auth`) is decided per `ws:tenant:user:ip:event` ([`WsLimitKey`]) by the same
//! [`RateLimits`] as HTTP. A
//! refused operation is answered with an error frame and the connection stays open; a
//! client that keeps sending after that many refusals in a row is closed with 1008. The
//! gateway holds one [`WsConnectionLimiter`] per connection and only calls
//! [`WsConnectionLimiter::check`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use sba_domain::ratelimit::{Decision, Quota, WsLimitKey};
use sba_domain::{TenantId, UserId};

use crate::ratelimit::{RateLimits, Verdict};

/// A client operation of the WebSocket protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WsOp {
    Subscribe,
    Unsubscribe,
    Ping,
    Auth,
}

impl WsOp {
    pub const ALL: [Self; 4] = [Self::Subscribe, Self::Unsubscribe, Self::Ping, Self::Auth];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Ping => "ping",
            Self::Auth => "auth",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// Quotas per operation, and when a flooding client is closed.
#[derive(Debug, Clone)]
pub struct WsPolicies {
    pub quotas: HashMap<WsOp, Quota>,
    /// Refusals in a row after which the connection is closed with 1008.
    pub close_after_refusals: u32,
}

/// What the gateway does with one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsVerdict {
    Allowed,
    /// Answer `{"type":"error","id":<op id>,"code":"rate_limited","retry_after_ms":...}`.
    Refused {
        retry_after_ms: u64,
    },
    /// Close the connection with 1008 (policy violation).
    Close,
}

/// The limiter of one WebSocket connection.
#[derive(Debug)]
pub struct WsConnectionLimiter {
    limits: RateLimits,
    policies: Arc<WsPolicies>,
    tenant: TenantId,
    user: UserId,
    /// The client's address (behind trusted proxies, as delivery works it out for HTTP);
    /// `None` when unknown.
    ip: Option<IpAddr>,
    refusals_in_a_row: u32,
}

impl WsConnectionLimiter {
    pub fn new(
        limits: RateLimits,
        policies: Arc<WsPolicies>,
        tenant: TenantId,
        user: UserId,
        ip: Option<IpAddr>,
    ) -> Self {
        Self { limits, policies, tenant, user, ip, refusals_in_a_row: 0 }
    }

    /// Decides one operation.
    pub async fn check(&mut self, op: WsOp) -> WsVerdict {
        let Some(quota) = self.policies.quotas.get(&op).copied() else {
            return WsVerdict::Allowed;
        };
        let key = WsLimitKey { tenant: self.tenant, user: &self.user, ip: self.ip, op: op.as_str() };
        let policy = format!("ws-{}", op.as_str());
        let retry_after_us = match self.limits.check(key.into(), &policy, quota, 1).await {
            Verdict::Decided(Decision::Allowed { .. }) => {
                self.refusals_in_a_row = 0;
                return WsVerdict::Allowed;
            }
            Verdict::Decided(Decision::Denied { retry_after_us, .. }) => retry_after_us,
            Verdict::Unavailable => 1_000_000,
        };
        self.refusals_in_a_row += 1;
        if self.refusals_in_a_row >= self.policies.close_after_refusals {
            tracing::info!(
                tenant = %self.tenant,
                user = %self.user,
                op = op.as_str(),
                "closing a flooding WebSocket client"
            );
            return WsVerdict::Close;
        }
        WsVerdict::Refused { retry_after_ms: retry_after_us.div_ceil(1000).max(1) }
    }
}

#[cfg(test)]
mod tests {
    use mockall::predicate::{always, eq};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockRateLimiter, RateLimitError};
    use crate::ratelimit::FailMode;

    fn policies() -> Arc<WsPolicies> {
        Arc::new(WsPolicies {
            quotas: HashMap::from([(WsOp::Subscribe, Quota::new(2, 60).unwrap())]),
            close_after_refusals: 3,
        })
    }

    fn tenant() -> TenantId {
        TenantId::from_uuid(Uuid::parse_str("6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11").unwrap())
    }

    fn connection(limiter: MockRateLimiter, user: &str, ip: &str) -> WsConnectionLimiter {
        WsConnectionLimiter::new(
            limits(limiter),
            policies(),
            tenant(),
            UserId::parse(user).unwrap(),
            ip.parse().ok(),
        )
    }

    fn limits(limiter: MockRateLimiter) -> RateLimits {
        let limiter = Arc::new(limiter);
        RateLimits::new(limiter.clone(), limiter, FailMode::Open)
    }

    #[tokio::test]
    async fn operations_are_keyed_by_tenant_user_ip_and_event() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .with(eq("ws:6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11:alice:10.0.0.1:subscribe"), always(), eq(1))
            .times(1)
            .returning(|_, _, _| Ok(Decision::Allowed { remaining: 1, reset_us: 30_000_000 }));
        let mut ws = connection(limiter, "alice", "10.0.0.1");
        assert_eq!(ws.check(WsOp::Subscribe).await, WsVerdict::Allowed);
        assert_eq!(ws.check(WsOp::Ping).await, WsVerdict::Allowed, "no quota configured for ping");
    }

    #[tokio::test]
    async fn refusals_keep_the_connection_until_the_client_keeps_flooding() {
        let mut limiter = MockRateLimiter::new();
        let mut calls = 0;
        limiter.expect_check().returning(move |_, _, _| {
            calls += 1;
            // Distinct retry times so the local memory of denied keys does not answer.
            Ok(Decision::Denied { retry_after_us: 1, reset_us: 1 + calls })
        });
        let mut ws = connection(limiter, "u", "unknown");
        assert_eq!(ws.check(WsOp::Subscribe).await, WsVerdict::Refused { retry_after_ms: 1 });
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        assert_eq!(ws.check(WsOp::Subscribe).await, WsVerdict::Refused { retry_after_ms: 1 });
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        assert_eq!(ws.check(WsOp::Subscribe).await, WsVerdict::Close);
    }

    #[tokio::test]
    async fn an_unavailable_limiter_refuses_for_a_second_and_a_client_that_keeps_on_is_closed() {
        // The first operation asks Redis and then the fallback (one mock here), the next
        // ones the fallback only while the breaker is open.
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_check()
            .times(4)
            .returning(|_, _, _| Err(RateLimitError::Unavailable(anyhow::anyhow!("connection refused"))));
        let mut ws = connection(limiter, "u", "10.0.0.1");
        assert_eq!(ws.check(WsOp::Subscribe).await, WsVerdict::Refused { retry_after_ms: 1_000 });
        assert_eq!(ws.check(WsOp::Subscribe).await, WsVerdict::Refused { retry_after_ms: 1_000 });
        assert_eq!(ws.check(WsOp::Subscribe).await, WsVerdict::Close);
    }

    #[tokio::test]
    async fn refusals_while_the_limiter_is_unavailable_start_over_after_an_allowed_operation() {
        let mut limiter = MockRateLimiter::new();
        let mut calls = 0;
        // Redis and the fallback (one mock here) for the first operation, then the fallback
        // only: its fourth answer is the third operation's.
        limiter.expect_check().times(6).returning(move |_, _, _| {
            calls += 1;
            if calls == 4 {
                Ok(Decision::Allowed { remaining: 1, reset_us: 30_000_000 })
            } else {
                Err(RateLimitError::Unavailable(anyhow::anyhow!("connection refused")))
            }
        });
        let mut ws = connection(limiter, "u", "10.0.0.1");
        let verdicts = [
            ws.check(WsOp::Subscribe).await,
            ws.check(WsOp::Subscribe).await,
            ws.check(WsOp::Subscribe).await,
            ws.check(WsOp::Subscribe).await,
            ws.check(WsOp::Subscribe).await,
        ];
        let refused = WsVerdict::Refused { retry_after_ms: 1_000 };
        assert_eq!(verdicts, [refused, refused, WsVerdict::Allowed, refused, refused]);
    }

    #[test]
    fn operation_names_round_trip() {
        for op in WsOp::ALL {
            assert_eq!(WsOp::parse(op.as_str()), Some(op));
        }
        assert_eq!(WsOp::parse("publish"), None);
    }
}

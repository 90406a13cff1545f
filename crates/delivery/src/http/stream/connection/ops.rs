//! The client's ops, answered one at a time: each is charged to its rate limit, then done.
//! The parts that wait for a store (the rate limit in Redis, a subscription's authorisation
//! and its bus registration, a refreshed token's verification and its tenant's admission)
//! run as the connection's [`PendingOp`], an owned future polled beside the connection's
//! other work; what they find is then applied to the connection at once.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use sba_application::context::AccessToken;
use sba_application::ports::{Subscription, TokenError};
use sba_application::ratelimit_ws::{WsConnectionLimiter, WsOp, WsVerdict};
use sba_application::stream::authorize::SubscribeError;
use sba_application::stream::protocol::{
    ClientOp, ErrorCode, ErrorFrame, OpId, OpParseError, StreamChannel, ack_frame, pong_frame,
};
use sba_application::stream::subscription::SubscriptionFeed;
use tracing::Instrument as _;

use super::{Connection, Ending, error, error_frame};
use crate::http::stream::metrics::CloseCause;

/// How long a store may be retried after, in an `unavailable` answer.
const UNAVAILABLE_RETRY_MS: u64 = 1000;

/// What the client asked for.
pub enum Request {
    Op(Result<ClientOp, OpParseError>),
    /// A binary frame: answered `bad_request`, charged as a `ping`.
    Binary,
}

/// An op waiting for a store (being charged to its rate limit, or being done), with its
/// span.
pub struct PendingOp {
    span: tracing::Span,
    future: BoxFuture<'static, Done>,
}

impl PendingOp {
    fn new(span: tracing::Span, future: impl Future<Output = Done> + Send + 'static) -> Self {
        Self { future: Box::pin(future.instrument(span.clone())), span }
    }
}

/// What a pending op found.
#[allow(clippy::large_enum_variant, reason = "one per op, applied to the connection at once")]
pub enum Done {
    /// The rate limit's answer (the limiter was the future's until then).
    Charged { request: Request, id: Option<OpId>, limiter: WsConnectionLimiter, verdict: WsVerdict },
    Subscribed {
        id: OpId,
        channel: StreamChannel,
        after_seq: Option<u64>,
        /// The channel's bus subscription, made once the subscription was authorised.
        result: Result<Subscription, SubscribeError>,
    },
    Refreshed {
        id: OpId,
        token: AccessToken,
        /// The new expiry, or the refusal's frame.
        result: Result<SystemTime, String>,
    },
}

/// Completes when the pending op's future does; never without one. Cancel-safe.
pub async fn done(op: &mut Option<PendingOp>) -> (tracing::Span, Done) {
    poll_fn(|cx| {
        let Some(pending) = op.as_mut() else { return Poll::Pending };
        let done = std::task::ready!(pending.future.as_mut().poll(cx));
        let span = pending.span.clone();
        *op = None;
        Poll::Ready((span, done))
    })
    .await
}

impl Connection {
    pub(super) fn on_text(&mut self, text: &str) -> Result<(), Ending> {
        let parsed = ClientOp::parse(text);
        let (op, id) = match &parsed {
            Ok(op) => (op.op(), Some(op.id().clone())),
            Err(refused) => (refused.op.unwrap_or(WsOp::Ping), refused.id.clone()),
        };
        let span = tracing::debug_span!(
            target: "sba::stream",
            "websocket op",
            otel.name = format!("websocket {}", op.as_str()),
            ws.op = op.as_str(),
            ws.channel = tracing::field::Empty,
        );
        if let Ok(ClientOp::Subscribe { channel, .. } | ClientOp::Unsubscribe { channel, .. }) = &parsed {
            span.record("ws.channel", tracing::field::display(channel));
        }
        self.charge(op, id, Request::Op(parsed), span)
    }

    /// A binary frame is charged to the `ping` quota, so garbage cannot escape the limits.
    pub(super) fn on_binary(&mut self) -> Result<(), Ending> {
        let span =
            tracing::debug_span!(target: "sba::stream", "websocket op", otel.name = "websocket binary");
        self.charge(WsOp::Ping, None, Request::Binary, span)
    }

    /// Charges the op to its rate limit (the answer comes to [`Self::on_op_done`]), or does
    /// it at once when rate limiting is off.
    fn charge(
        &mut self,
        op: WsOp,
        id: Option<OpId>,
        request: Request,
        span: tracing::Span,
    ) -> Result<(), Ending> {
        let Some(mut limiter) = self.limiter.take() else { return self.act(request, span) };
        let charging = async move {
            let verdict = limiter.check(op).await;
            Done::Charged { request, id, limiter, verdict }
        };
        self.op = Some(PendingOp::new(span, charging));
        Ok(())
    }

    pub(super) fn on_op_done(&mut self, span: tracing::Span, done: Done) -> Result<(), Ending> {
        match done {
            Done::Charged { request, id, limiter, verdict } => {
                self.limiter = Some(limiter);
                match verdict {
                    WsVerdict::Allowed => self.act(request, span),
                    WsVerdict::Refused { retry_after_ms } => {
                        let refusal = ErrorFrame {
                            retry_after_ms: Some(retry_after_ms),
                            ..error_frame(id, ErrorCode::RateLimited, None)
                        };
                        self.control(refusal.to_text())
                    }
                    // The refusals queued before are still sent (within the flush timeout).
                    WsVerdict::Close => Err(Ending { flush: true, ..Ending::now(CloseCause::Flooding) }),
                }
            }
            Done::Subscribed { id, channel, after_seq, result } => {
                let _entered = span.enter();
                self.subscribed(id, channel, after_seq, result)
            }
            Done::Refreshed { id, token, result } => match result {
                Ok(expires_at) => {
                    self.expires_at = expires_at;
                    self.ctx.token = Some(token);
                    self.control(ack_frame(&id))
                }
                Err(refusal) => self.control(refusal),
            },
        }
    }

    /// Does a charged op: at once, or as the pending op when it waits for a store.
    fn act(&mut self, request: Request, span: tracing::Span) -> Result<(), Ending> {
        let parsed = match request {
            Request::Binary => {
                return self.control(error(
                    None,
                    ErrorCode::BadRequest,
                    "frames are JSON text; binary frames are not read",
                ));
            }
            Request::Op(parsed) => parsed,
        };
        match parsed {
            Err(refused) => self.control(ErrorFrame::bad_request(&refused).to_text()),
            Ok(ClientOp::Ping { id }) => self.control(pong_frame(&id)),
            Ok(ClientOp::Subscribe { id, channel, after_seq }) => {
                self.subscribe(id, channel, after_seq, span)
            }
            Ok(ClientOp::Unsubscribe { id, channel }) => {
                self.subscriptions.remove(channel);
                self.control(ack_frame(&id))
            }
            Ok(ClientOp::Auth { id, token }) => {
                self.refresh(id, token, span);
                Ok(())
            }
        }
    }

    fn subscribe(
        &mut self,
        id: OpId,
        channel: StreamChannel,
        after_seq: Option<u64>,
        span: tracing::Span,
    ) -> Result<(), Ending> {
        let config = self.gateway.0.config;
        if self.subscriptions.contains(channel) {
            return self.control(error(
                Some(id),
                ErrorCode::BadRequest,
                "already subscribed to this channel",
            ));
        }
        if self.subscriptions.len() >= config.max_subscriptions {
            let message = format!("at most {} subscriptions per connection", config.max_subscriptions);
            return self.control(error_frame(Some(id), ErrorCode::BadRequest, Some(message)).to_text());
        }
        let (gateway, ctx) = (self.gateway.clone(), self.ctx.clone());
        let work = async move {
            let result = match gateway.0.authorizer.authorize(&ctx, channel).await {
                // Subscribed before the history is read, so that nothing falls between the two.
                Ok(bus_channel) => Ok(gateway.0.bus.subscribe(bus_channel).await),
                Err(refused) => Err(refused),
            };
            Done::Subscribed { id, channel, after_seq, result }
        };
        self.op = Some(PendingOp::new(span, work));
        Ok(())
    }

    fn subscribed(
        &mut self,
        id: OpId,
        channel: StreamChannel,
        after_seq: Option<u64>,
        result: Result<Subscription, SubscribeError>,
    ) -> Result<(), Ending> {
        let messages = match result {
            Ok(messages) => messages,
            Err(SubscribeError::Forbidden(reason)) => {
                return self.control(ErrorFrame::forbidden(id, reason).to_text());
            }
            Err(SubscribeError::Unavailable(cause)) => {
                tracing::warn!(error = format!("{cause:#}"), "a subscription could not be decided");
                return self.control(ErrorFrame::unavailable(id, UNAVAILABLE_RETRY_MS).to_text());
            }
        };
        let feed = self.gateway.0.config.feed;
        let (feed, first_read) = match channel {
            StreamChannel::Run(run) => SubscriptionFeed::run(run, after_seq, feed),
            StreamChannel::Session(_) | StreamChannel::Tenant => (SubscriptionFeed::runs(feed), None),
        };
        // The ack goes first: the subscription's events follow it.
        self.control(ack_frame(&id))?;
        self.subscriptions.insert(channel, messages, feed, first_read);
        Ok(())
    }

    /// `op: auth`: a fresh token of the same principal moves the connection's expiry.
    fn refresh(&mut self, id: OpId, token: AccessToken, span: tracing::Span) {
        let (state, principal) = (Arc::clone(&self.state), self.ctx.principal.clone());
        let work = async move {
            let result = match state.verifier.verify_token(token.expose()).await {
                Err(TokenError::Expired) => Err(ErrorFrame::token_expired(id.clone()).to_text()),
                Err(TokenError::Invalid | TokenError::TenantMissing) => {
                    Err(ErrorFrame::forbidden(id.clone(), "the token is not valid").to_text())
                }
                Ok(verified) if verified.principal != principal => {
                    let reason = "the token must be of the connection's tenant, user and role";
                    Err(ErrorFrame::forbidden(id.clone(), reason).to_text())
                }
                Ok(verified) => match state.admission.admit(&verified.principal).await {
                    Ok(_) => Ok(verified.expires_at),
                    Err(_) => {
                        Err(ErrorFrame::forbidden(id.clone(), "the tenant may not use the service").to_text())
                    }
                },
            };
            Done::Refreshed { id, token, result }
        };
        self.op = Some(PendingOp::new(span, work));
    }
}

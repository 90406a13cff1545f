//! One WebSocket connection, as a task: it reads the client's frames and answers its ops,
//! holds the connection's subscriptions and its writer, pings the client, and closes the
//! connection when the client goes, its token expires, the node stops, the client floods
//! or sends an oversized frame, or its outbound queue overflows.
//!
//! Decisions beyond ARCHITECTURE.md §7 (ADR 0018):
//! - a binary frame is answered `bad_request` (no `id`) and the connection lives, like any
//!   other frame that is not a valid op;
//! - a frame whose op cannot be read is charged to the `ping` quota, so garbage cannot
//!   escape the rate limits;
//! - a second `subscribe` to a channel already subscribed is `bad_request` (unsubscribe
//!   first, or resume on `resume_required`, which ends a run subscription); `unsubscribe`
//!   of a channel not subscribed is acknowledged;
//! - with rate limiting off (`SBA_RATE_LIMIT__ENABLED=false`) ops are not limited either;
//! - `op: auth` must prove the same principal (tenant, user and role); another one is
//!   `forbidden`, as is a forged token or a tenant no longer admitted; an expired one is
//!   `token_expired`;
//! - nothing heard from the client (a pong or any frame) within the heartbeat timeout
//!   closes the connection with 1008.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sba_application::RequestContext;
use sba_application::context::AccessToken;
use sba_application::ports::TokenError;
use sba_application::ratelimit_ws::{WsConnectionLimiter, WsOp, WsVerdict};
use sba_application::stream::authorize::SubscribeError;
use sba_application::stream::protocol::{
    ClientOp, ErrorCode, ErrorFrame, OpId, OpParseError, StreamChannel, ack_frame, pong_frame,
};
use sba_application::stream::replay::QueriesReplay;
use sba_application::stream::subscription::SubscriptionFeed;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::StreamGateway;
use super::metrics::{self, CloseCause};
use super::outbound::{self, Finish, Outbound, WriterEnd};
use super::socket::{Incoming, ReadError, SocketReader, SocketWriter};
use super::subscription::{Signal, SubscriptionTask};
use crate::http::AppState;

/// How long a ping or pong may wait for room in the socket's buffer.
const CONTROL_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a store may be retried after, in an `unavailable` answer.
const UNAVAILABLE_RETRY_MS: u64 = 1000;

/// A connection being served.
pub struct Connection {
    gateway: StreamGateway,
    state: Arc<AppState>,
    ctx: RequestContext,
    /// When the connection's token stops being accepted (an `auth` op moves it).
    expires_at: SystemTime,
    /// `None` when rate limiting is off (`SBA_RATE_LIMIT__ENABLED=false`).
    limiter: Option<WsConnectionLimiter>,
    outbound: Arc<Outbound>,
    subscriptions: HashMap<StreamChannel, SubscriptionHandle>,
    signals: mpsc::UnboundedSender<Signal>,
    signalled: mpsc::UnboundedReceiver<Signal>,
    last_heard: Instant,
    /// The connection's span (a child of the handshake's request span): its ops' spans are
    /// its children. At `debug` under `sba::stream`, so it costs an idle connection nothing
    /// unless traces are exported (`telemetry::trace_filter`).
    span: tracing::Span,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("principal", &self.ctx.principal)
            .field("subscriptions", &self.subscriptions.len())
            .finish_non_exhaustive()
    }
}

/// A subscription's task, stopped when dropped.
#[derive(Debug)]
struct SubscriptionHandle(JoinHandle<()>);

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        self.0.abort();
        metrics::subscriptions(-1.0);
    }
}

/// How the connection ends.
#[derive(Debug)]
struct Ending {
    cause: CloseCause,
    /// Send what is queued first (bounded by the flush timeout).
    flush: bool,
    /// A last frame to queue before closing.
    last_frame: Option<String>,
}

impl Ending {
    const fn now(cause: CloseCause) -> Self {
        Self { cause, flush: false, last_frame: None }
    }
}

impl Connection {
    pub fn open(
        gateway: StreamGateway,
        state: Arc<AppState>,
        ctx: RequestContext,
        expires_at: SystemTime,
        plan: Option<&str>,
    ) -> Self {
        let principal = &ctx.principal;
        let ip = ctx.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok());
        let limiter = state.rate_policies.is_some().then(|| {
            WsConnectionLimiter::new(
                state.rate_limits.clone(),
                Arc::clone(&state.ws_policies),
                principal.tenant_id,
                principal.user_id.clone(),
                ip,
            )
        });
        let throttle = gateway.0.throttle.connection(principal.tenant_id, &principal.user_id, plan);
        let outbound = Arc::new(Outbound::new(gateway.0.config.outbound, throttle));
        let (signals, signalled) = mpsc::unbounded_channel();
        let span = tracing::debug_span!(
            target: "sba::stream",
            "websocket connection",
            otel.name = "websocket connection",
            tenant = %principal.tenant_id,
            close.reason = tracing::field::Empty,
        );
        Self {
            gateway,
            state,
            ctx,
            expires_at,
            limiter,
            outbound,
            subscriptions: HashMap::new(),
            signals,
            signalled,
            last_heard: Instant::now(),
            span,
        }
    }

    /// Serves the connection in a task of its own on the current server worker; the
    /// gateway, not the HTTP server, waits for it at shutdown ([`StreamGateway::drained`]).
    pub fn spawn(self, reader: SocketReader, socket: SocketWriter) {
        let span = self.span.clone();
        actix_web::rt::spawn(self.run(reader, socket).instrument(span));
    }

    /// Serves the connection until it closes.
    pub async fn run(mut self, mut reader: SocketReader, socket: SocketWriter) {
        let _serving = self.gateway.serving();
        let (finish, finishing) = watch::channel(Finish::No);
        let writer = {
            let (outbound, socket) = (Arc::clone(&self.outbound), socket.clone());
            tokio::spawn(async move { outbound::write(&outbound, socket, finishing).await })
        };
        let mut writer = Some(writer);
        let ending = self.serve(&mut reader, &socket, &mut writer).await;
        Box::pin(self.close(ending, &socket, writer, &finish)).await;
        linger(&mut reader).await;
    }

    async fn serve(
        &mut self,
        reader: &mut SocketReader,
        socket: &SocketWriter,
        writer: &mut Option<JoinHandle<WriterEnd>>,
    ) -> Ending {
        let config = self.gateway.0.config;
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + config.heartbeat_interval,
            config.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = self.gateway.0.stopping.subscribe();
        loop {
            let expiry =
                tokio::time::sleep(self.expires_at.duration_since(SystemTime::now()).unwrap_or_default());
            let result = tokio::select! {
                // Boxed: an op's future (subscribe, auth) is far larger than the idle loop's,
                // and would otherwise be part of every idle connection's task.
                message = reader.recv() => Box::pin(self.on_message(message, socket)).await,
                Some(signal) = self.signalled.recv() => match signal {
                    Signal::Overflow => Err(Ending::now(CloseCause::SlowConsumer)),
                    Signal::Ended(channel) => {
                        self.subscriptions.remove(&channel);
                        Ok(())
                    }
                },
                _ = heartbeat.tick() => self.heartbeat(config.heartbeat_timeout, socket).await,
                () = expiry => Err(Ending {
                    cause: CloseCause::TokenExpired,
                    flush: true,
                    last_frame: Some(connection_token_expired()),
                }),
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => Err(Ending { flush: true, ..Ending::now(CloseCause::Shutdown) }),
                ended = async { writer.as_mut()?.await.ok() }, if writer.is_some() => {
                    *writer = None;
                    tracing::debug!(?ended, "the WebSocket writer stopped");
                    Err(Ending::now(CloseCause::Client))
                }
            };
            if let Err(ending) = result {
                return ending;
            }
        }
    }

    async fn on_message(
        &mut self,
        message: Option<Result<Incoming, ReadError>>,
        socket: &SocketWriter,
    ) -> Result<(), Ending> {
        let message = match message {
            None => return Err(Ending::now(CloseCause::Client)),
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(Ending::now(read_error_cause(error))),
        };
        self.last_heard = Instant::now();
        match message {
            Incoming::Text(text) => {
                metrics::frame_in();
                self.on_text(&text).await
            }
            Incoming::Binary => {
                metrics::frame_in();
                if !self.charge(WsOp::Ping, None).await? {
                    return Ok(());
                }
                self.control(error(
                    None,
                    ErrorCode::BadRequest,
                    "frames are JSON text; binary frames are not read",
                ))
            }
            Incoming::Ping(bytes) => {
                // Skipped when the socket's buffer is full: the client is not reading.
                let _ = tokio::time::timeout(CONTROL_SEND_TIMEOUT, socket.pong(&bytes)).await;
                Ok(())
            }
            Incoming::Pong => Ok(()),
            Incoming::Close => Err(Ending::now(CloseCause::Client)),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Ending> {
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
        self.on_op(op, id, parsed).instrument(span).await
    }

    async fn on_op(
        &mut self,
        op: WsOp,
        id: Option<OpId>,
        parsed: Result<ClientOp, OpParseError>,
    ) -> Result<(), Ending> {
        if !self.charge(op, id).await? {
            return Ok(());
        }
        match parsed {
            Err(refused) => self.control(ErrorFrame::bad_request(&refused).to_text()),
            Ok(ClientOp::Ping { id }) => self.control(pong_frame(&id)),
            Ok(ClientOp::Subscribe { id, channel, after_seq }) => {
                self.subscribe(id, channel, after_seq).await
            }
            Ok(ClientOp::Unsubscribe { id, channel }) => {
                self.subscriptions.remove(&channel);
                self.control(ack_frame(&id))
            }
            Ok(ClientOp::Auth { id, token }) => self.refresh(id, token).await,
        }
    }

    /// Charges one op to its rate limit: `false` when it is refused (and answered so).
    async fn charge(&mut self, op: WsOp, id: Option<OpId>) -> Result<bool, Ending> {
        let Some(limiter) = &mut self.limiter else { return Ok(true) };
        match limiter.check(op).await {
            WsVerdict::Allowed => Ok(true),
            WsVerdict::Refused { retry_after_ms } => {
                let refusal = ErrorFrame {
                    retry_after_ms: Some(retry_after_ms),
                    ..error_frame(id, ErrorCode::RateLimited, None)
                };
                self.control(refusal.to_text())?;
                Ok(false)
            }
            // The refusals queued before are still sent (within the flush timeout).
            WsVerdict::Close => Err(Ending { flush: true, ..Ending::now(CloseCause::Flooding) }),
        }
    }

    async fn subscribe(
        &mut self,
        id: OpId,
        channel: StreamChannel,
        after_seq: Option<u64>,
    ) -> Result<(), Ending> {
        let config = self.gateway.0.config;
        if self.subscriptions.contains_key(&channel) {
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
        let bus_channel = match self.gateway.0.authorizer.authorize(&self.ctx, channel).await {
            Ok(bus_channel) => bus_channel,
            Err(SubscribeError::Forbidden(reason)) => {
                return self.control(ErrorFrame::forbidden(id, reason).to_text());
            }
            Err(SubscribeError::Unavailable(cause)) => {
                tracing::warn!(error = format!("{cause:#}"), "a subscription could not be decided");
                return self.control(ErrorFrame::unavailable(id, UNAVAILABLE_RETRY_MS).to_text());
            }
        };
        // Subscribed before the history is read, so that nothing falls between the two.
        let messages = self.gateway.0.bus.subscribe(bus_channel).await;
        let (feed, first_read) = match channel {
            StreamChannel::Run(run) => SubscriptionFeed::run(run, after_seq, config.feed),
            StreamChannel::Session(_) | StreamChannel::Tenant => (SubscriptionFeed::runs(config.feed), None),
        };
        // The ack goes first: the subscription's events follow it.
        self.control(ack_frame(&id))?;
        let task = SubscriptionTask {
            channel,
            messages,
            feed,
            reads: first_read.into_iter().collect(),
            replay: Arc::new(QueriesReplay::new(self.state.queries.clone(), self.ctx.clone())),
            outbound: Arc::clone(&self.outbound),
            signals: self.signals.clone(),
        };
        metrics::subscriptions(1.0);
        self.subscriptions.insert(channel, SubscriptionHandle(tokio::spawn(task.run())));
        Ok(())
    }

    /// `op: auth`: a fresh token of the same principal moves the connection's expiry.
    async fn refresh(&mut self, id: OpId, token: AccessToken) -> Result<(), Ending> {
        let verified = match self.state.verifier.verify_token(token.expose()).await {
            Ok(verified) => verified,
            Err(TokenError::Expired) => return self.control(ErrorFrame::token_expired(id).to_text()),
            Err(TokenError::Invalid | TokenError::TenantMissing) => {
                return self.control(ErrorFrame::forbidden(id, "the token is not valid").to_text());
            }
        };
        if verified.principal != self.ctx.principal {
            let reason = "the token must be of the connection's tenant, user and role";
            return self.control(ErrorFrame::forbidden(id, reason).to_text());
        }
        if self.state.admission.admit(&verified.principal).await.is_err() {
            return self.control(ErrorFrame::forbidden(id, "the tenant may not use the service").to_text());
        }
        self.expires_at = verified.expires_at;
        self.ctx.token = Some(token);
        self.control(ack_frame(&id))
    }

    async fn heartbeat(&mut self, timeout: Duration, socket: &SocketWriter) -> Result<(), Ending> {
        if self.last_heard.elapsed() >= timeout {
            return Err(Ending::now(CloseCause::HeartbeatTimeout));
        }
        // A full socket buffer (a client not reading) must not hold up this task, which
        // handles the queue's overflow: the ping is skipped then.
        match tokio::time::timeout(CONTROL_SEND_TIMEOUT, socket.ping()).await {
            Ok(Err(_)) => Err(Ending::now(CloseCause::Client)),
            Ok(Ok(())) | Err(_) => Ok(()),
        }
    }

    /// Queues a frame that is not an event.
    fn control(&self, frame: String) -> Result<(), Ending> {
        self.outbound.push_control(frame).map_err(|_| Ending::now(CloseCause::SlowConsumer))
    }

    /// Stops the subscriptions, flushes the queue when the ending asks for it, and closes
    /// the socket with the ending's code.
    async fn close(
        mut self,
        ending: Ending,
        socket: &SocketWriter,
        mut writer: Option<JoinHandle<WriterEnd>>,
        finish: &watch::Sender<Finish>,
    ) {
        self.subscriptions.clear();
        if let Some(frame) = ending.last_frame {
            let _ = self.outbound.push_control(frame);
        }
        if ending.flush
            && let Some(running) = writer.as_mut()
        {
            finish.send_replace(Finish::Flush);
            if tokio::time::timeout(self.gateway.0.config.flush_timeout, running).await.is_ok() {
                writer = None;
            }
        }
        // The writer stops after the frames it is writing; the close frame follows them.
        finish.send_replace(Finish::Now);
        metrics::closed(ending.cause);
        self.span.record("close.reason", ending.cause.reason());
        if ending.cause == CloseCause::SlowConsumer {
            tracing::info!(
                tenant = %self.ctx.principal.tenant_id,
                queued_empty = self.outbound.is_empty(),
                "closing a WebSocket client that reads too slowly (1013)"
            );
        }
        // A client that reads nothing may never make room for the close frame: after the
        // heartbeat timeout it counts as gone, and the TCP connection is dropped.
        let patience = self.gateway.0.config.heartbeat_timeout;
        let closing = async {
            if let Some(running) = writer.as_mut() {
                let _ = running.await;
            }
            socket.close(ending.cause.code(), ending.cause.reason()).await
        };
        let _ = tokio::time::timeout(patience, closing).await;
        if let Some(running) = writer {
            running.abort();
        }
    }
}

/// How long a closed connection waits for the client's end of the TCP connection.
const LINGER: Duration = Duration::from_secs(1);

/// Reads (and drops) what the client still sends after the close frame, its own close
/// frame among it, until it ends the TCP connection: closing a socket with unread bytes
/// would reset the connection, and the client could lose the close frame.
async fn linger(reader: &mut SocketReader) {
    let _ = tokio::time::timeout(LINGER, async { while let Some(Ok(_)) = reader.recv().await {} }).await;
}

/// The close cause of frames the server could not read.
const fn read_error_cause(error: ReadError) -> CloseCause {
    match error {
        ReadError::TooBig => CloseCause::FrameTooBig,
        ReadError::InvalidText => CloseCause::InvalidText,
        ReadError::Protocol | ReadError::Io => CloseCause::ProtocolError,
    }
}

fn error_frame(id: Option<OpId>, code: ErrorCode, message: Option<String>) -> ErrorFrame {
    ErrorFrame { id, code, message: message.map(Into::into), retry_after_ms: None, resume: None }
}

fn error(id: Option<OpId>, code: ErrorCode, message: &'static str) -> String {
    ErrorFrame { message: Some(message.into()), ..error_frame(id, code, None) }.to_text()
}

/// `{"type":"error","code":"token_expired",...}` without an `id`: the connection's own token
/// expired, no op is answered.
fn connection_token_expired() -> String {
    error(None, ErrorCode::TokenExpired, "the connection's token has expired; reconnect with a fresh one")
}

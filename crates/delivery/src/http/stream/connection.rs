//! One WebSocket connection, as one task: it reads the client's frames and answers its ops
//! ([`ops`]), reads its subscriptions' channels on the bus and their history
//! ([`Subscriptions`]), writes its outbound queue to the socket ([`Outbound`]), pings the
//! client, and closes the connection when the client goes, its token expires, the node
//! stops, the client floods or sends an oversized frame, or its outbound queue overflows.
//! Each of these waits in the task's one `select!`, so none holds up another: a write
//! waiting for a slow client's socket does not stop the bus from being read (its events are
//! queued, then coalesced, then the client is closed with 1013), and an op waiting for a
//! store (a rate limit, an authorisation, a token) does not stop the events of the
//! subscriptions already made. An idle connection is this task and what it owns, with
//! nothing boxed but its timers and its bus registrations.
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
//!   closes the connection with 1008;
//! - ops are answered one at a time, in order: the client's next frame is read once the
//!   op before it is answered.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sba_application::RequestContext;
use sba_application::ratelimit_ws::WsConnectionLimiter;
use sba_application::stream::outbound::Overflow;
use sba_application::stream::protocol::{ErrorCode, ErrorFrame, OpId};
use sba_application::stream::replay::{QueriesReplay, ReplaySource};
use tracing::Instrument as _;

use super::StreamGateway;
use super::metrics::{self, CloseCause};
use super::outbound::{Outbound, Progress};
use super::socket::{Incoming, ReadError, SocketReader, SocketWriter};
use super::subscription::{Subscriptions, Wake};
use crate::http::AppState;

mod ops;

/// A connection being served.
pub struct Connection {
    gateway: StreamGateway,
    state: Arc<AppState>,
    ctx: RequestContext,
    /// When the connection's token stops being accepted (an `auth` op moves it).
    expires_at: SystemTime,
    /// `None` when rate limiting is off (`SBA_RATE_LIMIT__ENABLED=false`), or while an op
    /// is being charged.
    limiter: Option<WsConnectionLimiter>,
    outbound: Outbound,
    subscriptions: Subscriptions,
    /// The op being answered, if it waits for a store.
    op: Option<ops::PendingOp>,
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

impl From<Overflow> for Ending {
    fn from(Overflow: Overflow) -> Self {
        Self::now(CloseCause::SlowConsumer)
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
        let outbound = Outbound::new(gateway.0.config.outbound, throttle);
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
            subscriptions: Subscriptions::default(),
            op: None,
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
        self.outbound.attach(socket);
        let ending = self.serve(&mut reader).await;
        Box::pin(self.close(ending)).await;
        linger(&mut reader).await;
    }

    async fn serve(&mut self, reader: &mut SocketReader) -> Ending {
        let config = self.gateway.0.config;
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + config.heartbeat_interval,
            config.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = self.gateway.0.stopping.subscribe();
        let mut expires_at = self.expires_at;
        let expiry = tokio::time::sleep_until(instant_of(expires_at));
        tokio::pin!(expiry);
        loop {
            // The subscriptions read the run history as the connection's caller (made for
            // each read: reads are rare, and an idle connection keeps no reader).
            let (state, ctx) = (&self.state, &self.ctx);
            self.subscriptions.start_read(&self.outbound, || -> Arc<dyn ReplaySource> {
                Arc::new(QueriesReplay::new(state.queries.clone(), ctx.clone()))
            });
            self.outbound.start();
            let result = tokio::select! {
                message = reader.recv(), if self.op.is_none() => self.on_message(message),
                (span, done) = ops::done(&mut self.op) => self.on_op_done(span, done),
                wake = self.subscriptions.next() => match wake {
                    Wake::Message(index, message) => {
                        self.subscriptions.on_message(index, message, &mut self.outbound).map_err(Ending::from)
                    }
                    Wake::Read(done) => self.subscriptions.on_read(done, &mut self.outbound).map_err(Ending::from),
                },
                progress = self.outbound.progress() => match progress {
                    Progress::Closed => Err(Ending::now(CloseCause::Client)),
                    Progress::Written | Progress::Unthrottled => Ok(()),
                },
                _ = heartbeat.tick() => self.heartbeat(config.heartbeat_timeout),
                () = &mut expiry => Err(Ending {
                    cause: CloseCause::TokenExpired,
                    flush: true,
                    last_frame: Some(connection_token_expired()),
                }),
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => Err(Ending { flush: true, ..Ending::now(CloseCause::Shutdown) }),
            };
            if let Err(ending) = result {
                return ending;
            }
            if self.expires_at != expires_at {
                expires_at = self.expires_at;
                expiry.as_mut().reset(instant_of(expires_at));
            }
        }
    }

    fn on_message(&mut self, message: Option<Result<Incoming, ReadError>>) -> Result<(), Ending> {
        let message = match message {
            None => return Err(Ending::now(CloseCause::Client)),
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(Ending::now(read_error_cause(error))),
        };
        self.last_heard = Instant::now();
        match message {
            Incoming::Text(text) => {
                metrics::frame_in();
                self.on_text(&text)
            }
            Incoming::Binary => {
                metrics::frame_in();
                self.on_binary()
            }
            Incoming::Ping(bytes) => {
                // Dropped when pongs already wait for a client that is not reading.
                self.outbound.pong(&bytes);
                Ok(())
            }
            Incoming::Pong => Ok(()),
            Incoming::Close => Err(Ending::now(CloseCause::Client)),
        }
    }

    fn heartbeat(&mut self, timeout: Duration) -> Result<(), Ending> {
        if self.last_heard.elapsed() >= timeout {
            return Err(Ending::now(CloseCause::HeartbeatTimeout));
        }
        // Sent with the next write; a client not reading makes no room for it, and is
        // closed by the heartbeat timeout or its queue's overflow.
        self.outbound.ping();
        Ok(())
    }

    /// Queues a frame that is not an event.
    fn control(&mut self, frame: String) -> Result<(), Ending> {
        self.outbound.push_control(frame).map_err(Ending::from)
    }

    /// Stops the subscriptions, flushes the queue when the ending asks for it, and closes
    /// the socket with the ending's code.
    async fn close(mut self, ending: Ending) {
        self.subscriptions.clear();
        self.op = None;
        if let Some(frame) = ending.last_frame {
            let _ = self.outbound.push_control(frame);
        }
        if ending.flush {
            self.outbound.flush(self.gateway.0.config.flush_timeout).await;
        }
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
        self.outbound.close(ending.cause.code(), ending.cause.reason(), patience).await;
    }
}

/// The instant of the runtime's clock at `time` (now when it has passed).
fn instant_of(time: SystemTime) -> tokio::time::Instant {
    tokio::time::Instant::now() + time.duration_since(SystemTime::now()).unwrap_or_default()
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

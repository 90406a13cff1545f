//! The gateway's metrics, all with bounded labels (never a tenant, user, run or token):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sba_ws_connections` | gauge | |
//! | `sba_ws_subscriptions` | gauge | |
//! | `sba_ws_outbound_queue_depth` | histogram (frames queued behind each write) | |
//! | `sba_ws_coalesced_deltas_total` | counter | |
//! | `sba_ws_throttled_total` | counter (events queued over a broadcast rate, to merge) | |
//! | `sba_ws_frames_total` | counter | `direction` = `in`, `out` |
//! | `sba_ws_history_reads_total` | counter (a subscription read the run history: replay, gap, resume) | |
//! | `sba_ws_bus_resumes_total` | counter (the bus told a subscription it may have missed events) | |
//! | `sba_ws_closes_total` | counter | `code` (1000, 1001, 1002, 1007, 1008, 1009, 1013), `reason` |

use std::sync::LazyLock;

/// Why the server closed a connection (the `reason` label), and with which code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client closed, or went away.
    Client,
    /// The node is shutting down.
    Shutdown,
    /// The connection's token expired.
    TokenExpired,
    /// The client kept sending after its rate-limit refusals.
    Flooding,
    /// Nothing came back from the client within the heartbeat timeout.
    HeartbeatTimeout,
    /// A frame over the configured size.
    FrameTooBig,
    /// The outbound queue overflowed: the client reads too slowly.
    SlowConsumer,
    /// The client broke the WebSocket protocol.
    ProtocolError,
    /// A text message that is not UTF-8.
    InvalidText,
}

impl CloseCause {
    pub const fn code(self) -> u16 {
        match self {
            Self::Client => 1000,
            Self::Shutdown => 1001,
            Self::TokenExpired | Self::Flooding | Self::HeartbeatTimeout => 1008,
            Self::FrameTooBig => 1009,
            Self::ProtocolError => 1002,
            Self::InvalidText => 1007,
            Self::SlowConsumer => 1013,
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Shutdown => "shutdown",
            Self::TokenExpired => "token_expired",
            Self::Flooding => "flooding",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::FrameTooBig => "frame_too_big",
            Self::SlowConsumer => "slow_consumer",
            Self::ProtocolError => "protocol_error",
            Self::InvalidText => "invalid_text",
        }
    }
}

pub fn closed(cause: CloseCause) {
    metrics::counter!(
        "sba_ws_closes_total",
        "code" => cause.code().to_string(),
        "reason" => cause.reason()
    )
    .increment(1);
}

/// The handles of the series recorded per frame or per event, looked up once: a lookup by
/// name and labels on every frame costs more than the rest of the frame's bookkeeping. Made
/// at the first frame, after the process's recorder is installed (`http::metrics`).
struct Handles {
    connections: metrics::Gauge,
    subscriptions: metrics::Gauge,
    frames_in: metrics::Counter,
    frames_out: metrics::Counter,
    queue_depth: metrics::Histogram,
    coalesced: metrics::Counter,
    throttled: metrics::Counter,
    history_reads: metrics::Counter,
    resumes: metrics::Counter,
}

static HANDLES: LazyLock<Handles> = LazyLock::new(|| Handles {
    connections: metrics::gauge!("sba_ws_connections"),
    subscriptions: metrics::gauge!("sba_ws_subscriptions"),
    frames_in: metrics::counter!("sba_ws_frames_total", "direction" => "in"),
    frames_out: metrics::counter!("sba_ws_frames_total", "direction" => "out"),
    queue_depth: metrics::histogram!("sba_ws_outbound_queue_depth"),
    coalesced: metrics::counter!("sba_ws_coalesced_deltas_total"),
    throttled: metrics::counter!("sba_ws_throttled_total"),
    history_reads: metrics::counter!("sba_ws_history_reads_total"),
    resumes: metrics::counter!("sba_ws_bus_resumes_total"),
});

pub fn connections(delta: f64) {
    HANDLES.connections.increment(delta);
}

pub fn subscriptions(delta: f64) {
    HANDLES.subscriptions.increment(delta);
}

pub fn frame_in() {
    HANDLES.frames_in.increment(1);
}

/// A write of `frames` frames began, leaving `queue_depth` frames queued behind it.
pub fn frames_out(frames: usize, queue_depth: usize) {
    HANDLES.frames_out.increment(frames as u64);
    #[allow(clippy::cast_precision_loss, reason = "a queue depth is far below 2^52")]
    HANDLES.queue_depth.record(queue_depth as f64);
}

pub fn coalesced_delta() {
    HANDLES.coalesced.increment(1);
}

pub fn throttled() {
    HANDLES.throttled.increment(1);
}

/// A subscription read the run history (replay, gap, resume).
pub fn history_read() {
    HANDLES.history_reads.increment(1);
}

/// A subscription was told by the bus that it may have missed events.
pub fn bus_resume() {
    HANDLES.resumes.increment(1);
}

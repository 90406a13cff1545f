//! A connection's outbound side, owned by the connection's task: its [`OutboundQueue`],
//! which the task's subscriptions and ops push into without waiting, and the write in
//! progress that drains it to the socket, what is queued at a time in one write, at the
//! broadcast rates of the connection's tenant and user.
//!
//! Nothing is buffered past the queue but the frames being written (at most
//! [`MAX_BATCH_FRAMES`]), the frames a batch took beyond what the broadcast rates allowed
//! (held, in order, until they do) and the kernel's socket buffer, so a client that reads
//! slowly backs frames up here, where the queue's policy (coalescing, then 1013) applies,
//! and never in the bus or in another connection.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use sba_application::ports::LiveEvent;
use sba_application::stream::outbound::{OutFrame, OutboundLimits, OutboundQueue, Overflow, Pushed};
use sba_application::stream::protocol::StreamChannel;
use sba_application::stream::throttle::ConnectionThrottle;
use tokio::time::Sleep;

use super::metrics;
use super::socket::{self, SocketWriter};

/// The most frames written at once (in one vectored write).
const MAX_BATCH_FRAMES: usize = 64;
/// The most bytes of frames written at once.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The most bytes of pings and pongs waiting for the socket: a client that sends pings and
/// reads nothing gets no more pongs past it.
const MAX_CONTROL_BYTES: usize = 1024;
/// How long the broadcast rates read for queueing stay good (see [`Outbound::push_event`]).
const RATE_READ_FOR: Duration = Duration::from_millis(1);

/// A write in progress: it gives the writer and the frames back when done.
type Write = Pin<Box<dyn Future<Output = io::Result<(SocketWriter, Vec<OutFrame>)>> + Send>>;

/// The queue, the broadcast rates it is sent at, and the socket it is written to.
pub struct Outbound {
    queue: OutboundQueue,
    throttle: ConnectionThrottle,
    /// Frames a batch took from the queue beyond what the broadcast rates let through, sent
    /// first once they do.
    held: VecDeque<OutFrame>,
    /// Pings and pongs, framed, sent before the next frames.
    control: Vec<u8>,
    writer: Writer,
    /// Until the broadcast rates give the held frames their turn.
    throttled: Option<Pin<Box<Sleep>>>,
    /// The event frames the rates could send, as read at the instant beside it.
    rate_read: Option<(Instant, f64)>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("queue", &self.queue)
            .field("held", &self.held.len())
            .field("writing", &matches!(self.writer, Writer::Writing(_)))
            .finish_non_exhaustive()
    }
}

enum Writer {
    /// Not yet given a socket (until the 101 is written), or no longer: the socket failed,
    /// or is being closed.
    None,
    Idle(SocketWriter),
    Writing(Write),
}

/// What [`Outbound::progress`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A write finished: the next one may start.
    Written,
    /// The broadcast rates let the held frames go.
    Unthrottled,
    /// The socket failed: the client is gone.
    Closed,
}

impl Outbound {
    pub fn new(limits: OutboundLimits, throttle: ConnectionThrottle) -> Self {
        Self {
            queue: OutboundQueue::new(limits),
            throttle,
            held: VecDeque::new(),
            control: Vec::new(),
            writer: Writer::None,
            throttled: None,
            rate_read: None,
        }
    }

    /// Gives the queue the socket to be written to.
    pub fn attach(&mut self, socket: SocketWriter) {
        self.writer = Writer::Idle(socket);
    }

    /// Queues an ack, pong or error frame.
    ///
    /// # Errors
    /// [`Overflow`]: close the connection with 1013.
    pub fn push_control(&mut self, frame: String) -> Result<(), Overflow> {
        self.queue.push_control(frame)
    }

    /// Queues an event of the subscription to `channel` at `now` (read once for a burst of
    /// events), merged into the delta it continues
    /// above the high-water mark, or when the queue holds as many frames as the broadcast
    /// rates let through now (see `sba_application::stream::throttle`; the rates are read
    /// at most once a millisecond, so a burst of events reads the buckets its connections
    /// share once, not once per event).
    ///
    /// # Errors
    /// [`Overflow`]: close the connection with 1013 (also when the oldest queued frame has
    /// waited longer than the queue's maximum delay).
    pub fn push_event(
        &mut self,
        channel: StreamChannel,
        event: LiveEvent,
        now: Instant,
    ) -> Result<(), Overflow> {
        if self.queue.too_late(now) {
            return Err(Overflow);
        }
        let available = match self.rate_read {
            Some((read_at, available)) if now.saturating_duration_since(read_at) < RATE_READ_FOR => available,
            _ => {
                let available = self.throttle.available(now);
                self.rate_read = Some((now, available));
                available
            }
        };
        #[allow(clippy::cast_precision_loss, reason = "a queue length is far below 2^52")]
        let over_rate = (self.queue.len() + self.held.len()) as f64 >= available;
        self.queue.set_throttled(over_rate);
        let pushed = self.queue.push_event(channel, event, now)?;
        if over_rate {
            metrics::throttled();
        }
        if pushed == Pushed::Coalesced {
            metrics::coalesced_delta();
        }
        Ok(())
    }

    /// Sends a ping with the next write (none while one waits to be sent).
    pub fn ping(&mut self) {
        if self.control.is_empty() {
            socket::push_ping(&mut self.control);
        }
    }

    /// Answers a ping with the next write.
    pub fn pong(&mut self, payload: &[u8]) {
        if self.control.len() < MAX_CONTROL_BYTES {
            socket::push_pong(&mut self.control, payload);
        }
    }

    /// Whether the queue is at or above its high-water mark (history reads wait below it).
    pub fn at_high_water(&self) -> bool {
        self.queue.at_high_water()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.held.is_empty()
    }

    /// Starts writing what is queued, unless a write is in progress: pings and pongs first,
    /// then frames in order, as many as the broadcast rates let through now.
    pub fn start(&mut self) {
        if !matches!(self.writer, Writer::Idle(_)) {
            return;
        }
        let batch = self.next_batch();
        if batch.is_empty() && self.control.is_empty() {
            return;
        }
        let Writer::Idle(socket) = std::mem::replace(&mut self.writer, Writer::None) else { return };
        metrics::frames_out(batch.len(), self.queue.len() + self.held.len());
        let control = std::mem::take(&mut self.control);
        self.writer = Writer::Writing(Box::pin(socket.write(control, batch)));
    }

    /// The frames of the next write: taken from the held frames, then the queue, and cut
    /// before the first event frame the broadcast rates do not let through now (it and what
    /// follows it are held, and a timer set for when it may go).
    fn next_batch(&mut self) -> Vec<OutFrame> {
        if self.throttled.is_some() {
            return Vec::new();
        }
        let mut batch = Vec::new();
        let (mut bytes, mut events) = (0, 0);
        while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
            let Some(frame) = self.held.pop_front().or_else(|| self.queue.pop()) else { break };
            bytes += frame.as_str().len();
            events += usize::from(matches!(frame, OutFrame::Event(_)));
            batch.push(frame);
        }
        if events == 0 {
            return batch;
        }
        // Only event frames count against the broadcast rates.
        let allowed = match self.throttle.try_take(Instant::now(), events) {
            Ok(taken) => taken,
            Err(wait) => {
                self.throttled = Some(Box::pin(tokio::time::sleep(wait)));
                0
            }
        };
        if allowed < events {
            let mut seen = 0;
            let cut = batch
                .iter()
                .position(|frame| {
                    seen += usize::from(matches!(frame, OutFrame::Event(_)));
                    seen > allowed
                })
                .unwrap_or(batch.len());
            for frame in batch.drain(cut..).rev() {
                self.held.push_front(frame);
            }
            if self.throttled.is_none() {
                // The rates gave less than asked: the rest waits for the next token.
                self.throttled = Some(Box::pin(tokio::time::sleep(self.throttle.wait(Instant::now()))));
            }
        }
        batch
    }

    /// Completes when the write in progress finishes or the broadcast rates let the held
    /// frames go; never while neither is pending. Cancel-safe.
    pub async fn progress(&mut self) -> Progress {
        poll_fn(|cx| {
            if let Some(sleep) = self.throttled.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                self.throttled = None;
                return Poll::Ready(Progress::Unthrottled);
            }
            if let Writer::Writing(write) = &mut self.writer
                && let Poll::Ready(written) = write.as_mut().poll(cx)
            {
                if let Ok((socket, _sent)) = written {
                    self.writer = Writer::Idle(socket);
                    return Poll::Ready(Progress::Written);
                }
                self.writer = Writer::None;
                return Poll::Ready(Progress::Closed);
            }
            Poll::Pending
        })
        .await
    }

    /// Sends everything queued (at the broadcast rates), at most for `timeout`.
    pub async fn flush(&mut self, timeout: Duration) {
        let flushing = async {
            loop {
                self.start();
                let writing = matches!(self.writer, Writer::Writing(_));
                if !writing && (self.is_empty() || matches!(self.writer, Writer::None)) {
                    return;
                }
                if self.progress().await == Progress::Closed {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, flushing).await;
    }

    /// Lets the write in progress finish (a frame is never cut), then sends the close frame
    /// and ends the TCP connection; a client that makes no room for them within `patience`
    /// counts as gone, and the connection is dropped.
    pub async fn close(&mut self, code: u16, reason: &str, patience: Duration) {
        let closing = async {
            while matches!(self.writer, Writer::Writing(_)) {
                if self.progress().await == Progress::Closed {
                    return;
                }
            }
            if let Writer::Idle(socket) = std::mem::replace(&mut self.writer, Writer::None) {
                let _ = socket.close(code, reason).await;
            }
        };
        let _ = tokio::time::timeout(patience, closing).await;
        self.writer = Writer::None;
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use sba_application::stream::throttle::{BroadcastThrottle, ThrottlePolicy, ThrottleRates};
    use sba_domain::{RunId, TenantId, UserId};
    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};
    use uuid::Uuid;

    use super::*;

    fn outbound(per_second: u32) -> Outbound {
        let rate = NonZeroU32::new(per_second).unwrap();
        let policy = ThrottlePolicy {
            default: ThrottleRates { tenant_per_second: rate, user_per_second: rate },
            plans: std::collections::HashMap::new(),
        };
        let throttle = BroadcastThrottle::new(policy).connection(
            TenantId::from_uuid(Uuid::nil()),
            &UserId::parse("u").unwrap(),
            None,
        );
        Outbound::new(OutboundLimits::new(8, 1 << 20, 4, 1 << 20).unwrap(), throttle)
    }

    fn event(seq: u64) -> LiveEvent {
        LiveEvent::new(RunId::from_uuid(Uuid::nil()), seq, format!("{{\"seq\":{seq}}}"))
    }

    /// An outbound side attached to a socket, and the client's end of it.
    async fn attached(per_second: u32) -> (Outbound, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_reader, writer) = socket::split(server, &[], 1 << 16);
        let mut outbound = outbound(per_second);
        outbound.attach(writer);
        (outbound, client)
    }

    /// The text frames the client has received once the server closed.
    async fn texts(mut client: TcpStream) -> Vec<String> {
        let mut bytes = Vec::new();
        client.read_to_end(&mut bytes).await.unwrap();
        let mut texts = Vec::new();
        let mut at = 0;
        while at + 2 <= bytes.len() {
            let (opcode, length) = (bytes[at] & 0x0F, usize::from(bytes[at + 1]));
            assert!(length < 126, "short frames only");
            if opcode == 0x1 {
                texts.push(String::from_utf8(bytes[at + 2..at + 2 + length].to_vec()).unwrap());
            }
            at += 2 + length;
        }
        texts
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_order_in_one_write_with_the_pong_first() {
        let (mut outbound, client) = attached(1000).await;
        outbound.push_control("ack".into()).unwrap();
        outbound.push_event(StreamChannel::Tenant, event(1), Instant::now()).unwrap();
        outbound.pong(b"p");
        outbound.start();
        assert!(outbound.is_empty(), "everything taken by the one write");
        assert_eq!(outbound.progress().await, Progress::Written);
        outbound.close(1000, "bye", Duration::from_secs(1)).await;
        let texts = texts(client).await;
        assert_eq!(texts.len(), 2);
        assert_eq!(texts[0], "ack");
        assert!(texts[1].contains("\"seq\":1"), "{texts:?}");
    }

    #[tokio::test]
    async fn event_frames_beyond_the_broadcast_rate_are_held_in_order_until_it_lets_them_go() {
        let (mut outbound, client) = attached(2).await;
        for seq in 1..=3 {
            outbound.push_event(StreamChannel::Tenant, event(seq), Instant::now()).unwrap();
        }
        outbound.push_control("after".into()).unwrap();
        outbound.start();
        assert!(!outbound.is_empty(), "the third event and the frame after it wait");
        assert_eq!(outbound.progress().await, Progress::Written);
        outbound.start();
        assert_eq!(outbound.progress().await, Progress::Unthrottled, "half a second at 2 a second");
        outbound.flush(Duration::from_secs(5)).await;
        assert!(outbound.is_empty());
        outbound.close(1000, "bye", Duration::from_secs(1)).await;
        let texts = texts(client).await;
        assert_eq!(texts.len(), 4);
        assert!(texts[2].contains("\"seq\":3"), "{texts:?}");
        assert_eq!(texts[3], "after", "a control frame never overtakes the events before it");
    }

    #[tokio::test]
    async fn a_queue_without_a_socket_is_not_written_and_flushing_it_ends() {
        let mut outbound = outbound(1000);
        outbound.push_control("a".into()).unwrap();
        outbound.start();
        tokio::time::timeout(Duration::from_secs(1), outbound.flush(Duration::from_mins(1))).await.unwrap();
        assert!(!outbound.is_empty());
    }
}

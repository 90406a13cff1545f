//! A connection's outbound side: its [`OutboundQueue`], shared by the connection task and
//! its subscriptions, which push without waiting, and the writer task that drains it to the
//! socket, what is queued at a time in one write, at the broadcast rates of the connection's
//! tenant and user.
//! Nothing is buffered past the queue but the frames being written (at most
//! [`MAX_BATCH_FRAMES`]) and the kernel's socket buffer, so a client that reads
//! slowly backs frames up here, where the queue's policy (coalescing, then 1013) applies,
//! and never in the bus or in another connection.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use sba_application::ports::LiveEvent;
use sba_application::stream::outbound::{OutFrame, OutboundLimits, OutboundQueue, Overflow, Pushed};
use sba_application::stream::protocol::StreamChannel;
use sba_application::stream::throttle::ConnectionThrottle;
use tokio::sync::{Notify, watch};

use super::metrics;
use super::socket::SocketWriter;

/// The queue, the broadcast rates it is sent at, and the wake-ups around it.
#[derive(Debug)]
pub struct Outbound {
    queue: Mutex<OutboundQueue>,
    throttle: ConnectionThrottle,
    /// A frame was queued (the writer may be waiting for one).
    queued: Notify,
    /// The queue went below its high-water mark (history reads wait for it).
    below_high_water: Notify,
}

impl Outbound {
    pub fn new(limits: OutboundLimits, throttle: ConnectionThrottle) -> Self {
        Self {
            queue: Mutex::new(OutboundQueue::new(limits)),
            throttle,
            queued: Notify::new(),
            below_high_water: Notify::new(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, OutboundQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an ack, pong or error frame.
    ///
    /// # Errors
    /// [`Overflow`]: close the connection with 1013.
    pub fn push_control(&self, frame: String) -> Result<(), Overflow> {
        self.queue().push_control(frame)?;
        self.queued.notify_one();
        Ok(())
    }

    /// Queues an event of the subscription to `channel`, merged into the delta it continues
    /// above the high-water mark, or when the queue holds as many frames as the broadcast
    /// rates let through now (see `sba_application::stream::throttle`).
    ///
    /// # Errors
    /// [`Overflow`]: close the connection with 1013 (also when the oldest queued frame has
    /// waited longer than the queue's maximum delay).
    pub fn push_event(&self, channel: StreamChannel, event: LiveEvent) -> Result<(), Overflow> {
        let now = Instant::now();
        let mut queue = self.queue();
        if queue.too_late(now) {
            return Err(Overflow);
        }
        #[allow(clippy::cast_precision_loss, reason = "a queue length is far below 2^52")]
        let over_rate = queue.len() as f64 >= self.throttle.available(now);
        queue.set_throttled(over_rate);
        let pushed = queue.push_event(channel, event)?;
        drop(queue);
        if over_rate {
            metrics::throttled();
        }
        match pushed {
            Pushed::Queued => self.queued.notify_one(),
            Pushed::Coalesced => metrics::coalesced_delta(),
        }
        Ok(())
    }

    /// Completes once the queue is below its high-water mark.
    pub async fn below_high_water(&self) {
        loop {
            let notified = self.below_high_water.notified();
            tokio::pin!(notified);
            // Registered before looking, so a pop in between is not missed.
            notified.as_mut().enable();
            if !self.queue().at_high_water() {
                return;
            }
            notified.await;
        }
    }

    /// The next frame to send, and how many are left behind it.
    fn pop(&self) -> Option<(OutFrame, usize)> {
        let mut queue = self.queue();
        let frame = queue.pop()?;
        let left = queue.len();
        if !queue.at_high_water() {
            self.below_high_water.notify_waiters();
        }
        Some((frame, left))
    }

    pub fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }
}

/// What the connection asks of its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Keep sending.
    No,
    /// Send what is queued, then stop.
    Flush,
    /// Stop after the frames being written (a frame is never cut).
    Now,
}

/// Why the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEnd {
    /// Asked to finish, and everything queued was sent.
    Flushed,
    /// Asked to stop now.
    Stopped,
    /// The socket is closed.
    Closed,
}

/// The most frames written at once (in one vectored write).
const MAX_BATCH_FRAMES: usize = 64;
/// The most bytes of frames written at once.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Sends the queue's frames to `socket` until the socket closes or `finish` says so, the
/// frames queued at a time in one write. Event frames wait for the connection's broadcast
/// rates (what was gathered before is sent first).
pub async fn write(
    outbound: &Outbound,
    socket: SocketWriter,
    mut finish: watch::Receiver<Finish>,
) -> WriterEnd {
    let mut batch: Vec<OutFrame> = Vec::new();
    loop {
        let asked = *finish.borrow_and_update();
        if asked == Finish::Now {
            return WriterEnd::Stopped;
        }
        let mut bytes = 0;
        while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
            let Some((frame, left)) = outbound.pop() else { break };
            if matches!(frame, OutFrame::Event(_)) {
                // Only event frames count against the broadcast rates.
                while let Err(wait) = outbound.throttle.try_send(Instant::now()) {
                    if !send(&socket, &mut batch).await {
                        return WriterEnd::Closed;
                    }
                    bytes = 0;
                    tokio::time::sleep(wait).await;
                }
            }
            metrics::frame_out(left);
            bytes += text(&frame).len();
            batch.push(frame);
        }
        if batch.is_empty() {
            if asked == Finish::Flush {
                return WriterEnd::Flushed;
            }
            tokio::select! {
                () = outbound.queued.notified() => {}
                changed = finish.changed() => if changed.is_err() { return WriterEnd::Flushed },
            }
        } else if !send(&socket, &mut batch).await {
            return WriterEnd::Closed;
        }
    }
}

/// Writes the gathered frames and empties the batch; `false` when the socket is closed.
async fn send(socket: &SocketWriter, batch: &mut Vec<OutFrame>) -> bool {
    if batch.is_empty() {
        return true;
    }
    let texts: Vec<&[u8]> = batch.iter().map(text).collect();
    let sent = socket.send_texts(&texts).await.is_ok();
    drop(texts);
    batch.clear();
    if batch.capacity() > MAX_BATCH_FRAMES {
        batch.shrink_to(MAX_BATCH_FRAMES);
    }
    sent
}

/// A frame's text: event frames are the one copy shared by the channel's subscribers.
fn text(frame: &OutFrame) -> &[u8] {
    match frame {
        OutFrame::Control(text) => text.as_bytes(),
        OutFrame::Event(shared) => shared.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::Arc;

    use sba_application::stream::protocol::event_frame;
    use sba_application::stream::throttle::{BroadcastThrottle, ThrottlePolicy, ThrottleRates};
    use sba_domain::{RunId, TenantId, UserId};
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_shared_frame_is_sent_as_it_is_without_a_copy() {
        let event = LiveEvent::new(RunId::from_uuid(Uuid::nil()), 1, "{}");
        let frame: Arc<str> = event_frame(StreamChannel::Tenant, &event).into();
        let queued = OutFrame::Event(Arc::clone(&frame));
        assert_eq!(text(&queued).as_ptr(), frame.as_ptr(), "the same bytes");
    }

    #[tokio::test]
    async fn history_reads_wait_until_the_writer_takes_the_queue_below_high_water() {
        let policy = ThrottlePolicy {
            default: ThrottleRates { tenant_per_second: NonZeroU32::MIN, user_per_second: NonZeroU32::MIN },
            plans: std::collections::HashMap::new(),
        };
        let throttle = BroadcastThrottle::new(policy).connection(
            TenantId::from_uuid(Uuid::nil()),
            &UserId::parse("u").unwrap(),
            None,
        );
        let outbound = Outbound::new(OutboundLimits::new(8, 1 << 20, 2, 1 << 20).unwrap(), throttle);
        outbound.push_control("a".into()).unwrap();
        outbound.push_control("b".into()).unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), outbound.below_high_water());
        assert!(waiting.await.is_err(), "at high water");
        assert_eq!(outbound.pop(), Some((OutFrame::Control("a".to_owned()), 1)));
        tokio::time::timeout(std::time::Duration::from_millis(20), outbound.below_high_water())
            .await
            .unwrap();
    }
}

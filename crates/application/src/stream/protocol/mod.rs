//! The frames of the WebSocket stream (`GET /v1/stream`, ARCHITECTURE.md §7): client
//! operations parsed from JSON text ([`ClientOp::parse`]), server frames written as JSON text
//! ([`ack_frame`], [`pong_frame`], [`event_frame`], [`ErrorFrame::to_text`]).
//!
//! Client operations, each with a client-chosen `id` (a string of 1 to 64 characters that the
//! answer carries back):
//! `{"op":"subscribe","id","channel","after_seq"?}`, `{"op":"unsubscribe","id","channel"}`,
//! `{"op":"ping","id"}`, `{"op":"auth","id","token"}`. Channels are `run:<uuid>`,
//! `session:<uuid>` and `tenant`; ids are hyphenated UUIDs in either case, and server frames
//! name a channel with its id in lower case.
//!
//! Parsing is strict, and every refusal is a `bad_request` carrying the op's `id` when it
//! could be read: a field the op does not have is refused (a misspelt `after_seq` must not
//! quietly turn a resume into a live-only subscription), and `after_seq` is refused on
//! `session:` and `tenant` channels, whose events come from many runs with a `seq` each.
//! `after_seq` is 0 to 2^63 − 1, as on `GET /v1/runs/{run_id}/events` (`null` means absent).
//!
//! Server frames: `{"type":"ack","id"}`, `{"type":"pong","id"}`,
//! `{"type":"event","channel","seq","event":{...}}` (the event's client JSON, as REST lists
//! it, written into the frame as is) and
//! `{"type":"error","id"?,"code","message"?,"retry_after_ms"?}` with these codes:
//!
//! | code | meaning |
//! |---|---|
//! | `bad_request` | the frame is not a valid op (`message` says why) |
//! | `forbidden` | the caller may not subscribe to that channel (an unknown run too) |
//! | `rate_limited` | the op was refused by its rate limit; try again after `retry_after_ms` |
//! | `token_expired` | the token of an `auth` op has expired |
//! | `unavailable` | a store the op needs did not answer; try again after `retry_after_ms` |
//! | `resume_required` | the server could not deliver a run's events in order (the run's history no longer holds those it missed, or could not be read): the frame adds `channel` (`run:<id>`) and `after_seq` (the last seq delivered) to subscribe with |
//!
//! A `resume_required` frame answers no op, so it has no `id`:
//! `{"type":"error","code":"resume_required","channel":"run:<uuid>","after_seq":41}`. On a
//! `run:` subscription it ends the subscription; on a `session:` or `tenant` one, that run's
//! events stop there while the other runs' go on.
//! (`unavailable` and `resume_required` are additions to the codes of ARCHITECTURE.md §7.)

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;

use sba_domain::{RunId, SessionId};
use serde_json::{Map, Value};

use crate::context::AccessToken;
use crate::ports::LiveEvent;
use crate::ratelimit_ws::WsOp;

/// The largest `after_seq` accepted: seqs are stored as signed 64-bit integers.
const MAX_AFTER_SEQ: u64 = i64::MAX.unsigned_abs();

/// The length of a UUID in its hyphenated form, the only form accepted in channel names.
const HYPHENATED_UUID_LEN: usize = 36;

/// The client's id of an op: 1 to [`OpId::MAX_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OpId(String);

impl OpId {
    pub const MAX_CHARS: usize = 64;

    /// # Errors
    /// [`BadRequest::InvalidId`] when `value` is empty, too long or has control characters.
    pub fn parse(value: &str) -> Result<Self, BadRequest> {
        let valid = !value.is_empty()
            && value.chars().count() <= Self::MAX_CHARS
            && !value.chars().any(char::is_control);
        if valid { Ok(Self(value.to_owned())) } else { Err(BadRequest::InvalidId) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A channel a client subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamChannel {
    /// `run:<run_id>`: the events of one run.
    Run(RunId),
    /// `session:<session_id>`: the events of every run of one session.
    Session(SessionId),
    /// `tenant`: the events of every run of the caller's tenant.
    Tenant,
}

impl StreamChannel {
    /// # Errors
    /// [`BadRequest::InvalidChannel`] for anything but `run:<uuid>`, `session:<uuid>` and
    /// `tenant`.
    pub fn parse(value: &str) -> Result<Self, BadRequest> {
        if value == "tenant" {
            return Ok(Self::Tenant);
        }
        let (kind, id) = value.split_once(':').ok_or(BadRequest::InvalidChannel)?;
        // Only the hyphenated form: `Uuid::parse_str` also takes the simple, braced and URN
        // forms, and a channel should have one spelling.
        if id.len() != HYPHENATED_UUID_LEN {
            return Err(BadRequest::InvalidChannel);
        }
        match kind {
            "run" => id.parse().map(Self::Run).map_err(|_| BadRequest::InvalidChannel),
            "session" => id.parse().map(Self::Session).map_err(|_| BadRequest::InvalidChannel),
            _ => Err(BadRequest::InvalidChannel),
        }
    }

    /// The length of the channel's name, without writing it.
    const fn name_len(self) -> usize {
        match self {
            Self::Run(_) => "run:".len() + HYPHENATED_UUID_LEN,
            Self::Session(_) => "session:".len() + HYPHENATED_UUID_LEN,
            Self::Tenant => "tenant".len(),
        }
    }
}

impl fmt::Display for StreamChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(id) => write!(f, "run:{id}"),
            Self::Session(id) => write!(f, "session:{id}"),
            Self::Tenant => f.write_str("tenant"),
        }
    }
}

/// An operation sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// Subscribe to `channel`: replay from the run's history after `after_seq`, then live;
    /// live only without it.
    Subscribe {
        id: OpId,
        channel: StreamChannel,
        after_seq: Option<u64>,
    },
    Unsubscribe {
        id: OpId,
        channel: StreamChannel,
    },
    Ping {
        id: OpId,
    },
    /// Replace the connection's token before it expires (its `Debug` hides the token).
    Auth {
        id: OpId,
        token: AccessToken,
    },
}

/// What is wrong with a client's frame, for the `message` of its `bad_request` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("a frame must be a JSON object")]
    NotAnObject,
    #[error("`id` is required")]
    MissingId,
    #[error("`id` must be a string of 1 to 64 characters without control characters")]
    InvalidId,
    #[error("`op` must be one of subscribe, unsubscribe, ping, auth")]
    UnknownOp,
    #[error("`{0}` is required")]
    MissingField(&'static str),
    /// A field the op does not have (its name cut to 64 characters).
    #[error("`{0}` is not a field of this op")]
    UnknownField(String),
    #[error("`channel` must be run:<uuid>, session:<uuid> or tenant")]
    InvalidChannel,
    #[error("`after_seq` must be an integer from 0 to 9223372036854775807")]
    InvalidAfterSeq,
    #[error("`after_seq` applies to run channels only (every run numbers its own events)")]
    AfterSeqOffRunChannel,
    #[error("`token` must be a non-empty string")]
    InvalidToken,
}

/// A frame that is not a valid op, with what could be read of it: its `id` (for the error
/// frame) and its op (for the rate limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct OpParseError {
    pub id: Option<OpId>,
    pub op: Option<WsOp>,
    pub problem: BadRequest,
}

impl ClientOp {
    /// Parses one text frame.
    ///
    /// # Errors
    /// [`OpParseError`] when the frame is not a valid op.
    pub fn parse(text: &str) -> Result<Self, OpParseError> {
        let fail = |id: Option<OpId>, op: Option<WsOp>| move |problem| OpParseError { id, op, problem };
        let Ok(mut fields) = serde_json::from_str::<Map<String, Value>>(text) else {
            return Err(fail(None, None)(BadRequest::NotAnObject));
        };
        let id = match fields.remove("id") {
            Some(Value::String(id)) => OpId::parse(&id).map_err(fail(None, None))?,
            Some(_) => return Err(fail(None, None)(BadRequest::InvalidId)),
            None => return Err(fail(None, None)(BadRequest::MissingId)),
        };
        let op = match fields.remove("op") {
            Some(Value::String(name)) => WsOp::parse(&name),
            Some(_) => None,
            None => return Err(fail(Some(id), None)(BadRequest::MissingField("op"))),
        };
        let Some(op) = op else {
            return Err(fail(Some(id), None)(BadRequest::UnknownOp));
        };
        Self::from_fields(id.clone(), op, fields).map_err(fail(Some(id), Some(op)))
    }

    fn from_fields(id: OpId, op: WsOp, mut fields: Map<String, Value>) -> Result<Self, BadRequest> {
        let parsed = match op {
            WsOp::Subscribe => {
                let channel = channel(fields.remove("channel"))?;
                let after_seq = match fields.remove("after_seq") {
                    None | Some(Value::Null) => None,
                    Some(value) => Some(
                        value
                            .as_u64()
                            .filter(|seq| *seq <= MAX_AFTER_SEQ)
                            .ok_or(BadRequest::InvalidAfterSeq)?,
                    ),
                };
                if after_seq.is_some() && !matches!(channel, StreamChannel::Run(_)) {
                    return Err(BadRequest::AfterSeqOffRunChannel);
                }
                Self::Subscribe { id, channel, after_seq }
            }
            WsOp::Unsubscribe => Self::Unsubscribe { id, channel: channel(fields.remove("channel"))? },
            WsOp::Ping => Self::Ping { id },
            WsOp::Auth => match fields.remove("token") {
                Some(Value::String(token)) if !token.is_empty() => {
                    Self::Auth { id, token: AccessToken::new(&token) }
                }
                Some(_) => return Err(BadRequest::InvalidToken),
                None => return Err(BadRequest::MissingField("token")),
            },
        };
        match fields.keys().next() {
            Some(unknown) => Err(BadRequest::UnknownField(unknown.chars().take(OpId::MAX_CHARS).collect())),
            None => Ok(parsed),
        }
    }

    /// The client's id of the op.
    pub const fn id(&self) -> &OpId {
        match self {
            Self::Subscribe { id, .. }
            | Self::Unsubscribe { id, .. }
            | Self::Ping { id }
            | Self::Auth { id, .. } => id,
        }
    }

    /// The op, for its rate limit.
    pub const fn op(&self) -> WsOp {
        match self {
            Self::Subscribe { .. } => WsOp::Subscribe,
            Self::Unsubscribe { .. } => WsOp::Unsubscribe,
            Self::Ping { .. } => WsOp::Ping,
            Self::Auth { .. } => WsOp::Auth,
        }
    }
}

fn channel(value: Option<Value>) -> Result<StreamChannel, BadRequest> {
    match value {
        Some(Value::String(name)) => StreamChannel::parse(&name),
        Some(_) => Err(BadRequest::InvalidChannel),
        None => Err(BadRequest::MissingField("channel")),
    }
}

/// `{"type":"ack","id":<id>}`: the op succeeded.
pub fn ack_frame(id: &OpId) -> String {
    id_frame("ack", id)
}

/// `{"type":"pong","id":<id>}`: the answer to a ping.
pub fn pong_frame(id: &OpId) -> String {
    id_frame("pong", id)
}

fn id_frame(kind: &str, id: &OpId) -> String {
    let mut frame = String::with_capacity(24 + kind.len() + id.0.len());
    frame.push_str(r#"{"type":""#);
    frame.push_str(kind);
    frame.push_str(r#"","id":"#);
    push_json_string(&mut frame, id.as_str());
    frame.push('}');
    frame
}

/// `{"type":"event","channel":<channel>,"seq":<seq>,"event":<the event's JSON>}`, with the
/// event's JSON written as published, never parsed again.
pub fn event_frame(channel: StreamChannel, event: &LiveEvent) -> String {
    let mut frame = String::with_capacity(event_frame_len(channel, event));
    // Writing into a `String` cannot fail.
    let _ = write!(frame, r#"{{"type":"event","channel":"{channel}","seq":{},"event":"#, event.seq);
    frame.push_str(&event.json);
    frame.push('}');
    frame
}

/// The length of [`event_frame`]'s text, without writing it.
pub fn event_frame_len(channel: StreamChannel, event: &LiveEvent) -> usize {
    r#"{"type":"event","channel":"","seq":,"event":}"#.len()
        + channel.name_len()
        + decimal_digits(event.seq)
        + event.json.len()
}

const fn decimal_digits(value: u64) -> usize {
    match value.checked_ilog10() {
        // At most 20 digits: the cast cannot truncate.
        Some(log) => log as usize + 1,
        None => 1,
    }
}

/// The `code` of an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    RateLimited,
    TokenExpired,
    Unavailable,
    ResumeRequired,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::TokenExpired => "token_expired",
            Self::Unavailable => "unavailable",
            Self::ResumeRequired => "resume_required",
        }
    }
}

/// `{"type":"error",...}`: an op refused, or a subscription that must be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The op's id; `None` when it could not be read, or for `resume_required`.
    pub id: Option<OpId>,
    pub code: ErrorCode,
    pub message: Option<Cow<'static, str>>,
    pub retry_after_ms: Option<u64>,
    /// The run to subscribe to again, and the `after_seq` to do it with (`resume_required`
    /// only).
    pub resume: Option<(RunId, u64)>,
}

impl ErrorFrame {
    const fn new(id: Option<OpId>, code: ErrorCode) -> Self {
        Self { id, code, message: None, retry_after_ms: None, resume: None }
    }

    /// `bad_request` for a frame that is not a valid op, saying why.
    pub fn bad_request(error: &OpParseError) -> Self {
        Self {
            message: Some(error.problem.to_string().into()),
            ..Self::new(error.id.clone(), ErrorCode::BadRequest)
        }
    }

    /// `forbidden`, with the permission matrix's reason (never anything about the record).
    pub fn forbidden(id: OpId, reason: &'static str) -> Self {
        Self { message: Some(reason.into()), ..Self::new(Some(id), ErrorCode::Forbidden) }
    }

    pub fn rate_limited(id: OpId, retry_after_ms: u64) -> Self {
        Self { retry_after_ms: Some(retry_after_ms), ..Self::new(Some(id), ErrorCode::RateLimited) }
    }

    pub fn token_expired(id: OpId) -> Self {
        Self::new(Some(id), ErrorCode::TokenExpired)
    }

    pub fn unavailable(id: OpId, retry_after_ms: u64) -> Self {
        Self { retry_after_ms: Some(retry_after_ms), ..Self::new(Some(id), ErrorCode::Unavailable) }
    }

    /// The delivery of `run`'s events has ended with its last delivered event at
    /// `after_seq`: subscribe to `run:<run>` with it.
    pub fn resume_required(run: RunId, after_seq: u64) -> Self {
        Self { resume: Some((run, after_seq)), ..Self::new(None, ErrorCode::ResumeRequired) }
    }

    /// The frame's JSON text.
    pub fn to_text(&self) -> String {
        let mut frame = String::from(r#"{"type":"error""#);
        if let Some(id) = &self.id {
            frame.push_str(r#","id":"#);
            push_json_string(&mut frame, id.as_str());
        }
        frame.push_str(r#","code":""#);
        frame.push_str(self.code.as_str());
        frame.push('"');
        if let Some(message) = &self.message {
            frame.push_str(r#","message":"#);
            push_json_string(&mut frame, message);
        }
        // Writing into a `String` cannot fail.
        if let Some(ms) = self.retry_after_ms {
            let _ = write!(frame, r#","retry_after_ms":{ms}"#);
        }
        if let Some((run, after_seq)) = self.resume {
            let _ = write!(frame, r#","channel":"{}","after_seq":{after_seq}"#, StreamChannel::Run(run));
        }
        frame.push('}');
        frame
    }
}

/// Appends `value` as a JSON string, escaped as `serde_json` escapes it (RFC 8259: quote,
/// backslash and control characters), so that frames are written without an intermediate
/// value and without a serializer whose error could never happen.
pub(crate) fn push_json_string(out: &mut String, value: &str) {
    out.reserve(value.len() + 2);
    out.push('"');
    let mut plain = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[plain..at]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        plain = at + 1;
    }
    out.push_str(&value[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests;

//! The server frames the tool reads (ARCHITECTURE.md §7), borrowed from the text so a frame
//! costs one parse and no copy, and the send timestamps the tool writes into delta texts.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// `{"type":"event"|"ack"|"error"|..., ...}`: only what the accounting reads.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub seq: Option<u64>,
    #[serde(borrow)]
    pub event: Option<Event<'a>>,
    #[serde(borrow)]
    pub code: Option<Cow<'a, str>>,
    pub after_seq: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow)]
    pub data: Option<Data<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Data<'a> {
    #[serde(borrow)]
    pub text: Option<Cow<'a, str>>,
    pub coalesced: Option<Range>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Range {
    pub from_seq: u64,
    pub to_seq: u64,
}

/// Microseconds since the Unix epoch: the send time written into each delta's text (the
/// tool and the servers share the machine's clock).
pub fn now_micros() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros())
        .unwrap_or(u64::MAX)
}

/// A delta text carrying its send time: `<micros>;`, then `pad` (filler ending in `;` that
/// makes events bigger, or nothing). A coalesced delta's text is the concatenation of the
/// merged ones, so each merged event keeps its own send time.
pub fn stamp(micros: u64, pad: &str) -> String {
    format!("{micros};{pad}")
}

/// The filler of `bytes` bytes added to each delta (`--pad`); empty for 0.
pub fn padding(bytes: usize) -> String {
    if bytes == 0 { String::new() } else { format!("{};", "x".repeat(bytes.saturating_sub(1))) }
}

/// The send times in a (possibly coalesced) delta text.
pub fn stamps(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(';').filter_map(|part| part.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coalesced_event_frame_yields_its_range_and_every_send_time() {
        let text = r#"{"type":"event","channel":"run:x","seq":7,"event":{"seq":7,"run_id":"x","kind":"step.delta",
            "data":{"step_id":"s1","text":"100;200;300;","coalesced":{"from_seq":5,"to_seq":7}},"created_at":"t"}}"#;
        let frame: Frame<'_> = serde_json::from_str(text).unwrap();
        let data = frame.event.unwrap().data.unwrap();
        let range = data.coalesced.unwrap();
        assert_eq!((frame.seq, range.from_seq, range.to_seq), (Some(7), 5, 7));
        assert_eq!(stamps(&data.text.unwrap()).collect::<Vec<_>>(), vec![100, 200, 300]);
    }

    #[test]
    fn padding_is_not_read_as_a_send_time() {
        let text = format!("{}{}", stamp(100, &padding(50)), stamp(200, &padding(50)));
        assert_eq!(text.len(), 2 * (4 + 50));
        assert_eq!(stamps(&text).collect::<Vec<_>>(), vec![100, 200]);
    }

    #[test]
    fn a_resume_required_error_carries_its_after_seq() {
        let frame: Frame<'_> = serde_json::from_str(
            r#"{"type":"error","code":"resume_required","channel":"run:x","after_seq":41}"#,
        )
        .unwrap();
        assert_eq!(
            (frame.kind.as_ref(), frame.code.as_deref(), frame.after_seq),
            ("error", Some("resume_required"), Some(41))
        );
    }
}

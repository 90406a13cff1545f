use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use super::*;

const RUN: &str = "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b";

fn op_id(id: &str) -> OpId {
    OpId::parse(id).unwrap()
}

fn run() -> RunId {
    RUN.parse().unwrap()
}

/// The parse error of `text`, as (id, op, problem).
fn refusal(text: &str) -> (Option<String>, Option<WsOp>, BadRequest) {
    let error = ClientOp::parse(text).unwrap_err();
    (error.id.map(|id| id.as_str().to_owned()), error.op, error.problem)
}

#[test]
fn the_four_ops_of_the_contract_parse() {
    let subscribe = format!(r#"{{"op":"subscribe","id":"1","channel":"run:{RUN}","after_seq":0}}"#);
    assert_eq!(
        ClientOp::parse(&subscribe).unwrap(),
        ClientOp::Subscribe { id: op_id("1"), channel: StreamChannel::Run(run()), after_seq: Some(0) }
    );
    let unsubscribe = format!(r#"{{"op":"unsubscribe","id":"2","channel":"run:{RUN}"}}"#);
    assert_eq!(
        ClientOp::parse(&unsubscribe).unwrap(),
        ClientOp::Unsubscribe { id: op_id("2"), channel: StreamChannel::Run(run()) }
    );
    assert_eq!(ClientOp::parse(r#"{"op":"ping","id":"3"}"#).unwrap(), ClientOp::Ping { id: op_id("3") });
    let auth = ClientOp::parse(r#"{"op":"auth","id":"4","token":"a.b.c"}"#).unwrap();
    assert_eq!(auth, ClientOp::Auth { id: op_id("4"), token: AccessToken::new("a.b.c") });
    assert_eq!((auth.id().as_str(), auth.op()), ("4", WsOp::Auth));
}

#[test]
fn subscribe_without_after_seq_or_with_null_is_live_only() {
    for text in [
        r#"{"op":"subscribe","id":"1","channel":"tenant"}"#,
        r#"{"op":"subscribe","id":"1","channel":"tenant","after_seq":null}"#,
    ] {
        assert_eq!(
            ClientOp::parse(text).unwrap(),
            ClientOp::Subscribe { id: op_id("1"), channel: StreamChannel::Tenant, after_seq: None }
        );
    }
}

#[test]
fn the_auth_ops_debug_output_never_shows_the_token() {
    let auth = ClientOp::parse(r#"{"op":"auth","id":"4","token":"eyJhbGciOiJIUzI1NiJ9.secret-claims.sig"}"#)
        .unwrap();
    let debug = format!("{auth:?}");
    assert!(!debug.contains("secret-claims"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}

#[test]
fn channels_parse_in_hyphenated_form_only_and_print_in_lower_case() {
    let session = Uuid::from_u128(7);
    assert_eq!(StreamChannel::parse(&format!("run:{RUN}")), Ok(StreamChannel::Run(run())));
    assert_eq!(
        StreamChannel::parse(&format!("session:{session}")),
        Ok(StreamChannel::Session(SessionId::from_uuid(session)))
    );
    assert_eq!(StreamChannel::parse("tenant"), Ok(StreamChannel::Tenant));
    let upper = StreamChannel::parse(&format!("run:{}", RUN.to_uppercase())).unwrap();
    assert_eq!(upper.to_string(), format!("run:{RUN}"));
    let simple = Uuid::parse_str(RUN).unwrap().simple().to_string();
    for malformed in [
        "run:",
        "run:42",
        "run:0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6",
        "run:0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6g",
        &format!("run:{simple}"),
        &format!("run:urn:uuid:{RUN}"),
        &format!("run:{{{RUN}}}"),
        &format!("runs:{RUN}"),
        &format!("tenant:{RUN}"),
        "Tenant",
        "tenant ",
        "",
    ] {
        assert_eq!(StreamChannel::parse(malformed), Err(BadRequest::InvalidChannel), "{malformed}");
    }
}

#[test]
fn a_channel_prints_as_its_name_with_the_length_announced() {
    for channel in [
        StreamChannel::Run(run()),
        StreamChannel::Session(SessionId::from_uuid(Uuid::max())),
        StreamChannel::Tenant,
    ] {
        assert_eq!(channel.to_string().len(), channel.name_len(), "{channel}");
        assert_eq!(StreamChannel::parse(&channel.to_string()), Ok(channel));
    }
}

#[test]
fn a_refused_frame_keeps_the_id_and_op_that_could_be_read() {
    let bad_channel = r#"{"op":"subscribe","id":"7","channel":"run:nope"}"#;
    assert_eq!(refusal(bad_channel), (Some("7".into()), Some(WsOp::Subscribe), BadRequest::InvalidChannel));
    assert_eq!(refusal(r#"{"op":"publish","id":"8"}"#), (Some("8".into()), None, BadRequest::UnknownOp));
    assert_eq!(refusal(r#"{"op":7,"id":"8"}"#), (Some("8".into()), None, BadRequest::UnknownOp));
    assert_eq!(refusal(r#"{"id":"9"}"#), (Some("9".into()), None, BadRequest::MissingField("op")));
    assert_eq!(
        refusal(r#"{"op":"unsubscribe","id":"10"}"#),
        (Some("10".into()), Some(WsOp::Unsubscribe), BadRequest::MissingField("channel"))
    );
    assert_eq!(
        refusal(r#"{"op":"auth","id":"11","token":""}"#),
        (Some("11".into()), Some(WsOp::Auth), BadRequest::InvalidToken)
    );
    assert_eq!(
        refusal(r#"{"op":"auth","id":"12"}"#),
        (Some("12".into()), Some(WsOp::Auth), BadRequest::MissingField("token"))
    );
}

#[test]
fn frames_without_a_readable_id_are_refused_without_one() {
    assert_eq!(refusal("not json"), (None, None, BadRequest::NotAnObject));
    assert_eq!(refusal(r#"["op","ping"]"#), (None, None, BadRequest::NotAnObject));
    assert_eq!(refusal(r#"{"op":"ping"}"#), (None, None, BadRequest::MissingId));
    assert_eq!(refusal(r#"{"op":"ping","id":3}"#), (None, None, BadRequest::InvalidId));
    assert_eq!(refusal(r#"{"op":"ping","id":""}"#), (None, None, BadRequest::InvalidId));
    assert_eq!(refusal(r#"{"op":"ping","id":"a\nb"}"#), (None, None, BadRequest::InvalidId));
}

#[test]
fn ids_are_bounded_to_64_characters() {
    let longest = "é".repeat(OpId::MAX_CHARS);
    let ping = format!(r#"{{"op":"ping","id":"{longest}"}}"#);
    assert_eq!(ClientOp::parse(&ping).unwrap().id().as_str(), longest);
    let too_long = format!(r#"{{"op":"ping","id":"{longest}x"}}"#);
    assert_eq!(refusal(&too_long), (None, None, BadRequest::InvalidId));
}

#[test]
fn fields_an_op_does_not_have_are_refused() {
    let misspelt = format!(r#"{{"op":"subscribe","id":"1","channel":"run:{RUN}","afterSeq":5}}"#);
    assert_eq!(
        refusal(&misspelt),
        (Some("1".into()), Some(WsOp::Subscribe), BadRequest::UnknownField("afterSeq".into()))
    );
    let ping = r#"{"op":"ping","id":"2","channel":"tenant"}"#;
    assert_eq!(refusal(ping).2, BadRequest::UnknownField("channel".into()));
    let long_name = format!(r#"{{"op":"ping","id":"3","{}":1}}"#, "x".repeat(500));
    assert_eq!(refusal(&long_name).2, BadRequest::UnknownField("x".repeat(64)));
}

#[test]
fn after_seq_is_bounded_and_only_for_run_channels() {
    let subscribe =
        |after: &str| format!(r#"{{"op":"subscribe","id":"1","channel":"run:{RUN}","after_seq":{after}}}"#);
    let max = ClientOp::parse(&subscribe("9223372036854775807")).unwrap();
    assert!(matches!(max, ClientOp::Subscribe { after_seq: Some(9_223_372_036_854_775_807), .. }));
    for invalid in ["9223372036854775808", "-1", "1.5", r#""3""#, "true"] {
        assert_eq!(refusal(&subscribe(invalid)).2, BadRequest::InvalidAfterSeq, "{invalid}");
    }
    let session = format!(r#"{{"op":"subscribe","id":"1","channel":"session:{RUN}","after_seq":3}}"#);
    assert_eq!(refusal(&session).2, BadRequest::AfterSeqOffRunChannel);
    let tenant = r#"{"op":"subscribe","id":"1","channel":"tenant","after_seq":0}"#;
    assert_eq!(refusal(tenant).2, BadRequest::AfterSeqOffRunChannel);
}

#[test]
fn ack_and_pong_frames_carry_the_ops_id() {
    assert_eq!(ack_frame(&op_id("1")), r#"{"type":"ack","id":"1"}"#);
    assert_eq!(pong_frame(&op_id("3")), r#"{"type":"pong","id":"3"}"#);
    let tricky = op_id(r#"a"b\c"#);
    let frame: Value = serde_json::from_str(&ack_frame(&tricky)).unwrap();
    assert_eq!(frame, json!({"type": "ack", "id": r#"a"b\c"#}));
}

#[test]
fn an_event_frame_wraps_the_events_json_byte_for_byte() {
    let json =
        r#"{"seq":12,"run_id":"x","kind":"step.delta","data":{"step_id":"s","text":"hi"},"created_at":"t"}"#;
    let event = LiveEvent::new(run(), 12, Arc::<str>::from(json));
    let frame = event_frame(StreamChannel::Run(run()), &event);
    assert_eq!(frame, format!(r#"{{"type":"event","channel":"run:{RUN}","seq":12,"event":{json}}}"#));
    for (channel, seq) in [
        (StreamChannel::Tenant, 0),
        (StreamChannel::Session(SessionId::from_uuid(Uuid::max())), u64::MAX),
        (StreamChannel::Run(run()), 9),
    ] {
        let event = LiveEvent::new(event.run_id, seq, Arc::clone(&event.json));
        assert_eq!(event_frame(channel, &event).len(), event_frame_len(channel, &event), "{channel} {seq}");
    }
}

#[test]
fn error_frames_carry_what_their_code_needs() {
    let frames = [
        (
            ErrorFrame::rate_limited(op_id("1"), 1200),
            json!({"type": "error", "id": "1", "code": "rate_limited", "retry_after_ms": 1200}),
        ),
        (
            ErrorFrame::forbidden(
                op_id("2"),
                "only tenant administrators may subscribe to the tenant channel",
            ),
            json!({"type": "error", "id": "2", "code": "forbidden", "message": "only tenant administrators may subscribe to the tenant channel"}),
        ),
        (ErrorFrame::token_expired(op_id("3")), json!({"type": "error", "id": "3", "code": "token_expired"})),
        (
            ErrorFrame::unavailable(op_id("4"), 1000),
            json!({"type": "error", "id": "4", "code": "unavailable", "retry_after_ms": 1000}),
        ),
        (
            ErrorFrame::resume_required(run(), 41),
            json!({"type": "error", "code": "resume_required", "channel": format!("run:{RUN}"), "after_seq": 41}),
        ),
    ];
    for (frame, expected) in frames {
        let text = frame.to_text();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected, "{text}");
        assert!(text.starts_with(r#"{"type":"error""#), "{text}");
    }
}

#[test]
fn a_bad_request_frame_says_why_and_carries_the_id_when_it_was_read() {
    let error = ClientOp::parse(r#"{"op":"subscribe","id":"5","channel":"run:x"}"#).unwrap_err();
    let frame: Value = serde_json::from_str(&ErrorFrame::bad_request(&error).to_text()).unwrap();
    assert_eq!(
        frame,
        json!({"type": "error", "id": "5", "code": "bad_request", "message": "`channel` must be run:<uuid>, session:<uuid> or tenant"})
    );
    let unreadable = ClientOp::parse("{").unwrap_err();
    let frame: Value = serde_json::from_str(&ErrorFrame::bad_request(&unreadable).to_text()).unwrap();
    assert_eq!(
        frame,
        json!({"type": "error", "code": "bad_request", "message": "a frame must be a JSON object"})
    );
}

#[test]
fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
    let every_ascii: String = (0u8..0x80).map(char::from).collect();
    for value in [every_ascii.as_str(), "", "plain", "é ✓ 𝄞 \u{2028}", "\"\\\"", "tail\u{1f}"] {
        let mut ours = String::new();
        push_json_string(&mut ours, value);
        assert_eq!(ours, serde_json::to_string(value).unwrap(), "{value:?}");
    }
}

//! Events as the run history and the queue hold them: one JSON array per sequencer call, each
//! element the public shape of an event (`run_id`, `kind`, `data`, `created_at`) with the
//! tenant and the producer's id, and without its `seq`, which is its place after the array's
//! first seq (the script never rewrites the array: ADR 0017, "As built: the cost of the hot
//! paths").
//!
//! Reading them back is on the worker's hot path (every queued event is decoded once), so
//! [`decode_events`] reads each event in one pass: its `data` is checked against its `kind`
//! as it is read, without building a `serde_json::Value` first.

use std::fmt;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sba_application::ports::SequencerError;
use sba_domain::events::{EventData, EventKind, RunEvent};
use sba_domain::{RunId, TenantId};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json;

/// An event as written, without its `seq`.
#[derive(Debug, Serialize)]
struct StoredEvent<'a> {
    run_id: RunId,
    tenant_id: TenantId,
    id: Option<&'a str>,
    kind: EventKind,
    data: Json,
    created_at: DateTime<Utc>,
}

/// The JSON of one event without its seq: an element of the array the script records.
pub(super) fn body(
    tenant: TenantId,
    run: RunId,
    producer_id: Option<&str>,
    data: &EventData,
    created_at: DateTime<Utc>,
) -> Result<String, SequencerError> {
    let stored = StoredEvent {
        run_id: run,
        tenant_id: tenant,
        id: producer_id,
        kind: data.kind(),
        data: data.to_json(),
        created_at,
    };
    Ok(serde_json::to_string(&stored).context("cannot encode an event")?)
}

/// A JSON array of stored events whose first has seq `first`, each with its data checked
/// against its kind.
///
/// # Errors
/// When the text is not such an array, or an event's data does not fit its kind.
pub(super) fn decode_events(text: &str, first: u64) -> anyhow::Result<Vec<RunEvent>> {
    let mut events = serde_json::from_str::<DecodedList>(text)?.0;
    for (event, seq) in events.iter_mut().zip(first..) {
        event.seq = seq;
    }
    Ok(events)
}

struct Decoded(RunEvent);

struct DecodedList(Vec<RunEvent>);

impl<'de> Deserialize<'de> for DecodedList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = DecodedList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of stored events")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DecodedList, A::Error> {
                let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(16));
                while let Some(Decoded(event)) = seq.next_element()? {
                    events.push(event);
                }
                Ok(DecodedList(events))
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    RunId,
    TenantId,
    Id,
    Kind,
    Data,
    CreatedAt,
    #[serde(other)]
    Other,
}

/// Reads `data` for a kind already read.
struct DataFor(EventKind);

impl<'de> DeserializeSeed<'de> for DataFor {
    type Value = EventData;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<EventData, D::Error> {
        EventData::parse_from(self.0, deserializer).map_err(|e| de::Error::custom(e.message))
    }
}

impl<'de> Deserialize<'de> for Decoded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Decoded;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stored event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decoded, A::Error> {
        let (mut run_id, mut tenant_id, mut id, mut kind, mut created_at) = (None, None, None, None, None);
        let mut data = None;
        // `data` before `kind` (never written so, but valid JSON) waits for the kind.
        let mut early_data: Option<Json> = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::RunId => run_id = Some(map.next_value::<RunId>()?),
                Field::TenantId => tenant_id = Some(map.next_value::<TenantId>()?),
                Field::Id => id = map.next_value::<Option<String>>()?,
                Field::Kind => kind = Some(map.next_value::<EventKind>()?),
                Field::Data => match kind {
                    Some(kind) => data = Some(map.next_value_seed(DataFor(kind))?),
                    None => early_data = Some(map.next_value::<Json>()?),
                },
                Field::CreatedAt => created_at = Some(map.next_value::<DateTime<Utc>>()?),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
        let data = match (data, early_data) {
            (Some(data), _) => data,
            (None, Some(value)) => EventData::parse(kind, value).map_err(|e| de::Error::custom(e.message))?,
            (None, None) => return Err(de::Error::missing_field("data")),
        };
        Ok(Decoded(RunEvent {
            run_id: run_id.ok_or_else(|| de::Error::missing_field("run_id"))?,
            tenant_id: tenant_id.ok_or_else(|| de::Error::missing_field("tenant_id"))?,
            // Set from the event's place in its array.
            seq: 0,
            producer_id: id,
            data,
            created_at: created_at.ok_or_else(|| de::Error::missing_field("created_at"))?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use sba_domain::events::StepRef;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn ids() -> (TenantId, RunId) {
        (TenantId::from_uuid(Uuid::now_v7()), RunId::from_uuid(Uuid::now_v7()))
    }

    #[test]
    fn events_read_back_whole_with_seqs_from_their_place_after_the_first() {
        let (tenant, run) = ids();
        let at = Utc::now();
        let data = EventData::StepDelta { step_id: StepRef::parse("s1").unwrap(), text: "a \"b\"\n".into() };
        let text = body(tenant, run, Some("p-1"), &data, at).unwrap();
        assert!(!text.contains("\"seq\""), "{text}");
        let events = decode_events(&format!("[{text},{text}]"), 7).unwrap();
        let expected = RunEvent {
            run_id: run,
            tenant_id: tenant,
            seq: 7,
            producer_id: Some("p-1".into()),
            data,
            created_at: at,
        };
        assert_eq!(events, [expected.clone(), RunEvent { seq: 8, ..expected }]);
        assert!(decode_events("[]", 1).unwrap().is_empty());
    }

    #[test]
    fn every_kind_reads_back_as_written() {
        let (tenant, run) = ids();
        let samples = [
            (EventKind::RunStarted, json!({})),
            (EventKind::RunCompleted, json!({"output": {"answer": [1, 2.5, null]}})),
            (EventKind::RunFailed, json!({"error": {"code": "x", "message": "y"}})),
            (EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
            (EventKind::StepCompleted, json!({"step_id": "s1"})),
            (
                EventKind::ToolCallStarted,
                json!({"tool_call_id": "t1", "step_id": "s1", "name": "n", "arguments": {}}),
            ),
            (
                EventKind::ToolCallCompleted,
                json!({"tool_call_id": "t1", "output": "o", "status": "completed"}),
            ),
            (
                EventKind::UsageReported,
                json!({"model": "m", "input_tokens": 1, "output_tokens": 2, "cost_micros": 3}),
            ),
            (EventKind::RunCancelled, json!({})),
        ];
        let at = Utc::now();
        let written: Vec<RunEvent> = samples
            .into_iter()
            .zip(1..)
            .map(|((kind, data), seq)| RunEvent {
                run_id: run,
                tenant_id: tenant,
                seq,
                producer_id: None,
                data: EventData::parse(kind, data).unwrap(),
                created_at: at,
            })
            .collect();
        let texts: Vec<String> =
            written.iter().map(|e| body(tenant, run, None, &e.data, at).unwrap()).collect();
        assert_eq!(decode_events(&format!("[{}]", texts.join(",")), 1).unwrap(), written);
    }

    #[test]
    fn data_before_its_kind_and_unknown_fields_are_read_too() {
        let (tenant, run) = ids();
        let text = format!(
            r#"[{{"data":{{"step_id":"s2"}},"extra":[1],"seq":99,"run_id":"{run}","tenant_id":"{tenant}","id":null,"kind":"step.completed","created_at":"2026-12-06T07:00:00Z"}}]"#
        );
        let events = decode_events(&text, 3).unwrap();
        assert_eq!((events[0].seq, events[0].kind()), (3, EventKind::StepCompleted));
    }

    #[test]
    fn data_that_does_not_fit_its_kind_or_a_missing_field_is_an_error() {
        let (tenant, run) = ids();
        let base = format!(
            r#""run_id":"{run}","tenant_id":"{tenant}","id":null,"created_at":"2026-12-06T07:00:00Z""#
        );
        for bad in [
            format!(r#"[{{{base},"kind":"step.delta","data":{{"step_id":"s1"}}}}]"#),
            format!(r#"[{{{base},"kind":"step.delta","data":{{"step_id":"s1","text":"x","more":1}}}}]"#),
            format!(r#"[{{{base},"kind":"step.delta"}}]"#),
            format!(r#"[{{{base},"data":{{}}}}]"#),
            format!(r#"[{{{base},"kind":"run.exploded","data":{{}}}}]"#),
            format!(r#"[{{{base},"kind":"run.started","data":null}}]"#),
            format!(r#"{{{base},"kind":"run.started","data":{{}}}}"#),
        ] {
            assert!(decode_events(&bad, 1).is_err(), "{bad}");
        }
    }
}

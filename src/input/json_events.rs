//! The `events` field of a JSON body, read straight into events while the body is parsed.
//!
//! Parsed into a `serde_json::Value` first, a request of 3,650 events became 3,650 small arrays of
//! four values each, allocated, walked once and freed: a quarter of the server's CPU for
//! `event-digits` over HTTP. Here each row goes straight into an [`Event`]. The verdict on a value
//! that is not a list of events (the tests compare it, on every kind of bad input, with a walk of
//! the JSON tree, the decoder this replaced) is kept until the request is checked, so that the
//! order of the request's errors does not change. [`decode_json_events`] applies the same rule to
//! a JSON value that is already parsed.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::contract::{Event, EventError};

/// The events, or what is wrong with the value given for them.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonEvents(pub Result<Vec<Event>, EventError>);

impl<'de> Deserialize<'de> for JsonEvents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EventsVisitor)
    }
}

/// Consumes a map (a value that is not what was expected, but must still be parsed past).
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the visits of every non-sequence JSON value as `$verdict(kind)`.
macro_rules! other_values {
    ($verdict:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($verdict("a boolean"))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($verdict("a number"))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($verdict("a number"))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($verdict("a number"))
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($verdict("a string"))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($verdict("null"))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map)?;
            Ok($verdict("an object"))
        }
    };
}

struct EventsVisitor;

impl<'de> Visitor<'de> for EventsVisitor {
    type Value = JsonEvents;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of [x, y, t, p] rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut rows: A) -> Result<JsonEvents, A::Error> {
        let mut events = Vec::with_capacity(rows.size_hint().unwrap_or(0).min(1 << 16));
        let mut first_bad = None;
        let mut index = 0;
        while let Some(row) = rows.next_element_seed(Element(RowVisitor))? {
            match (row, first_bad) {
                (Some(event), None) => events.push(event),
                (None, None) => first_bad = Some(index),
                _ => {}
            }
            index += 1;
        }
        Ok(JsonEvents(match first_bad {
            Some(index) => Err(EventError::NotAnEvent { index }),
            None if events.is_empty() => Err(EventError::Empty),
            None => Ok(events),
        }))
    }

    other_values!(|kind| JsonEvents(Err(EventError::NotAnArray(kind))));
}

/// Reads one element of a sequence with the visitor it holds.
struct Element<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Element<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self.0)
    }
}

/// One row: `Some` when it is exactly four integers that fit an `i64`.
struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = Option<Event>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("[x, y, t, p]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut fields: A) -> Result<Option<Event>, A::Error> {
        let mut event = [0i64; 4];
        let (mut count, mut integers) = (0, true);
        while let Some(field) = fields.next_element_seed(Element(IntegerVisitor))? {
            match (event.get_mut(count), field) {
                (Some(slot), Some(value)) => *slot = value,
                _ => integers = false,
            }
            count += 1;
        }
        Ok((integers && count == 4).then_some(event))
    }

    other_values!(|_| None);
}

/// One field: `Some` for an integer that fits an `i64` (what `Value::as_i64` accepts).
struct IntegerVisitor;

impl<'de> Visitor<'de> for IntegerVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E>(self, value: i64) -> Result<Option<i64>, E> {
        Ok(Some(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Option<i64>, E> {
        Ok(i64::try_from(value).ok())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<i64>, A::Error> {
        drain_seq(seq)?;
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<i64>, A::Error> {
        drain_map(map)?;
        Ok(None)
    }
}

/// Reads `[[x, y, t, p], ...]` from a JSON value, by the rule of [`JsonEvents`] (which `/v1` bodies
/// apply while they are parsed, without a tree).
pub fn decode_json_events(value: &Value) -> Result<Vec<Event>, EventError> {
    match JsonEvents::deserialize(value) {
        Ok(events) => events.0,
        // Not reached: `JsonEvents` takes every kind of JSON value and keeps its verdict on it.
        Err(_) => Err(EventError::NotAnArray("a value that cannot be read")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The decoder this replaced, walking the JSON tree: the reference to agree with.
    fn tree_walk(value: &Value) -> Result<Vec<Event>, EventError> {
        let kind = match value {
            Value::Array(_) => "",
            Value::Object(_) => "an object",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
        };
        let rows = value.as_array().ok_or(EventError::NotAnArray(kind))?;
        if rows.is_empty() {
            return Err(EventError::Empty);
        }
        rows.iter()
            .enumerate()
            .map(|(index, row)| {
                let fields =
                    row.as_array().filter(|f| f.len() == 4).ok_or(EventError::NotAnEvent { index })?;
                let mut event = [0i64; 4];
                for (slot, field) in event.iter_mut().zip(fields) {
                    *slot = field.as_i64().ok_or(EventError::NotAnEvent { index })?;
                }
                Ok(event)
            })
            .collect()
    }

    /// Every reading of the same JSON agrees with the reference: the events, or the same error.
    fn agree(text: &str) {
        let direct: JsonEvents = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let value: Value = serde_json::from_str(text).expect("JSON");
        let expected = tree_walk(&value);
        assert_eq!(direct.0, expected, "{text}");
        assert_eq!(decode_json_events(&value), expected, "{text} (from the tree)");
    }

    #[test]
    fn reads_events_like_the_json_tree_does() {
        agree("[[1, 2, 3, 1]]");
        agree("[[0, 0, 0, 0], [33, 33, 299999, 1], [-1, -5, -9223372036854775808, 9223372036854775807]]");
        let many: Vec<String> =
            (0..5000).map(|i| format!("[{}, {}, {}, {}]", i % 34, i % 7, i * 3, i % 2)).collect();
        agree(&format!("[{}]", many.join(",")));
    }

    #[test]
    fn gives_the_json_trees_verdict_on_everything_else() {
        for text in [
            "[]",
            "{}",
            r#"{"x": [1, 2]}"#,
            r#""events""#,
            "12",
            "-3.5",
            "true",
            "null",
            "[1, 2, 3, 4]",
            "[[1, 2, 3]]",
            "[[1, 2, 3, 4, 5]]",
            "[[1, 2, 3, 4], [1, 2, 3]]",
            "[[1, 2, 3, 1.0]]",
            "[[1, 2, 3, 1e3]]",
            r#"[[1, 2, "3", 1]]"#,
            "[[1, 2, 3, null]]",
            "[[1, 2, 3, true]]",
            "[[1, 2, 3, [1]]]",
            r#"[[1, 2, 3, {"p": 1}]]"#,
            "[[1, 2, 3, 9223372036854775808]]",
            "[[1, 2, 3, 18446744073709551615]]",
            "[[1, 2, 3, 4], {}, [1, 2, 3, 4], 7]",
            "[[1, 2, 3, 4], [1, 2, 3, 4], [[1, 2], 2, 3, 4]]",
            "[null]",
        ] {
            agree(text);
        }
    }
}

//! Server-sent events as the server writes them (an `event:` line, a `data:` line, a blank line):
//! one parser for every tool.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

/// One event: its name (`partial`, `final`, `error`) and its data, both trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// The data as JSON; null when it is not JSON (the caller then reports what it misses).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Cuts a byte stream into events. Bytes are kept until their event is complete, so that an event
/// (or a character) split across chunks is read whole.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete event, if the bytes pushed so far hold one.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let end = self.buffer.windows(2).position(|pair| pair == b"\n\n")?;
        let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
        let block = String::from_utf8_lossy(&block);
        let field = |name: &str| {
            block.lines().find_map(|line| line.strip_prefix(name)).map(str::trim).unwrap_or("").to_owned()
        };
        Some(SseEvent { event: field("event:"), data: field("data:") })
    }
}

/// The events of a response body, as they arrive.
pub struct SseStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    parser: SseParser,
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        Self { body: Box::pin(response.bytes_stream()), parser: SseParser::default() }
    }

    /// The next event; `None` once the body ends (an unfinished last event is not one).
    pub async fn next(&mut self) -> Option<reqwest::Result<SseEvent>> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Some(Ok(event));
            }
            match self.body.next().await? {
                Ok(chunk) => self.parser.push(&chunk),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(event) = parser.next_event() {
                out.push(event);
            }
        }
        out
    }

    #[test]
    fn events_split_across_chunks_are_read_whole() {
        let got = events(&[b"event: partial\ndata: {\"t\":1}\n", b"\nevent: fi", b"nal\ndata: {}\n\n"]);
        assert_eq!(
            got,
            vec![
                SseEvent { event: "partial".into(), data: "{\"t\":1}".into() },
                SseEvent { event: "final".into(), data: "{}".into() },
            ]
        );
        assert_eq!(got[0].json()["t"], 1);
    }

    #[test]
    fn a_character_split_across_chunks_survives_and_an_unfinished_event_waits() {
        let snowman = "\u{2603}".as_bytes();
        let first = [b"event: error\ndata: ".as_slice(), &snowman[..1]].concat();
        let second = [&snowman[1..], b"\n\nevent: partial\n".as_slice()].concat();
        let got = events(&[&first, &second]);
        assert_eq!(got, vec![SseEvent { event: "error".into(), data: "\u{2603}".into() }]);
        assert_eq!(SseEvent { event: String::new(), data: "not json".into() }.json(), Value::Null);
    }
}

//! The `Events` message of `anytime.proto` (four packed `int64` columns), with a decoder of its
//! own for the packed columns.
//!
//! An event camera's request carries thousands to millions of events, four varints each. prost's
//! generated decoder takes a packed column one value at a time through the `Buf` trait (a bounds
//! check, a chunk lookup and an advance per value): at 3,650 events a request that was ~0.2 ms, 15%
//! of the server's time for `event-digits`. When a column's bytes are contiguous in the received
//! buffer (tonic hands a message over in one piece) and well formed, they are decoded here in one
//! pass over the slice. Anything else (a column split across chunks, unpacked values, a malformed
//! varint, a length past the end) goes to prost's own decoder, so the accepted wire format and the
//! errors are exactly prost's. Encoding is prost's.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{decode_varint, int64, skip_field, DecodeContext, WireType};
use prost::DecodeError;

/// Raw events as columns: event `i` is `(x[i], y[i], t_us[i], p[i])`.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct Events {
    pub x: Vec<i64>,
    pub y: Vec<i64>,
    pub t_us: Vec<i64>,
    pub p: Vec<i64>,
}

impl Events {
    fn columns(&self) -> [(u32, &Vec<i64>); 4] {
        [(1, &self.x), (2, &self.y), (3, &self.t_us), (4, &self.p)]
    }
}

impl prost::Message for Events {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for (tag, values) in self.columns() {
            int64::encode_packed(tag, values, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let column = match tag {
            1 => &mut self.x,
            2 => &mut self.y,
            3 => &mut self.t_us,
            4 => &mut self.p,
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        if wire_type == WireType::LengthDelimited && merge_contiguous_packed(column, buf) {
            return Ok(());
        }
        int64::merge_repeated(wire_type, column, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.columns().iter().map(|(tag, values)| int64::encoded_len_packed(*tag, values)).sum()
    }

    fn clear(&mut self) {
        self.x.clear();
        self.y.clear();
        self.t_us.clear();
        self.p.clear();
    }
}

/// Appends a packed column whose length prefix and bytes lie in `buf`'s current chunk and are well
/// formed, and consumes them; otherwise leaves `buf` and `values` as they were and returns false.
fn merge_contiguous_packed(values: &mut Vec<i64>, buf: &mut impl Buf) -> bool {
    let chunk = buf.chunk();
    let mut rest = chunk;
    let Ok(len) = decode_varint(&mut rest) else { return false };
    let Ok(len) = usize::try_from(len) else { return false };
    if rest.len() < len {
        return false;
    }
    let consumed = chunk.len() - rest.len() + len;
    let before = values.len();
    if !decode_packed_varints(&rest[..len], values) {
        values.truncate(before);
        return false;
    }
    buf.advance(consumed);
    true
}

/// Decodes `bytes`, a sequence of whole varints, onto `values` (as int64, two's complement);
/// false when a varint is cut short or longer than ten bytes (prost's rules).
fn decode_packed_varints(bytes: &[u8], values: &mut Vec<i64>) -> bool {
    // Every varint ends with the one byte below 0x80: counting them sizes the column exactly.
    values.reserve(bytes.iter().filter(|&&b| b < 0x80).count());
    let (mut value, mut shift) = (0u64, 0u32);
    for &byte in bytes {
        if shift == 63 && byte > 1 {
            // The tenth byte holds only bit 63.
            return false;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            values.push(value as i64);
            (value, shift) = (0, 0);
        } else {
            shift += 7;
        }
    }
    shift == 0
}

#[cfg(test)]
mod tests {
    use prost::bytes::Bytes;
    use prost::Message;

    use super::*;

    /// What prost generates for the same message: the reference to agree with.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(int64, repeated, tag = "1")]
        x: Vec<i64>,
        #[prost(int64, repeated, tag = "2")]
        y: Vec<i64>,
        #[prost(int64, repeated, tag = "3")]
        t_us: Vec<i64>,
        #[prost(int64, repeated, tag = "4")]
        p: Vec<i64>,
    }

    fn sample() -> Generated {
        let edge = [0, 1, 127, 128, 16_383, 16_384, -1, i64::MIN, i64::MAX, 299_999, 1 << 35];
        Generated {
            x: (0..300).map(|i| i % 34).collect(),
            y: (0..300).map(|i| (i * 7) % 34).collect(),
            t_us: (0..300).map(|i| i * 1013).chain(edge).collect(),
            p: (0..300).map(|i| i % 2).chain(edge).collect(),
        }
    }

    fn same(generated: &Generated, events: &Events) -> bool {
        (&generated.x, &generated.y, &generated.t_us, &generated.p)
            == (&events.x, &events.y, &events.t_us, &events.p)
    }

    #[test]
    fn agrees_with_the_generated_code_both_ways() {
        let generated = sample();
        let bytes = generated.encode_to_vec();
        let events = Events::decode(bytes.as_slice()).expect("decodes");
        assert!(same(&generated, &events));
        assert_eq!(events.encode_to_vec(), bytes, "the same bytes back");
        assert_eq!(events.encoded_len(), bytes.len());
        assert_eq!(Generated::decode(events.encode_to_vec().as_slice()).expect("decodes"), generated);
    }

    #[test]
    fn unpacked_values_repeated_columns_and_unknown_fields_decode_like_prost() {
        let mut bytes = Vec::new();
        // x unpacked, one key per value; y packed in two runs; an unknown field 9; p packed.
        for value in [3_i64, -5, 1 << 40] {
            int64::encode(1, &value, &mut bytes);
        }
        int64::encode_packed(2, &[1, 2, 3], &mut bytes);
        prost::encoding::string::encode(9, &"ignored".to_owned(), &mut bytes);
        int64::encode_packed(2, &[4, i64::MIN], &mut bytes);
        int64::encode_packed(4, &[1, 0], &mut bytes);
        let events = Events::decode(bytes.as_slice()).expect("decodes");
        let generated = Generated::decode(bytes.as_slice()).expect("decodes");
        assert!(same(&generated, &events));
        assert_eq!(events.y, vec![1, 2, 3, 4, i64::MIN]);
    }

    #[test]
    fn a_column_split_across_chunks_takes_prosts_path_with_the_same_result() {
        let bytes = sample().encode_to_vec();
        for split in [1, 2, 3, bytes.len() / 2, bytes.len() - 1] {
            let (head, tail) = bytes.split_at(split);
            let mut chained = Bytes::copy_from_slice(head).chain(Bytes::copy_from_slice(tail));
            let events = Events::decode(&mut chained).expect("decodes");
            assert!(same(&sample(), &events), "split at {split}");
        }
    }

    #[test]
    fn malformed_columns_are_refused_as_prost_refuses_them() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // A varint cut short at the end of the column: length 2, bytes 0x80 0x80.
        cases.push(vec![0x0a, 0x02, 0x80, 0x80]);
        // An eleven-byte varint.
        cases.push([&[0x0a, 0x0b][..], &[0xff; 10], &[0x01]].concat());
        // A tenth byte above 1.
        cases.push([&[0x0a, 0x0a][..], &[0xff; 9], &[0x02]].concat());
        // A length past the end of the message.
        cases.push(vec![0x0a, 0x05, 0x01, 0x02]);
        for bytes in cases {
            assert!(Generated::decode(bytes.as_slice()).is_err(), "prost refuses {bytes:02x?}");
            assert!(Events::decode(bytes.as_slice()).is_err(), "and so do we: {bytes:02x?}");
        }
    }

    #[test]
    fn the_fast_path_leaves_the_buffer_alone_when_it_declines() {
        let mut values = vec![7];
        let bytes = [0x03_u8, 0x01, 0x80];
        let mut buf = &bytes[..];
        assert!(!merge_contiguous_packed(&mut values, &mut buf));
        assert_eq!((values, buf.len()), (vec![7], 3));
    }
}

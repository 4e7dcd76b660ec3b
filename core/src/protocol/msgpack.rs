//! MessagePack for the `actioncable-v1-msgpack` and `actioncable-v1-ext-msgpack` sub-protocols: a frame is the
//! same map as its JSON form (same keys, `message` as a native value rather than JSON text), in a binary
//! WebSocket message. The Protobuf sub-protocols carry `message` in this encoding too.
//!
//! Only the subset JSON can say is read: nil, booleans, integers, floats, strings, arrays and maps with string
//! keys, nested at most [`MAX_DEPTH`] deep. Binary and extension types are refused. Pure functions; no I/O.

use bytes::Bytes;
use serde_json::{Map, Number, Value};

/// How deep arrays and maps may nest in a client frame (JSON clients are held to serde_json's 128 as well).
pub const MAX_DEPTH: usize = 64;

/// Why bytes are not a MessagePack value this server reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsgpackError {
    #[error("truncated MessagePack value")]
    Truncated,
    #[error("MessagePack value nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("MessagePack map keys must be strings")]
    NonStringKey,
    #[error("MessagePack string is not UTF-8")]
    BadUtf8,
    #[error("MessagePack type 0x{0:02x} has no JSON form (binary and extension types are not accepted)")]
    Unsupported(u8),
    #[error("{0} bytes left over after the MessagePack value")]
    TrailingBytes(usize),
}

/// Reads exactly one value from `bytes`.
pub fn read_value(bytes: &[u8]) -> Result<Value, MsgpackError> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(0)?;
    match bytes.len() - reader.at {
        0 => Ok(value),
        left => Err(MsgpackError::TrailingBytes(left)),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MsgpackError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or(MsgpackError::Truncated)?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, MsgpackError> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, width: usize) -> Result<u64, MsgpackError> {
        Ok(self.take(width)?.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    }

    fn value(&mut self, depth: usize) -> Result<Value, MsgpackError> {
        let marker = self.byte()?;
        if let Some(len) = self.str_len(marker)? {
            return Ok(Value::String(self.text(len)?.to_owned()));
        }
        Ok(match marker {
            0x00..=0x7f => Value::from(marker),
            0xe0..=0xff => Value::from(marker as i8),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth)?,
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xca => float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => float(f64::from_bits(self.uint(8)?)),
            0xcc => Value::from(self.uint(1)?),
            0xcd => Value::from(self.uint(2)?),
            0xce => Value::from(self.uint(4)?),
            0xcf => Value::from(self.uint(8)?),
            0xd0 => Value::from(self.uint(1)? as u8 as i8),
            0xd1 => Value::from(self.uint(2)? as u16 as i16),
            0xd2 => Value::from(self.uint(4)? as u32 as i32),
            0xd3 => Value::from(self.uint(8)? as i64),
            0xdc => {
                let len = self.uint(2)? as usize;
                self.array(len, depth)?
            }
            0xdd => {
                let len = self.uint(4)? as usize;
                self.array(len, depth)?
            }
            0xde => {
                let len = self.uint(2)? as usize;
                self.map(len, depth)?
            }
            0xdf => {
                let len = self.uint(4)? as usize;
                self.map(len, depth)?
            }
            other => return Err(MsgpackError::Unsupported(other)),
        })
    }

    /// The length of the string `marker` starts, reading its length bytes; `None` when it starts no string.
    fn str_len(&mut self, marker: u8) -> Result<Option<usize>, MsgpackError> {
        Ok(Some(match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => self.uint(1)? as usize,
            0xda => self.uint(2)? as usize,
            0xdb => self.uint(4)? as usize,
            _ => return Ok(None),
        }))
    }

    fn text(&mut self, len: usize) -> Result<&'a str, MsgpackError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| MsgpackError::BadUtf8)
    }

    /// Every element takes at least one byte: a declared length beyond what is left is refused before
    /// anything is allocated for it.
    fn check_room(&self, elements: usize) -> Result<(), MsgpackError> {
        if elements > self.bytes.len() - self.at { Err(MsgpackError::Truncated) } else { Ok(()) }
    }

    fn array(&mut self, len: usize, depth: usize) -> Result<Value, MsgpackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        self.check_room(len)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, MsgpackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        self.check_room(len.saturating_mul(2))?;
        let mut map = Map::new();
        for _ in 0..len {
            let marker = self.byte()?;
            let key = match self.str_len(marker)? {
                Some(len) => self.text(len)?,
                None => return Err(MsgpackError::NonStringKey),
            };
            let value = self.value(depth + 1)?;
            map.insert(key.to_owned(), value);
        }
        Ok(Value::Object(map))
    }
}

/// A float as JSON has it: NaN and the infinities have no JSON form and read as nil.
fn float(f: f64) -> Value {
    Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
}

/// Appends `value` in the smallest encoding MessagePack has for it.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_uint(out, u);
            } else if let Some(i) = n.as_i64() {
                write_int(out, i);
            } else {
                out.push(0xcb);
                out.extend_from_slice(&n.as_f64().unwrap_or_default().to_bits().to_be_bytes());
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            write_len(out, items.len(), 0x90, 0xdc, 0xdd);
            items.iter().for_each(|item| write_value(out, item));
        }
        Value::Object(map) => {
            write_map_len(out, map.len());
            for (key, value) in map {
                write_str(out, key);
                write_value(out, value);
            }
        }
    }
}

/// Appends a non-negative integer.
pub fn write_uint(out: &mut Vec<u8>, u: u64) {
    match u {
        0..=0x7f => out.push(u as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, u as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    }
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        return write_uint(out, i as u64);
    }
    match i {
        -32..=-1 => out.push(i as i8 as u8),
        -128..=-33 => out.extend_from_slice(&[0xd0, i as i8 as u8]),
        -32_768..=-129 => {
            out.push(0xd1);
            out.extend_from_slice(&(i as i16).to_be_bytes());
        }
        -2_147_483_648..=-32_769 => {
            out.push(0xd2);
            out.extend_from_slice(&(i as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&i.to_be_bytes());
        }
    }
}

/// Appends a string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.len() < 32 {
        out.push(0xa0 | s.len() as u8);
    } else if s.len() <= 0xff {
        out.extend_from_slice(&[0xd9, s.len() as u8]);
    } else {
        write_len(out, s.len(), 0xa0, 0xda, 0xdb);
    }
    out.extend_from_slice(s.as_bytes());
}

/// Appends a map header for `len` entries; the entries follow, key then value.
pub fn write_map_len(out: &mut Vec<u8>, len: usize) {
    write_len(out, len, 0x80, 0xde, 0xdf);
}

/// A length header: the fix form (up to 15, or 31 for strings, which never reach here below 256), then 16 and
/// 32 bits. Nothing the server writes reaches 4 GiB (`max_message_size` and broadcast sizes are far below).
fn write_len(out: &mut Vec<u8>, len: usize, fix: u8, wide16: u8, wide32: u8) {
    if len < 16 {
        out.push(fix | len as u8);
    } else if len <= 0xffff {
        out.push(wide16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(wide32);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// JSON text (a broadcast payload as [`super::broadcast_payload`] prepares it, or a `message` field) as one
/// MessagePack value. Text that is JSON only to a lenient reader (a lone surrogate escape) goes as a string.
pub fn pack_json(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len());
    match serde_json::from_slice::<Value>(json) {
        Ok(value) => write_value(&mut out, &value),
        Err(_) => write_str(&mut out, &String::from_utf8_lossy(json)),
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(value: &Value) -> Value {
        let mut out = Vec::new();
        write_value(&mut out, value);
        read_value(&out).unwrap()
    }

    #[test]
    fn values_round_trip_at_every_width() {
        for n in [0u64, 1, 127, 128, 255, 256, 65_535, 65_536, 4_294_967_295, 4_294_967_296, u64::MAX] {
            assert_eq!(round_trip(&json!(n)), json!(n));
        }
        for n in [-1i64, -32, -33, -128, -129, -32_768, -32_769, -2_147_483_648, -2_147_483_649, i64::MIN] {
            assert_eq!(round_trip(&json!(n)), json!(n));
        }
        for s in [String::new(), "x".repeat(31), "é".repeat(16), "y".repeat(255), "z".repeat(256), "w".repeat(70_000)]
        {
            assert_eq!(round_trip(&json!(s)), json!(s));
        }
        let nested = json!({"a": [1, -2, 3.5, null, true, false, {"b": "c"}], "long": (0..20).collect::<Vec<_>>()});
        assert_eq!(round_trip(&nested), nested);
        let wide: Map<String, Value> = (0..20).map(|n| (format!("k{n}"), json!(n))).collect();
        assert_eq!(round_trip(&Value::Object(wide.clone())), Value::Object(wide));
    }

    #[test]
    fn reads_the_encodings_other_writers_choose() {
        // A float32, a 16-bit string length for a short string, a non-minimal unsigned and a negative int8.
        assert_eq!(read_value(&[0xca, 0x3f, 0xc0, 0, 0]), Ok(json!(1.5)));
        assert_eq!(read_value(&[0xda, 0, 2, b'h', b'i']), Ok(json!("hi")));
        assert_eq!(read_value(&[0xcf, 0, 0, 0, 0, 0, 0, 0, 7]), Ok(json!(7)));
        assert_eq!(read_value(&[0xd0, 0xfe]), Ok(json!(-2)));
        assert_eq!(read_value(&[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]), Ok(Value::Null), "NaN has no JSON form");
    }

    #[test]
    fn refuses_what_json_cannot_say_or_what_is_cut_short() {
        assert_eq!(read_value(&[]), Err(MsgpackError::Truncated));
        assert_eq!(read_value(&[0xa5, b'a']), Err(MsgpackError::Truncated));
        assert_eq!(read_value(&[0xdf, 0xff, 0xff, 0xff, 0xff]), Err(MsgpackError::Truncated), "no huge allocation");
        assert_eq!(read_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]), Err(MsgpackError::Truncated));
        assert_eq!(read_value(&[0x81, 0x01, 0x02]), Err(MsgpackError::NonStringKey));
        assert_eq!(read_value(&[0xa1, 0xff]), Err(MsgpackError::BadUtf8));
        assert_eq!(read_value(&[0xc4, 1, 0]), Err(MsgpackError::Unsupported(0xc4)), "bin 8");
        assert_eq!(read_value(&[0xd4, 1, 0]), Err(MsgpackError::Unsupported(0xd4)), "fixext 1");
        assert_eq!(read_value(&[0xc1]), Err(MsgpackError::Unsupported(0xc1)), "never used");
        assert_eq!(read_value(&[0x01, 0x02]), Err(MsgpackError::TrailingBytes(1)));
        let deep = [vec![0x91; MAX_DEPTH + 1], vec![0x90]].concat();
        assert_eq!(read_value(&deep), Err(MsgpackError::TooDeep));
        let deep_maps: Vec<u8> = (0..MAX_DEPTH + 1).flat_map(|_| [0x81, 0xa1, b'k']).chain([0xc0]).collect();
        assert_eq!(read_value(&deep_maps), Err(MsgpackError::TooDeep));
        let fine = [vec![0x91; MAX_DEPTH - 1], vec![0x90]].concat();
        assert!(read_value(&fine).is_ok());
    }

    #[test]
    fn json_payloads_pack_as_values_and_other_text_as_a_string() {
        assert_eq!(read_value(&pack_json(br#"{"text":"hi"}"#)), Ok(json!({"text": "hi"})));
        assert_eq!(read_value(&pack_json(br#""plain""#)), Ok(json!("plain")));
        assert_eq!(read_value(&pack_json(br#""\ud800""#)), Ok(json!(r#""\ud800""#)));
    }
}

//! Standalone streams: which subscriptions the server answers itself (`$pubsub` by public or signed stream
//! name, signed `Turbo::StreamsChannel` names), how a signed name is verified, and the whisper budget of a
//! connection. Pure functions and small values; the controller turns them into confirmations and rejections.
//!
//! Signed names use the layout of Rails' `ActiveSupport::MessageVerifier`, as AnyCable and turbo-rails do:
//! `base64(JSON string of the name) + "--" + hex HMAC-SHA256(key, the base64 part)`. The digest is
//! compared in constant time before the name is decoded; nothing here may panic on input.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::Sha256;
use std::time::Instant;

use crate::rate_limit::TokenBucket;

/// The channel of standalone pub/sub subscriptions.
pub const PUBSUB_CHANNEL: &str = "$pubsub";
/// The channel turbo-rails subscribes Turbo Stream sources with.
pub const TURBO_STREAMS_CHANNEL: &str = "Turbo::StreamsChannel";
/// The istate key naming the stream a subscription may whisper to (AnyCable's name, so an RPC backend can set
/// it for its own channels too).
pub const WHISPER_STREAM_STATE: &str = "$w";

/// Why a signed stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedStreamError {
    #[error("signed stream name is not `<base64>--<hex digest>`")]
    Malformed,
    #[error("signed stream name has a wrong signature")]
    BadSignature,
    #[error("signed stream name does not hold a base64-encoded JSON string")]
    BadPayload,
}

/// Verifies signed stream names with one key.
pub struct MessageVerifier {
    key: Box<[u8]>,
}

impl std::fmt::Debug for MessageVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageVerifier([hidden])")
    }
}

impl MessageVerifier {
    pub fn new(secret: &str) -> Self {
        Self { key: secret.as_bytes().into() }
    }

    /// The stream name a signed name carries, once its signature checks out.
    pub fn verified_stream(&self, signed: &str) -> Result<String, SignedStreamError> {
        let (data, digest) = signed.split_once("--").ok_or(SignedStreamError::Malformed)?;
        // Rails writes the digest as 64 lower-case hex digits and compares it as text.
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(SignedStreamError::Malformed);
        }
        let digest = hex::decode(digest).map_err(|_| SignedStreamError::Malformed)?;
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return Err(SignedStreamError::BadSignature);
        };
        mac.update(data.as_bytes());
        mac.verify_slice(&digest).map_err(|_| SignedStreamError::BadSignature)?;
        let json = BASE64.decode(data).map_err(|_| SignedStreamError::BadPayload)?;
        serde_json::from_slice::<String>(&json).map_err(|_| SignedStreamError::BadPayload)
    }
}

/// A subscription the server answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandaloneSubscription {
    /// `{"channel":"$pubsub",…}`
    Pubsub(StreamRequest),
    /// `{"channel":"Turbo::StreamsChannel",…}` (only while `turbo_streams` is on)
    Turbo(StreamRequest),
}

/// The stream a standalone identifier asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    /// `stream_name`: an unsigned name.
    Public(String),
    /// `signed_stream_name`: a name to verify.
    Signed(String),
    /// Neither, or not strings.
    Missing,
}

/// Recognizes the identifiers the server answers itself; every other identifier goes to the backend.
pub fn standalone_subscription(identifier: &str, turbo_streams: bool) -> Option<StandaloneSubscription> {
    // Cheap test first: almost every identifier of an RPC application names another channel.
    let maybe_pubsub = identifier.contains(PUBSUB_CHANNEL);
    let maybe_turbo = turbo_streams && identifier.contains("StreamsChannel");
    if !maybe_pubsub && !maybe_turbo {
        return None;
    }
    let fields: IdentifierFields<'_> = serde_json::from_str(identifier).ok()?;
    let text = |field: Option<Field<'_>>| match field {
        Some(Field::Text(text)) if !text.is_empty() => Some(text.into_owned()),
        _ => None,
    };
    let Field::Text(channel) = fields.channel? else { return None };
    match &*channel {
        PUBSUB_CHANNEL => {
            // As AnyCable does: a signed name wins over an unsigned one.
            let request = match (text(fields.signed_stream_name), text(fields.stream_name)) {
                (Some(signed), _) => StreamRequest::Signed(signed),
                (None, Some(name)) => StreamRequest::Public(name),
                (None, None) => StreamRequest::Missing,
            };
            Some(StandaloneSubscription::Pubsub(request))
        }
        TURBO_STREAMS_CHANNEL if turbo_streams => Some(StandaloneSubscription::Turbo(
            text(fields.signed_stream_name).map(StreamRequest::Signed).unwrap_or(StreamRequest::Missing),
        )),
        _ => None,
    }
}

/// The fields of an identifier the standalone rules read, parsed under exactly the rules of parsing the whole
/// identifier as a JSON object (a `serde_json::Map`): any JSON error refuses it, a repeated key keeps its
/// last value, and the fields nobody reads are still parsed as JSON values (same nesting and number limits).
/// The three fields read borrow from the identifier when they are strings without escapes, so a subscription
/// costs no map and no copies.
#[derive(Default)]
struct IdentifierFields<'a> {
    channel: Option<Field<'a>>,
    stream_name: Option<Field<'a>>,
    signed_stream_name: Option<Field<'a>>,
}

/// One read field: a string, or any other JSON value.
enum Field<'a> {
    Text(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for IdentifierFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = IdentifierFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = IdentifierFields::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let slot = match &*key {
                        "channel" => &mut fields.channel,
                        "stream_name" => &mut fields.stream_name,
                        "signed_stream_name" => &mut fields.signed_stream_name,
                        _ => {
                            map.next_value::<serde_json::Value>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A JSON string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Field::Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Field::Text(Cow::Owned(text)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            // Arrays and objects are parsed as JSON values are, element by element, and dropped.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde_json::Value>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<String, serde_json::Value>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

/// A connection's whisper allowance: a token bucket holding up to one second's worth of whispers.
#[derive(Debug, Clone, Default)]
pub struct WhisperBudget {
    bucket: TokenBucket,
}

impl WhisperBudget {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one whisper out of the budget at `rate` per second; `false` when the connection is over it.
    pub fn take(&mut self, rate: u32, now: Instant) -> bool {
        self.bucket.take(rate, rate, now)
    }
}

#[cfg(test)]
mod tests {
    //! Signed names here were made outside this code, with Python's standard library (the layout Rails'
    //! MessageVerifier writes):
    //!
    //! ```python
    //! enc = base64.b64encode(json.dumps(name).encode()).decode()
    //! signed = enc + "--" + hmac.new(b"s3cr3t", enc.encode(), hashlib.sha256).hexdigest()
    //! ```
    //! and the first one checked with `echo -n ImNoYXQvMjAyNCI= | openssl dgst -sha256 -hmac s3cr3t`.

    use super::*;
    use std::time::Duration;

    /// "chat/2024"
    const SIGNED: &str = "ImNoYXQvMjAyNCI=--42d0afce518d9b9586c82df74dace6e0791f2559caf8f352747f98f8e2d7f56c";
    /// "комната:1" (Python's json.dumps escapes it as \u043a…)
    const SIGNED_UNICODE: &str = "Ilx1MDQzYVx1MDQzZVx1MDQzY1x1MDQzZFx1MDQzMFx1MDQ0Mlx1MDQzMDoxIg==--047bef732c7659b207b47cdac40bf7a3427cc51ef2dadc68fc13c6f785a4404c";
    /// The JSON number 42, correctly signed.
    const SIGNED_NUMBER: &str = "NDI=--b43a867228868a64704903c3f03570a794d34b3ee0987ad8de65d5c02809a956";
    /// "not*base64!" as the data part, correctly signed.
    const SIGNED_BAD_BASE64: &str = "not*base64!--2f38df2724d604ae981bea785f4796d348f6459b934161e2d4b5c4c358162f33";

    fn verifier() -> MessageVerifier {
        MessageVerifier::new("s3cr3t")
    }

    #[test]
    fn verifies_rails_message_verifier_names() {
        assert_eq!(verifier().verified_stream(SIGNED).as_deref(), Ok("chat/2024"));
        assert_eq!(verifier().verified_stream(SIGNED_UNICODE).as_deref(), Ok("комната:1"));
    }

    #[test]
    fn a_wrong_key_or_a_changed_name_is_a_bad_signature() {
        assert_eq!(MessageVerifier::new("other").verified_stream(SIGNED), Err(SignedStreamError::BadSignature));
        // "chat/2025" with the signature of "chat/2024".
        let forged = SIGNED.replacen("ImNoYXQvMjAyNCI=", "ImNoYXQvMjAyNSI=", 1);
        assert_eq!(verifier().verified_stream(&forged), Err(SignedStreamError::BadSignature));
        let mut digest_changed = SIGNED.to_owned();
        digest_changed.pop();
        digest_changed.push('d');
        assert_eq!(verifier().verified_stream(&digest_changed), Err(SignedStreamError::BadSignature));
    }

    #[test]
    fn malformed_names_and_payloads_are_refused_without_panics() {
        let v = verifier();
        for bad in ["", "--", "abc", "ImNoYXQvMjAyNCI=--", "--42d0", "ImNoYXQvMjAyNCI=--xyz", "é--é"] {
            assert_eq!(v.verified_stream(bad), Err(SignedStreamError::Malformed), "{bad:?}");
        }
        let upper = SIGNED.replacen("42d0afce", "42D0AFCE", 1);
        assert_eq!(v.verified_stream(&upper), Err(SignedStreamError::Malformed), "Rails digests are lower-case");
        assert_eq!(v.verified_stream(SIGNED_NUMBER), Err(SignedStreamError::BadPayload), "the name must be a string");
        assert_eq!(v.verified_stream(SIGNED_BAD_BASE64), Err(SignedStreamError::BadPayload));
    }

    #[test]
    fn recognizes_pubsub_and_turbo_identifiers_only() {
        use StandaloneSubscription::*;
        let public = r#"{"channel":"$pubsub","stream_name":"news"}"#;
        assert_eq!(standalone_subscription(public, false), Some(Pubsub(StreamRequest::Public("news".into()))));
        let both = r#"{"channel":"$pubsub","stream_name":"news","signed_stream_name":"x--y"}"#;
        assert_eq!(standalone_subscription(both, false), Some(Pubsub(StreamRequest::Signed("x--y".into()))));
        let neither = r#"{"channel":"$pubsub","stream_name":42}"#;
        assert_eq!(standalone_subscription(neither, false), Some(Pubsub(StreamRequest::Missing)));

        let turbo = r#"{"channel":"Turbo::StreamsChannel","signed_stream_name":"x--y"}"#;
        assert_eq!(standalone_subscription(turbo, true), Some(Turbo(StreamRequest::Signed("x--y".into()))));
        assert_eq!(standalone_subscription(turbo, false), None, "without turbo_streams the backend answers");
        let unsigned_turbo = r#"{"channel":"Turbo::StreamsChannel","stream_name":"x"}"#;
        assert_eq!(standalone_subscription(unsigned_turbo, true), Some(Turbo(StreamRequest::Missing)));

        for other in [r#"{"channel":"ChatChannel","room":"$pubsub"}"#, "$pubsub", r#"["$pubsub"]"#, ""] {
            assert_eq!(standalone_subscription(other, true), None, "{other:?}");
        }
    }

    /// What the identifier's fields were taken to be when it was parsed as a whole JSON object.
    fn as_a_whole_object(identifier: &str, turbo_streams: bool) -> Option<StandaloneSubscription> {
        let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(identifier).ok()?;
        let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_owned);
        match fields.get("channel")?.as_str()? {
            PUBSUB_CHANNEL => {
                Some(StandaloneSubscription::Pubsub(match (text("signed_stream_name"), text("stream_name")) {
                    (Some(signed), _) => StreamRequest::Signed(signed),
                    (None, Some(name)) => StreamRequest::Public(name),
                    (None, None) => StreamRequest::Missing,
                }))
            }
            TURBO_STREAMS_CHANNEL if turbo_streams => Some(StandaloneSubscription::Turbo(
                text("signed_stream_name").map(StreamRequest::Signed).unwrap_or(StreamRequest::Missing),
            )),
            _ => None,
        }
    }

    #[test]
    fn identifier_fields_follow_the_rules_of_a_whole_json_object() {
        let deep = |depth: usize| {
            format!(r#"{{"channel":"$pubsub","stream_name":"a","x":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth))
        };
        let cases = [
            r#"{"channel":"$pubsub","stream_name":"a","stream_name":"b"}"#.to_owned(),
            r#"{"channel":"$pubsub","stream_name":"a","stream_name":7}"#.to_owned(),
            r#"{"channel":1,"channel":"$pubsub","stream_name":"a"}"#.to_owned(),
            r#"{"channel":"$pubsub","channel":"ChatChannel","stream_name":"a"}"#.to_owned(),
            r#"{"chan\u006eel":"$pubsub","stream_name":"n\"q\u00e9"}"#.to_owned(),
            r#"{"channel":"$pubsub","stream_name":"","signed_stream_name":"s--d"}"#.to_owned(),
            r#"{"channel":"$pubsub","stream_name":"a","x":{"y":[1,2,{"z":null}]},"t":true,"f":-1.5e3}"#.to_owned(),
            r#"{"channel":"$pubsub","stream_name":"a","x":1e400}"#.to_owned(),
            r#"{"channel":"$pubsub","stream_name":"a","x":"\ud800"}"#.to_owned(),
            r#"{"channel":"$pubsub","stream_name":"a"} trailing"#.to_owned(),
            r#"{"channel":"$pubsub","stream_name":"a",}"#.to_owned(),
            r#"{"channel":"$pubsub","stream_name":["a"]}"#.to_owned(),
            r#"{"channel":"Turbo::StreamsChannel","signed_stream_name":"s--d","signed_stream_name":null}"#.to_owned(),
            r#"{"channel":"Turbo::StreamsChannel","signed_stream_name":{"a":"s--d"}}"#.to_owned(),
            r#" { "channel" : "$pubsub" , "stream_name" : "a" } "#.to_owned(),
            r#"[{"channel":"$pubsub"}]"#.to_owned(),
            r#""{\"channel\":\"$pubsub\"}""#.to_owned(),
            deep(100),
            deep(200),
        ];
        for case in &cases {
            for turbo in [false, true] {
                assert_eq!(
                    standalone_subscription(case, turbo),
                    as_a_whole_object(case, turbo),
                    "{case} turbo={turbo}"
                );
            }
        }
        assert_eq!(
            standalone_subscription(&cases[4], false),
            Some(StandaloneSubscription::Pubsub(StreamRequest::Public("n\"qé".into()))),
            "escaped names are decoded"
        );
        assert_eq!(standalone_subscription(&deep(200), false), None, "too deep for a JSON value: not standalone");
    }

    #[test]
    fn whisper_budget_allows_a_burst_of_rate_then_refills_over_time() {
        let mut budget = WhisperBudget::new();
        let start = Instant::now();
        assert!((0..5).all(|_| budget.take(5, start)));
        assert!(!budget.take(5, start), "the sixth whisper in the same instant is over budget");
        assert!(budget.take(5, start + Duration::from_millis(200)), "one more every 1/rate seconds");
        assert!(!budget.take(5, start + Duration::from_millis(200)));
        assert!((0..5).all(|_| budget.take(5, start + Duration::from_secs(60))), "refills to the burst size only");
        assert!(!budget.take(5, start + Duration::from_secs(60)));
        assert!((0..1000).all(|_| budget.take(0, start)), "rate 0 means no limit");
    }
}

//! JWT identification: checks a connection's token and yields its identifiers (the `ext` claim), so the
//! server can accept a client without calling the backend. Pure functions over strings; no I/O.
//!
//! Only HMAC tokens are accepted (HS256, HS384, HS512). The algorithm named in the token header is checked
//! against that list before anything else, so `alg: none` and asymmetric algorithms never get as far as a
//! signature check and a token can never choose to be verified some other way. The signature is compared in
//! constant time, and the claims are read only once the signature checks out. Nothing here may panic on
//! input: every malformed token is an error.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

/// Longer tokens are refused without being decoded.
pub const MAX_TOKEN_LEN: usize = 8192;

/// base64url as JWT uses it (RFC 7515): no padding is written; padding, when a client adds it, is tolerated.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused. Only [`JwtError::Expired`] is told to the client as such (`token_expired`);
/// every other error is `unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("token is not three base64url parts separated by dots")]
    Malformed,
    #[error("token header is not a JSON object naming its `alg`")]
    BadHeader,
    #[error("token algorithm {0:?} is not accepted (HS256, HS384 or HS512 only)")]
    Algorithm(String),
    #[error("token header lists critical extensions this server does not know")]
    Critical,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token claims are not a JSON object with numeric `exp`/`nbf`")]
    BadClaims,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (`nbf`)")]
    NotYetValid,
    #[error("token has no `ext` claim holding the identifiers as a JSON string")]
    MissingIdentifiers,
}

/// The HMAC algorithms a token may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Hs256,
    Hs384,
    Hs512,
}

impl Algorithm {
    fn from_header(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Self::Hs256),
            "HS384" => Some(Self::Hs384),
            "HS512" => Some(Self::Hs512),
            _ => None,
        }
    }
}

/// Verifies identification tokens with one key.
pub struct JwtVerifier {
    key: Box<[u8]>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier([hidden])")
    }
}

impl JwtVerifier {
    pub fn new(secret: &str) -> Self {
        Self { key: secret.as_bytes().into() }
    }

    /// Checks `token` at `now` (Unix seconds) and returns the identifiers string from its `ext` claim.
    pub fn verify(&self, token: &str, now: f64) -> Result<String, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let algorithm = read_header(&decode(header)?)?;
        let signature = decode(signature)?;
        // The signing input is the two encoded parts exactly as they arrived, dot included.
        let signing_input = &token.as_bytes()[..header.len() + 1 + claims.len()];
        let valid = match algorithm {
            Algorithm::Hs256 => mac_matches::<Hmac<Sha256>>(&self.key, signing_input, &signature),
            Algorithm::Hs384 => mac_matches::<Hmac<Sha384>>(&self.key, signing_input, &signature),
            Algorithm::Hs512 => mac_matches::<Hmac<Sha512>>(&self.key, signing_input, &signature),
        };
        if !valid {
            return Err(JwtError::BadSignature);
        }
        read_claims(&decode(claims)?, now)
    }
}

fn decode(part: &str) -> Result<Vec<u8>, JwtError> {
    BASE64URL.decode(part).map_err(|_| JwtError::Malformed)
}

/// Constant-time comparison of the expected MAC with `signature` (`verify_slice` checks the length too).
fn mac_matches<M: Mac + KeyInit>(key: &[u8], input: &[u8], signature: &[u8]) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else { return false };
    mac.update(input);
    mac.verify_slice(signature).is_ok()
}

fn read_header(bytes: &[u8]) -> Result<Algorithm, JwtError> {
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|_| JwtError::BadHeader)?;
    let name = header.get("alg").and_then(|a| a.as_str()).ok_or(JwtError::BadHeader)?;
    let algorithm = Algorithm::from_header(name).ok_or_else(|| JwtError::Algorithm(truncated(name)))?;
    // RFC 7515 §4.1.11: a token whose critical extensions are not understood must be rejected.
    if header.contains_key("crit") {
        return Err(JwtError::Critical);
    }
    Ok(algorithm)
}

fn read_claims(bytes: &[u8], now: f64) -> Result<String, JwtError> {
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|_| JwtError::BadClaims)?;
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(JwtError::BadClaims),
    };
    // RFC 7519 §4.1.4: the token is valid only *before* `exp`.
    if time("exp")?.is_some_and(|exp| now >= exp) {
        return Err(JwtError::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| now < nbf) {
        return Err(JwtError::NotYetValid);
    }
    match claims.get("ext") {
        Some(serde_json::Value::String(identifiers)) => Ok(identifiers.clone()),
        _ => Err(JwtError::MissingIdentifiers),
    }
}

/// An attacker-chosen string, cut short enough for a log line.
fn truncated(text: &str) -> String {
    text.chars().take(32).collect()
}

/// The current Unix time in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    //! Every token here was made outside this code, with Python's standard library:
    //!
    //! ```python
    //! def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b'=').decode()
    //! def tok(header, claims, key, alg=hashlib.sha256):
    //!     h = b64u(json.dumps(header, separators=(',', ':')).encode())
    //!     p = b64u(json.dumps(claims, separators=(',', ':')).encode())
    //!     return f"{h}.{p}." + b64u(hmac.new(key, f"{h}.{p}".encode(), alg).digest())
    //! ```
    //! with key `s3cr3t`, `ext` = `{"user":"alice"}` and `exp` = 2000000000 unless said otherwise.

    use super::*;

    const BEFORE_EXP: f64 = 1_900_000_000.0;
    const AFTER_EXP: f64 = 2_100_000_000.0;
    const IDENTIFIERS: &str = r#"{"user":"alice"}"#;

    const HS256: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0.GHrLL1SkYUdNNbsGNV0oxjgPk2spuLNs9waqVrEDsQE";
    const HS384: &str = "eyJhbGciOiJIUzM4NCIsInR5cCI6IkpXVCJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0.5Wt4-zHKdzSWvna1wW0NDUoVUomVaFcCDchtvDpivy1DvMo3Mw9-cFU-WKCY11MT";
    const HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0.X86BACQyUjZ1D9mz_oJB4zoK5P2xcOtaOMR2pFjZbl07-dvTe_EeaVEYwmcrJddzht3-l6BttTRd-30zYlqJDg";
    /// No `exp` at all.
    const NO_EXP: &str =
        "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSJ9.D3-2t5UrbLA7Q8TSnH7OyzsJooR6OXMDkUoUfmG4Xi8";
    /// Claims `{"exp":2000000000,"sub":"x"}`.
    const NO_EXT: &str =
        "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjIwMDAwMDAwMDAsInN1YiI6IngifQ.ajuWegaxFFXNDVjpaHXjEmWz9jh_89ZIsq16mianCX8";
    /// `ext` is an object, not a JSON string.
    const EXT_OBJECT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOnsidXNlciI6ImFsaWNlIn0sImV4cCI6MjAwMDAwMDAwMH0.Xr5uV57e9CwCd_PJbnsjeHpYAFzM8gb6aDVGn-WTxOA";
    /// `nbf` = 1950000000, no `exp`.
    const NBF: &str = "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsIm5iZiI6MTk1MDAwMDAwMH0.qgwNajeTxxH9p4g1_ogz6h7SCVEQBytn21bPjBI0qaU";
    /// Signed with key `other`.
    const WRONG_KEY: &str = "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0.c_SFKPuZpdY5efOdvFQ6HnHcIDk47AYNu3PSKfEqVZQ";
    /// Header says RS256; the signature is an HMAC-SHA256 with the right key.
    const RS256: &str = "eyJhbGciOiJSUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0.C2uY28XsSLaK5M9k_vL9Pd2aaMEu2meWN6iDXbxE4hE";
    /// `{"alg": "none", "typ": "JWT"}` and an empty signature.
    const ALG_NONE: &str =
        "eyJhbGciOiAibm9uZSIsICJ0eXAiOiAiSldUIn0.eyJleHQiOiAie1widXNlclwiOlwiYWxpY2VcIn0iLCAiZXhwIjogMjAwMDAwMDAwMH0.";
    /// Header says HS512; the signature is an HMAC-SHA256 with the right key.
    const HS512_LABEL_HS256_MAC: &str = "eyJhbGciOiJIUzUxMiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0.vxJEPpEbnJQ0ukp30yEIAGZMZtYTsRS_A_rPw7_LZmg";
    /// Header `{"alg":"HS256","crit":["exp"]}`, correctly signed.
    const CRIT: &str = "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6MjAwMDAwMDAwMH0.7e10demlfSWCnupJy9nYwcqloh8BkwBG1PKCQoz0GA4";
    /// `exp` is the string "2000000000".
    const EXP_STRING: &str = "eyJhbGciOiJIUzI1NiJ9.eyJleHQiOiJ7XCJ1c2VyXCI6XCJhbGljZVwifSIsImV4cCI6IjIwMDAwMDAwMDAifQ.B0oh_yjdypo_b3IjrKEZCLXDoqxb8zy3XYn_VSZOeW4";
    /// Claims are the JSON array `[1,2]`, correctly signed.
    const CLAIMS_ARRAY: &str = "eyJhbGciOiJIUzI1NiJ9.WzEsMl0.8YSw-Dwx44Fxj3TXidD0hmd2eAj3R9YM51flyL3apeI";

    fn verifier() -> JwtVerifier {
        JwtVerifier::new("s3cr3t")
    }

    #[test]
    fn hs256_hs384_and_hs512_tokens_yield_the_ext_identifiers() {
        for token in [HS256, HS384, HS512] {
            assert_eq!(verifier().verify(token, BEFORE_EXP).as_deref(), Ok(IDENTIFIERS), "{token}");
        }
    }

    #[test]
    fn a_token_is_expired_from_its_exp_second_on() {
        assert_eq!(verifier().verify(HS256, AFTER_EXP), Err(JwtError::Expired));
        assert_eq!(verifier().verify(HS256, 2_000_000_000.0), Err(JwtError::Expired));
        assert!(verifier().verify(HS256, 1_999_999_999.5).is_ok());
        assert_eq!(verifier().verify(NO_EXP, AFTER_EXP).as_deref(), Ok(IDENTIFIERS), "no exp: no expiry");
    }

    #[test]
    fn nbf_in_the_future_is_refused() {
        assert_eq!(verifier().verify(NBF, BEFORE_EXP), Err(JwtError::NotYetValid));
        assert!(verifier().verify(NBF, 1_950_000_000.0).is_ok());
    }

    #[test]
    fn a_wrong_key_is_a_bad_signature_even_when_expired() {
        assert_eq!(verifier().verify(WRONG_KEY, BEFORE_EXP), Err(JwtError::BadSignature));
        assert_eq!(verifier().verify(WRONG_KEY, AFTER_EXP), Err(JwtError::BadSignature));
        assert!(JwtVerifier::new("other").verify(WRONG_KEY, BEFORE_EXP).is_ok());
    }

    #[test]
    fn alg_none_and_non_hmac_algorithms_are_refused_before_the_signature() {
        assert_eq!(verifier().verify(ALG_NONE, BEFORE_EXP), Err(JwtError::Algorithm("none".into())));
        assert_eq!(verifier().verify(RS256, BEFORE_EXP), Err(JwtError::Algorithm("RS256".into())));
        assert_eq!(verifier().verify(HS512_LABEL_HS256_MAC, BEFORE_EXP), Err(JwtError::BadSignature));
        assert_eq!(verifier().verify(CRIT, BEFORE_EXP), Err(JwtError::Critical));
    }

    #[test]
    fn tampered_claims_break_the_signature() {
        // The same header and signature with `alice` swapped for `admin` in the claims.
        let (head, rest) = HS256.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged_claims = BASE64URL.encode(br#"{"ext":"{\"user\":\"admin\"}","exp":2000000000}"#);
        let forged = format!("{head}.{forged_claims}.{signature}");
        assert_eq!(verifier().verify(&forged, BEFORE_EXP), Err(JwtError::BadSignature));
        // One character of the signature changed.
        let mut flipped = HS256.to_owned();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verifier().verify(&flipped, BEFORE_EXP).is_err());
    }

    #[test]
    fn missing_or_non_string_ext_is_refused() {
        assert_eq!(verifier().verify(NO_EXT, BEFORE_EXP), Err(JwtError::MissingIdentifiers));
        assert_eq!(verifier().verify(EXT_OBJECT, BEFORE_EXP), Err(JwtError::MissingIdentifiers));
        assert_eq!(verifier().verify(EXP_STRING, BEFORE_EXP), Err(JwtError::BadClaims));
        assert_eq!(verifier().verify(CLAIMS_ARRAY, BEFORE_EXP), Err(JwtError::BadClaims));
    }

    #[test]
    fn malformed_and_oversize_tokens_are_errors_not_panics() {
        let v = verifier();
        for bad in [
            "",
            ".",
            "..",
            "...",
            "a.b",
            "a.b.c.d",
            "!!!.???.***",
            "eyJhbGciOiJIUzI1NiJ9..",
            "eyJhbGciOiJIUzI1NiJ9.e30.%%%",
            "bm90IGpzb24.e30.AAAA",
            "W10.e30.AAAA",
            "eyJhbGciOjF9.e30.AAAA",
            "é.é.é",
        ] {
            assert!(v.verify(bad, BEFORE_EXP).is_err(), "{bad:?}");
        }
        let huge = format!("{}.{}.{}", "e".repeat(5000), "e".repeat(5000), "e");
        assert_eq!(v.verify(&huge, BEFORE_EXP), Err(JwtError::TooLong));
        assert!(v.verify(&format!("{HS256}="), BEFORE_EXP).is_ok(), "canonical padding is tolerated");
        assert_eq!(v.verify(&format!("{HS256}=="), BEFORE_EXP), Err(JwtError::Malformed), "wrong padding is not");
    }
}

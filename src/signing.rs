//! Standard Webhooks signatures (symmetric, `v1`): what the webhook channel and the outbound
//! event sender put on every request, and what a receiver checks.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the MAC is HMAC-SHA256
//! with the secret's key, and the header is `v1,<base64 MAC>` (space-separated when several
//! keys sign during a rotation). A secret is written `whsec_<base64 key>`; as in the
//! reference libraries, the prefix is optional and the rest is always base64-decoded, so a
//! receiver that gives the same secret string to any Standard Webhooks library verifies
//! what herald signs.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request headers the scheme defines.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// How far a receiver lets `webhook-timestamp` be from its clock (the libraries' default).
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 5 * 60;

const SECRET_PREFIX: &str = "whsec_";
const VERSION: &str = "v1";

/// Standard base64 that accepts the key with or without padding (the Python library adds
/// padding before decoding, so unpadded secrets are in use).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key behind a `whsec_...` secret. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// Why a secret is not a usable signing key. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the signing secret is empty")]
    Empty,
    #[error(
        "the signing secret is not `whsec_` followed by base64 (as Standard Webhooks secrets are written)"
    )]
    NotBase64,
}

impl SigningKey {
    /// Parses `whsec_<base64>`, or the base64 part alone.
    pub fn from_secret(secret: &str) -> Result<SigningKey, KeyError> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let key = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| KeyError::NotBase64)?;
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(SigningKey(key))
    }

    /// A key given as raw bytes (the libraries' `from_bytes`).
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Result<SigningKey, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(SigningKey(key))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The `webhook-signature` value for one key: `v1,<base64 HMAC-SHA256>` of
/// `{msg_id}.{timestamp}.{body}`. `msg_id` must not contain `.` (the spec forbids it, as it
/// would make the signed content ambiguous); `timestamp` is unix seconds.
pub fn sign(key: &SigningKey, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = key.mac(msg_id, timestamp, body).finalize().into_bytes();
    format!(
        "{VERSION},{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// Why a request failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a whole number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s away from now, more than the tolerance")]
    OutsideTolerance(i64),
    #[error("no v1 signature in webhook-signature matches")]
    NoMatchingSignature,
}

/// Checks a request's three header values against its raw body, as a receiver does:
/// the timestamp must be within `tolerance_seconds` of `now` (unix seconds, injected so
/// tests need no clock) and one `v1` entry of the space-separated signature list must
/// match, compared in constant time. Entries of other versions (`v1a`) are skipped.
pub fn verify(
    key: &SigningKey,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now.saturating_sub(ts);
    if skew.abs() > tolerance_seconds {
        return Err(VerifyError::OutsideTolerance(skew));
    }
    let expected = key.mac(msg_id, ts, body);
    let matches = signature_header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, sig)| base64::engine::general_purpose::STANDARD.decode(sig).ok())
        .any(|sig| expected.clone().verify_slice(&sig).is_ok());
    if matches {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector published with the Standard Webhooks reference libraries
    // (libraries/rust/src/lib.rs `test_sign`, the same in the Python and JavaScript
    // suites); re-checked with PyPI `standardwebhooks` 1.1.0:
    // Webhook(SECRET).sign(MSG_ID, datetime.fromtimestamp(TS, tz=timezone.utc), BODY).
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn key() -> SigningKey {
        SigningKey::from_secret(SECRET).unwrap()
    }

    #[test]
    fn signing_reproduces_the_published_test_vector() {
        assert_eq!(sign(&key(), MSG_ID, TS, BODY), SIGNATURE);
    }

    #[test]
    fn a_secret_without_the_whsec_prefix_is_the_same_key() {
        let bare = SigningKey::from_secret(SECRET.trim_start_matches("whsec_")).unwrap();
        assert_eq!(sign(&bare, MSG_ID, TS, BODY), SIGNATURE);
    }

    #[test]
    fn an_unpadded_secret_decodes_like_a_padded_one() {
        // 16 bytes of key: base64 with "==" padding; the Python library accepts it bare.
        let padded = SigningKey::from_secret("whsec_MDEyMzQ1Njc4OWFiY2RlZg==").unwrap();
        let bare = SigningKey::from_secret("whsec_MDEyMzQ1Njc4OWFiY2RlZg").unwrap();
        assert_eq!(sign(&padded, "a", 1, b"x"), sign(&bare, "a", 1, b"x"));
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused_without_being_repeated() {
        let err = SigningKey::from_secret("whsec_not base64!").unwrap_err();
        assert_eq!(err, KeyError::NotBase64);
        assert!(!err.to_string().contains("not base64!"));
        assert_eq!(
            SigningKey::from_secret("whsec_").unwrap_err(),
            KeyError::Empty
        );
    }

    #[test]
    fn the_key_never_appears_in_debug_output() {
        assert_eq!(format!("{:?}", key()), "SigningKey(***)");
    }

    #[test]
    fn the_published_signature_verifies_within_the_tolerance() {
        let now = TS + 10;
        verify(&key(), MSG_ID, &TS.to_string(), SIGNATURE, BODY, now, 300).unwrap();
    }

    #[test]
    fn verification_finds_the_matching_entry_among_several() {
        let header =
            format!("v1a,AAAA v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU= {SIGNATURE}");
        verify(&key(), MSG_ID, &TS.to_string(), &header, BODY, TS, 300).unwrap();
    }

    #[test]
    fn a_changed_body_id_or_timestamp_fails_verification() {
        let ts = TS.to_string();
        let tampered = br#"{"email":"test@example.com","username":"test_userX"}"#;
        assert_eq!(
            verify(&key(), MSG_ID, &ts, SIGNATURE, tampered, TS, 300),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verify(&key(), "msg_other", &ts, SIGNATURE, BODY, TS, 300),
            Err(VerifyError::NoMatchingSignature)
        );
        let later = (TS + 1).to_string();
        assert_eq!(
            verify(&key(), MSG_ID, &later, SIGNATURE, BODY, TS, 300),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_signature_under_another_key_fails_verification() {
        let other = SigningKey::from_bytes(b"another key entirely".to_vec()).unwrap();
        let header = sign(&other, MSG_ID, TS, BODY);
        assert_eq!(
            verify(&key(), MSG_ID, &TS.to_string(), &header, BODY, TS, 300),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_fails_even_with_a_good_signature() {
        let ts = TS.to_string();
        assert_eq!(
            verify(&key(), MSG_ID, &ts, SIGNATURE, BODY, TS + 301, 300),
            Err(VerifyError::OutsideTolerance(301))
        );
        assert_eq!(
            verify(&key(), MSG_ID, &ts, SIGNATURE, BODY, TS - 301, 300),
            Err(VerifyError::OutsideTolerance(-301))
        );
        assert_eq!(
            verify(&key(), MSG_ID, "soon", SIGNATURE, BODY, TS, 300),
            Err(VerifyError::BadTimestamp)
        );
    }
}

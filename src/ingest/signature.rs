//! Stream's webhook signature: lowercase hex HMAC-SHA256 of the (decompressed) body, keyed with the
//! app's API secret (stream-api.md §1.3).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("X-Signature header is missing")]
    Missing,
    #[error("X-Signature is not 64 hex characters")]
    Malformed,
    #[error("X-Signature does not match the body")]
    Mismatch,
}

/// The `X-Signature` value Stream sends for `body`.
///
/// ```
/// use chatguard::ingest::signature::{sign, verify};
/// let sig = sign(b"porewqKAFDSAKZssecretsercretfads", b"text");
/// assert_eq!(sig, "d0b770e93a56adc3ee9ac5734533cc0acd71eea8e5e8204a28042ca0f60de1f3");
/// assert!(verify(b"porewqKAFDSAKZssecretsercretfads", b"text", Some(&sig)).is_ok());
/// ```
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

/// Checks `header` against `body` in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    // Stream sends lowercase hex; accept either case, since hex decoding is case-blind anyway.
    let expected = hex::decode(header).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    mac(secret, body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK test vectors from stream-api.md §1.3.
    const VECTORS: &[(&str, &str, &str)] = &[
        (
            "porewqKAFDSAKZssecretsercretfads",
            "text",
            "d0b770e93a56adc3ee9ac5734533cc0acd71eea8e5e8204a28042ca0f60de1f3",
        ),
        (
            "porewqKAFDSAKZssecretsercretfads",
            r#"{"a":1}"#,
            "e527a6ad4993a4c9a30680c8be4b3eda1c36ab104f1f7d39c744bd27016a9624",
        ),
        (
            "test_secret_do_not_use_in_production",
            r#"{"type":"message.new","created_at":1778198400000000000}"#,
            "408ab27d58b18a584d29f2801dde0d5ad20e5f5965039ac88d2ef49014a2c4a7",
        ),
        (
            "test_secret_do_not_use_in_production",
            r#"{"type":"user.banned","created_at":1778198400000000000}"#,
            "9cdfd4810babbe5602b62635b917d8bc11215cc1ba69113e1c2189a828dc23a2",
        ),
        (
            "test_secret_do_not_use_in_production",
            r#"{"type":"moderation.flagged","created_at":1778198400000000000}"#,
            "772aac454f323273eb1115e5022d5122370cdf694cdf3628ebb9aae9e5869366",
        ),
    ];

    #[test]
    fn sdk_vectors_sign_and_verify() {
        for (secret, body, sig) in VECTORS {
            assert_eq!(
                sign(secret.as_bytes(), body.as_bytes()),
                *sig,
                "body {body}"
            );
            assert_eq!(
                verify(secret.as_bytes(), body.as_bytes(), Some(sig)),
                Ok(())
            );
        }
    }

    #[test]
    fn rejects_wrong_missing_and_malformed() {
        let (secret, body, sig) = VECTORS[1];
        assert_eq!(
            verify(b"other", body.as_bytes(), Some(sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret.as_bytes(), b"{\"a\":2}", Some(sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret.as_bytes(), body.as_bytes(), None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(secret.as_bytes(), body.as_bytes(), Some("zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(secret.as_bytes(), body.as_bytes(), Some(&sig[..62])),
            Err(SignatureError::Malformed)
        );
    }
}

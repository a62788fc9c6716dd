//! Webhook bodies: gunzip when the bytes start with the gzip magic (Stream's SDKs detect compression
//! this way, not by header; stream-api.md §1.4), with a cap on the decompressed size.

use std::io::Read;

use bytes::Bytes;
use flate2::read::GzDecoder;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("decompressed body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body starts like gzip but does not decompress: {0}")]
    BadGzip(String),
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub fn is_gzip(body: &[u8]) -> bool {
    body.starts_with(&GZIP_MAGIC)
}

/// The body as signed: decompressed if gzip, unchanged otherwise.
pub fn decode(body: Bytes, max_decompressed: usize) -> Result<Bytes, BodyError> {
    if !is_gzip(&body) {
        return Ok(body);
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_decompressed));
    // Read one byte past the cap so "exactly at the limit" and "over it" are told apart.
    let mut reader = GzDecoder::new(&body[..]).take(max_decompressed as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| BodyError::BadGzip(e.to_string()))?;
    if out.len() > max_decompressed {
        return Err(BodyError::TooLarge {
            limit: max_decompressed,
        });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn plain_body_passes_through() {
        assert_eq!(
            decode(Bytes::from_static(b"{\"a\":1}"), 10).unwrap(),
            &b"{\"a\":1}"[..]
        );
    }

    #[test]
    fn gzip_body_is_decompressed() {
        assert_eq!(
            decode(gzip(b"{\"type\":\"x\"}"), 100).unwrap(),
            &b"{\"type\":\"x\"}"[..]
        );
    }

    #[test]
    fn gzip_bomb_is_refused() {
        let bomb = gzip(&vec![b'a'; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20 * 1024);
        assert_eq!(
            decode(bomb, 1024 * 1024),
            Err(BodyError::TooLarge { limit: 1024 * 1024 })
        );
        assert_eq!(decode(gzip(&[b'a'; 100]), 100).unwrap().len(), 100);
    }

    #[test]
    fn truncated_gzip_is_bad() {
        let g = gzip(b"{\"type\":\"message.new\",\"text\":\"hello there\"}");
        assert!(matches!(
            decode(g.slice(..g.len() / 2), 1000),
            Err(BodyError::BadGzip(_))
        ));
    }
}

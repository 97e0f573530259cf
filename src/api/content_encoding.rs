//! Compressed request bodies (`Content-Encoding: gzip | deflate | zstd | br`), decoded as
//! they arrive with the body limit counted on the decoded bytes, so a small bomb gets 413
//! long before it fills memory.

use std::io::{self, Write};

use actix_web::http::header::{CONTENT_ENCODING, HeaderMap};
use actix_web::web::{Bytes, BytesMut};

use crate::error::{ErrorKind, GatewayError};

/// Output buffer of the brotli decoder.
const BROTLI_BUFFER: usize = 32 * 1024;

/// Collects decoded bytes up to `limit`; a write beyond it fails and marks `over`.
pub(crate) struct Capped {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            return Err(io::Error::other("decoded body over the limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A request body being read: plain, or decoded chunk by chunk.
pub(crate) enum BodyDecoder {
    Identity(BytesMut),
    Gzip(Box<flate2::write::GzDecoder<Capped>>),
    /// HTTP's `deflate` is the zlib format (RFC 9110 §8.4.1.2).
    Deflate(Box<flate2::write::ZlibDecoder<Capped>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Capped>>),
    Brotli(Box<brotli::DecompressorWriter<Capped>>),
}

impl BodyDecoder {
    /// The decoder `headers` ask for; an encoding corral cannot decode is a 415.
    /// `capacity` is the expected plain size (the declared length for identity bodies).
    pub fn for_request(
        headers: &HeaderMap,
        limit: usize,
        capacity: usize,
    ) -> Result<BodyDecoder, GatewayError> {
        let capped = || Capped {
            buf: Vec::with_capacity(capacity.min(limit)),
            limit,
            over: false,
        };
        let codings: Vec<String> = headers
            .get_all(CONTENT_ENCODING)
            .flat_map(|v| v.to_str().unwrap_or("(not text)").split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty() && c != "identity")
            .collect();
        let coding = match codings.as_slice() {
            [] => {
                return Ok(BodyDecoder::Identity(BytesMut::with_capacity(
                    capacity.min(limit),
                )));
            }
            [one] => one,
            _ => return Err(unsupported("more than one content coding")),
        };
        Ok(match coding.as_str() {
            "gzip" | "x-gzip" => {
                BodyDecoder::Gzip(Box::new(flate2::write::GzDecoder::new(capped())))
            }
            "deflate" => BodyDecoder::Deflate(Box::new(flate2::write::ZlibDecoder::new(capped()))),
            "zstd" => BodyDecoder::Zstd(Box::new(
                zstd::stream::write::Decoder::new(capped())
                    .map_err(|e| GatewayError::internal(format!("zstd decoder: {e}")))?,
            )),
            "br" => BodyDecoder::Brotli(Box::new(brotli::DecompressorWriter::new(
                capped(),
                BROTLI_BUFFER,
            ))),
            other => return Err(unsupported(&format!("content coding `{other}`"))),
        })
    }

    /// Feeds one chunk as it arrived; returns how many plain bytes it added.
    pub fn push(&mut self, chunk: &[u8], limit: usize) -> Result<usize, GatewayError> {
        let before = self.plain_len();
        let written = match self {
            BodyDecoder::Identity(buf) => {
                if buf.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(chunk);
                return Ok(chunk.len());
            }
            BodyDecoder::Gzip(d) => d.write_all(chunk),
            BodyDecoder::Deflate(d) => d.write_all(chunk),
            BodyDecoder::Zstd(d) => d.write_all(chunk),
            BodyDecoder::Brotli(d) => d.write_all(chunk),
        };
        written.map_err(|e| self.failed(&e))?;
        Ok(self.plain_len() - before)
    }

    fn plain_len(&self) -> usize {
        match (self, self.sink()) {
            (BodyDecoder::Identity(buf), _) => buf.len(),
            (_, Some(c)) => c.buf.len(),
            (_, None) => 0,
        }
    }

    /// The whole plain body, once every chunk is in.
    pub fn finish(mut self) -> Result<Bytes, GatewayError> {
        let done = match &mut self {
            BodyDecoder::Identity(_) => Ok(()),
            BodyDecoder::Gzip(d) => d.try_finish(),
            BodyDecoder::Deflate(d) => d.try_finish(),
            BodyDecoder::Zstd(d) => d.flush(),
            BodyDecoder::Brotli(d) => d.close(),
        };
        if let Err(e) = done {
            return Err(self.failed(&e));
        }
        Ok(match self {
            BodyDecoder::Identity(buf) => buf.freeze(),
            BodyDecoder::Gzip(mut d) => Bytes::from(std::mem::take(&mut d.get_mut().buf)),
            BodyDecoder::Deflate(mut d) => Bytes::from(std::mem::take(&mut d.get_mut().buf)),
            BodyDecoder::Zstd(mut d) => Bytes::from(std::mem::take(&mut d.get_mut().buf)),
            BodyDecoder::Brotli(mut d) => Bytes::from(std::mem::take(&mut d.get_mut().buf)),
        })
    }

    fn sink(&self) -> Option<&Capped> {
        match self {
            BodyDecoder::Identity(_) => None,
            BodyDecoder::Gzip(d) => Some(d.get_ref()),
            BodyDecoder::Deflate(d) => Some(d.get_ref()),
            BodyDecoder::Zstd(d) => Some(d.get_ref()),
            BodyDecoder::Brotli(d) => Some(d.get_ref()),
        }
    }

    /// 413 when the decoded body outgrew the limit, else 400: the bytes do not decode.
    fn failed(&self, e: &io::Error) -> GatewayError {
        match self.sink() {
            Some(c) if c.over => too_large(c.limit),
            _ => GatewayError::bad_request(format!(
                "the request body does not decode as its Content-Encoding says: {e}"
            )),
        }
    }
}

fn too_large(limit: usize) -> GatewayError {
    GatewayError::new(
        ErrorKind::PayloadTooLarge,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

fn unsupported(what: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::UnsupportedMediaType,
        format!("{what} is not supported; send gzip, deflate, zstd, br or identity"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    const BODY: &[u8] =
        br#"{"model":"qwen3:8b","messages":[{"role":"user","content":"hello hello hello"}]}"#;

    fn headers(coding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
        h
    }

    fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
        match coding {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "zstd" => zstd::stream::encode_all(data, 19).unwrap(),
            "br" => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
                    w.write_all(data).unwrap();
                }
                out
            }
            _ => data.to_vec(),
        }
    }

    /// Decodes `wire` fed in chunks of `step` bytes.
    fn decode(coding: &str, wire: &[u8], limit: usize, step: usize) -> Result<Bytes, GatewayError> {
        let mut d = BodyDecoder::for_request(&headers(coding), limit, 0)?;
        for chunk in wire.chunks(step) {
            d.push(chunk, limit)?;
        }
        d.finish()
    }

    #[test]
    fn every_coding_round_trips_in_small_chunks() {
        for coding in [
            "gzip",
            "deflate",
            "zstd",
            "br",
            "identity",
            "GZIP",
            " gzip , identity",
        ] {
            let c = coding
                .trim()
                .split(',')
                .next()
                .unwrap()
                .trim()
                .to_ascii_lowercase();
            let wire = encode(&c, BODY);
            for step in [1, 7, 4096] {
                assert_eq!(
                    &decode(coding, &wire, 1 << 20, step).unwrap()[..],
                    BODY,
                    "{coding}/{step}"
                );
            }
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 64 << 20];
        for coding in ["gzip", "deflate", "zstd", "br"] {
            let wire = encode(coding, &zeros);
            assert!(wire.len() < 1 << 20, "{coding} packs 64 MiB of zeros small");
            let e = decode(coding, &wire, 1 << 20, 16 * 1024).unwrap_err();
            assert_eq!(e.kind, ErrorKind::PayloadTooLarge, "{coding}: {e}");
        }
    }

    #[test]
    fn unknown_or_stacked_codings_are_unsupported_and_garbage_is_a_bad_request() {
        for coding in ["compress", "gzip, br", "snappy"] {
            let e = BodyDecoder::for_request(&headers(coding), 1024, 0)
                .err()
                .unwrap();
            assert_eq!(e.kind, ErrorKind::UnsupportedMediaType, "{coding}");
        }
        for coding in ["gzip", "deflate", "zstd", "br"] {
            let e = decode(coding, b"this is not compressed at all", 1024, 8).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest, "{coding}: {e}");
        }
        let cut = encode("gzip", BODY);
        let e = decode("gzip", &cut[..cut.len() / 2], 1024, 8).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "a truncated body: {e}");
    }
}

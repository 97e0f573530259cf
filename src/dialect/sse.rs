//! A pure, incremental Server-Sent Events frame parser for upstream streams split at any byte.

use crate::error::{ErrorKind, GatewayError};

/// One dispatched SSE event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    pub event: Option<String>,
    pub data: String,
}

/// Feed it byte chunks as they arrive; it returns every frame completed so far.
///
/// Lines end in `\n`, `\r\n` or `\r`; comment lines (`:`) are skipped; `id:`/`retry:` are
/// ignored. The pending line plus the frame being built never exceed `max_frame` bytes, so a
/// broken upstream cannot make corral buffer without bound.
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned without finding a line end.
    scanned: usize,
    event: Option<String>,
    data: String,
    has_data: bool,
    max_frame: usize,
}

/// The default bound on one frame: generous for big tool-call argument chunks.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new(DEFAULT_MAX_FRAME)
    }
}

impl SseParser {
    pub fn new(max_frame: usize) -> SseParser {
        SseParser {
            buf: Vec::new(),
            scanned: 0,
            event: None,
            data: String::new(),
            has_data: false,
            max_frame,
        }
    }

    /// Consumes `chunk`, returning the frames it completed (possibly none).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseFrame>, GatewayError> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut start = 0;
        let mut i = start + self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b != b'\n' && b != b'\r' {
                i += 1;
                continue;
            }
            // A `\r` at the very end may be the first half of `\r\n`: wait for the next byte.
            if b == b'\r' && i + 1 == self.buf.len() {
                break;
            }
            let end = i;
            i += if b == b'\r' && self.buf[i + 1] == b'\n' {
                2
            } else {
                1
            };
            let line = std::mem::take(&mut self.buf);
            let res = self.line(&line[start..end], &mut frames);
            self.buf = line;
            res?;
            start = i;
        }
        self.buf.drain(..start);
        self.scanned = self
            .buf
            .len()
            .saturating_sub(usize::from(self.buf.ends_with(b"\r")));
        if self.buf.len() + self.data.len() > self.max_frame {
            return Err(too_big());
        }
        Ok(frames)
    }

    /// At end of stream: the frame left without its blank line, if any.
    pub fn finish(&mut self) -> Result<Option<SseFrame>, GatewayError> {
        let mut frames = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = rest.strip_suffix(b"\r").unwrap_or(&rest);
            self.line(line, &mut frames)?;
        }
        self.scanned = 0;
        self.dispatch(&mut frames);
        Ok(frames.pop())
    }

    fn line(&mut self, line: &[u8], frames: &mut Vec<SseFrame>) -> Result<(), GatewayError> {
        if line.is_empty() {
            self.dispatch(frames);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = std::str::from_utf8(value).map_err(|_| {
            GatewayError::new(ErrorKind::UpstreamProtocol, "upstream sent invalid UTF-8")
        })?;
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > self.max_frame {
                    return Err(too_big());
                }
            }
            b"event" => self.event = Some(value.to_string()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, frames: &mut Vec<SseFrame>) {
        if self.has_data || self.event.is_some() {
            frames.push(SseFrame {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.has_data = false;
    }
}

fn too_big() -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamProtocol,
        "upstream sent an oversized event-stream frame",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = "event: message_start\ndata: {\"a\":1}\n\n: keepalive\n\ndata: x\r\ndata: y\r\n\r\nevent: ping\ndata:{\"type\":\"ping\"}\r\rdata: [DONE]\n\n";

    fn expected() -> Vec<SseFrame> {
        vec![
            SseFrame {
                event: Some("message_start".into()),
                data: "{\"a\":1}".into(),
            },
            SseFrame {
                event: None,
                data: "x\ny".into(),
            },
            SseFrame {
                event: Some("ping".into()),
                data: "{\"type\":\"ping\"}".into(),
            },
            SseFrame {
                event: None,
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn parses_whole_stream() {
        let mut p = SseParser::default();
        assert_eq!(p.feed(STREAM.as_bytes()).unwrap(), expected());
        assert_eq!(p.finish().unwrap(), None);
    }

    #[test]
    fn finish_flushes_an_unterminated_frame() {
        let mut p = SseParser::default();
        assert!(p.feed(b"data: tail").unwrap().is_empty());
        assert_eq!(p.finish().unwrap().unwrap().data, "tail");
    }

    #[test]
    fn bounded() {
        let mut p = SseParser::new(16);
        assert!(p.feed(&[b'a'; 40]).is_err());
        let mut p = SseParser::new(16);
        assert!(p.feed(b"data: 0123456789\ndata: 0123456789\n").is_err());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_frames(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bytes = STREAM.as_bytes();
            let mut p = SseParser::default();
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                got.extend(p.feed(&bytes[last..c]).unwrap());
                last = c;
            }
            got.extend(p.finish().unwrap());
            prop_assert_eq!(got, expected());
        }
    }
}

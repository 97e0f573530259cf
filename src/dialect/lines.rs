//! Splits a byte stream into NDJSON lines whatever the read boundaries, with a bound on line length.

use bytes::{Bytes, BytesMut};

/// Accumulates chunks and hands out complete lines (without the `\n`).
/// A line longer than `max_line` is an error rather than unbounded memory.
pub struct LineSplitter {
    buf: BytesMut,
    max_line: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong(pub usize);

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_line,
        }
    }

    /// Appends `chunk`, then pushes every complete, non-blank line into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) -> Result<(), LineTooLong> {
        self.buf.extend_from_slice(chunk);
        let mut start_scan = self.buf.len() - chunk.len();
        while let Some(pos) = self.buf[start_scan..].iter().position(|b| *b == b'\n') {
            let line = self.buf.split_to(start_scan + pos + 1).freeze();
            start_scan = 0;
            let trimmed = trim_line(line);
            if !trimmed.is_empty() {
                out.push(trimmed);
            }
        }
        if self.buf.len() > self.max_line {
            return Err(LineTooLong(self.buf.len()));
        }
        Ok(())
    }

    /// What is left when the stream ends: a final line without `\n`, if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = trim_line(self.buf.split().freeze());
        (!rest.is_empty()).then_some(rest)
    }
}

fn trim_line(mut line: Bytes) -> Bytes {
    while matches!(line.last(), Some(b'\n' | b'\r' | b' ' | b'\t')) {
        line.truncate(line.len() - 1);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_across_chunks_and_skips_blank_lines() {
        let mut s = LineSplitter::new(1024);
        let mut out = Vec::new();
        s.feed(b"{\"a\":1}\n{\"b\"", &mut out).unwrap();
        s.feed(b":2}\n\n\r\n{\"c\":3}", &mut out).unwrap();
        assert_eq!(
            out,
            vec![Bytes::from("{\"a\":1}"), Bytes::from("{\"b\":2}")]
        );
        assert_eq!(s.finish(), Some(Bytes::from("{\"c\":3}")));
    }

    #[test]
    fn bounds_line_length() {
        let mut s = LineSplitter::new(8);
        let mut out = Vec::new();
        assert!(s.feed(b"0123456789", &mut out).is_err());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_lines(cuts in proptest::collection::vec(0usize..60, 0..8)) {
            let text = b"{\"x\":1}\n{\"y\":\"two\"}\n\n{\"z\":[3]}\n{\"w\":4}\n";
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % text.len()).collect();
            points.sort_unstable();
            let mut s = LineSplitter::new(1 << 20);
            let mut out = Vec::new();
            let mut last = 0;
            for p in points.into_iter().chain([text.len()]) {
                s.feed(&text[last..p], &mut out).unwrap();
                last = p;
            }
            prop_assert_eq!(out.len(), 4);
            prop_assert_eq!(&out[3][..], b"{\"w\":4}");
            prop_assert!(s.finish().is_none());
        }
    }
}

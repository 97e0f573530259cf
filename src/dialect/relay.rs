//! Relays: upstream bytes of one kind in, client bytes of one dialect out, one chunk at a
//! time and at arbitrary byte boundaries. Pure (no I/O), so every one is tested here.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::BackendKind;
use crate::dialect::lines::LineSplitter;
use crate::dialect::ollama::{ndjson_line, needs_escape};
use crate::dialect::sse::{DEFAULT_MAX_FRAME, SseParser};
use crate::dialect::{Dialect, anthropic, native, ollama, openai, responses};
use crate::error::{ErrorKind, GatewayError};
use crate::ir::{StreamEvent, Usage};

/// Longest NDJSON line accepted from an upstream (a 5 MiB frame must fit).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// The error for an upstream stream that stopped before its final frame.
pub fn incomplete() -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamProtocol,
        "upstream stream ended before the answer was complete",
    )
}

/// Turns one upstream answer stream into the client's stream. An enum rather than a trait
/// object: the relay is chosen once per request and the match costs nothing.
pub enum Relay {
    /// Any upstream kind to any dialect, through canonical events.
    Translate(TranslateRelay),
    /// SSE of the client's own dialect, passed through.
    Sse(SsePassthrough),
    /// Ollama NDJSON to an Ollama client, passed through.
    Ollama(OllamaRelay),
}

impl Relay {
    /// Translates one upstream chunk into `out`.
    pub fn chunk(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        match self {
            Relay::Translate(r) => r.chunk(bytes, out),
            Relay::Sse(r) => r.chunk(bytes, out),
            Relay::Ollama(r) => r.chunk(bytes, out),
        }
    }

    /// The upstream ended; an incomplete answer is an error.
    pub fn end(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        match self {
            Relay::Translate(r) => r.end(out),
            Relay::Sse(r) => r.end(out),
            Relay::Ollama(r) => r.end(out),
        }
    }

    /// The frame that ends the client's stream after a failure.
    pub fn error_frame(&mut self, e: &GatewayError) -> Bytes {
        match self {
            Relay::Translate(r) => r.writer.error(e),
            Relay::Sse(r) => r.writer.error(e),
            Relay::Ollama(_) => e.stream_frame(Dialect::Ollama),
        }
    }

    /// Tokens in and out, when the upstream said.
    pub fn usage(&self) -> Option<(u64, u64)> {
        match self {
            Relay::Translate(r) => r.usage.map(|u| (u.input, u.output)),
            Relay::Sse(r) => r.usage.map(|u| (u.input, u.output)),
            Relay::Ollama(r) => r.usage,
        }
    }
}

/// Reads canonical events out of an upstream stream of any kind.
pub enum UpstreamReader {
    Ndjson(LineSplitter, Vec<Bytes>),
    OpenAi(SseParser, openai::StreamParser),
    Anthropic(SseParser, anthropic::StreamParser),
}

impl UpstreamReader {
    pub fn for_kind(kind: BackendKind) -> UpstreamReader {
        match kind {
            BackendKind::Ollama => UpstreamReader::Ndjson(LineSplitter::new(MAX_LINE), Vec::new()),
            BackendKind::Openai => UpstreamReader::OpenAi(
                SseParser::new(DEFAULT_MAX_FRAME),
                openai::StreamParser::new(),
            ),
            BackendKind::Anthropic => UpstreamReader::Anthropic(
                SseParser::new(DEFAULT_MAX_FRAME),
                anthropic::StreamParser::new(),
            ),
        }
    }

    pub fn feed(
        &mut self,
        chunk: &[u8],
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), GatewayError> {
        match self {
            UpstreamReader::Ndjson(lines, batch) => {
                lines.feed(chunk, batch).map_err(line_too_long)?;
                for line in batch.drain(..) {
                    events.extend(ollama::parse_frame(&line)?);
                }
            }
            UpstreamReader::OpenAi(sse, parser) => {
                for frame in sse.feed(chunk)? {
                    events.extend(parser.push(&frame.data)?);
                }
            }
            UpstreamReader::Anthropic(sse, parser) => {
                for frame in sse.feed(chunk)? {
                    events.extend(parser.push(frame.event.as_deref(), &frame.data)?);
                }
            }
        }
        Ok(())
    }

    pub fn finish(&mut self, events: &mut Vec<StreamEvent>) -> Result<(), GatewayError> {
        match self {
            UpstreamReader::Ndjson(lines, _) => {
                if let Some(line) = lines.finish() {
                    events.extend(ollama::parse_frame(&line)?);
                }
            }
            UpstreamReader::OpenAi(sse, parser) => {
                if let Some(frame) = sse.finish()? {
                    events.extend(parser.push(&frame.data)?);
                }
                events.extend(parser.finish()?);
            }
            UpstreamReader::Anthropic(sse, parser) => {
                if let Some(frame) = sse.finish()? {
                    events.extend(parser.push(frame.event.as_deref(), &frame.data)?);
                }
                events.extend(parser.finish()?);
            }
        }
        Ok(())
    }
}

fn line_too_long(e: crate::dialect::lines::LineTooLong) -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamProtocol,
        format!("upstream line longer than {} bytes", e.0),
    )
}

/// Writes canonical events in the client's dialect.
pub enum ClientWriter {
    Ollama(ollama::StreamWriter),
    OpenAi(openai::StreamWriter),
    Anthropic(anthropic::StreamWriter),
    Responses(Box<responses::StreamWriter>),
}

impl ClientWriter {
    pub fn push(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        let frames = match self {
            ClientWriter::Ollama(w) => w.push(ev),
            ClientWriter::OpenAi(w) => w.push(ev),
            ClientWriter::Anthropic(w) => w.push(ev),
            ClientWriter::Responses(w) => w.push(ev),
        };
        for f in frames {
            out.extend_from_slice(&f);
        }
    }

    pub fn error(&mut self, e: &GatewayError) -> Bytes {
        match self {
            ClientWriter::Ollama(w) => w.error(e),
            ClientWriter::OpenAi(w) => w.error(e),
            ClientWriter::Anthropic(w) => w.error(e),
            ClientWriter::Responses(w) => w.error(e),
        }
    }
}

/// Upstream stream of any kind → client stream of any dialect, through canonical events.
pub struct TranslateRelay {
    reader: UpstreamReader,
    writer: ClientWriter,
    events: Vec<StreamEvent>,
    usage: Option<Usage>,
    hide_thinking: bool,
}

impl TranslateRelay {
    pub fn new(kind: BackendKind, writer: ClientWriter) -> TranslateRelay {
        TranslateRelay {
            reader: UpstreamReader::for_kind(kind),
            writer,
            events: Vec::new(),
            usage: None,
            hide_thinking: false,
        }
    }

    /// Drops reasoning the client did not ask for (a model that thinks by default).
    pub fn hiding_thinking(mut self, hide: bool) -> TranslateRelay {
        self.hide_thinking = hide;
        self
    }

    fn write_events(&mut self, out: &mut BytesMut) {
        for ev in self.events.drain(..) {
            match &ev {
                StreamEvent::Done { usage, .. } => self.usage = Some(*usage),
                StreamEvent::ThinkingDelta(_) | StreamEvent::ThinkingSignature(_)
                    if self.hide_thinking =>
                {
                    continue;
                }
                _ => {}
            }
            self.writer.push(&ev, out);
        }
    }

    fn chunk(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        let fed = self.reader.feed(bytes, &mut self.events);
        self.write_events(out);
        fed
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        let finished = self.reader.finish(&mut self.events);
        self.write_events(out);
        finished?;
        self.usage.map(|_| ()).ok_or_else(incomplete)
    }
}

/// Same dialect on both sides (OpenAI→openai, Anthropic→anthropic): SSE frames go through
/// as the upstream wrote them. Each frame is parsed once, by the kind's stream parser, for
/// usage and a clean end; that parse also says where the frame's model name is, which is
/// replaced only when an alias or fallback served the request.
pub struct SsePassthrough {
    frames: SseParser,
    parser: FrameParser,
    /// The client's model name, as a JSON string.
    rewrite: Option<String>,
    writer: ClientWriter,
    events: Vec<StreamEvent>,
    usage: Option<Usage>,
}

enum FrameParser {
    OpenAi(openai::StreamParser),
    Anthropic(anthropic::StreamParser),
}

impl SsePassthrough {
    pub fn new(kind: BackendKind, rewrite: Option<String>, writer: ClientWriter) -> SsePassthrough {
        let parser = match kind {
            BackendKind::Anthropic => FrameParser::Anthropic(anthropic::StreamParser::new()),
            _ => FrameParser::OpenAi(openai::StreamParser::new()),
        };
        SsePassthrough {
            frames: SseParser::new(DEFAULT_MAX_FRAME),
            parser,
            rewrite: rewrite.as_deref().map(native::quoted),
            writer,
            events: Vec::new(),
            usage: None,
        }
    }

    /// Reads one frame and writes it out as it came (an upstream error scrubbed, the model
    /// name replaced when asked); a frame the parser refuses is written before the error
    /// is returned, so the client sees what the upstream said.
    fn frame(
        &mut self,
        event: Option<&str>,
        data: &str,
        out: &mut BytesMut,
    ) -> Result<(), GatewayError> {
        let read = match &mut self.parser {
            FrameParser::OpenAi(p) => p.read(data, &mut self.events),
            FrameParser::Anthropic(p) => p.read(data, &mut self.events),
        };
        self.note();
        if let Some(e) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"data: ");
        // An upstream's error event is upstream text like any error body.
        if event == Some("error") || data.starts_with("{\"error\"") {
            out.extend_from_slice(crate::redact::scrub(data).as_bytes());
        } else {
            match (&self.rewrite, &read) {
                (Some(name), Ok(Some(at))) => {
                    out.extend_from_slice(&data.as_bytes()[..at.start]);
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(&data.as_bytes()[at.end..]);
                }
                _ => out.extend_from_slice(data.as_bytes()),
            }
        }
        out.extend_from_slice(b"\n\n");
        read.map(|_| ())
    }

    fn note(&mut self) {
        for ev in self.events.drain(..) {
            if let StreamEvent::Done { usage, .. } = ev {
                self.usage = Some(usage);
            }
        }
    }

    fn chunk(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        for f in self.frames.feed(bytes)? {
            self.frame(f.event.as_deref(), &f.data, out)?;
        }
        Ok(())
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        if let Some(f) = self.frames.finish()? {
            self.frame(f.event.as_deref(), &f.data, out)?;
        }
        let finished = match &mut self.parser {
            FrameParser::OpenAi(p) => p.finish(),
            FrameParser::Anthropic(p) => p.finish(),
        };
        self.events.extend(finished?);
        self.note();
        self.usage.map(|_| ()).ok_or_else(incomplete)
    }
}

/// Ollama NDJSON to Ollama NDJSON: lines pass through as they are, checked and escaped,
/// with the model name rewritten only when an alias or fallback served the request.
pub struct OllamaRelay {
    lines: LineSplitter,
    batch: Vec<Bytes>,
    /// The client's model name, as a JSON string.
    rewrite: Option<String>,
    hide_thinking: bool,
    done: bool,
    usage: Option<(u64, u64)>,
}

/// The fields of an Ollama line (or whole answer) that decide how it is handled, and where
/// its model name is, read in its one parse without building a tree.
#[derive(Deserialize)]
struct LinePeek<'a> {
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
}

impl LinePeek<'_> {
    fn usage(&self) -> Option<(u64, u64)> {
        (self.prompt_eval_count.is_some() || self.eval_count.is_some()).then(|| {
            (
                self.prompt_eval_count.unwrap_or(0),
                self.eval_count.unwrap_or(0),
            )
        })
    }
}

impl OllamaRelay {
    pub fn new(rewrite: Option<String>) -> OllamaRelay {
        OllamaRelay {
            lines: LineSplitter::new(MAX_LINE),
            batch: Vec::new(),
            rewrite: rewrite.as_deref().map(native::quoted),
            hide_thinking: false,
            done: false,
            usage: None,
        }
    }

    /// Drops reasoning the client did not ask for (gpt-oss reasons even with `think: false`).
    pub fn hiding_thinking(mut self, hide: bool) -> OllamaRelay {
        self.hide_thinking = hide;
        self
    }

    fn line(&mut self, line: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        if self.done {
            return Ok(());
        }
        if self.hide_thinking && contains(line, b"\"thinking\"") {
            return self.thinking_line(line, out);
        }
        // One parse reads the fields that decide the line's handling, whatever their order
        // or spacing, and where its model name is; the bytes go on as they are.
        let peek: LinePeek = serde_json::from_slice(line).map_err(garbage)?;
        if let Some(e) = peek.error.as_ref().filter(|e| !e.is_null()) {
            return Err(upstream_error(e));
        }
        if peek.done == Some(true) {
            self.done = true;
            self.usage = peek.usage();
        }
        let at = match (&self.rewrite, peek.model) {
            (Some(name), Some(m)) => native::span_of(line, m).map(|at| (at, name)),
            _ => None,
        };
        let start = out.len();
        match at {
            Some((at, name)) => {
                out.extend_from_slice(&line[..at.start]);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&line[at.end..]);
            }
            None => out.extend_from_slice(line),
        }
        if needs_escape(&out[start..]) {
            let escaped = escape_separators(&out[start..]);
            out.truncate(start);
            out.extend_from_slice(&escaped);
        }
        out.extend_from_slice(b"\n");
        Ok(())
    }

    /// A line that may carry reasoning the client must not see: parsed into a tree (its
    /// one parse), stripped, and written anew.
    fn thinking_line(&mut self, line: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        let mut v: Value = serde_json::from_slice(line).map_err(garbage)?;
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            return Err(upstream_error(e));
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            self.done = true;
            self.usage = usage_of(&v);
        }
        if !ollama::strip_thinking(&mut v) {
            return Ok(());
        }
        if let (Some(name), Some(model)) = (&self.rewrite, v.get_mut("model")) {
            *model = serde_json::from_str(name).unwrap_or(Value::Null);
        }
        out.extend_from_slice(&ndjson_line(&v));
        Ok(())
    }

    fn chunk(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        let mut batch = std::mem::take(&mut self.batch);
        let mut result = self.lines.feed(bytes, &mut batch).map_err(line_too_long);
        for line in batch.drain(..) {
            if result.is_ok() {
                result = self.line(&line, out);
            }
        }
        self.batch = batch;
        result
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        if let Some(rest) = self.lines.finish() {
            self.line(&rest, out)?;
        }
        if self.done { Ok(()) } else { Err(incomplete()) }
    }
}

/// An Ollama `{"error": ...}` line.
fn upstream_error(e: &Value) -> GatewayError {
    let message = e.as_str().map_or_else(|| e.to_string(), str::to_string);
    GatewayError::from_upstream(ErrorKind::UpstreamStatus, message)
}

/// `line` with U+2028, U+2029 and U+0085 written as JSON escapes; in valid JSON they can only
/// sit inside strings, where the escape means the same.
fn escape_separators(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 8);
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let (esc, n): (&[u8], usize) = match rest {
            [0xE2, 0x80, 0xA8, ..] => (b"\\u2028", 3),
            [0xE2, 0x80, 0xA9, ..] => (b"\\u2029", 3),
            [0xC2, 0x85, ..] => (b"\\u0085", 2),
            _ => {
                out.push(line[i]);
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(esc);
        i += n;
    }
    out
}

fn garbage(e: serde_json::Error) -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamProtocol,
        format!("upstream sent invalid JSON: {e}"),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A whole Ollama answer for an Ollama client: checked to be JSON, model name echoed,
/// tokens read, in one parse. The tree is built only when reasoning must be stripped.
pub fn ollama_whole(
    bytes: Bytes,
    rewrite: Option<&str>,
    hide_thinking: bool,
) -> Result<(Bytes, Option<(u64, u64)>), GatewayError> {
    if hide_thinking && contains(&bytes, b"\"thinking\"") {
        let mut v: Value = serde_json::from_slice(&bytes).map_err(garbage)?;
        ollama::strip_thinking(&mut v);
        if let (Some(model), Some(_)) = (rewrite, v.get("model")) {
            v["model"] = Value::String(model.to_string());
        }
        let usage = usage_of(&v);
        return Ok((Bytes::from(v.to_string()), usage));
    }
    let peek: LinePeek = serde_json::from_slice(&bytes).map_err(garbage)?;
    let usage = peek.usage();
    let at = rewrite.zip(peek.model.and_then(|m| native::span_of(&bytes, m)));
    let Some((model, at)) = at else {
        return Ok((bytes, usage));
    };
    let name = native::quoted(model);
    Ok((native::splice(&bytes, vec![(at, name.as_bytes())]), usage))
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let tin = v.get("prompt_eval_count").and_then(Value::as_u64);
    let tout = v.get("eval_count").and_then(Value::as_u64);
    (tin.is_some() || tout.is_some()).then(|| (tin.unwrap_or(0), tout.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` and ends the stream; the client bytes and how it ended.
    fn run(relay: &mut Relay, chunks: &[&[u8]]) -> (String, Result<(), GatewayError>) {
        let mut out = BytesMut::new();
        for c in chunks {
            if let Err(e) = relay.chunk(c, &mut out) {
                return (String::from_utf8_lossy(&out).into(), Err(e));
            }
        }
        let r = relay.end(&mut out);
        (String::from_utf8_lossy(&out).into(), r)
    }

    fn ollama(rewrite: Option<&str>) -> Relay {
        Relay::Ollama(OllamaRelay::new(rewrite.map(str::to_string)))
    }

    #[test]
    fn ollama_lines_pass_through_and_usage_is_read() {
        let mut r = ollama(None);
        let (out, res) = run(
            &mut r,
            &[b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false}\n{\"model\":\"m\",\"do",
              b"ne\":true,\"prompt_eval_count\":3,\"eval_count\":5}\n"],
        );
        res.unwrap();
        assert_eq!(out.lines().count(), 2);
        assert_eq!(r.usage(), Some((3, 5)));
    }

    #[test]
    fn the_ollama_end_is_read_from_done_whatever_the_spacing_and_key_order() {
        for last in [
            "{\"model\":\"m\", \"done\": true, \"eval_count\": 2}\n",
            "{ \"eval_count\" : 2 ,\"done\"\t:\ttrue , \"model\":\"m\" }\n",
        ] {
            let mut r = ollama(None);
            let (out, res) = run(&mut r, &[b"{\"done\": false}\n", last.as_bytes()]);
            res.unwrap();
            assert_eq!(out.lines().count(), 2, "{out}");
            assert_eq!(r.usage(), Some((0, 2)));
        }
    }

    #[test]
    fn a_truncated_ollama_stream_is_an_error() {
        let mut r = ollama(None);
        let (_, res) = run(&mut r, &[b"{\"done\":false}\n"]);
        assert!(res.is_err());
    }

    #[test]
    fn garbage_and_error_lines_stop_an_ollama_stream() {
        let mut r = ollama(None);
        assert!(run(&mut r, &[b"not json\n"]).1.is_err());
        let mut r = ollama(None);
        let (_, res) = run(&mut r, &[b"{\"error\":\"runner died\"}\n"]);
        assert_eq!(res.unwrap_err().message, "runner died");
    }

    #[test]
    fn ollama_model_is_rewritten_and_separators_escaped() {
        let mut r = ollama(Some("alias"));
        let (out, res) = run(
            &mut r,
            &["{\"model\":\"real\",\"response\":\"a\u{2028}b\",\"done\":true}\n".as_bytes()],
        );
        res.unwrap();
        assert!(out.contains("\"model\":\"alias\""));
        assert!(out.contains("\\u2028"));
    }

    #[test]
    fn the_error_frame_is_in_the_clients_dialect() {
        let e = GatewayError::new(ErrorKind::UpstreamTimeout, "idle");
        assert_eq!(&ollama(None).error_frame(&e)[..], b"{\"error\":\"idle\"}\n");
        let writer = ClientWriter::Anthropic(anthropic::StreamWriter::new("msg_1", "m", 1));
        let mut r = Relay::Translate(TranslateRelay::new(BackendKind::Ollama, writer));
        assert!(r.error_frame(&e).starts_with(b"event: error\n"));
    }

    const OPENAI_STREAM: &[u8] = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"real\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"real\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn an_openai_stream_is_translated_for_an_ollama_client_at_any_boundary() {
        for split in [1, 7, 50, OPENAI_STREAM.len()] {
            let writer = ClientWriter::Ollama(ollama::StreamWriter::new("alias", true));
            let mut r = Relay::Translate(TranslateRelay::new(BackendKind::Openai, writer));
            let chunks: Vec<&[u8]> = OPENAI_STREAM.chunks(split).collect();
            let (out, res) = run(&mut r, &chunks);
            res.unwrap();
            let lines: Vec<Value> = out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines[0]["message"]["content"], "Hi");
            assert_eq!(lines[0]["model"], "alias");
            assert_eq!(lines.last().unwrap()["done"], true);
            assert_eq!(r.usage(), Some((4, 2)));
        }
    }

    #[test]
    fn a_translated_stream_without_its_end_is_incomplete() {
        let writer = ClientWriter::Ollama(ollama::StreamWriter::new("m", true));
        let mut r = Relay::Translate(TranslateRelay::new(BackendKind::Openai, writer));
        let first = OPENAI_STREAM.split(|b| *b == b'\n').next().unwrap();
        let mut chunk = first.to_vec();
        chunk.extend_from_slice(b"\n\n");
        let (out, res) = run(&mut r, &[&chunk]);
        assert!(out.contains("Hi"));
        assert_eq!(res.unwrap_err().kind, ErrorKind::UpstreamProtocol);
    }

    #[test]
    fn sse_passthrough_keeps_frames_and_rewrites_only_the_model() {
        let writer = ClientWriter::OpenAi(openai::StreamWriter::new("c", 1, "alias", false));
        let mut r = Relay::Sse(SsePassthrough::new(
            BackendKind::Openai,
            Some("alias".into()),
            writer,
        ));
        let (out, res) = run(&mut r, &[OPENAI_STREAM]);
        res.unwrap();
        assert_eq!(out.matches("data: ").count(), 3);
        assert!(out.contains("\"model\":\"alias\""));
        assert!(!out.contains("\"model\":\"real\""));
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(r.usage(), Some((4, 2)));
    }

    #[test]
    fn sse_passthrough_changes_the_model_bytes_and_nothing_else() {
        // Spacing, number spelling and key order a re-serialisation would change.
        let stream = "data: {\"id\":\"c\", \"model\" : \"re\\u0061l\",\"created\":1.50,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let writer = ClientWriter::OpenAi(openai::StreamWriter::new("c", 1, "alias", false));
        let mut r = Relay::Sse(SsePassthrough::new(
            BackendKind::Openai,
            Some("al\"ias".into()),
            writer,
        ));
        let chunks: Vec<&[u8]> = stream.as_bytes().chunks(5).collect();
        let (out, res) = run(&mut r, &chunks);
        res.unwrap();
        assert_eq!(out, stream.replace("\"re\\u0061l\"", "\"al\\\"ias\""));
        assert_eq!(r.usage(), Some((4, 2)));
        // Without a rewrite the bytes are the upstream's.
        let writer = ClientWriter::OpenAi(openai::StreamWriter::new("c", 1, "m", false));
        let mut r = Relay::Sse(SsePassthrough::new(BackendKind::Openai, None, writer));
        assert_eq!(run(&mut r, &[stream.as_bytes()]).0, stream);
    }

    #[test]
    fn anthropic_passthrough_renames_the_message_and_reads_usage() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"real\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"model real\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let writer = ClientWriter::Anthropic(anthropic::StreamWriter::new("msg_1", "alias", 1));
        let mut r = Relay::Sse(SsePassthrough::new(
            BackendKind::Anthropic,
            Some("alias".into()),
            writer,
        ));
        let (out, res) = run(&mut r, &[stream.as_bytes()]);
        res.unwrap();
        assert_eq!(
            out,
            stream.replacen("\"model\":\"real\"", "\"model\":\"alias\"", 1),
            "only the message's model changes, not the text that names it"
        );
        assert_eq!(r.usage(), Some((7, 3)));
    }

    #[test]
    fn an_upstream_error_frame_is_relayed_scrubbed_and_ends_the_stream() {
        let stream = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n";
        let writer = ClientWriter::Anthropic(anthropic::StreamWriter::new("msg_1", "m", 1));
        let mut r = Relay::Sse(SsePassthrough::new(BackendKind::Anthropic, None, writer));
        let (out, res) = run(&mut r, &[stream.as_bytes()]);
        assert_eq!(res.unwrap_err().kind, ErrorKind::NoCapacity);
        assert!(out.starts_with("event: error\n"));
        assert!(!out.contains("ping"), "nothing after the error");
    }

    #[test]
    fn ollama_lines_keep_their_bytes_when_renamed() {
        let mut r = ollama(Some("alias"));
        let line =
            "{ \"model\" : \"re\\u0061l\", \"created_at\":\"x\",\"n\":1.50,\"done\":false}\n";
        let last = "{\"model\":\"real\",\"done\":true,\"prompt_eval_count\":3,\"eval_count\":5}\n";
        let (out, res) = run(&mut r, &[line.as_bytes(), last.as_bytes()]);
        res.unwrap();
        assert_eq!(
            out,
            "{ \"model\" : \"alias\", \"created_at\":\"x\",\"n\":1.50,\"done\":false}\n\
             {\"model\":\"alias\",\"done\":true,\"prompt_eval_count\":3,\"eval_count\":5}\n"
        );
        assert_eq!(r.usage(), Some((3, 5)));
    }

    #[test]
    fn hidden_reasoning_is_stripped_from_ollama_lines() {
        let mut r = Relay::Ollama(OllamaRelay::new(Some("alias".into())).hiding_thinking(true));
        let (out, res) = run(
            &mut r,
            &[
                b"{\"model\":\"real\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"hmm\"},\"done\":false}\n",
                b"{\"model\":\"real\",\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},\"done\":true,\"eval_count\":2}\n",
            ],
        );
        res.unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("\"model\":\"alias\""));
        assert_eq!(r.usage(), Some((0, 2)));
    }

    #[test]
    fn separators_are_escaped_in_raw_bytes() {
        let line = "{\"a\":\"x\u{2028}y\u{2029}z\u{85}\"}".as_bytes();
        let out = escape_separators(line);
        assert_eq!(&out[..], br#"{"a":"x\u2028y\u2029z\u0085"}"#);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], "x\u{2028}y\u{2029}z\u{85}");
    }

    #[test]
    fn a_whole_ollama_answer_is_checked_and_counted() {
        let body = Bytes::from_static(
            b"{\"model\":\"real\",\"done\":true,\"prompt_eval_count\":2,\"eval_count\":9}",
        );
        let (same, usage) = ollama_whole(body.clone(), None, false).unwrap();
        assert_eq!(same, body);
        assert_eq!(usage, Some((2, 9)));
        let (renamed, _) = ollama_whole(body, Some("alias"), false).unwrap();
        assert_eq!(
            &renamed[..],
            b"{\"model\":\"alias\",\"done\":true,\"prompt_eval_count\":2,\"eval_count\":9}"
        );
        let bad = ollama_whole(Bytes::from_static(b"<html>"), None, false).unwrap_err();
        assert_eq!(bad.kind, ErrorKind::UpstreamProtocol);
    }
}

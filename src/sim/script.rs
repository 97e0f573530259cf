//! Deterministic "inference": test directives, the token plan of one answer, tool-call
//! arguments filled from a JSON Schema, and hash-seeded embeddings.

use regex::Regex;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// A failure forced before the first byte by `[[error=...]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcedError {
    Oom,
    Busy,
    Internal,
    Limit,
    Unauthorized,
    Subscription,
    NotFound,
}

/// What the last user message asks of the sim. See the module docs of `sim` for the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directives {
    pub tokens: Option<u64>,
    pub token_ms: Option<u64>,
    pub latency_ms: Option<u64>,
    pub fail_mid: bool,
    pub truncate: bool,
    pub hang: bool,
    pub hang_mid: bool,
    pub error: Option<ForcedError>,
    pub tool_on_done: bool,
    pub two_tools: bool,
    /// `[[tool=NAME]]`: call this tool instead of the first; `none` answers in text.
    pub tool: Option<String>,
    /// `[[args={...}]]`: the call's arguments instead of ones filled from the schema.
    pub args: Option<Value>,
    pub unicode: bool,
    pub big_line: bool,
    pub garbage: bool,
}

static DIRECTIVE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\[\[([a-z_]+)(?:=([^\]]*))?\]\]").ok());

impl Directives {
    /// Reads every `[[name]]` / `[[name=value]]` in `text`; unknown ones are ignored.
    pub fn parse(text: &str) -> Self {
        let mut d = Self::default();
        let Some(re) = DIRECTIVE.as_ref() else {
            return d;
        };
        for cap in re.captures_iter(text) {
            let value = cap.get(2).map(|m| m.as_str().trim());
            let number = value.and_then(|v| v.parse::<u64>().ok());
            match &cap[1] {
                "tokens" => d.tokens = number,
                "token_ms" => d.token_ms = number,
                "latency_ms" => d.latency_ms = number,
                "fail_mid" => d.fail_mid = true,
                "truncate" => d.truncate = true,
                "hang" => d.hang = true,
                "hang_mid" => d.hang_mid = true,
                "tool_on_done" => d.tool_on_done = true,
                "two_tools" => d.two_tools = true,
                "tool" => d.tool = value.filter(|v| !v.is_empty()).map(str::to_string),
                "args" => {
                    d.args = value
                        .and_then(|v| serde_json::from_str::<Value>(v).ok())
                        .filter(Value::is_object)
                }
                "unicode" => d.unicode = true,
                "big_line" => d.big_line = true,
                "garbage" => d.garbage = true,
                "error" => {
                    d.error = match value.unwrap_or("") {
                        "oom" => Some(ForcedError::Oom),
                        "busy" | "503" => Some(ForcedError::Busy),
                        "500" => Some(ForcedError::Internal),
                        "429" => Some(ForcedError::Limit),
                        "401" => Some(ForcedError::Unauthorized),
                        "403" => Some(ForcedError::Subscription),
                        "404" => Some(ForcedError::NotFound),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        d
    }
}

/// One chat message reduced to what the sim looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

/// A generation request in any dialect, reduced to what shapes the answer.
#[derive(Debug, Clone, Default)]
pub struct GenRequest {
    pub model: String,
    pub turns: Vec<Turn>,
    /// Tool definitions as `{name, description, parameters}`.
    pub tools: Vec<Value>,
    pub num_predict: Option<i64>,
    pub num_ctx: Option<u64>,
    /// Whether reasoning text is wanted: `None` = not said (on for thinking models).
    pub think: Option<bool>,
    pub keep_alive: Option<Value>,
    /// Bytes of everything the model would read; prompt tokens are estimated from it.
    pub prompt_bytes: usize,
    /// Structured output: `"json"` or a JSON Schema; the answer is then JSON text.
    pub format: Option<Value>,
}

impl GenRequest {
    pub fn last_user_text(&self) -> &str {
        self.turns
            .iter()
            .rev()
            .find(|t| t.role == "user")
            .map(|t| t.content.as_str())
            .unwrap_or("")
    }

    /// Empty prompt: Ollama's load/unload call.
    pub fn is_empty(&self) -> bool {
        self.turns.iter().all(|t| t.content.is_empty())
    }

    fn wants_tool_call(&self) -> bool {
        !self.tools.is_empty() && self.turns.last().is_none_or(|t| t.role != "tool")
    }

    /// The tool the model calls now, if any: the one `[[tool=NAME]]` names (`none`: no call;
    /// a name not offered: the first), else the first.
    fn tool_to_call(&self, directives: &Directives) -> Option<&Value> {
        if !self.wants_tool_call() {
            return None;
        }
        match directives.tool.as_deref() {
            Some("none") => None,
            Some(name) => self
                .tools
                .iter()
                .find(|t| tool_name(t) == Some(name))
                .or(self.tools.first()),
            None => self.tools.first(),
        }
    }

    pub fn prompt_tokens(&self) -> u64 {
        (self.prompt_bytes as u64 / 4).max(1)
    }
}

/// Reads `think` as sent by Ollama clients: a bool or a level string (which means on).
pub fn parse_think(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(!matches!(s.as_str(), "" | "none" | "false")),
        _ => None,
    }
}

/// A tool call the model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub index: usize,
    pub name: String,
    pub arguments: Value,
}

impl ToolCall {
    /// Ollama's native shape: arguments as an object.
    pub fn ollama(&self) -> Value {
        json!({
            "id": self.id,
            "function": {"index": self.index, "name": self.name, "arguments": self.arguments},
        })
    }
}

/// One frame's worth of output.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Thinking(String),
    Content(String),
    Calls(Vec<ToolCall>),
    /// A line that is not JSON (`[[garbage]]`).
    Garbage,
}

/// How a stream ends after its pieces.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Done,
    /// An error line after some frames; no done frame.
    Fail(String),
    /// The connection closes without an error line or a done frame.
    Truncate,
    /// Nothing more is ever sent.
    Hang,
}

/// The whole answer, decided before the first byte so every dialect frames the same thing.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub pieces: Vec<Piece>,
    /// Tool calls that ride on the final frame (`[[tool_on_done]]`).
    pub done_calls: Vec<ToolCall>,
    pub done_reason: &'static str,
    pub ending: Ending,
    pub prompt_tokens: u64,
    pub eval_count: u64,
    pub token_ms: u64,
}

impl Plan {
    pub fn has_tool_calls(&self) -> bool {
        !self.done_calls.is_empty() || self.pieces.iter().any(|p| matches!(p, Piece::Calls(_)))
    }

    pub fn text(&self) -> String {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Content(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn thinking(&self) -> String {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Thinking(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn calls(&self) -> Vec<ToolCall> {
        let mut calls: Vec<ToolCall> = self
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Calls(c) => Some(c.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        calls.extend(self.done_calls.iter().cloned());
        calls
    }
}

const WORDS: &[&str] = &[
    "The",
    "simulated",
    "model",
    "answers",
    "with",
    "steady",
    "words",
    "so",
    "every",
    "test",
    "can",
    "compare",
    "each",
    "token",
    "it",
    "streams",
    "back",
    "through",
    "the",
    "gateway",
];
const THOUGHTS: &[&str] = &[
    "Okay", ",", " the", " user", " wants", " a", " short", " answer", ".",
];
const BIG_LINE_BYTES: usize = 5 * 1024 * 1024;
/// Where `[[fail_mid]]`, `[[truncate]]` and `[[hang_mid]]` cut a stream.
const CUT_AFTER: usize = 3;

/// Decides the answer to `req`. `thinking` says whether the model will reason first.
pub fn plan(
    req: &GenRequest,
    directives: &Directives,
    thinking: bool,
    default_tokens: u64,
    token_ms: u64,
    hang_mid: bool,
) -> Plan {
    let mut pieces: Vec<Piece> = Vec::new();
    if thinking {
        pieces.extend(THOUGHTS.iter().map(|t| Piece::Thinking(t.to_string())));
    }
    let mut done_calls = Vec::new();
    let mut done_reason = "stop";
    let mut eval_count = pieces.len() as u64;
    if let Some(tool) = req.tool_to_call(directives) {
        let mut first = tool_call(tool, 0);
        if let Some(args) = &directives.args {
            first.arguments = args.clone();
        }
        let mut calls = vec![first];
        if directives.two_tools {
            calls.push(tool_call(req.tools.get(1).unwrap_or(&req.tools[0]), 1));
        }
        eval_count += 12 * calls.len() as u64;
        if directives.tool_on_done {
            done_calls = calls;
        } else {
            pieces.extend(calls.into_iter().map(|c| Piece::Calls(vec![c])));
        }
    } else {
        let mut n = directives.tokens.unwrap_or(default_tokens);
        let limit = req.num_predict.and_then(|p| u64::try_from(p).ok());
        if let Some(limit) = limit.filter(|l| *l < n) {
            n = limit;
            done_reason = "length";
        }
        let text = match &req.format {
            Some(format) if directives.tokens.is_none() => json_tokens(format),
            _ => content_tokens(req.last_user_text(), n as usize, directives.unicode),
        };
        eval_count += text.len() as u64;
        pieces.extend(text.into_iter().map(Piece::Content));
    }
    let first_content = pieces
        .iter()
        .position(|p| !matches!(p, Piece::Thinking(_)))
        .unwrap_or(pieces.len());
    if directives.big_line {
        pieces.insert(first_content.min(pieces.len()), big_piece());
    }
    if directives.garbage {
        pieces.insert((first_content + 1).min(pieces.len()), Piece::Garbage);
    }
    let cut = |pieces: &mut Vec<Piece>| pieces.truncate(CUT_AFTER.min(pieces.len()));
    let ending = if directives.hang_mid || hang_mid {
        cut(&mut pieces);
        Ending::Hang
    } else if directives.fail_mid {
        cut(&mut pieces);
        Ending::Fail("an error was encountered while running the model: unexpected EOF".into())
    } else if directives.truncate {
        cut(&mut pieces);
        Ending::Truncate
    } else {
        Ending::Done
    };
    Plan {
        pieces,
        done_calls,
        done_reason,
        ending,
        prompt_tokens: req.prompt_tokens(),
        eval_count: eval_count.max(1),
        token_ms: directives.token_ms.unwrap_or(token_ms),
    }
}

fn big_piece() -> Piece {
    Piece::Content("x".repeat(BIG_LINE_BYTES))
}

/// `n` tokens of deterministic text, seeded by the prompt so different prompts differ.
pub fn content_tokens(prompt: &str, n: usize, unicode: bool) -> Vec<String> {
    let seed = seed(prompt.as_bytes()) as usize % WORDS.len();
    let mut out: Vec<String> = (0..n)
        .map(|i| {
            let word = WORDS[(seed + i) % WORDS.len()];
            if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            }
        })
        .collect();
    if unicode {
        // Code points Python's splitlines() breaks on; they must survive NDJSON framing.
        let odd = [
            " line\u{2028}break",
            " para\u{2029}graph",
            " next\u{85}line",
        ];
        for (i, t) in odd.iter().enumerate() {
            let at = (i + 1).min(out.len());
            out.insert(at, t.to_string());
        }
    }
    out
}

/// Structured output: a value matching the schema (or a small object for `"json"`),
/// serialized and cut into token-sized pieces.
fn json_tokens(format: &Value) -> Vec<String> {
    let value = match format {
        Value::Object(_) => fill_schema(format, 0),
        _ => json!({"answer": "example"}),
    };
    let text = value.to_string();
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(6).map(|c| c.iter().collect()).collect()
}

fn seed(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The name of a tool definition in any dialect's shape.
fn tool_name(tool: &Value) -> Option<&str> {
    tool.get("function").unwrap_or(tool).get("name")?.as_str()
}

/// A tool call to `tool` (`{name, parameters}` or OpenAI's `{type, function:{...}}`).
pub fn tool_call(tool: &Value, index: usize) -> ToolCall {
    let function = tool.get("function").unwrap_or(tool);
    let name = function["name"].as_str().unwrap_or("tool").to_string();
    let schema = function
        .get("parameters")
        .or_else(|| function.get("input_schema"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    let mut arguments = fill_schema(&schema, 0);
    if !arguments.is_object() {
        arguments = json!({});
    }
    ToolCall {
        id: call_id("call_"),
        index,
        name,
        arguments,
    }
}

/// `prefix` + 8 lowercase alphanumerics, the shape of Ollama's tool-call ids.
pub fn call_id(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..8)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// A value that satisfies `schema`'s types, with every required property present.
pub fn fill_schema(schema: &Value, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.as_array()?.first()) {
        return first.clone();
    }
    if let Some(first) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(|a| a.as_array()?.first())
    {
        return fill_schema(first, depth + 1);
    }
    let ty = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            let props = schema.get("properties");
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let sub = props
                    .and_then(|p| p.get(name))
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "string"}));
                out.insert(name.to_string(), fill_schema(&sub, depth + 1));
            }
            Value::Object(out)
        }
        "array" => match schema.get("items") {
            Some(items) => json!([fill_schema(items, depth + 1)]),
            None => json!([]),
        },
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => json!("example"),
    }
}

/// A unit-length vector of `dim` floats, the same for the same model and text.
pub fn embedding(model: &str, text: &str, dim: usize) -> Vec<f32> {
    let mut state = seed(format!("{model}\0{text}").as_bytes()) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            // xorshift64*: cheap, deterministic, good enough to look like noise.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> GenRequest {
        GenRequest {
            model: "m".into(),
            turns: vec![Turn {
                role: "user".into(),
                content: text.into(),
            }],
            prompt_bytes: text.len(),
            ..GenRequest::default()
        }
    }

    #[test]
    fn directives_parse() {
        let d = Directives::parse("hi [[tokens=5]] [[fail_mid]] [[error=oom]] [[bogus]]");
        assert_eq!(d.tokens, Some(5));
        assert!(d.fail_mid);
        assert_eq!(d.error, Some(ForcedError::Oom));
        assert_eq!(Directives::parse("plain"), Directives::default());
    }

    #[test]
    fn num_predict_caps_with_length() {
        let mut r = req("hello");
        r.num_predict = Some(3);
        let p = plan(&r, &Directives::default(), false, 20, 0, false);
        assert_eq!(p.pieces.len(), 3);
        assert_eq!(p.done_reason, "length");
        let p = plan(&req("hello"), &Directives::default(), false, 20, 0, false);
        assert_eq!(p.pieces.len(), 20);
        assert_eq!(p.done_reason, "stop");
        assert_eq!(
            p.text(),
            plan(&req("hello"), &Directives::default(), false, 20, 0, false).text()
        );
    }

    #[test]
    fn tool_call_fills_required() {
        let tool = json!({"type": "function", "function": {"name": "read_file", "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "lines": {"type": "integer"},
                            "mode": {"type": "string", "enum": ["r", "w"]}},
            "required": ["path", "mode"]}}});
        let call = tool_call(&tool, 0);
        assert_eq!(call.name, "read_file");
        assert_eq!(call.arguments, json!({"path": "example", "mode": "r"}));
        assert!(call.id.starts_with("call_") && call.id.len() == 13);
        let mut r = req("x [[two_tools]]");
        r.tools = vec![tool.clone()];
        let p = plan(
            &r,
            &Directives::parse(r.last_user_text()),
            false,
            20,
            0,
            false,
        );
        assert_eq!(p.calls().len(), 2);
        assert_eq!(p.done_reason, "stop");
        r.turns.push(Turn {
            role: "tool".into(),
            content: "ok".into(),
        });
        let p = plan(&r, &Directives::default(), false, 20, 0, false);
        assert!(!p.has_tool_calls());
    }

    #[test]
    fn directives_pick_the_tool_and_its_arguments() {
        let tools = vec![
            json!({"name": "Agent", "input_schema": {"type": "object"}}),
            json!({"name": "Bash", "input_schema": {"type": "object",
                   "properties": {"command": {"type": "string"}}, "required": ["command"]}}),
        ];
        let run = |text: &str| {
            let mut r = req(text);
            r.tools = tools.clone();
            plan(&r, &Directives::parse(text), false, 20, 0, false)
        };
        let p = run(r#"list [[tool=Bash]] [[args={"command":"echo hi"}]]"#);
        let calls = p.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "Bash");
        assert_eq!(calls[0].arguments, json!({"command": "echo hi"}));
        assert_eq!(
            run("x [[tool=Bash]]").calls()[0].arguments,
            json!({"command": "example"})
        );
        assert_eq!(run("x [[tool=Nope]]").calls()[0].name, "Agent");
        let p = run("say hello [[tool=none]]");
        assert!(!p.has_tool_calls());
        assert!(!p.text().is_empty());
        // Arguments that are not a JSON object are ignored.
        assert_eq!(Directives::parse("[[args=[1]]] [[args=nope]]").args, None);
    }

    #[test]
    fn format_gives_json_matching_the_schema() {
        let mut r = req("give me a person");
        r.format = Some(json!({"type": "object", "required": ["name", "age"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}));
        let p = plan(&r, &Directives::default(), false, 20, 0, false);
        let v: Value = serde_json::from_str(&p.text()).unwrap();
        assert_eq!(v, json!({"name": "example", "age": 1}));
        r.format = Some(json!("json"));
        let p = plan(&r, &Directives::default(), false, 20, 0, false);
        assert!(
            serde_json::from_str::<Value>(&p.text())
                .unwrap()
                .is_object()
        );
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("m", "a", 768);
        assert_eq!(a.len(), 768);
        assert_eq!(a, embedding("m", "a", 768));
        assert_ne!(a, embedding("m", "b", 768));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

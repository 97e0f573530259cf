//! The canonical chat/embedding request, response and stream events all dialects map to.
//!
//! Every translation goes client body → [`ChatRequest`] → upstream body, and upstream stream →
//! [`StreamEvent`]s → client stream. The types hold only what some dialect can express; anything
//! dialect-specific that corral does not translate is dropped by the decoders.

use rand::Rng;
use serde_json::{Map, Value};

/// The wire dialect of the endpoint a client called; errors are answered in it. (Here, below
/// `error` and `dialect`, because both name it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Ollama,
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// The bounded label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Dialect::Ollama => "ollama",
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    System,
    #[default]
    User,
    Assistant,
    /// The result of a tool call; `tool_call_id` says which call it answers.
    Tool,
}

/// An inline image: bare base64 (no `data:` prefix) plus its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub media_type: String,
    pub data: String,
}

impl Image {
    /// Wraps bare base64 (a `data:` URL is unwrapped), sniffing the media type from magic bytes.
    pub fn from_base64(data: &str) -> Image {
        if let Some(img) = Image::from_data_url(data) {
            return img;
        }
        Image {
            media_type: sniff_media_type(data).to_string(),
            data: data.to_string(),
        }
    }

    /// Parses `data:image/png;base64,AAAA`; `None` for anything else (http URLs included).
    pub fn from_data_url(url: &str) -> Option<Image> {
        let rest = url.strip_prefix("data:")?;
        let (meta, data) = rest.split_once(',')?;
        let media_type = meta.strip_suffix(";base64")?;
        let media_type = if media_type.is_empty() {
            sniff_media_type(data)
        } else {
            media_type
        };
        Some(Image {
            media_type: media_type.to_string(),
            data: data.to_string(),
        })
    }

    /// The image as a `data:` URL (OpenAI `image_url`).
    pub fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.media_type, self.data)
    }
}

/// The media type of base64 image data, from the base64 spelling of its magic bytes.
fn sniff_media_type(b64: &str) -> &'static str {
    if b64.starts_with("/9j/") {
        "image/jpeg"
    } else if b64.starts_with("R0lGOD") {
        "image/gif"
    } else if b64.starts_with("UklGR") {
        "image/webp"
    } else {
        // PNG (iVBORw0KGgo) and anything unrecognised.
        "image/png"
    }
}

/// One call of a tool by the model. `arguments` is always a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Empty when the upstream gave none (old Ollama); writers then generate one.
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub role: Role,
    pub text: String,
    pub images: Vec<Image>,
    /// Assistant turns: the calls the model made.
    pub tool_calls: Vec<ToolCall>,
    /// Tool turns: the call answered (always set by the decoders).
    pub tool_call_id: Option<String>,
    /// Tool turns: the name of the tool that was called (always set by the decoders).
    pub tool_name: Option<String>,
    /// Tool turns: the result reports a failure (Anthropic `is_error`).
    pub is_error: bool,
    /// Assistant turns: reasoning text shown before the answer.
    pub thinking: Option<String>,
    /// Anthropic's signature over `thinking`; needed to send it back to an Anthropic upstream.
    pub thinking_signature: Option<String>,
}

impl Message {
    pub fn new(role: Role, text: impl Into<String>) -> Message {
        Message {
            role,
            text: text.into(),
            ..Message::default()
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called (OpenAI `required`, Anthropic `any`).
    Required,
    Named(String),
}

/// Structured output.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    Json,
    /// JSON matching this schema.
    Schema(Value),
}

/// How hard to think, a level shared by the three dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkLevel {
    Low,
    Medium,
    High,
    Max,
}

impl ThinkLevel {
    /// Parses `low|medium|high|max` plus the aliases `minimal` and `xhigh`.
    pub fn parse(s: &str) -> Option<ThinkLevel> {
        match s {
            "minimal" | "low" => Some(ThinkLevel::Low),
            "medium" => Some(ThinkLevel::Medium),
            "high" => Some(ThinkLevel::High),
            "xhigh" | "max" => Some(ThinkLevel::Max),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ThinkLevel::Low => "low",
            ThinkLevel::Medium => "medium",
            ThinkLevel::High => "high",
            ThinkLevel::Max => "max",
        }
    }

    /// A thinking budget in tokens for upstreams that want a number (Anthropic).
    pub fn budget(self) -> u32 {
        match self {
            ThinkLevel::Low => 2048,
            ThinkLevel::Medium => 8192,
            ThinkLevel::High => 16384,
            ThinkLevel::Max => 32000,
        }
    }
}

/// What the client asked about reasoning; absent means "upstream default".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    Off,
    On,
    /// Anthropic `budget_tokens`.
    Budget(u32),
    Level(ThinkLevel),
}

/// A chat (or completion) request in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The model the client asked for, before aliasing.
    pub model: String,
    /// In order; `Role::System` entries may appear anywhere and are lifted by encoders.
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub stop: Vec<String>,
    pub format: Option<ResponseFormat>,
    pub think: Option<Think>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage` (always true for the other dialects).
    pub include_usage: bool,
    /// Ollama `keep_alive`, passed through to Ollama upstreams untouched.
    pub keep_alive: Option<Value>,
    /// Ollama `options` keys corral does not map (`num_ctx`, `repeat_penalty`...), passed
    /// through to Ollama upstreams only.
    pub options: Map<String, Value>,
    /// Came from a completion endpoint (`/api/generate`, `/v1/completions`): one prompt.
    pub completion: bool,
}

/// A rule-based view of a request for the classifier and token estimates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextView {
    /// All system text, joined with blank lines.
    pub system: String,
    /// The text of the last user message.
    pub last_user: String,
    pub has_images: bool,
    pub has_tools: bool,
    /// Bytes of all text, tool calls and tool schemas (the basis of token estimates).
    pub total_chars: usize,
}

impl ChatRequest {
    /// All system text in order (top-level first, then mid-conversation entries), joined with
    /// blank lines; `None` when there is none.
    pub fn system_text(&self) -> Option<String> {
        let mut parts = self
            .messages
            .iter()
            .filter(|m| m.role == Role::System && !m.text.is_empty())
            .map(|m| m.text.as_str());
        let first = parts.next()?;
        let mut out = first.to_string();
        for p in parts {
            out.push_str("\n\n");
            out.push_str(p);
        }
        Some(out)
    }

    /// The name of the tool whose call carries `id`, looking at every assistant turn.
    pub fn tool_name_for(&self, id: &str) -> Option<&str> {
        self.messages
            .iter()
            .flat_map(|m| m.tool_calls.iter())
            .find(|c| c.id == id)
            .map(|c| c.name.as_str())
    }

    /// The rule-based text view (see [`TextView`]).
    pub fn text_view(&self) -> TextView {
        let mut view = TextView {
            system: self.system_text().unwrap_or_default(),
            has_tools: !self.tools.is_empty(),
            ..TextView::default()
        };
        for m in &self.messages {
            view.total_chars += m.text.len() + m.thinking.as_ref().map_or(0, String::len);
            view.has_images |= !m.images.is_empty();
            for c in &m.tool_calls {
                view.total_chars += c.name.len() + json_len(&c.arguments);
            }
            if m.role == Role::User {
                view.last_user.clone_from(&m.text);
            }
        }
        for t in &self.tools {
            view.total_chars += t.name.len()
                + t.description.as_ref().map_or(0, String::len)
                + json_len(&t.parameters);
        }
        view
    }

    /// Input tokens estimated as bytes/4 (what Ollama's own code uses), at least 1.
    pub fn estimate_input_tokens(&self) -> u64 {
        estimate_tokens(self.text_view().total_chars)
    }
}

/// Tokens for `bytes` of text, estimated as bytes/4 rounded up, at least 1.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

/// The length of `v` serialized compactly, without allocating the string.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, v) {
        Ok(()) => c.0,
        Err(_) => 0,
    }
}

/// How the client wants embedding vectors encoded (OpenAI `encoding_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbedEncoding {
    #[default]
    Float,
    /// Base64 of little-endian f32s (the openai SDK's default).
    Base64,
}

/// An embedding request in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<String>,
    pub dimensions: Option<u32>,
    pub encoding: EmbedEncoding,
    /// Ollama `truncate` (absent = upstream default, true).
    pub truncate: Option<bool>,
    pub keep_alive: Option<Value>,
    /// Came from Ollama's legacy `/api/embeddings` (one `prompt`, one `embedding` back).
    pub legacy: bool,
}

impl EmbedRequest {
    pub fn estimate_input_tokens(&self) -> u64 {
        estimate_tokens(self.inputs.iter().map(String::len).sum())
    }
}

/// Embedding vectors, one per input, in input order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbedResponse {
    pub vectors: Vec<Vec<f32>>,
    pub input_tokens: u64,
}

/// Why generation ended, in canonical form (mapping per docs/PROTOCOLS.md §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopReason {
    #[default]
    Stop,
    Length,
    ToolUse,
    StopSequence,
    /// Anthropic `refusal`, OpenAI `content_filter`.
    ContentFilter,
}

/// Token counts. `estimated` is set when corral counted them (bytes/4), not the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub estimated: bool,
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatResponse {
    pub text: String,
    pub thinking: String,
    pub thinking_signature: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub stop: StopReason,
    pub usage: Usage,
}

/// One step of a streamed answer, upstream-independent.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    TextDelta(String),
    ThinkingDelta(String),
    /// Anthropic's signature for the thinking text so far (other dialects drop it).
    ThinkingSignature(String),
    /// A complete call; streams deliver each call whole, arguments a JSON object.
    ToolCall(ToolCall),
    /// The last event of a successful stream.
    Done {
        stop: StopReason,
        usage: Usage,
    },
}

/// A model as listed by `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub owned_by: String,
    pub display_name: Option<String>,
}

/// `prefix` followed by `len` random lowercase alphanumerics (`call_q81mz0ra`).
pub fn random_id(prefix: &str, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    for _ in 0..len {
        id.push(char::from(CHARS[rng.gen_range(0..CHARS.len())]));
    }
    id
}

/// An OpenAI/Ollama-style tool call id.
pub fn new_call_id() -> String {
    random_id("call_", 8)
}

/// An Anthropic-style tool use id.
pub fn new_tool_use_id() -> String {
    random_id("toolu_", 24)
}

/// The calls seen so far while decoding a conversation, so that tool results can be checked
/// against them and given the id and tool name they lack.
#[derive(Debug, Default)]
pub struct CallLedger {
    calls: Vec<(String, String, bool)>,
}

impl CallLedger {
    /// Records an assistant tool call, giving it an id if it has none.
    pub fn record(&mut self, call: &mut ToolCall) {
        if call.id.is_empty() {
            call.id = new_call_id();
        }
        self.calls.push((call.id.clone(), call.name.clone(), false));
    }

    /// The `(id, name)` of the call a result answers: by id when given, else the first
    /// unanswered call with that name, else the first unanswered call. `None`: no such call.
    pub fn resolve(&mut self, id: Option<&str>, name: Option<&str>) -> Option<(String, String)> {
        let pos = match id {
            Some(id) => self.calls.iter().position(|c| c.0 == id)?,
            None => self
                .calls
                .iter()
                .position(|c| !c.2 && Some(c.1.as_str()) == name)
                .or_else(|| self.calls.iter().position(|c| !c.2))?,
        };
        let call = &mut self.calls[pos];
        call.2 = true;
        Some((call.0.clone(), call.1.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn system_text_joins_in_order() {
        let req = ChatRequest {
            messages: vec![
                Message::new(Role::System, "a"),
                Message::new(Role::User, "hi"),
                Message::new(Role::System, "b"),
            ],
            ..ChatRequest::default()
        };
        assert_eq!(req.system_text().as_deref(), Some("a\n\nb"));
        let view = req.text_view();
        assert_eq!(view.last_user, "hi");
        assert_eq!(view.total_chars, 4);
        assert_eq!(req.estimate_input_tokens(), 1);
    }

    #[test]
    fn text_view_counts_tools_and_images() {
        let mut user = Message::new(Role::User, "look");
        user.images.push(Image::from_base64("iVBORw0KGgo"));
        let req = ChatRequest {
            messages: vec![user],
            tools: vec![Tool {
                name: "f".into(),
                description: None,
                parameters: json!({"type":"object"}),
            }],
            ..ChatRequest::default()
        };
        let v = req.text_view();
        assert!(v.has_images && v.has_tools);
        assert_eq!(v.total_chars, 4 + 1 + r#"{"type":"object"}"#.len());
    }

    #[test]
    fn images_unwrap_data_urls_and_sniff() {
        let i = Image::from_base64("data:image/jpeg;base64,/9j/4AAQ");
        assert_eq!(i.media_type, "image/jpeg");
        assert_eq!(i.data, "/9j/4AAQ");
        assert_eq!(Image::from_base64("R0lGODlh").media_type, "image/gif");
        assert_eq!(i.data_url(), "data:image/jpeg;base64,/9j/4AAQ");
        assert!(Image::from_data_url("https://x/y.png").is_none());
    }

    #[test]
    fn ids_have_the_documented_shape() {
        let id = new_call_id();
        assert_eq!(id.len(), 13);
        assert!(
            id[5..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert!(new_tool_use_id().starts_with("toolu_"));
    }

    #[test]
    fn ledger_matches_by_id_then_name_then_order() {
        let mut l = CallLedger::default();
        let mut a = ToolCall {
            id: String::new(),
            name: "a".into(),
            arguments: json!({}),
        };
        let mut b = ToolCall {
            id: "x".into(),
            name: "b".into(),
            arguments: json!({}),
        };
        l.record(&mut a);
        l.record(&mut b);
        assert!(a.id.starts_with("call_"));
        assert_eq!(l.resolve(Some("x"), None), Some(("x".into(), "b".into())));
        assert_eq!(l.resolve(Some("nope"), None), None);
        assert_eq!(
            l.resolve(None, Some("zzz")),
            Some((a.id.clone(), "a".into()))
        );
        assert_eq!(l.resolve(None, None), None);
    }
}

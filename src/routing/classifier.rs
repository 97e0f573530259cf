//! The virtual `auto` model's classifier: one cheap pass over a request says what kind of task it is and how hard.
//!
//! The classifier reads a dialect-neutral view of the request ([`ClassifyInput`]) so it does not
//! depend on the canonical request type. It walks every text once, byte by byte, and turns what it
//! sees (code fences, stack traces, diff headers, math symbols, a lexicon of cue words, bigrams such
//! as "step by step") into points per [`Feature`]. Each feature's points are capped, so one noisy
//! cue cannot drown the others, and weighted by where they were seen: the latest user turn counts
//! most, older turns and the system prompt less, assistant and tool output least.
//! Hard requirements come first: an embedding request is `embedding`, any image makes it `vision`.

use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// What kind of task a request is. Built-in categories plus operator-configured ones (`Other`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Category {
    Code,
    Reasoning,
    General,
    Vision,
    Embedding,
    Creative,
    /// A category named in configuration (`preferred_for = ["sql"]`), lower-cased.
    Other(String),
}

impl Category {
    /// The built-in categories, in the order reports list them.
    pub const BUILT_IN: [Category; 6] = [
        Category::Code,
        Category::Reasoning,
        Category::General,
        Category::Vision,
        Category::Embedding,
        Category::Creative,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Category::Code => "code",
            Category::Reasoning => "reasoning",
            Category::General => "general",
            Category::Vision => "vision",
            Category::Embedding => "embedding",
            Category::Creative => "creative",
            Category::Other(name) => name,
        }
    }

    /// Case-insensitive; unknown names become `Other(lower-cased name)`.
    pub fn parse(name: &str) -> Category {
        let name = name.trim();
        Category::BUILT_IN
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name))
            .unwrap_or_else(|| Category::Other(name.to_ascii_lowercase()))
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Category {
    fn from(name: &str) -> Self {
        Category::parse(name)
    }
}

impl From<String> for Category {
    fn from(name: String) -> Self {
        Category::parse(&name)
    }
}

impl From<Category> for String {
    fn from(c: Category) -> Self {
        match c {
            Category::Other(name) => name,
            built_in => built_in.as_str().to_owned(),
        }
    }
}

/// A dialect-neutral view of one request, borrowed from whatever decoded it.
#[derive(Debug, Clone, Default)]
pub struct ClassifyInput<'a> {
    pub system: &'a str,
    pub messages: Vec<MessageView<'a>>,
    pub has_tools: bool,
    /// The request came in on an embeddings endpoint.
    pub embedding: bool,
}

/// One message: `role` as the dialect spelled it (`user`, `assistant`, `tool`, `system`), its
/// text flattened, and how many images it carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageView<'a> {
    pub role: &'a str,
    pub text: &'a str,
    pub images: usize,
}

/// The classifier's verdict, with the reasons (`signals`) an operator sees in logs and headers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    pub category: Category,
    /// 1 (trivial) ..= 10 (hardest).
    pub complexity: u8,
    /// Short names of the cues that decided category and complexity, strongest kinds first.
    pub signals: Vec<&'static str>,
    /// Rough size of the whole context (text ≈ 4 bytes a token, images at a fixed cost); errs high.
    pub context_tokens: u32,
}

/// How much text is read, at most. The latest user turn decides; history only breaks ties and
/// its features saturate quickly, so its newest 4 KiB (about 1k tokens) are enough. This keeps a
/// 4k-token conversation under 20 µs and a 128k-token one from costing milliseconds. Context
/// size for complexity comes from lengths, not from the scan.
const LATEST_SCAN_BYTES: usize = 16 * 1024;
const CONTEXT_SCAN_BYTES: usize = 4 * 1024;
const SYSTEM_SCAN_BYTES: usize = 2 * 1024;

/// The first `max` bytes of `text`, cut back to a character boundary.
fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Tokens an image costs in the context (LLaVA-style encoders use 576; some use more).
const IMAGE_TOKENS: u32 = 576;

/// Classify one request. Pure and deterministic: same input, same answer.
pub fn classify(input: &ClassifyInput) -> Classification {
    let context_tokens = context_tokens(input);
    if input.embedding {
        let complexity = 1 + u8::from(context_tokens > 512);
        return Classification {
            category: Category::Embedding,
            complexity,
            signals: vec!["embedding request"],
            context_tokens,
        };
    }

    let latest = input.messages.iter().rposition(|m| m.role == "user");
    let mut tally = Tally::default();
    let mut latest_stats = TextStats::default();
    let mut other_stats = TextStats::default();
    let mut budget = CONTEXT_SCAN_BYTES;
    let mut user_turns = 0u32;
    let mut tool_turns = 0u32;
    // Newest first, so that the history budget goes to the turns nearest the ask.
    for (i, m) in input.messages.iter().enumerate().rev() {
        let role = Role::of(m.role);
        user_turns += u32::from(role == Role::User);
        tool_turns += u32::from(role == Role::Tool);
        if Some(i) == latest {
            let text = head(m.text, LATEST_SCAN_BYTES);
            scan(text, 1.0, &mut tally.latest, &mut latest_stats);
        } else {
            let text = head(m.text, budget);
            budget -= text.len();
            scan(text, role.weight(), &mut tally.context, &mut other_stats);
        }
    }
    let system = head(input.system, SYSTEM_SCAN_BYTES);
    scan(system, SYSTEM_WEIGHT, &mut tally.context, &mut other_stats);
    let images: usize = input.messages.iter().map(|m| m.images).sum();

    let text_category = tally.text_category();
    let category = if images > 0 {
        Category::Vision
    } else {
        text_category.clone()
    };
    let latest_tokens = latest
        .and_then(|i| input.messages.get(i))
        .map_or(0, |m| text_tokens(m.text));
    let shape = Shape {
        latest_tokens,
        context_tokens,
        user_turns,
        tool_turns,
        has_tools: input.has_tools,
        asks: latest_stats.sentences + latest_stats.list_items,
    };
    let (complexity, complexity_signals) = complexity(&category, &text_category, &tally, &shape);

    let mut signals = Vec::with_capacity(8);
    if images > 0 {
        signals.push("images");
    }
    tally.push_signals(&text_category, &mut signals);
    signals.extend(complexity_signals.iter().flatten());
    Classification {
        category,
        complexity,
        signals,
        context_tokens,
    }
}

// ---------------------------------------------------------------------------------------------
// Features: what the scanner can see, which category each one argues for, and its cap.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    CodeFence,
    Diff,
    StackTrace,
    FilePath,
    CodeSyntax,
    CodeWords,
    Language,
    MathNotation,
    Proof,
    StepByStep,
    Puzzle,
    WordProblem,
    MathWords,
    CreativeForm,
    Roleplay,
    CreativeCue,
    Everyday,
    SmallTalk,
    /// Raises complexity (rigour, concurrency, long-form output), no category.
    Hard,
    /// Lowers complexity ("briefly", "concise"), no category.
    Concise,
    /// Carries no points: words that only matter as half of a bigram.
    Glue,
}

const FEATURES: usize = Feature::Glue as usize + 1;

/// Category the feature argues for, if any; the score it may add at most; its signal name.
const fn feature_info(f: Feature) -> (Option<Scored>, f32, &'static str) {
    use Feature::*;
    use Scored::*;
    match f {
        CodeFence => (Some(Code), 6.0, "code fence"),
        Diff => (Some(Code), 6.0, "diff"),
        StackTrace => (Some(Code), 6.0, "stack trace"),
        FilePath => (Some(Code), 3.0, "file path"),
        CodeSyntax => (Some(Code), 4.0, "code syntax"),
        CodeWords => (Some(Code), 6.0, "programming terms"),
        Language => (Some(Code), 4.0, "language or tool name"),
        MathNotation => (Some(Reasoning), 4.0, "math notation"),
        Proof => (Some(Reasoning), 5.0, "proof"),
        StepByStep => (Some(Reasoning), 3.0, "step by step"),
        Puzzle => (Some(Reasoning), 4.0, "logic puzzle"),
        WordProblem => (Some(Reasoning), 2.5, "word problem"),
        MathWords => (Some(Reasoning), 5.0, "math terms"),
        CreativeForm => (Some(Creative), 6.0, "creative form"),
        Roleplay => (Some(Creative), 5.0, "roleplay"),
        CreativeCue => (Some(Creative), 4.0, "creative cue"),
        Everyday => (Some(General), 4.0, "everyday task"),
        SmallTalk => (Some(General), 3.0, "small talk"),
        Hard => (None, 3.0, "hard cues"),
        Concise => (None, 1.0, "asks for brevity"),
        Glue => (None, 0.0, ""),
    }
}

/// The categories the text scan decides between (vision and embedding are decided by the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scored {
    Code,
    Reasoning,
    Creative,
    General,
}

/// What the general category starts with: a few weak cues elsewhere are not enough to leave it.
const GENERAL_BASE: f32 = 1.25;
/// Points below this do not make it into `signals`.
const SIGNAL_MIN: f32 = 0.75;

/// How much the rest of the conversation counts next to the latest user turn: enough to
/// decide a bare follow-up ("why is it slow?"), not enough to outvote a clear new ask.
const CONTEXT_SHARE: f32 = 0.35;
/// Most a category may draw from history before the share is applied (so at most 2.8 points):
/// one clear cue in the latest turn always outweighs it.
const CONTEXT_CAP: f32 = 8.0;

/// Points per feature, kept apart for the latest user turn and for everything else.
#[derive(Debug, Default)]
struct Tally {
    latest: Points,
    context: Points,
}

#[derive(Debug, Default)]
struct Points([f32; FEATURES]);

impl Points {
    fn add(&mut self, f: Feature, points: f32) {
        self.0[f as usize] += points;
    }

    fn get(&self, f: Feature) -> f32 {
        self.0[f as usize]
    }

    fn score(&self, s: Scored) -> f32 {
        ALL_FEATURES
            .iter()
            .filter(|f| feature_info(**f).0 == Some(s))
            .map(|f| self.get(*f).min(feature_info(*f).1))
            .sum()
    }
}

impl Tally {
    /// Both parts together, capped (for complexity cues, which do not depend on where they were).
    fn capped(&self, f: Feature) -> f32 {
        (self.latest.get(f) + self.context.get(f)).min(feature_info(f).1)
    }

    fn score(&self, s: Scored) -> f32 {
        let base = if s == Scored::General {
            GENERAL_BASE
        } else {
            0.0
        };
        base + self.latest.score(s) + CONTEXT_SHARE * self.context.score(s).min(CONTEXT_CAP)
    }

    /// Highest score wins; on a tie the earlier of code, reasoning, creative, general.
    fn text_category(&self) -> Category {
        let mut best = (Scored::General, self.score(Scored::General));
        for s in [Scored::Creative, Scored::Reasoning, Scored::Code] {
            let score = self.score(s);
            if score >= best.1 {
                best = (s, score);
            }
        }
        match best.0 {
            Scored::Code => Category::Code,
            Scored::Reasoning => Category::Reasoning,
            Scored::Creative => Category::Creative,
            Scored::General => Category::General,
        }
    }

    fn push_signals(&self, category: &Category, out: &mut Vec<&'static str>) {
        let scored = match category {
            Category::Code => Scored::Code,
            Category::Reasoning => Scored::Reasoning,
            Category::Creative => Scored::Creative,
            _ => Scored::General,
        };
        for f in ALL_FEATURES {
            let (owner, _, name) = feature_info(f);
            if owner == Some(scored) && self.latest.get(f) + self.context.get(f) >= SIGNAL_MIN {
                out.push(name);
            }
        }
    }
}

const ALL_FEATURES: [Feature; FEATURES] = {
    use Feature::*;
    [
        CodeFence,
        Diff,
        StackTrace,
        FilePath,
        CodeSyntax,
        CodeWords,
        Language,
        MathNotation,
        Proof,
        StepByStep,
        Puzzle,
        WordProblem,
        MathWords,
        CreativeForm,
        Roleplay,
        CreativeCue,
        Everyday,
        SmallTalk,
        Hard,
        Concise,
        Glue,
    ]
};

// ---------------------------------------------------------------------------------------------
// Complexity.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
    Tool,
    System,
}

/// The system prompt sets the scene but says little about this task.
const SYSTEM_WEIGHT: f32 = 0.5;

impl Role {
    fn of(role: &str) -> Role {
        match role {
            "user" | "human" => Role::User,
            "tool" | "function" | "ipython" => Role::Tool,
            "system" | "developer" => Role::System,
            _ => Role::Assistant,
        }
    }

    /// Weight of a turn that is not the latest user turn.
    fn weight(self) -> f32 {
        match self {
            Role::User => 0.5,
            Role::System => SYSTEM_WEIGHT,
            Role::Assistant | Role::Tool => 0.25,
        }
    }
}

struct Shape {
    latest_tokens: u32,
    context_tokens: u32,
    user_turns: u32,
    tool_turns: u32,
    has_tools: bool,
    asks: u32,
}

fn complexity(
    category: &Category,
    text_category: &Category,
    tally: &Tally,
    s: &Shape,
) -> (u8, [Option<&'static str>; 6]) {
    let latest = match s.latest_tokens {
        0..=11 => 0.0,
        12..=39 => 0.5,
        40..=99 => 1.0,
        100..=249 => 1.5,
        250..=599 => 2.0,
        _ => 3.0,
    };
    let context = match s.context_tokens {
        0..=499 => 0.0,
        500..=1999 => 0.5,
        2000..=7999 => 1.0,
        8000..=31999 => 1.5,
        _ => 2.0,
    };
    let turns = match s.user_turns {
        0..=1 => 0.0,
        2..=4 => 0.5,
        5..=10 => 1.0,
        _ => 1.5,
    };
    let tools = if s.has_tools { 1.0 } else { 0.0 };
    // Tool results in the history mean an agent loop: several steps, state to keep straight.
    let agentic = if s.has_tools && s.tool_turns > 0 {
        1.0
    } else {
        0.0
    };
    let asks = s.asks.saturating_sub(1).min(4) as f32 * 0.4;
    let hard = tally.capped(Feature::Hard);
    let concise = tally.capped(Feature::Concise);
    let base = match (category, text_category) {
        (Category::Reasoning, _) => 1.5,
        (Category::Code, _) => 1.0,
        (Category::Vision, Category::Reasoning) => 1.5,
        (Category::Vision, Category::Code) => 1.0,
        (Category::Creative | Category::Vision, _) => 0.5,
        _ => 0.0,
    };
    let raw = 1.0 + latest + context + turns + tools + agentic + asks + hard - concise + base;
    let complexity = raw.round().clamp(1.0, 10.0) as u8;
    let signals = [
        (s.context_tokens >= 2000).then_some("long context"),
        (s.user_turns >= 2).then_some("multi-turn"),
        s.has_tools.then_some("tools"),
        (agentic > 0.0).then_some("agent loop"),
        (s.asks >= 3).then_some("multi-part ask"),
        (hard >= 1.0).then_some("hard cues"),
    ];
    (complexity, signals)
}

fn text_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

fn context_tokens(input: &ClassifyInput) -> u32 {
    input
        .messages
        .iter()
        .fold(text_tokens(input.system), |acc, m| {
            let images = u32::try_from(m.images).unwrap_or(u32::MAX);
            acc.saturating_add(text_tokens(m.text))
                .saturating_add(images.saturating_mul(IMAGE_TOKENS))
        })
}

// ---------------------------------------------------------------------------------------------
// The scanner: one pass per text.

#[derive(Debug, Default)]
struct TextStats {
    sentences: u32,
    list_items: u32,
}

/// Bytes that make up words: ASCII letters, digits and `_`.
static WORD_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    table
};

fn is_word(b: u8) -> bool {
    WORD_BYTE[usize::from(b)]
}

fn scan(text: &str, w: f32, t: &mut Points, stats: &mut TextStats) {
    if text.is_empty() {
        return;
    }
    let lex = &*LEXICON;
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    let mut line_start = true;
    let mut prev = NO_WORD;
    let mut saw_text = false;
    while i < n {
        if line_start {
            line_start = false;
            i = line_cues(b, i, w, t, stats);
            continue;
        }
        let c = b[i];
        if is_word(c) {
            (i, prev) = word(lex, b, i, w, t, prev);
            saw_text = true;
            continue;
        }
        let next = b.get(i + 1).copied().unwrap_or(b'\n');
        match c {
            b'\n' => line_start = true,
            b'{' | b'}' | b';' => t.add(Feature::CodeSyntax, 0.35 * w),
            b'=' | b'-' if next == b'>' => t.add(Feature::CodeSyntax, 0.6 * w),
            b'=' | b'!' if next == b'=' => t.add(Feature::CodeSyntax, 0.6 * w),
            b':' if next == b':' => t.add(Feature::CodeSyntax, 0.6 * w),
            b'&' if next == b'&' => t.add(Feature::CodeSyntax, 0.6 * w),
            b'|' if next == b'|' => t.add(Feature::CodeSyntax, 0.6 * w),
            b'+' if next == b'+' || next == b'=' => t.add(Feature::CodeSyntax, 0.6 * w),
            b'=' => t.add(Feature::MathNotation, 0.3 * w),
            b'^' => t.add(Feature::MathNotation, 0.8 * w),
            // Inline `code` spans: a pair is a clear hint on its own.
            b'`' => t.add(Feature::CodeSyntax, 0.75 * w),
            b'%' if i > 0 && b[i - 1].is_ascii_digit() => t.add(Feature::WordProblem, 0.5 * w),
            b'$' if next.is_ascii_digit() => t.add(Feature::WordProblem, 0.3 * w),
            b'.' | b'?' | b'!' if next.is_ascii_whitespace() && saw_text => {
                stats.sentences += 1;
                saw_text = false;
            }
            0x80.. => {
                let ch = text.get(i..).and_then(|s| s.chars().next());
                if ch.is_some_and(is_math_char) {
                    t.add(Feature::MathNotation, w);
                }
                i += ch.map_or(1, char::len_utf8);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if saw_text {
        stats.sentences += 1;
    }
}

fn is_math_char(c: char) -> bool {
    matches!(c,
        '\u{2200}'..='\u{22FF}'        // ∀ ∃ ∈ ∑ √ ∫ ≤ ≥ ≠ …
        | '\u{2A00}'..='\u{2AFF}'      // supplemental operators
        | '\u{03B1}'..='\u{03C9}'      // α … ω
        | '²' | '³' | '·' | '×' | '÷' | '±' | '⇒' | '⇔')
}

/// Cues that only mean something at the start of a line. Returns where the line's text begins.
fn line_cues(b: &[u8], start: usize, w: f32, t: &mut Points, stats: &mut TextStats) -> usize {
    let mut i = start;
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    let indent = i - start;
    let rest = &b[i..];
    if rest.first().is_none_or(|c| *c == b'\n' || *c == b'\r') {
        return i;
    }
    let starts = |p: &[u8]| rest.starts_with(p);
    // Only this line, found lazily: most lines need no look past their first bytes.
    let line = || rest.split(|c| *c == b'\n').next().unwrap_or_default();
    let contains = |needle: &[u8]| line().windows(needle.len()).any(|w| w == needle);
    if starts(b"```") {
        t.add(Feature::CodeFence, 3.0 * w);
    } else if starts(b"diff --git") || starts(b"+++ b/") || starts(b"--- a/") || starts(b"@@ -") {
        t.add(Feature::Diff, 2.0 * w);
    } else if starts(b"Traceback (most recent")
        || starts(b"Exception in thread")
        || starts(b"stack backtrace:")
        || (starts(b"thread '") && contains(b"panicked at"))
    {
        t.add(Feature::StackTrace, 4.0 * w);
    } else if (indent > 0 && (starts(b"File \"") || starts(b"at ") && contains(b":")))
        || starts(b"npm ERR!")
        || starts(b"error[E")
        || starts(b"goroutine ")
        || starts(b"Caused by:")
    {
        t.add(Feature::StackTrace, 1.5 * w);
    } else if starts(b"$ ") || starts(b"#include") || starts(b"#!/") {
        t.add(Feature::CodeSyntax, 1.0 * w);
    } else if starts(b"- ") || starts(b"* ") || starts("• ".as_bytes()) || is_numbered(rest) {
        stats.list_items += 1;
    } else if indent >= 4 {
        t.add(Feature::CodeSyntax, 0.3 * w);
    }
    i
}

fn is_numbered(rest: &[u8]) -> bool {
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    (1..=2).contains(&digits) && rest.get(digits..digits + 2) == Some(b". ".as_slice())
}

/// Marker for "the previous token was not a lexicon word".
const NO_WORD: u16 = u16::MAX;
/// Longest lexicon word; keys are this many bytes, zero-padded, so comparing two is a couple
/// of vector compares instead of a `memcmp` call.
const MAX_WORD: usize = 24;
type Key = [u8; MAX_WORD];

/// Score the word-shaped token starting at `b[s]`; returns where it ends and its lexicon id
/// (for the next bigram check).
fn word(lex: &Lexicon, b: &[u8], s: usize, w: f32, t: &mut Points, prev: u16) -> (usize, u16) {
    // Find the end; note any byte with bit 0x20 clear (an upper-case letter or `_`), the only
    // words whose identifier shape needs a closer look.
    let mut e = s;
    let mut shaped = false;
    while let Some(&c) = b.get(e).filter(|c| is_word(**c)) {
        shaped |= c & 0x20 == 0;
        e += 1;
    }
    let token = &b[s..e];
    let next = b.get(e).copied().unwrap_or(b' ');
    if token[0].is_ascii_digit() {
        word_number(token, w, t);
        return (e, NO_WORD);
    }
    if s >= 2 && b[s - 1] == b'.' && is_word(b[s - 2]) && is_extension(token) {
        t.add(Feature::FilePath, 1.5 * w);
    }
    if next == b'(' && token.len() >= 3 {
        t.add(Feature::CodeSyntax, 0.6 * w);
    }
    if token == b"c" && (b.get(e..e + 2) == Some(b"++".as_slice()) || next == b'#') {
        t.add(Feature::Language, 3.0 * w);
    }
    if shaped {
        identifier_shape(token, w, t);
    }
    if token.len() > MAX_WORD {
        return (e, NO_WORD);
    }
    let key = key_of(token);
    let Some(id) = lex.find(&key) else {
        return (e, NO_WORD);
    };
    let entry = &lex.entries[usize::from(id)];
    for &(f, points) in &entry.hits {
        t.add(f, points * w);
    }
    for &(first, f, points) in &entry.after {
        if first == prev {
            t.add(f, points * w);
        }
    }
    (e, id)
}

/// snake_case and camelCase identifiers look like code; prose rarely has them.
fn identifier_shape(token: &[u8], w: f32, t: &mut Points) {
    let inner = token.len() > 2 && token[1..token.len() - 1].contains(&b'_');
    if inner && token.iter().any(u8::is_ascii_lowercase) {
        t.add(Feature::CodeSyntax, 0.8 * w);
        return;
    }
    let camel = token.len() >= 4
        && token[0].is_ascii_lowercase()
        && token
            .windows(2)
            .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase());
    if camel {
        t.add(Feature::CodeSyntax, 0.5 * w);
    }
}

fn word_number(token: &[u8], w: f32, t: &mut Points) {
    let digits = token.iter().take_while(|c| c.is_ascii_digit()).count();
    match &token[digits..] {
        [] => t.add(Feature::WordProblem, 0.25 * w),
        // 3x, 12n: an algebra term
        [b'x' | b'y' | b'n' | b'k'] => t.add(Feature::MathNotation, 0.8 * w),
        _ => {}
    }
}

fn is_extension(token: &[u8]) -> bool {
    matches!(
        token,
        b"rs"
            | b"py"
            | b"js"
            | b"ts"
            | b"tsx"
            | b"jsx"
            | b"go"
            | b"java"
            | b"kt"
            | b"cpp"
            | b"cc"
            | b"hpp"
            | b"c"
            | b"h"
            | b"cs"
            | b"rb"
            | b"php"
            | b"swift"
            | b"scala"
            | b"sh"
            | b"ps1"
            | b"sql"
            | b"yaml"
            | b"yml"
            | b"toml"
            | b"json"
            | b"xml"
            | b"html"
            | b"css"
            | b"lock"
            | b"log"
            | b"ini"
            | b"cfg"
            | b"conf"
            | b"proto"
            | b"vue"
            | b"lua"
            | b"dart"
            | b"ex"
            | b"exs"
            | b"zig"
            | b"ipynb"
            | b"gradle"
    )
}

// ---------------------------------------------------------------------------------------------
// The lexicon: cue words grouped by what they argue for. A word may sit in several groups.

type Group = (Feature, f32, &'static [&'static str]);

#[rustfmt::skip]
const LEXICON_GROUPS: &[Group] = {
    use Feature::*;
    &[
        (Language, 3.0, &[
            "rust", "javascript", "typescript", "golang", "cpp", "powershell", "bash", "kotlin",
            "php", "haskell", "kubernetes", "kubectl", "docker", "dockerfile", "npm", "numpy",
            "pandas", "django", "webpack", "pytest", "unittest", "vscode", "webassembly", "wasm",
            "html", "css", "sql", "postgres", "postgresql", "mysql", "sqlite", "tokio",
            "goroutine", "nodejs", "jquery", "graphql", "terraform", "ansible", "clippy", "csharp",
            "dotnet", "laravel", "fastapi", "svelte", "nextjs", "llvm", "gcc", "clang", "cmake",
            "makefile", "bazel", "maven", "gradle", "helm", "elixir",
        ]),
        (Language, 2.5, &[
            "python", "java", "yaml", "regex", "git", "cuda", "nginx", "rustc", "js", "jsx", "tsx",
            "spring", "rails", "angular", "vue",
        ]),
        (Language, 1.5, &[
            "react", "pip", "cargo", "flask", "swift", "ruby", "scala", "perl", "linux", "vim",
            "emacs", "jest", "json", "xml", "csv", "http", "https", "github", "ts", "redis",
        ]),
        (CodeWords, 3.0, &[
            "compile", "compiler", "compiles", "compiling", "compilation", "refactor",
            "refactoring", "mutex", "deadlock", "deadlocks", "struct", "segfault", "stacktrace",
            "traceback", "nullptr", "fn", "impl", "println", "printf", "elif", "stdout", "stderr",
            "localhost", "crashloopbackoff", "dataframe", "repo", "codebase", "typedef",
            "namespace", "boolean", "syntax", "linter",
        ]),
        (CodeWords, 2.5, &[
            "exception", "async", "await", "recursion", "enum", "const", "def", "void", "sudo",
            "shader", "debugger", "runtime", "endpoint", "api", "lru", "microservice",
        ]),
        (CodeWords, 2.0, &[
            "code", "coding", "programming", "variable", "variables", "bug", "bugs", "debug",
            "debugging", "implement", "recursive", "array", "arrays", "pointer", "pointers",
            "dependency", "dependencies", "repository", "cli", "int", "bool", "null", "lambda",
            "console", "sdk", "lint", "interface", "kwargs", "args", "iterator", "parser",
            "mutable", "immutable", "handler", "handlers", "testable", "webhook", "env", "ci",
            "serialize", "deserialize", "callback", "closure", "generics", "compiled",
        ]),
        (CodeWords, 1.5, &[
            "function", "functions", "program", "implementation", "algorithm", "linked", "thread",
            "threads", "promise", "promises", "query", "queries", "server", "database", "cache",
            "string", "strings", "script", "import", "static", "loop", "iterate", "software",
            "framework", "schema", "backend", "frontend", "terminal", "pod", "deploy", "heap",
            "commit", "library", "developer", "developers", "config", "crash", "borrow",
            "container", "staging", "indexes", "column", "columns", "rows", "bytes",
        ]),
        (CodeWords, 1.0, &[
            "method", "class", "error", "errors", "lock", "cached", "deployment", "merge", "flag",
            "tests", "command", "return", "index", "node", "stack", "memory", "build", "fix",
            "install", "output", "input", "file", "files", "type", "types", "value", "object",
            "list", "app", "release", "version", "fails", "parse", "request", "checker",
            "workflow", "pipeline", "cluster", "table", "undo", "pr", "evaluate",
        ]),
        (MathNotation, 1.0, &["sqrt", "lim", "mod", "log", "ln", "sin", "cos"]),
        (Proof, 3.0, &[
            "prove", "proof", "proofs", "theorem", "lemma", "contrapositive", "contradiction",
            "axiom", "corollary", "qed",
        ]),
        (Proof, 2.5, &["induction", "rigorous", "rigorously", "irrational"]),
        (MathWords, 2.5, &[
            "integral", "derivative", "probability", "calculus", "algebra", "geometry",
            "eigenvalue", "eigenvalues", "polynomial", "quadratic", "factorial", "logarithm",
            "permutations", "combinations",
        ]),
        (MathWords, 2.0, &[
            "equation", "equations", "math", "maths", "mathematical", "trigonometry",
        ]),
        (MathWords, 1.5, &[
            "solve", "integer", "integers", "interval", "continuous", "divisible", "prime",
            "primes", "matrix", "calculate", "odds", "ratio", "fraction", "statistics", "variance",
            "expected", "physics", "infinite", "converge", "converges", "expectation",
            "percentage", "justify", "calculator", "dice", "combinatorics",
        ]),
        (MathWords, 1.0, &[
            "sum", "uniformly", "factor", "average", "compute", "formula", "ways", "coin", "coins",
            "flips", "chessboard", "larger", "smaller",
        ]),
        (MathWords, 0.5, &["even", "odd", "digits", "heavier", "lighter", "percent"]),
        (Puzzle, 2.5, &["puzzle", "riddle", "knaves", "syllogism", "paradox", "brainteaser"]),
        (Puzzle, 2.0, &["deduce", "reasoning", "logic", "logically", "conclude", "necessarily"]),
        (Puzzle, 1.5, &["knights", "carefully", "counterfeit", "implies", "liar", "truthful"]),
        (Puzzle, 1.0, &[
            "weigh", "definitely", "therefore", "valid", "assume", "suppose", "argument",
        ]),
        (Puzzle, 0.5, &["different", "immediately", "neighbour", "neighbor", "think"]),
        (WordProblem, 1.5, &["mph", "kmh"]),
        (WordProblem, 0.5, &["miles", "km", "hours", "minutes", "cost", "costs"]),
        (CreativeForm, 4.0, &[
            "poem", "poems", "poetry", "lyrics", "haiku", "haikus", "limerick", "sonnet",
            "screenplay", "roleplay", "villanelle", "ode",
        ]),
        (CreativeForm, 3.0, &[
            "story", "stories", "tale", "fable", "song", "verse", "verses", "chorus", "rhyme",
            "rhymes", "rhyming", "ballad", "fiction", "fictional", "protagonist", "monologue",
            "slogan", "tagline", "toast",
        ]),
        (CreativeForm, 2.5, &["rap", "novel", "bedtime", "noir", "villain", "fairytale"]),
        (CreativeForm, 2.0, &["scene", "chapter", "plot", "narrative", "prose", "eulogy"]),
        (Roleplay, 1.5, &["character", "characters", "persona", "pretend"]),
        (CreativeCue, 2.5, &["brainstorm", "whimsical", "catchy", "twister", "scifi"]),
        (CreativeCue, 2.0, &[
            "invent", "fantasy", "compose", "creative", "dialogue", "humorous", "joke", "jokes",
            "pun", "puns",
        ]),
        (CreativeCue, 1.5, &[
            "imagine", "vivid", "dramatic", "funny", "dragon", "kingdom", "kingdoms", "magical",
            "inspired", "romance", "charming", "silly", "playful", "witty", "pirate", "wizard",
            "alien", "aliens", "spaceship",
        ]),
        (CreativeCue, 1.0, &["names", "mystery", "adventure", "legend", "myth", "piece"]),
        (CreativeCue, 0.5, &["style", "love"]),
        (Everyday, 3.0, &["translate", "translation", "weather"]),
        (Everyday, 2.0, &[
            "summarize", "summarise", "summary", "email", "recipe", "trip", "travel", "workout",
            "itinerary", "recommend", "meeting", "resume", "cv",
        ]),
        (Everyday, 1.5, &["tips", "advice", "letter", "transcript", "cons", "umbrella"]),
        (SmallTalk, 2.0, &["hi", "hello", "hey", "thanks", "thank", "bye"]),
        (Hard, 1.0, &[
            "rigorous", "rigorously", "prove", "proof", "induction", "deadlock", "deadlocks",
            "complexity", "optimize", "optimise", "concurrent", "concurrency", "distributed",
            "scalable", "architecture", "production", "carefully", "thorough", "thoroughly",
            "comprehensive", "detailed", "story", "stories", "screenplay", "chapter", "novel",
            "autonomous", "agent",
        ]),
        (Concise, 1.0, &["concise", "concisely", "briefly", "brief", "tldr", "eli5"]),
        (Glue, 0.0, &[
            "step", "by", "trade", "offs", "next", "to", "left", "right", "of", "how", "much",
            "many", "far", "in", "show", "that", "pros", "thread", "safe", "unit", "role", "play",
            "once", "upon", "edge", "cases", "time", "your", "sci", "fi", "make", "up", "act",
            "as", "you", "are", "product", "description",
        ]),
    ]
};

const BIGRAMS: &[(&str, &str, Feature, f32)] = {
    use Feature::*;
    &[
        ("by", "step", StepByStep, 2.5),
        ("trade", "offs", Puzzle, 2.0),
        ("trade", "offs", Hard, 1.0),
        ("next", "to", Puzzle, 0.75),
        ("left", "of", Puzzle, 0.75),
        ("right", "of", Puzzle, 0.75),
        ("how", "much", WordProblem, 1.0),
        ("how", "many", WordProblem, 1.0),
        ("how", "far", WordProblem, 1.0),
        ("show", "that", Proof, 1.5),
        ("in", "character", Roleplay, 3.0),
        ("role", "play", Roleplay, 3.0),
        ("once", "upon", CreativeForm, 3.0),
        ("pros", "cons", Everyday, 0.0),
        ("thread", "safe", Hard, 1.0),
        ("unit", "tests", CodeWords, 1.5),
        ("edge", "cases", Hard, 1.0),
        ("time", "complexity", CodeWords, 1.5),
        ("your", "reasoning", Puzzle, 1.0),
        ("sci", "fi", CreativeCue, 2.5),
        ("make", "up", CreativeCue, 2.0),
        ("act", "as", Roleplay, 2.5),
        ("you", "are", Roleplay, 1.0),
        ("product", "description", CreativeCue, 2.5),
        ("how", "many", MathWords, 0.5),
    ]
};

struct Lexicon {
    entries: Vec<Entry>,
    /// Keys by word id, apart from the entries so that lookups stay within a few KiB.
    keys: Vec<Key>,
    /// Open addressing; a slot holds a hash tag and word id + 1 (0 = empty). The tag settles
    /// most misses without touching a key.
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tag: u16,
    id: u16,
}

struct Entry {
    hits: Vec<(Feature, f32)>,
    /// Bigrams ending in this word: (id of the first word, feature, points).
    after: Vec<(u16, Feature, f32)>,
}

const SLOTS: usize = 2048;
/// Hash of a zero-padded key, three 8-byte lanes at once (a per-byte hash chain was the
/// scanner's bottleneck).
fn hash_key(key: &Key) -> usize {
    let lane = |i: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&key[i * 8..i * 8 + 8]);
        u64::from_le_bytes(bytes)
    };
    let h = lane(0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ lane(1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(23)
        ^ lane(2).wrapping_mul(0x1656_67B1_9E37_79F9).rotate_left(41);
    (h ^ (h >> 29)) as usize
}

/// The zero-padded lookup key of a word. Word bytes are ASCII letters, digits and `_`, so
/// setting bit 0x20 lower-cases letters and leaves digits alone (`_` becomes 0x7F, which no
/// lexicon word contains).
fn key_of(word: &[u8]) -> Key {
    let mut key: Key = [0; MAX_WORD];
    for (slot, b) in key.iter_mut().zip(word) {
        *slot = b | 0x20;
    }
    key
}

impl Lexicon {
    fn build() -> Lexicon {
        let mut lex = Lexicon {
            entries: Vec::new(),
            keys: Vec::new(),
            slots: vec![Slot::default(); SLOTS],
        };
        for &(feature, points, words) in LEXICON_GROUPS {
            for &word in words {
                let id = lex.id(word).unwrap_or_else(|| lex.insert(word));
                if feature != Feature::Glue {
                    lex.entries[usize::from(id)].hits.push((feature, points));
                }
            }
        }
        for &(a, b, feature, points) in BIGRAMS {
            if let (Some(a), Some(b)) = (lex.id(a), lex.id(b)) {
                lex.entries[usize::from(b)].after.push((a, feature, points));
            }
        }
        lex
    }

    fn insert(&mut self, word: &'static str) -> u16 {
        let id = self.entries.len() as u16;
        let key = key_of(word.as_bytes());
        self.entries.push(Entry {
            hits: Vec::new(),
            after: Vec::new(),
        });
        self.keys.push(key);
        let hash = hash_key(&key);
        let mut slot = hash & (SLOTS - 1);
        while self.slots[slot].id != 0 {
            slot = (slot + 1) & (SLOTS - 1);
        }
        self.slots[slot] = Slot {
            tag: (hash >> 48) as u16,
            id: id + 1,
        };
        id
    }

    fn id(&self, word: &str) -> Option<u16> {
        self.find(&key_of(word.as_bytes()))
    }

    fn find(&self, key: &Key) -> Option<u16> {
        let hash = hash_key(key);
        let tag = (hash >> 48) as u16;
        let mut slot = hash & (SLOTS - 1);
        loop {
            let Slot { tag: t, id } = self.slots[slot];
            let id = id.checked_sub(1)?;
            if t == tag && self.keys.get(usize::from(id)) == Some(key) {
                return Some(id);
            }
            slot = (slot + 1) & (SLOTS - 1);
        }
    }
}

/// Built once at start-up (first use); the table is a few KiB.
static LEXICON: LazyLock<Lexicon> = LazyLock::new(Lexicon::build);

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as De;
    use std::collections::BTreeMap;

    fn user(text: &str) -> MessageView<'_> {
        MessageView {
            role: "user",
            text,
            images: 0,
        }
    }

    fn one(text: &str) -> Classification {
        classify(&ClassifyInput {
            messages: vec![user(text)],
            ..Default::default()
        })
    }

    #[test]
    fn lexicon_fits_its_table_and_every_bigram_resolves() {
        let lex = &*LEXICON;
        assert!(
            lex.entries.len() < SLOTS / 2,
            "keep the table at most half full"
        );
        let bigrams: usize = lex.entries.iter().map(|e| e.after.len()).sum();
        assert_eq!(bigrams, BIGRAMS.len());
        let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        for word in LEXICON_GROUPS.iter().flat_map(|g| g.2.iter()) {
            assert!(word.len() <= MAX_WORD && word.bytes().all(plain), "{word}");
            assert!(lex.id(word).is_some(), "{word}");
        }
    }

    #[test]
    fn hard_requirements_win_over_text() {
        let c = classify(&ClassifyInput {
            messages: vec![MessageView {
                role: "user",
                text: "Write a poem about this photo",
                images: 1,
            }],
            ..Default::default()
        });
        assert_eq!(c.category, Category::Vision);
        assert_eq!(c.signals.first(), Some(&"images"));
        let e = classify(&ClassifyInput {
            messages: vec![user("fn main() { println!(\"hi\"); }")],
            embedding: true,
            ..Default::default()
        });
        assert_eq!(e.category, Category::Embedding);
        assert_eq!(e.complexity, 1);
    }

    #[test]
    fn empty_request_is_trivial_general() {
        let c = classify(&ClassifyInput::default());
        assert_eq!(c.category, Category::General);
        assert_eq!(c.complexity, 1);
        assert_eq!(c.context_tokens, 0);
    }

    #[test]
    fn latest_user_turn_outweighs_history() {
        let history = "```rust\nfn main() { let x = vec![1, 2]; println!(\"{:?}\", x); }\n```";
        let c = classify(&ClassifyInput {
            messages: vec![
                user(history),
                MessageView {
                    role: "assistant",
                    text: "That prints [1, 2].",
                    images: 0,
                },
                user("Thanks! Now write a short poem about autumn for my mother."),
            ],
            ..Default::default()
        });
        assert_eq!(c.category, Category::Creative, "{c:?}");
    }

    #[test]
    fn signals_explain_the_category() {
        let c = one("Traceback (most recent call last):\n  File \"a.py\", line 3\nKeyError: 'x'");
        assert_eq!(c.category, Category::Code);
        assert!(c.signals.contains(&"stack trace"), "{:?}", c.signals);
        let r = one("Prove by induction that 2^n > n for all n.");
        assert_eq!(r.category, Category::Reasoning);
        assert!(r.signals.contains(&"proof"), "{:?}", r.signals);
    }

    #[test]
    fn complexity_grows_with_context_and_tools() {
        let short = one("hi");
        let long_text = "Please review the design and list every risk you see. ".repeat(600);
        let long = classify(&ClassifyInput {
            system: "You are a thorough reviewer.",
            messages: vec![user(&long_text), user(&long_text)],
            has_tools: true,
            embedding: false,
        });
        assert_eq!(short.complexity, 1);
        assert!(long.complexity >= 6, "{long:?}");
        assert!(long.signals.contains(&"long context"));
    }

    #[test]
    fn scan_budget_cuts_on_char_boundaries() {
        assert_eq!(head("héllo", 2), "h");
        assert_eq!(head("héllo", 3), "hé");
        assert_eq!(head("abc", 10), "abc");
        // A long history cannot outvote the ask, however much code it holds.
        let code = "```rust\nfn main() { let x: Vec<u8> = vec![]; }\n```\n".repeat(2000);
        let c = classify(&ClassifyInput {
            messages: vec![user(&code), user("Write a limerick about my cat, please.")],
            ..Default::default()
        });
        assert_eq!(c.category, Category::Creative);
        assert!(
            c.context_tokens > 20_000,
            "context counts all text, scanned or not"
        );
    }

    #[test]
    fn category_names_round_trip() {
        for c in Category::BUILT_IN {
            assert_eq!(Category::parse(c.as_str()), c);
            let json = serde_json::to_string(&c).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Category>(&json).ok(), Some(c));
        }
        assert_eq!(Category::parse("SQL"), Category::Other("sql".into()));
        assert_eq!(Category::parse(" Code "), Category::Code);
    }

    // ---- the labelled fixture ----------------------------------------------------------------

    #[derive(De)]
    struct FixtureMessage {
        role: String,
        content: String,
        #[serde(default)]
        images: usize,
    }

    #[derive(De)]
    struct Fixture {
        #[serde(default)]
        system: String,
        messages: Vec<FixtureMessage>,
        #[serde(default)]
        tools: bool,
        #[serde(default)]
        embedding: bool,
        category: String,
        complexity_range: [u8; 2],
    }

    fn fixtures(file: &str) -> Vec<Fixture> {
        let path = format!(
            "{}/tests/fixtures/classify/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn run(f: &Fixture) -> Classification {
        classify(&ClassifyInput {
            system: &f.system,
            messages: f
                .messages
                .iter()
                .map(|m| MessageView {
                    role: &m.role,
                    text: &m.content,
                    images: m.images,
                })
                .collect(),
            has_tools: f.tools,
            embedding: f.embedding,
        })
    }

    /// Classify every fixture in `file`, print misses and the confusion table; returns
    /// (category accuracy, share of complexities inside the labelled range).
    fn evaluate(file: &str) -> (f64, f64) {
        let fixtures = fixtures(file);
        let names: Vec<&str> = Category::BUILT_IN.iter().map(Category::as_str).collect();
        let mut confusion: BTreeMap<(String, String), usize> = BTreeMap::new();
        let (mut right, mut in_range) = (0, 0);
        println!("== {file}");
        for (n, f) in fixtures.iter().enumerate() {
            let c = run(f);
            let got = c.category.as_str().to_owned();
            if got == f.category {
                right += 1;
            } else {
                println!(
                    "line {}: want {} got {got} {:?}",
                    n + 1,
                    f.category,
                    c.signals
                );
            }
            let [lo, hi] = f.complexity_range;
            if (lo..=hi).contains(&c.complexity) {
                in_range += 1;
            } else {
                println!(
                    "line {}: complexity {} outside [{lo}, {hi}] {:?}",
                    n + 1,
                    c.complexity,
                    c.signals
                );
            }
            *confusion.entry((f.category.clone(), got)).or_default() += 1;
        }
        println!("confusion (rows = label, columns = classifier)");
        print!("{:>10}", "");
        for col in &names {
            print!("{col:>10}");
        }
        println!();
        for row in &names {
            print!("{row:>10}");
            for col in &names {
                let k = (row.to_string(), col.to_string());
                print!("{:>10}", confusion.get(&k).copied().unwrap_or(0));
            }
            println!();
        }
        let total = fixtures.len();
        let accuracy = right as f64 / total as f64;
        let range_rate = in_range as f64 / total as f64;
        println!(
            "category accuracy {right}/{total} = {:.1} %; complexity in range {in_range}/{total} = {:.1} %",
            accuracy * 100.0,
            range_rate * 100.0
        );
        (accuracy, range_rate)
    }

    #[test]
    fn fixture_accuracy_and_confusion_table() {
        assert!(fixtures("prompts.jsonl").len() >= 72);
        let (accuracy, range_rate) = evaluate("prompts.jsonl");
        assert!(accuracy >= 0.9, "category accuracy {accuracy:.3} < 0.90");
        assert!(
            range_rate >= 0.75,
            "complexity in range {range_rate:.3} < 0.75"
        );
    }

    /// Written after the first rules; the lexicon was widened after seeing its misses.
    #[test]
    fn dev_accuracy() {
        let (accuracy, _) = evaluate("dev.jsonl");
        assert!(accuracy >= 0.9, "dev accuracy {accuracy:.3} < 0.90");
    }

    /// Written after the rules and never tuned against: the honest estimate. Printed, and
    /// guarded only loosely so that widening the lexicon later is not punished.
    #[test]
    fn heldout_accuracy() {
        let (accuracy, _) = evaluate("heldout.jsonl");
        assert!(accuracy >= 0.6, "held-out accuracy {accuracy:.3} < 0.60");
    }

    proptest::proptest! {
        #[test]
        fn any_text_classifies_without_panicking(
            system in ".{0,200}",
            texts in proptest::collection::vec(("(user|assistant|tool)", "\\PC{0,400}", 0usize..3), 0..6),
            has_tools: bool,
            embedding: bool,
        ) {
            let input = ClassifyInput {
                system: &system,
                messages: texts
                    .iter()
                    .map(|(role, text, images)| MessageView { role, text, images: *images })
                    .collect(),
                has_tools,
                embedding,
            };
            let a = classify(&input);
            proptest::prop_assert!((1..=10).contains(&a.complexity));
            proptest::prop_assert_eq!(&a, &classify(&input));
            let images: usize = texts.iter().map(|t| t.2).sum();
            if !embedding && images > 0 {
                proptest::prop_assert_eq!(a.category, Category::Vision);
            }
        }
    }
}

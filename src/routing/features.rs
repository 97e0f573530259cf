//! Request features against model capabilities: a model that cannot think is not asked to,
//! and tools or images go only to a model that takes them (the first of the fallback chain
//! that does), or the client hears which model lacks what.

use crate::error::GatewayError;
use crate::ir::{ChatRequest, Think};
use crate::routing::catalog::{Catalogue, Discovered, ModelCard};
use crate::routing::memory::normalize_model;

/// What a chat request needs from the model that serves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    /// The client asked for reasoning (any `think` but off).
    pub thinking: bool,
    pub tools: bool,
    pub vision: bool,
}

impl Wants {
    pub fn of(chat: &ChatRequest) -> Wants {
        Wants {
            thinking: asks_thinking(chat.think),
            tools: !chat.tools.is_empty(),
            vision: chat.messages.iter().any(|m| !m.images.is_empty()),
        }
    }

    /// Whether any capability must be looked up at all.
    pub fn any(self) -> bool {
        self.thinking || self.tools || self.vision
    }
}

/// Whether the client asked to see reasoning; the answer carries thinking only then.
pub fn asks_thinking(think: Option<Think>) -> bool {
    matches!(think, Some(Think::On | Think::Budget(_) | Think::Level(_)))
}

/// The model to serve and whether it may be asked to think.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    pub model: String,
    pub thinking: bool,
}

/// The card of `model` as Ollama names it (`qwen3` is `qwen3:latest`), but only when the
/// backend's `/api/show` described it: a guess from the name must not refuse a request.
pub fn shown_card<'a>(catalogue: &'a Catalogue, model: &str) -> Option<&'a ModelCard> {
    let card = catalogue
        .get(model)
        .or_else(|| catalogue.get(&normalize_model(model)))
        .or_else(|| model.strip_suffix(":latest").and_then(|m| catalogue.get(m)))?;
    (card.capabilities_from == Discovered::Show).then_some(card)
}

/// The capability `card` lacks for `wants`, if any; thinking is never one (it is dropped).
fn lacking(card: &ModelCard, wants: Wants) -> Option<&'static str> {
    if wants.tools && !card.capabilities.tools {
        Some("tools")
    } else if wants.vision && !card.capabilities.vision {
        Some("vision")
    } else {
        None
    }
}

/// The first model of `chain` (the target, then its fallbacks) that can take the request;
/// a model whose capabilities are unknown is taken as able. Every model lacking something:
/// a 400 naming the first model and what it lacks.
pub fn fit<'a>(
    chain: impl IntoIterator<Item = &'a str>,
    catalogue: &Catalogue,
    wants: Wants,
) -> Result<Fit, GatewayError> {
    let mut refused: Option<(&str, &str)> = None;
    for model in chain {
        let card = shown_card(catalogue, model);
        match card.and_then(|c| lacking(c, wants)) {
            None => {
                return Ok(Fit {
                    model: model.to_string(),
                    thinking: wants.thinking && card.is_none_or(|c| c.capabilities.thinking),
                });
            }
            Some(what) => {
                refused.get_or_insert((model, what));
            }
        }
    }
    let (model, what) = refused.unwrap_or(("", "this request"));
    Err(GatewayError::bad_field(
        "model",
        format!("\"{model}\" does not support {what}, and no fallback model does"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Image, Message, Role, ThinkLevel, Tool};
    use serde_json::json;

    fn catalogue() -> Catalogue {
        let tag = |n: &str| json!({"name": n, "model": n});
        let show = |caps: &[&str]| json!({"capabilities": caps, "model_info": {}});
        let entries = [
            (
                tag("qwen3:8b"),
                Some(show(&["completion", "tools", "thinking"])),
            ),
            (tag("llama3.1:8b"), Some(show(&["completion", "tools"]))),
            (tag("llava:7b"), Some(show(&["completion", "vision"]))),
            (tag("mystery:1b"), None),
        ];
        Catalogue::build(entries.iter().map(|(t, s)| (t, s.as_ref())), &[]).0
    }

    fn chat(think: Option<Think>, tools: bool, image: bool) -> ChatRequest {
        let mut m = Message::new(Role::User, "hi");
        if image {
            m.images.push(Image {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into(),
            });
        }
        ChatRequest {
            messages: vec![m],
            think,
            tools: if tools {
                vec![Tool {
                    name: "read_file".into(),
                    description: None,
                    parameters: json!({"type": "object"}),
                }]
            } else {
                Vec::new()
            },
            ..ChatRequest::default()
        }
    }

    #[test]
    fn thinking_is_dropped_for_a_model_that_cannot_think() {
        let c = catalogue();
        let wants = Wants::of(&chat(Some(Think::On), false, false));
        let fit = fit(["llama3.1:8b"], &c, wants).unwrap();
        assert_eq!(fit.model, "llama3.1:8b");
        assert!(!fit.thinking, "llama3.1 lacks thinking: no think upstream");
        let level = Wants::of(&chat(Some(Think::Level(ThinkLevel::High)), false, false));
        assert!(self::fit(["qwen3:8b"], &c, level).unwrap().thinking);
    }

    #[test]
    fn off_or_absent_is_not_asking() {
        assert!(!Wants::of(&chat(None, false, false)).any());
        assert!(!Wants::of(&chat(Some(Think::Off), false, false)).any());
        assert!(Wants::of(&chat(Some(Think::Budget(2048)), false, false)).thinking);
    }

    #[test]
    fn tools_move_to_the_first_fallback_that_takes_them() {
        let c = catalogue();
        let wants = Wants::of(&chat(None, true, false));
        let fit = fit(["llava:7b", "llama3.1:8b"], &c, wants).unwrap();
        assert_eq!(fit.model, "llama3.1:8b");
    }

    #[test]
    fn no_model_that_takes_tools_names_model_and_capability() {
        let c = catalogue();
        let e = fit(["llava:7b"], &c, Wants::of(&chat(None, true, false))).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::BadRequest);
        assert!(
            e.message.contains("\"llava:7b\" does not support tools"),
            "{e}"
        );
        let e = fit(["llama3.1:8b"], &c, Wants::of(&chat(None, false, true))).unwrap_err();
        assert!(
            e.message
                .contains("\"llama3.1:8b\" does not support vision"),
            "{e}"
        );
    }

    #[test]
    fn unknown_capabilities_and_untagged_names_are_taken_as_able() {
        let c = catalogue();
        let wants = Wants::of(&chat(Some(Think::On), true, true));
        let fit = fit(["mystery:1b"], &c, wants).unwrap();
        assert!(fit.thinking, "no /api/show: the upstream decides");
        assert!(shown_card(&c, "qwen3:8b").is_some());
        assert!(
            shown_card(&c, "mystery:1b").is_none(),
            "a name guess is not a fact"
        );
        assert!(self::fit(["nowhere"], &c, wants).unwrap().thinking);
    }
}

//! Picks the model for an `auto` request: hard filters first, then a ranking, with every other model's loss explained.
//!
//! Hard filters (a model failing one is never chosen): enabled; an embedding request needs an
//! embedding model and anything else a completion model; images need vision; tools need tools;
//! the context must fit the model's window (unknown windows are assumed to fit); some backend
//! serves it now with capacity to spare.
//!
//! Among the rest, in order: preferred for the category; complexity inside the model's range
//! (else nearest to it); already resident (no load wait, no memory churn); range centred closest
//! on the request's complexity (so easy asks go to small models and hard ones to big ones);
//! faster; fewer in flight; then name, so the choice is deterministic.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

use crate::routing::catalog::{Catalogue, ModelCard};
use crate::routing::classifier::{Category, Classification};

/// What the request itself requires, beyond its category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The request carries images (a `vision` category implies this too).
    pub vision: bool,
    /// The request defines tools the model may call.
    pub tools: bool,
    /// Tokens the model must hold: the context plus room for the answer.
    pub context_tokens: u32,
}

impl Needs {
    /// Needs as the classifier saw them, with `answer_tokens` of room for the reply.
    pub fn of(c: &Classification, tools: bool, answer_tokens: u32) -> Needs {
        Needs {
            vision: c.category == Category::Vision,
            tools,
            context_tokens: c.context_tokens.saturating_add(answer_tokens),
        }
    }
}

/// A model's live state across the fleet, as the placement view knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests in flight for this model, summed over backends.
    pub inflight: u32,
    /// Loaded in memory on at least one healthy backend.
    pub resident: bool,
    /// Some healthy backend could take one more request for it now.
    pub capacity_ok: bool,
}

/// The model `auto` resolved to, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub model: String,
    pub category: Category,
    pub complexity: u8,
    pub reason: String,
    /// Every other model in rank order, each with why it lost; excluded ones last.
    pub runners_up: Vec<(String, String)>,
}

/// No model passed the hard filters; each model with the reason it was excluded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoModel {
    pub category: Category,
    pub rejected: Vec<(String, String)>,
}

impl fmt::Display for NoModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no model can serve this {} request", self.category)?;
        if self.rejected.is_empty() {
            return f.write_str(": the catalogue is empty");
        }
        for (i, (model, why)) in self.rejected.iter().enumerate() {
            f.write_str(if i == 0 { " (" } else { "; " })?;
            write!(f, "{model}: {why}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for NoModel {}

/// Choose a model for a classified request. `load` reports a model's live state; `None` means
/// no healthy backend serves it right now.
pub fn select(
    c: &Classification,
    needs: Needs,
    catalogue: &Catalogue,
    load: &dyn Fn(&str) -> Option<Load>,
) -> Result<Choice, NoModel> {
    let mut viable = Vec::new();
    let mut rejected = Vec::new();
    for card in catalogue.iter() {
        let live = load(&card.name);
        match exclusion(card, c, needs, live) {
            Some(why) => rejected.push((card.name.clone(), why)),
            None => viable.push(Candidate::new(card, c, live.unwrap_or_default())),
        }
    }
    viable.sort_by(Candidate::rank);
    let Some((best, rest)) = viable.split_first() else {
        return Err(NoModel {
            category: c.category.clone(),
            rejected,
        });
    };
    let runners_up = rest
        .iter()
        .map(|other| (other.card.name.clone(), other.lost_to(best, c)))
        .chain(
            rejected
                .into_iter()
                .map(|(name, why)| (name, format!("excluded: {why}"))),
        )
        .collect();
    Ok(Choice {
        model: best.card.name.clone(),
        category: c.category.clone(),
        complexity: c.complexity,
        reason: best.describe(c),
        runners_up,
    })
}

/// Why a model may not serve this request at all, or `None` if it may.
fn exclusion(
    card: &ModelCard,
    c: &Classification,
    needs: Needs,
    live: Option<Load>,
) -> Option<String> {
    let caps = &card.capabilities;
    let why = if !card.enabled {
        "disabled".to_owned()
    } else if c.category == Category::Embedding && !caps.embedding {
        "not an embedding model".to_owned()
    } else if c.category != Category::Embedding && !caps.completion {
        "cannot chat or complete (embedding only)".to_owned()
    } else if (needs.vision || c.category == Category::Vision) && !caps.vision {
        "no vision".to_owned()
    } else if needs.tools && !caps.tools {
        "no tool calling".to_owned()
    } else if let Some(window) = card.context_length.filter(|w| *w < needs.context_tokens) {
        format!(
            "context window {window} tokens < {} needed",
            needs.context_tokens
        )
    } else {
        match live {
            None => "not served by any healthy backend".to_owned(),
            Some(l) if !l.capacity_ok => "no capacity now".to_owned(),
            Some(_) => return None,
        }
    };
    Some(why)
}

struct Candidate<'a> {
    card: &'a ModelCard,
    load: Load,
    preferred: bool,
    /// How far the request's complexity lies outside the model's range (0 = inside).
    outside: u8,
    /// Distance from the range's centre to the request's complexity, in half steps.
    off_centre: u8,
}

impl<'a> Candidate<'a> {
    fn new(card: &'a ModelCard, c: &Classification, load: Load) -> Candidate<'a> {
        let [lo, hi] = card.complexity;
        let x = c.complexity;
        Candidate {
            card,
            load,
            preferred: card.is_preferred_for(&c.category),
            outside: lo.saturating_sub(x).max(x.saturating_sub(hi)),
            off_centre: (u16::from(lo) + u16::from(hi)).abs_diff(2 * u16::from(x)) as u8,
        }
    }

    fn rank(a: &Candidate, b: &Candidate) -> Ordering {
        b.preferred
            .cmp(&a.preferred)
            .then(a.outside.cmp(&b.outside))
            .then(b.load.resident.cmp(&a.load.resident))
            .then(a.off_centre.cmp(&b.off_centre))
            .then(a.card.speed.cmp(&b.card.speed))
            .then(a.load.inflight.cmp(&b.load.inflight))
            .then(a.card.name.cmp(&b.card.name))
    }

    fn describe(&self, c: &Classification) -> String {
        let [lo, hi] = self.card.complexity;
        let mut parts = Vec::with_capacity(5);
        if self.preferred {
            parts.push(format!("preferred for {}", c.category));
        }
        parts.push(if self.outside == 0 {
            format!("complexity {} within [{lo}, {hi}]", c.complexity)
        } else {
            format!(
                "complexity {} outside [{lo}, {hi}] but closest",
                c.complexity
            )
        });
        parts.push(
            if self.load.resident {
                "resident"
            } else {
                "not resident"
            }
            .to_owned(),
        );
        parts.push(self.card.speed.as_str().to_owned());
        parts.push(format!("{} in flight", self.load.inflight));
        parts.join(", ")
    }

    /// The first ranking step at which this candidate fell behind `best`.
    fn lost_to(&self, best: &Candidate, c: &Classification) -> String {
        let [lo, hi] = self.card.complexity;
        let [blo, bhi] = best.card.complexity;
        if self.preferred != best.preferred {
            format!("not preferred for {}", c.category)
        } else if self.outside != best.outside {
            format!("complexity {} outside [{lo}, {hi}]", c.complexity)
        } else if self.load.resident != best.load.resident {
            "not resident".to_owned()
        } else if self.off_centre != best.off_centre {
            format!(
                "[{lo}, {hi}] fits complexity {} less closely than [{blo}, {bhi}]",
                c.complexity
            )
        } else if self.card.speed != best.card.speed {
            format!(
                "slower ({} vs {})",
                self.card.speed.as_str(),
                best.card.speed.as_str()
            )
        } else if self.load.inflight != best.load.inflight {
            format!(
                "more in flight ({} vs {})",
                self.load.inflight, best.load.inflight
            )
        } else {
            "equal on every count; name order".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::catalog::{Capabilities, Discovered, Speed};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn card(name: &str, caps: Capabilities, complexity: [u8; 2], speed: Speed) -> ModelCard {
        ModelCard {
            name: name.into(),
            family: String::new(),
            parameter_size_b: 0.0,
            quantization: String::new(),
            context_length: Some(32768),
            capabilities: caps,
            capabilities_from: Discovered::Show,
            speed,
            complexity,
            preferred_for: Vec::new(),
            enabled: true,
            configured: false,
        }
    }

    const CHAT: Capabilities = Capabilities {
        completion: true,
        tools: true,
        vision: false,
        embedding: false,
        thinking: false,
    };

    fn classification(category: Category, complexity: u8) -> Classification {
        Classification {
            category,
            complexity,
            signals: Vec::new(),
            context_tokens: 100,
        }
    }

    fn fleet() -> Catalogue {
        let mut cat = Catalogue::new();
        let mut coder = card("qwen2.5-coder:32b", CHAT, [3, 9], Speed::Medium);
        coder.preferred_for = vec!["code".into()];
        cat.insert(coder);
        cat.insert(card("llama3.1:8b", CHAT, [1, 6], Speed::Fast));
        cat.insert(card("llama3.1:70b", CHAT, [4, 10], Speed::Slow));
        let vision = Capabilities {
            vision: true,
            tools: false,
            ..CHAT
        };
        cat.insert(card("llava:13b", vision, [2, 7], Speed::Medium));
        let embed = Capabilities {
            completion: false,
            tools: false,
            embedding: true,
            ..CHAT
        };
        cat.insert(card("nomic-embed-text:latest", embed, [1, 10], Speed::Fast));
        cat
    }

    fn idle(_: &str) -> Option<Load> {
        Some(Load {
            inflight: 0,
            resident: false,
            capacity_ok: true,
        })
    }

    fn needs(c: &Classification) -> Needs {
        Needs::of(c, false, 1024)
    }

    #[test]
    fn category_preference_then_complexity_fit() {
        let cat = fleet();
        let code = classification(Category::Code, 6);
        let choice = select(&code, needs(&code), &cat, &idle).unwrap();
        assert_eq!(choice.model, "qwen2.5-coder:32b");
        assert!(
            choice.reason.starts_with("preferred for code"),
            "{}",
            choice.reason
        );
        let easy = classification(Category::General, 2);
        assert_eq!(
            select(&easy, needs(&easy), &cat, &idle).unwrap().model,
            "llama3.1:8b"
        );
        let hard = classification(Category::General, 9);
        let choice = select(&hard, needs(&hard), &cat, &idle).unwrap();
        assert_eq!(choice.model, "llama3.1:70b");
        let why: BTreeMap<_, _> = choice.runners_up.into_iter().collect();
        assert_eq!(why["llama3.1:8b"], "complexity 9 outside [1, 6]");
        assert_eq!(why["llava:13b"], "complexity 9 outside [2, 7]");
        assert_eq!(
            why["nomic-embed-text:latest"],
            "excluded: cannot chat or complete (embedding only)"
        );
        assert!(why["qwen2.5-coder:32b"].contains("less closely"), "{why:?}");
    }

    #[test]
    fn hard_needs_filter_and_residency_breaks_ties() {
        let cat = fleet();
        let vision = classification(Category::Vision, 3);
        assert_eq!(
            select(&vision, needs(&vision), &cat, &idle).unwrap().model,
            "llava:13b"
        );
        let with_tools = Needs::of(&vision, true, 0);
        let err = select(&vision, with_tools, &cat, &idle).unwrap_err();
        assert!(
            err.to_string().contains("llava:13b: no tool calling"),
            "{err}"
        );
        let embed = classification(Category::Embedding, 1);
        assert_eq!(
            select(&embed, needs(&embed), &cat, &idle).unwrap().model,
            "nomic-embed-text:latest"
        );
        let resident_70b = |m: &str| {
            Some(Load {
                inflight: 3,
                resident: m == "llama3.1:70b",
                capacity_ok: true,
            })
        };
        let mid = classification(Category::General, 5);
        let choice = select(&mid, needs(&mid), &cat, &resident_70b).unwrap();
        assert_eq!(choice.model, "llama3.1:70b", "{choice:?}");
        let busy = |m: &str| (m != "llama3.1:70b").then(|| idle(m)).flatten();
        let hard = classification(Category::General, 10);
        let choice = select(&hard, needs(&hard), &cat, &busy).unwrap();
        assert_ne!(choice.model, "llama3.1:70b");
        assert!(choice.runners_up.contains(&(
            "llama3.1:70b".into(),
            "excluded: not served by any healthy backend".into()
        )));
    }

    #[test]
    fn context_must_fit() {
        let mut cat = Catalogue::new();
        let mut small = card("small", CHAT, [1, 10], Speed::Fast);
        small.context_length = Some(8192);
        cat.insert(small);
        let mut big = card("big", CHAT, [1, 10], Speed::Slow);
        big.context_length = Some(131_072);
        cat.insert(big);
        let mut c = classification(Category::General, 3);
        c.context_tokens = 20_000;
        let choice = select(&c, needs(&c), &cat, &idle).unwrap();
        assert_eq!(choice.model, "big");
        assert_eq!(
            choice.runners_up,
            vec![(
                "small".into(),
                "excluded: context window 8192 tokens < 21024 needed".into()
            )]
        );
    }

    // ---- randomized fleets ------------------------------------------------------------------

    fn arb_card(i: usize) -> impl Strategy<Value = (ModelCard, Option<Load>)> {
        (
            any::<[bool; 5]>(),
            prop::option::of(1024u32..200_000),
            any::<bool>(),
            (1u8..=10, 1u8..=10),
            0usize..3,
            prop::sample::subsequence(
                vec!["code", "reasoning", "general", "creative", "sql"],
                0..3,
            ),
            prop::option::of((0u32..20, any::<bool>(), prop::bool::weighted(0.8))),
        )
            .prop_map(
                move |(caps, ctx, enabled, (a, b), speed, preferred, load)| {
                    let caps = Capabilities {
                        completion: caps[0],
                        tools: caps[1],
                        vision: caps[2],
                        embedding: caps[3],
                        thinking: caps[4],
                    };
                    let speed = [Speed::Fast, Speed::Medium, Speed::Slow][speed];
                    let mut card = card(&format!("m{i:02}"), caps, [a.min(b), a.max(b)], speed);
                    card.context_length = ctx;
                    card.enabled = enabled || i % 3 != 0;
                    card.preferred_for = preferred.into_iter().map(str::to_owned).collect();
                    let load = load.map(|(inflight, resident, capacity_ok)| Load {
                        inflight,
                        resident,
                        capacity_ok,
                    });
                    (card, load)
                },
            )
    }

    fn arb_fleet() -> impl Strategy<Value = Vec<(ModelCard, Option<Load>)>> {
        (0usize..12).prop_flat_map(|n| (0..n).map(arb_card).collect::<Vec<_>>())
    }

    fn arb_request() -> impl Strategy<Value = (Classification, Needs)> {
        (
            prop::sample::select(vec![
                "code",
                "reasoning",
                "general",
                "vision",
                "embedding",
                "creative",
                "sql",
            ]),
            1u8..=10,
            0u32..150_000,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(cat, complexity, ctx, vision, tools)| {
                let c = Classification {
                    category: Category::parse(cat),
                    complexity,
                    signals: Vec::new(),
                    context_tokens: ctx,
                };
                let needs = Needs {
                    vision: vision || c.category == Category::Vision,
                    tools,
                    context_tokens: ctx,
                };
                (c, needs)
            })
    }

    fn serves(card: &ModelCard, load: Option<Load>, c: &Classification, n: Needs) -> bool {
        let caps = card.capabilities;
        card.enabled
            && if c.category == Category::Embedding {
                caps.embedding
            } else {
                caps.completion
            }
            && (!n.vision || caps.vision)
            && (!n.tools || caps.tools)
            && card.context_length.is_none_or(|w| w >= n.context_tokens)
            && load.is_some_and(|l| l.capacity_ok)
    }

    proptest! {
        #[test]
        fn choices_always_meet_hard_needs((c, needs) in arb_request(), fleet in arb_fleet()) {
            let loads: BTreeMap<String, Option<Load>> =
                fleet.iter().map(|(card, l)| (card.name.clone(), *l)).collect();
            let mut cat = Catalogue::new();
            for (card, _) in &fleet {
                cat.insert(card.clone());
            }
            let load = |m: &str| loads.get(m).copied().flatten();
            let able: Vec<&ModelCard> = fleet
                .iter()
                .filter(|(card, l)| serves(card, *l, &c, needs))
                .map(|(card, _)| card)
                .collect();
            match select(&c, needs, &cat, &load) {
                Ok(choice) => {
                    let chosen = cat.get(&choice.model).unwrap();
                    prop_assert!(serves(chosen, load(&choice.model), &c, needs));
                    // vision requests never get text-only models, tool requests never tool-less ones
                    prop_assert!(!needs.vision || chosen.capabilities.vision);
                    prop_assert!(!needs.tools || chosen.capabilities.tools);
                    // a preferred model wins whenever one can serve
                    if able.iter().any(|m| m.is_preferred_for(&c.category)) {
                        prop_assert!(chosen.is_preferred_for(&c.category));
                    }
                    // every other model is explained, once
                    prop_assert_eq!(choice.runners_up.len() + 1, cat.len());
                    prop_assert!(choice.runners_up.iter().all(|(m, why)| m != &choice.model && !why.is_empty()));
                    // deterministic
                    prop_assert_eq!(&select(&c, needs, &cat, &load).unwrap(), &choice);
                }
                Err(no) => {
                    prop_assert!(able.is_empty(), "NoModel although {:?} could serve", able.first().map(|m| &m.name));
                    prop_assert_eq!(no.rejected.len(), cat.len());
                }
            }
        }
    }
}

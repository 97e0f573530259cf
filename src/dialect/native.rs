//! A client's JSON body sent on as it is to an upstream of its own dialect, and the one parse
//! that reads it. The parse builds the object the decoders read and records where the
//! top-level `model` and `think` values sit, so the served model name (or `think: false`)
//! goes in by splicing bytes at those places, never by parsing the body again. The same
//! splice puts the client's model name into an upstream's answer or stream frame, at places
//! recorded by the parse that read it.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::GatewayError;

type Obj = Map<String, Value>;

/// A client's body and where its top-level `model` and `think` values are.
#[derive(Debug, Clone)]
pub struct Native {
    bytes: Bytes,
    /// Every top-level `model` value (a duplicate key gets the served name too: upstream
    /// parsers differ on which one wins).
    model: Vec<Range<usize>>,
    think: Vec<Range<usize>>,
    /// Just after the opening `{`: where an absent field goes.
    open: usize,
    /// The object has no members (an inserted field needs no comma).
    empty: bool,
}

/// Parses a request body that must be a JSON object, once: the object for the decoders, and
/// the body with the places of its `model` and `think` values.
pub fn parse(body: Bytes) -> Result<(Obj, Native), GatewayError> {
    let mut spans = Vec::new();
    let obj = match object_at(&body, &["model", "think"], &mut spans) {
        Ok(o) => o,
        Err(e) if e.is_data() => {
            return Err(GatewayError::bad_request(
                "request body must be a JSON object",
            ));
        }
        Err(e) => {
            return Err(GatewayError::bad_request(format!(
                "request body is not valid JSON: {e}"
            )));
        }
    };
    let open = body.iter().position(|b| *b == b'{').map_or(0, |i| i + 1);
    let native = Native {
        model: spans
            .iter()
            .filter(|(k, _)| *k == 0)
            .map(|(_, r)| r.clone())
            .collect(),
        think: spans
            .iter()
            .filter(|(k, _)| *k == 1)
            .map(|(_, r)| r.clone())
            .collect(),
        open,
        empty: obj.is_empty(),
        bytes: body,
    };
    Ok((obj, native))
}

impl Native {
    /// The client's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Has the body a `think` field (any value, `null` included)?
    pub fn has_think(&self) -> bool {
        !self.think.is_empty()
    }

    /// The body for the upstream: `model` set to `served` when given (inserted if the
    /// body has none), `think` set to `false` when `think_off` (inserted likewise). The
    /// client's bytes are returned as they are when nothing changes.
    pub fn body(&self, served: Option<&str>, think_off: bool) -> Bytes {
        let mut edits: Vec<(Range<usize>, &[u8])> = Vec::new();
        let model = served.map(quoted);
        let mut insert = String::new();
        if let Some(model) = &model {
            if self.model.is_empty() {
                insert.push_str("\"model\":");
                insert.push_str(model);
            }
            for r in &self.model {
                edits.push((r.clone(), model.as_bytes()));
            }
        }
        if think_off {
            if self.think.is_empty() {
                if !insert.is_empty() {
                    insert.push(',');
                }
                insert.push_str("\"think\":false");
            }
            for r in &self.think {
                edits.push((r.clone(), b"false"));
            }
        }
        if !insert.is_empty() && !self.empty {
            insert.push(',');
        }
        if !insert.is_empty() {
            edits.push((self.open..self.open, insert.as_bytes()));
        }
        splice(&self.bytes, edits)
    }
}

/// `s` as a JSON string.
pub fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `bytes` with each range replaced by its text; ranges that already hold it are left, and
/// when none changes the same buffer comes back.
pub fn splice(bytes: &Bytes, mut edits: Vec<(Range<usize>, &[u8])>) -> Bytes {
    edits.retain(|(r, text)| r.is_empty() || bytes.get(r.clone()) != Some(*text));
    if edits.is_empty() {
        return bytes.clone();
    }
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let grow: usize = edits.iter().map(|(_, t)| t.len()).sum();
    let mut out = BytesMut::with_capacity(bytes.len() + grow);
    let mut at = 0;
    for (r, text) in edits {
        if r.start < at || r.end > bytes.len() {
            // Overlapping or out of range: cannot come from one parse of these bytes.
            continue;
        }
        out.extend_from_slice(&bytes[at..r.start]);
        out.extend_from_slice(text);
        at = r.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out.freeze()
}

/// Where `raw` sits in `within` (it must borrow from it).
pub fn span_of(within: &[u8], raw: &RawValue) -> Option<Range<usize>> {
    let start = (raw.get().as_ptr() as usize).checked_sub(within.as_ptr() as usize)?;
    let end = start + raw.get().len();
    (end <= within.len()).then_some(start..end)
}

/// Parses `body` as a JSON object, recording `(index in keys, value span)` for every
/// top-level member whose key is one of `keys`.
pub fn object_at(
    body: &[u8],
    keys: &[&str],
    spans: &mut Vec<(usize, Range<usize>)>,
) -> Result<Obj, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let obj = Spanned { body, keys, spans }.deserialize(&mut de)?;
    de.end()?;
    Ok(obj)
}

struct Spanned<'a, 'k> {
    body: &'a [u8],
    keys: &'k [&'k str],
    spans: &'k mut Vec<(usize, Range<usize>)>,
}

impl<'de, 'k> DeserializeSeed<'de> for Spanned<'de, 'k> {
    type Value = Obj;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Obj, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'k> Visitor<'de> for Spanned<'de, 'k> {
    type Value = Obj;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Obj, A::Error> {
        let mut obj = Obj::new();
        while let Some(key) = map.next_key::<String>()? {
            let Some(i) = self.keys.iter().position(|k| *k == key) else {
                let v: Value = map.next_value()?;
                obj.insert(key, v);
                continue;
            };
            let raw: &'de RawValue = map.next_value()?;
            let span = span_of(self.body, raw)
                .ok_or_else(|| de::Error::custom("a value outside the body"))?;
            // Only this field's few bytes are read again, into the object's value.
            let v: Value = serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
            self.spans.push((i, span));
            obj.insert(key, v);
        }
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(body: &str) -> (Obj, Native) {
        parse(Bytes::from(body.to_string())).unwrap()
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn the_served_name_goes_where_the_model_was() {
        let body =
            " {\n  \"messages\" : [{\"model\":\"inner\"}],\n  \"model\"\t:\t\"alias\" , \"x\": 1 }";
        let (obj, n) = native(body);
        assert_eq!(obj["model"], "alias");
        let out = n.body(Some("real:8b"), false);
        assert_eq!(
            text(&out),
            " {\n  \"messages\" : [{\"model\":\"inner\"}],\n  \"model\"\t:\t\"real:8b\" , \"x\": 1 }",
            "only the top-level value changes, spacing kept"
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"][0]["model"], "inner");
    }

    #[test]
    fn an_unchanged_body_is_the_same_buffer() {
        let (_, n) = native(r#"{"model":"m","messages":[]}"#);
        let out = n.body(Some("m"), false);
        assert_eq!(out.as_ptr(), n.bytes().as_ptr());
        assert_eq!(n.body(None, false).as_ptr(), n.bytes().as_ptr());
    }

    #[test]
    fn escapes_on_either_side_are_json() {
        // An escaped key is still `model`; an escaped value is replaced whole.
        let (obj, n) = native(r#"{"mod\u0065l":"al\"i\u0061s","a":"\u2028"}"#);
        assert_eq!(obj["model"], "al\"ias");
        let out = n.body(Some("we\"ird\\name"), false);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "we\"ird\\name");
        assert_eq!(v["a"], "\u{2028}");
        assert!(text(&out).starts_with(r#"{"mod\u0065l":"we\"ird\\name""#));
    }

    #[test]
    fn duplicate_keys_all_get_the_served_name() {
        let (obj, n) = native(r#"{"model":"a","model":"b"}"#);
        assert_eq!(
            obj["model"], "b",
            "the decoders see the last, as serde_json does"
        );
        assert_eq!(
            text(&n.body(Some("real"), false)),
            r#"{"model":"real","model":"real"}"#
        );
    }

    #[test]
    fn absent_fields_are_inserted_at_the_front() {
        let (_, n) = native(r#"{"name":"alias"}"#);
        assert_eq!(
            text(&n.body(Some("real"), false)),
            r#"{"model":"real","name":"alias"}"#
        );
        let (_, n) = native(" { } ");
        assert_eq!(
            text(&n.body(Some("m"), true)),
            r#" {"model":"m","think":false } "#
        );
        let (_, n) = native(r#"{"model":"m"}"#);
        assert_eq!(text(&n.body(None, true)), r#"{"think":false,"model":"m"}"#);
    }

    #[test]
    fn think_is_turned_off_in_place_whatever_it_was() {
        for given in ["true", "\"high\"", "null", "false"] {
            let (_, n) = native(&format!(
                r#"{{"model":"m","think":{given},"stream":false}}"#
            ));
            assert!(n.has_think());
            let out = n.body(Some("r"), true);
            assert_eq!(
                text(&out),
                r#"{"model":"r","think":false,"stream":false}"#,
                "{given}"
            );
        }
    }

    #[test]
    fn non_objects_and_bad_json_are_refused() {
        let e = parse(Bytes::from_static(b"[1]")).unwrap_err();
        assert_eq!(e.message, "request body must be a JSON object");
        let e = parse(Bytes::from_static(b"{\"model\":")).unwrap_err();
        assert!(e.message.starts_with("request body is not valid JSON"));
        let e = parse(Bytes::from_static(b"{} x")).unwrap_err();
        assert!(e.message.starts_with("request body is not valid JSON"));
    }

    #[test]
    fn splice_skips_edits_that_cannot_apply() {
        let b = Bytes::from_static(b"0123456789");
        let out = splice(&b, vec![(2..4, b"ab"), (3..5, b"zz"), (8..12, b"q")]);
        assert_eq!(&out[..], b"01ab456789");
    }
}

//! Shared helpers for lenient request decoding (errors name the field) and compact encoding.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ErrorKind, GatewayError};
use crate::ir::ToolCall;

pub(crate) type Obj = Map<String, Value>;

/// Parses a request body that must be a JSON object.
pub(crate) fn parse_body(body: &[u8]) -> Result<Obj, GatewayError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GatewayError::bad_request(
            "request body must be a JSON object",
        )),
        Err(e) => Err(GatewayError::bad_request(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

pub(crate) fn protocol(msg: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorKind::UpstreamProtocol, msg)
}

/// An error the upstream reported inside a 200 stream or body.
pub(crate) fn upstream_error(msg: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorKind::UpstreamStatus, msg)
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

pub(crate) fn wrong_type(parent: &str, key: &str, expected: &str) -> GatewayError {
    GatewayError::bad_field(&path(parent, key), format!("expected {expected}"))
}

pub(crate) fn missing(parent: &str, key: &str) -> GatewayError {
    GatewayError::bad_field(&path(parent, key), "field required")
}

/// Removes `key`; JSON `null` counts as absent.
pub(crate) fn take(m: &mut Obj, key: &str) -> Option<Value> {
    match m.remove(key) {
        None | Some(Value::Null) => None,
        v => v,
    }
}

pub(crate) fn take_str(
    m: &mut Obj,
    key: &str,
    parent: &str,
) -> Result<Option<String>, GatewayError> {
    match take(m, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type(parent, key, "a string")),
    }
}

pub(crate) fn req_str(m: &mut Obj, key: &str, parent: &str) -> Result<String, GatewayError> {
    take_str(m, key, parent)?.ok_or_else(|| missing(parent, key))
}

pub(crate) fn take_f64(m: &mut Obj, key: &str, parent: &str) -> Result<Option<f64>, GatewayError> {
    match take(m, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| wrong_type(parent, key, "a number")),
    }
}

pub(crate) fn take_i64(m: &mut Obj, key: &str, parent: &str) -> Result<Option<i64>, GatewayError> {
    match take(m, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| wrong_type(parent, key, "an integer")),
    }
}

/// A non-negative integer that fits in u32.
pub(crate) fn take_u32(m: &mut Obj, key: &str, parent: &str) -> Result<Option<u32>, GatewayError> {
    match take_i64(m, key, parent)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| wrong_type(parent, key, "a non-negative integer")),
    }
}

pub(crate) fn take_bool(
    m: &mut Obj,
    key: &str,
    parent: &str,
) -> Result<Option<bool>, GatewayError> {
    match take(m, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(wrong_type(parent, key, "a boolean")),
    }
}

pub(crate) fn take_array(
    m: &mut Obj,
    key: &str,
    parent: &str,
) -> Result<Option<Vec<Value>>, GatewayError> {
    match take(m, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(wrong_type(parent, key, "an array")),
    }
}

pub(crate) fn take_obj(m: &mut Obj, key: &str, parent: &str) -> Result<Option<Obj>, GatewayError> {
    match take(m, key) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(wrong_type(parent, key, "an object")),
    }
}

/// A value that must be an object, named `at` in errors.
pub(crate) fn into_obj(v: Value, at: &str) -> Result<Obj, GatewayError> {
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(GatewayError::bad_field(at, "expected an object")),
    }
}

/// `stop`: a string or an array of strings.
pub(crate) fn take_stop(m: &mut Obj, key: &str, parent: &str) -> Result<Vec<String>, GatewayError> {
    match take(m, key) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(wrong_type(parent, key, "a string or an array of strings")),
            })
            .collect(),
        Some(_) => Err(wrong_type(parent, key, "a string or an array of strings")),
    }
}

/// Tool-call arguments sent as a JSON string (OpenAI): parsed, must be an object; "" is `{}`.
pub(crate) fn arguments_from_str(s: &str, at: &str) -> Result<Value, GatewayError> {
    if s.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(GatewayError::bad_field(
            at,
            "arguments must be a JSON object",
        )),
        Err(e) => Err(GatewayError::bad_field(
            at,
            format!("arguments are not valid JSON: {e}"),
        )),
    }
}

/// Tool-call arguments given as a value: objects as is, strings parsed, null as `{}`.
pub(crate) fn arguments_from_value(v: Value, at: &str) -> Result<Value, GatewayError> {
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Map::new())),
        Value::String(s) => arguments_from_str(&s, at),
        _ => Err(GatewayError::bad_field(
            at,
            "arguments must be a JSON object",
        )),
    }
}

/// Compact JSON text of `v` (serializing a `Value` or derived struct cannot fail).
pub(crate) fn to_string<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `data: <json>\n\n`.
pub(crate) fn sse_data<T: Serialize + ?Sized>(v: &T) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `event: <name>\ndata: <json>\n\n`.
pub(crate) fn sse_event<T: Serialize + ?Sized>(name: &str, v: &T) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Text of a JSON string or an array of `{"type":"text","text":..}` parts, joined with `\n`.
/// Non-text parts are an error naming `at`.
pub(crate) fn text_of(v: Value, at: &str) -> Result<String, GatewayError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.into_iter().enumerate() {
                let pat = index(at, i);
                let mut p = into_obj(p, &pat)?;
                let kind = take_str(&mut p, "type", &pat)?;
                match kind.as_deref() {
                    Some("text") | None => {
                        let t = req_str(&mut p, "text", &pat)?;
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(&t);
                    }
                    Some(other) => {
                        return Err(GatewayError::bad_field(
                            &pat,
                            format!("content part type `{other}` is not supported here"),
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(GatewayError::bad_field(
            at,
            "expected a string or an array of text parts",
        )),
    }
}

/// Prepends `Error: ` to failed tool results for dialects without an error flag.
pub(crate) fn tool_result_text(text: &str, is_error: bool) -> String {
    if is_error {
        format!("Error: {text}")
    } else {
        text.to_string()
    }
}

/// Appends `s` to `buf`, separated by a newline when both are non-empty.
pub(crate) fn push_line(buf: &mut String, s: &str) {
    if s.is_empty() {
        return;
    }
    if !buf.is_empty() {
        buf.push('\n');
    }
    buf.push_str(s);
}

/// A tool call as Ollama and OpenAI both send it: `{"id"?, "function": {"name", "arguments"}}`,
/// `arguments` an object or a JSON string.
pub(crate) fn decode_tool_call(v: Value, at: &str) -> Result<ToolCall, GatewayError> {
    let mut c = into_obj(v, at)?;
    let id = take_str(&mut c, "id", at)?.unwrap_or_default();
    let fat = path(at, "function");
    let mut f = take_obj(&mut c, "function", at)?.ok_or_else(|| missing(at, "function"))?;
    let name = req_str(&mut f, "name", &fat)?;
    let arguments = arguments_from_value(
        f.remove("arguments").unwrap_or(Value::Null),
        &path(&fat, "arguments"),
    )?;
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

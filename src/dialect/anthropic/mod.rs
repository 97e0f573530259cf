//! The Anthropic Messages dialect (docs/PROTOCOLS.md §3), in two halves that meet only in the
//! canonical IR (`ir.rs`): `inbound` serves Anthropic clients (their request in, the answer and
//! the SSE stream out), `outbound` talks to Anthropic upstreams (the call out, their answer and
//! SSE events in).

mod inbound;
mod outbound;

pub use inbound::{
    StreamWriter, count_tokens_response, decode_count_tokens, decode_messages,
    decode_messages_object, encode_response, models_list, new_message_id,
};
pub use outbound::{StreamParser, encode_upstream, parse_response, parse_response_at};

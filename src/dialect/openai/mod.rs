//! The OpenAI chat, completion and embedding dialect (docs/PROTOCOLS.md §2), in two halves
//! that meet only in the canonical IR (`ir.rs`): `inbound` serves OpenAI clients (their request
//! in, the answer and the SSE stream out), `outbound` talks to OpenAI-compatible upstreams (the
//! call out, their answer and SSE chunks in).

mod inbound;
mod outbound;

pub use inbound::{
    StreamWriter, decode_chat, decode_chat_object, decode_completion, decode_completion_object,
    decode_embeddings, encode_completion_response, encode_embeddings_response, encode_response,
    model_object, models_list, new_completion_id,
};
pub use outbound::{
    StreamParser, encode_chat_upstream, encode_embeddings_upstream, parse_embeddings_response,
    parse_response, parse_response_at,
};

//! Talking to upstreams: the awc client, per-kind request building and stream readers.

//! Authentication: bearer tokens and x-api-key resolved to users.

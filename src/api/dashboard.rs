//! dashboard handlers.

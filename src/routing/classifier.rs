//! classifier.

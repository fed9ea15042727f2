//! gelunet client crate (work in progress).

//! gelunet server crate (work in progress).

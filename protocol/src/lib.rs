//! gelunet protocol crate (work in progress).

//! Recordings in, engine events out: readers for recording formats, and (as the replay
//! issue lands) deterministic replay, scoring against labelled incidents, and reports.
//!
//! - [`jsonl`]: one sample a line, `{"ts": <epoch ms | RFC 3339>, "metric": "...",
//!   "labels": {...}, "value": <number>}`.

pub mod jsonl;

pub use jsonl::{JsonlReader, ReadError, Record};

//! Recordings in, engine events out: readers for JSONL, CSV, Parquet/Arrow and OTLP-JSON
//! recordings, deterministic replay through the engine, scoring against labelled
//! incidents, and reports.
//!
//! The readers land with the replay issue; the crate exists now so the dependency
//! direction (engine ← replay ← binary) is fixed from the start.

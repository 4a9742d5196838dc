//! Recordings in, engine events out: reading recordings, deterministic replay through
//! the evaluator, scoring against labelled incidents, reports, and recording live
//! input.
//!
//! - [`source`]: inputs as chunk streams (JSONL, NAB CSV, OTLP-JSON, Parquet, Arrow;
//!   gzip/zstd), merged in event-time order;
//! - [`driver::replay`]: the replay loop (range, `--where` [`filter`], checkpoint and
//!   resume);
//! - [`output`]: JSON lines and timelines; [`expect`]: scoring against incidents;
//!   [`report`]: the self-contained HTML report; [`nab`]: NAB result files;
//!   [`backtest`]: parameter grids over rule files;
//! - [`columnar::Recorder`]: `vigil record`'s Parquet writer.

pub mod backtest;
pub mod columnar;
pub mod driver;
pub mod expect;
pub mod filter;
pub mod jsonl;
pub mod nab;

pub mod otlp_json;
pub mod output;
pub mod report;

pub mod source;

pub use driver::{replay, Options, Progress, ReplayError, Summary};
pub use jsonl::{JsonlReader, Record};

/// A recording that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// I/O failure.
    #[error("{source_name}: {source}")]
    Io {
        /// File name.
        source_name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A malformed line or record (line 0: not line-oriented).
    #[error("{source_name}:{line}: {message}")]
    Malformed {
        /// File name.
        source_name: String,
        /// 1-based line number (0 for columnar files).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Not a recording this build reads.
    #[error("{source_name}: {message}")]
    Unsupported {
        /// File name.
        source_name: String,
        /// Why.
        message: String,
    },
}

//! Logs: `tracing`, human text on a terminal, JSON otherwise (or as configured); the level
//! from RUST_LOG, else from `log.level`.
//!
//! Lines go to stderr in batches written by one thread (`batch`), so a request never waits on
//! a `write(2)` nor wakes a thread per line; the writer applies back-pressure rather than
//! dropping lines, and `flush` writes out what is left at exit.

mod batch;
mod json;

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use batch::{BatchSettings, WriterGuard, batch_writer};

static WRITER: Mutex<Option<WriterGuard>> = Mutex::new(None);

pub fn init(config: &LogConfig, override_format: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match override_format.unwrap_or(config.format) {
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        f => f,
    };
    let (writer, guard) = batch_writer(std::io::stderr(), BatchSettings::default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder.event_format(json::JsonLines).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Auto => builder.try_init(),
    };
    // Already initialised (tests) means the existing subscriber and its writer stay.
    if result.is_ok() {
        *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }
}

/// Writes out every buffered line; call before the process exits.
pub fn flush() {
    if let Some(guard) = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        guard.close();
    }
}

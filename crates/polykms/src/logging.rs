//! Logs: `tracing`, human text on a terminal, JSON otherwise (or as configured); the level
//! from RUST_LOG, else from `log.level`.
//!
//! Lines go to stderr through a writer thread, so a request never waits on a `write(2)`; the
//! writer applies back-pressure rather than dropping lines, and `flush` drains it at exit.

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

pub fn init(config: &LogConfig, override_format: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match override_format.unwrap_or(config.format) {
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        f => f,
    };
    // A bounded queue (its slots are allocated up front: the default 128k lines cost ~4 MiB of
    // RSS); when full, callers wait for the writer instead of dropping lines.
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .lossy(false)
        .thread_name("polykms-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
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
    drop(WRITER.lock().unwrap_or_else(|e| e.into_inner()).take());
}

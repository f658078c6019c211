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
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use batch::{BatchSettings, WriterGuard, batch_writer};

static WRITER: Mutex<Option<WriterGuard>> = Mutex::new(None);
/// Set once JSON log lines go to stderr: a fatal error is then one more JSON line, not text.
static JSON_ON_STDERR: AtomicBool = AtomicBool::new(false);

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
        JSON_ON_STDERR.store(format == LogFormat::Json, Ordering::Relaxed);
    }
}

/// Reports the error that ends the process, once: as the last JSON log line when the logs are
/// JSON (a log collector keeps it with the rest), else as one plain `polykms: …` line.
pub fn report_fatal(message: &str) {
    if JSON_ON_STDERR.load(Ordering::Relaxed) {
        tracing::error!(error = %message, "exiting");
    } else {
        eprintln!("polykms: {message}");
    }
}

/// Writes out every buffered line; call before the process exits.
pub fn flush() {
    if let Some(guard) = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        guard.close();
    }
}

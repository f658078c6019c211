//! JSON log lines, written straight into the line buffer.
//!
//! The same lines as `tracing-subscriber`'s flattened JSON format (`timestamp`, `level`, the
//! event's fields in order, `target`; checked against it in the tests), without its cost per
//! event: that format goes through serde_json and an `io::Write` adaptor that re-validates
//! UTF-8 on every token, and it was the largest cost polykms added to a request (see
//! integration/bench). Spans are not written (polykms logs events only).

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// One JSON object per event, one event per line.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events bridged from the `log` crate carry their real target and level here.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_str(",\"")?;
                Escaped(self.out).write_str(field.name())?;
                self.out.write_str("\":")?;
                value(self.out)
            })();
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| string(out, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |out| {
            if value.is_finite() {
                // Shortest representation that reads back as the same number, as serde_json.
                let mut buf = zmij::Buffer::new();
                out.write_str(buf.format_finite(value))
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }
}

/// A JSON string literal.
fn string(out: &mut Writer<'_>, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what is written through it as the inside of a JSON string (as serde_json does:
/// quote, backslash and control characters; everything else as is).
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(str::to_owned).collect()
        }
    }

    #[derive(Debug)]
    struct Odd {
        #[allow(dead_code)] // read through Debug
        text: &'static str,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("backend said \"no\"\n\tbecause: {0}")]
    struct Failure(&'static str);

    fn events() {
        let tricky =
            "quote \" backslash \\ newline \n tab \t cr \r nul \0 bell \x07 del \x7f é ✓ 𝄞";
        tracing::info!(api = "v2", uid = "bench-1", method = "Decrypt", backend = %"local",
            key_id = "pk1-a8b2", outcome = "ok", latency_ms = 0.123_456_f64, "request");
        tracing::warn!(error = %Failure("x\u{1}"), outcome = "unavailable", latency_ms = 1500.0_f64, "request failed");
        tracing::info!(value = ?Odd { text: tricky }, plain = tricky, "debug \"and\" str");
        tracing::error!(
            n = -42_i64,
            u = 42_u64,
            big = u128::MAX,
            small = i128::MIN,
            yes = true,
            no = false,
            "numbers"
        );
        tracing::info!(
            tiny = 1e-9_f64,
            huge = 1.5e300_f64,
            int = 3.0_f64,
            nan = f64::NAN,
            inf = f64::INFINITY,
            "floats"
        );
        tracing::debug!(key_version = "local:15e47a9366ab6446", "backend healthy");
        tracing::info!(target: "custom::target", "no fields at all");
        let err: &(dyn std::error::Error + 'static) = &Failure("dyn");
        tracing::warn!(error = err, "error value");
    }

    fn capture(ours: bool) -> Vec<String> {
        let buf = Buffer::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(buf.clone());
        if ours {
            let subscriber = builder.event_format(JsonLines).finish();
            tracing::subscriber::with_default(subscriber, events);
        } else {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish();
            tracing::subscriber::with_default(subscriber, events);
        }
        buf.lines()
    }

    /// Everything but the timestamp's digits (both formatters read the clock).
    fn without_time(line: &str) -> (String, String) {
        let (head, rest) = line.split_at(line.find("\",\"level\"").expect("timestamp first"));
        (head.to_owned(), rest.to_owned())
    }

    #[test]
    fn lines_are_those_of_tracing_subscribers_json_format() {
        let (ours, theirs) = (capture(true), capture(false));
        assert_eq!(ours.len(), 8);
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            let ((ta, ra), (tb, rb)) = (without_time(a), without_time(b));
            assert_eq!(ra, rb);
            assert_eq!(ta.len(), tb.len(), "{ta} / {tb}");
            assert!(
                ta.starts_with("{\"timestamp\":\"20") && ta.ends_with('Z'),
                "{ta}"
            );
            let parsed: serde_json::Value = serde_json::from_str(a).expect("valid JSON");
            assert!(parsed.is_object());
        }
        let first: serde_json::Value = serde_json::from_str(&ours[0]).unwrap();
        assert_eq!(first["latency_ms"], 0.123456);
        assert_eq!(first["target"], module_path!());
        let third: serde_json::Value = serde_json::from_str(&ours[2]).unwrap();
        assert!(
            third["plain"]
                .as_str()
                .unwrap()
                .contains("nul \0 bell \x07")
        );
    }
}

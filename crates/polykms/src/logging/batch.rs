//! Log lines from every thread, written out in batches by one thread.
//!
//! A request appends its formatted line to a shared buffer and goes on: no `write(2)` and,
//! while the writer thread is already awake, no wake-up either. The writer wakes on the first
//! line into an empty buffer, lingers `linger` (5 ms) so that the lines of the requests served
//! meanwhile join the batch, and writes them with one `write(2)`. So wake-ups and writes are
//! bounded by 1/linger a second instead of one of each per request: with a wake-up per line
//! (tracing-appender's queue, or this writer without the linger) the log thread's context
//! switches cost more CPU than all of polykms's own work on a request (measured with perf in
//! integration/bench). Lines reach stderr at most `linger` late; at exit `close` writes out
//! what is left. Nothing is dropped: when the buffer holds `max_pending` bytes (the output is
//! slower than the logging), callers wait for room.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// Bounds of the buffer and of the wait for more lines.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Bytes waiting to be written before callers block.
    pub max_pending: usize,
    /// How long the writer waits after the first line of a batch.
    pub linger: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_pending: 1 << 20,
            linger: Duration::from_millis(5),
        }
    }
}

/// Capacity a buffer keeps after a burst (a larger one is shrunk back to this).
const KEPT_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Default)]
struct State {
    pending: Vec<u8>,
    /// The writer is waiting for a line (the next line must wake it).
    writer_waiting: bool,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled to the writer: a first line, or close.
    lines: Condvar,
    /// Signalled to callers: the buffer was taken, there is room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The producing side; cheap to clone, one per subscriber.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
    settings: BatchSettings,
}

/// Owns the writer thread: `close` (or drop) writes out what is buffered and joins it.
#[derive(Debug)]
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread for `out`. Without a thread (spawn failed) lines go straight to
/// stderr, as after close.
pub fn batch_writer<W: Write + Send + 'static>(
    out: W,
    settings: BatchSettings,
) -> (BatchWriter, WriterGuard) {
    let shared = Arc::new(Shared::default());
    let spawned = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("polykms-log".into())
            .spawn(move || write_batches(&shared, out, settings.linger))
    };
    let thread = match spawned {
        Ok(thread) => Some(thread),
        Err(e) => {
            eprintln!("polykms: no log writer thread ({e}); writing log lines synchronously");
            shared.lock().closed = true;
            None
        }
    };
    let writer = BatchWriter {
        shared: shared.clone(),
        settings,
    };
    (writer, WriterGuard { shared, thread })
}

fn write_batches<W: Write>(shared: &Shared, mut out: W, linger: Duration) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.pending.is_empty() && !state.closed {
            state.writer_waiting = true;
            state = shared.lines.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.writer_waiting = false;
        if state.pending.is_empty() {
            return; // closed and written out
        }
        if !linger.is_zero() {
            // Lines arriving now do not wake us (writer_waiting is false); close does.
            state = shared
                .lines
                .wait_timeout_while(state, linger, |s| !s.closed)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut state.pending, &mut batch);
        drop(state);
        shared.room.notify_all();
        // A failed write to stderr has nowhere to be reported; the lines are lost, as they
        // would be with a direct write.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > KEPT_CAPACITY {
            batch.shrink_to(KEPT_CAPACITY);
        }
    }
}

impl BatchWriter {
    fn append(&self, line: &[u8]) {
        let mut state = self.shared.lock();
        while !state.closed
            && !state.pending.is_empty()
            && state.pending.len() + line.len() > self.settings.max_pending
        {
            state = self
                .shared
                .room
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        if state.closed {
            // After close (the process is exiting): straight out, nothing lost.
            drop(state);
            let _ = io::stderr().write_all(line);
            return;
        }
        state.pending.extend_from_slice(line);
        let wake = std::mem::take(&mut state.writer_waiting);
        drop(state);
        if wake {
            self.shared.lines.notify_one();
        }
    }
}

/// One formatted event; `tracing-subscriber` writes each line with a single `write_all`.
#[derive(Debug)]
pub struct LineWriter<'a>(&'a BatchWriter);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

impl WriterGuard {
    /// Writes out every buffered line and stops the writer thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// An output that collects what it is given and counts the writes.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>, Arc<Mutex<usize>>);

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            *self.1.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Collect {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(w: &BatchWriter, s: &str) {
        w.make_writer().write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_order_per_thread() {
        let out = Collect::default();
        let (w, guard) = batch_writer(out.clone(), BatchSettings::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        line(
                            &w,
                            &format!("thread {t} line {i:04} {}\n", "x".repeat(i % 97)),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        guard.close();
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8 * 500);
        for t in 0..8 {
            let prefix = format!("thread {t} line ");
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|rest| rest[..4].parse().unwrap())
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "thread {t}");
        }
    }

    /// An output that blocks until told to go on.
    struct Gate(mpsc::Receiver<()>, Collect);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            self.1.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_output_makes_callers_wait_and_loses_nothing() {
        let (open, gate) = mpsc::channel();
        let out = Collect::default();
        let settings = BatchSettings {
            max_pending: 64,
            linger: Duration::ZERO,
        };
        let (w, guard) = batch_writer(Gate(gate, out.clone()), settings);
        let (done_tx, done_rx) = mpsc::channel();
        let producer = {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    line(&w, &format!("line {i:02} ........................\n"));
                }
                done_tx.send(()).unwrap();
            })
        };
        // The output takes nothing, so after the first batch and a full buffer the producer
        // is held up rather than dropping lines.
        assert!(
            done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "producer should wait for room"
        );
        std::thread::spawn(move || while open.send(()).is_ok() {});
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        producer.join().unwrap();
        guard.close();
        let text = out.text();
        let got: Vec<&str> = text.lines().map(|l| &l[5..7]).collect();
        let want: Vec<String> = (0..20).map(|i| format!("{i:02}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn lines_logged_while_the_writer_is_busy_go_out_in_one_write() {
        let (open, gate) = mpsc::channel();
        let out = Collect::default();
        let settings = BatchSettings {
            max_pending: 1 << 20,
            linger: Duration::ZERO,
        };
        let (w, guard) = batch_writer(Gate(gate, out.clone()), settings);
        // The writer takes what is there and blocks in the output; everything else queues.
        for i in 0..50 {
            line(&w, &format!("line {i:02}\n"));
        }
        std::thread::spawn(move || while open.send(()).is_ok() {});
        guard.close();
        let want: String = (0..50).map(|i| format!("line {i:02}\n")).collect();
        assert_eq!(out.text(), want);
        let writes = *out.1.lock().unwrap();
        assert!(writes <= 2, "{writes} writes for 50 lines");
    }

    #[test]
    fn lines_within_the_linger_go_out_together_and_close_does_not_wait_for_it() {
        let out = Collect::default();
        let settings = BatchSettings {
            max_pending: 1 << 20,
            linger: Duration::from_secs(3600),
        };
        let (w, guard) = batch_writer(out.clone(), settings);
        for i in 0..10 {
            line(&w, &format!("line {i}\n"));
        }
        // Nothing is written during the (hour-long) linger; close ends it and writes all.
        assert_eq!(*out.1.lock().unwrap(), 0);
        guard.close();
        assert_eq!(*out.1.lock().unwrap(), 1);
        let want: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out.text(), want);
    }

    #[test]
    fn close_writes_out_what_is_buffered() {
        let out = Collect::default();
        let (open, gate) = mpsc::channel();
        let (w, guard) = batch_writer(Gate(gate, out.clone()), BatchSettings::default());
        line(&w, "one\n");
        line(&w, "two\n");
        line(&w, "three\n");
        // Whatever the writer holds or has still buffered when close is called goes out.
        std::thread::spawn(move || while open.send(()).is_ok() {});
        guard.close();
        assert_eq!(out.text(), "one\ntwo\nthree\n");
    }
}

//! A log file with size-based rotation, written on a thread of its own (Twisted's
//! `twisted.python.logfile.LogFile` behind a `FileLogObserver`).
//!
//! [`RotatingFile`] appends lines to `NAME`; when the next line would take it past
//! `rotate_bytes`, it shifts `NAME.1` → `NAME.2` … → `NAME.max`, deleting the oldest, renames
//! `NAME` to `NAME.1` and starts a fresh `NAME`. So at most `max_rotated_files` old files
//! exist, unlike Twisted's unbounded default (its #9122), and a file exceeds the bound only
//! when a single line is longer than it.
//!
//! [`spawn_writer`] moves all file I/O to a dedicated thread behind a bounded channel, so a
//! slow or full disk never blocks the reactor (Twisted's #4372). When the channel is full
//! the event is dropped and counted; the writer thread writes "N log events dropped" into
//! the log as soon as it takes the next line, i.e. as soon as there is room. An error writing
//! the file (disk full) is reported once on stderr, the lines lost meanwhile counted the
//! same way once writing works again.
//!
//! Why not `tracing_appender::non_blocking`: it does not rotate by size, so our own writer
//! would sit behind it anyway, and its lossy mode only counts drops (`error_counter`) for
//! the program to poll: it never writes them into the log. The thread here is the few lines
//! that do both.
//!
//! Invariant: the reactor thread never waits on the file: [`FileSink::write_line`] only
//! ever `try_send`s.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

use super::record::{Format, LineSink, Record};

/// How many lines may wait for the writer thread before events are dropped.
pub(crate) const CHANNEL_LINES: usize = 16_384;

/// Where the writer thread puts lines: a [`RotatingFile`], or a test's slow writer.
pub(crate) trait LineWrite: Send + 'static {
    /// Writes one whole line.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    /// Flushes what is buffered.
    fn flush(&mut self) -> io::Result<()>;
}

/// A log file rotated by size (see the module doc).
pub(crate) struct RotatingFile {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    rotate_bytes: u64,
    max_rotated_files: usize,
}

impl RotatingFile {
    /// Opens (appending to) or creates `path`.
    ///
    /// # Errors
    ///
    /// The error opening the file or reading its size.
    pub(crate) fn open(
        path: &Path,
        rotate_bytes: u64,
        max_rotated_files: usize,
    ) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            file: BufWriter::new(file),
            size,
            rotate_bytes,
            max_rotated_files,
        })
    }

    /// `NAME.n`.
    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Shifts the old files up by one (the oldest deleted), moves the current one to
    /// `NAME.1` and opens a fresh one.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_rotated_files == 0 {
            fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            // Only the files that exist are shifted: NAME.1 … NAME.highest.
            let mut highest = 0;
            while highest < self.max_rotated_files && self.rotated(highest + 1).exists() {
                highest += 1;
            }
            if highest == self.max_rotated_files {
                fs::remove_file(self.rotated(highest)).or_else(ignore_missing)?;
                highest -= 1;
            }
            for n in (1..=highest).rev() {
                fs::rename(self.rotated(n), self.rotated(n + 1)).or_else(ignore_missing)?;
            }
            fs::rename(&self.path, self.rotated(1)).or_else(ignore_missing)?;
        }
        self.file = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl LineWrite for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.rotate_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Message {
    Line(Vec<u8>),
    Shutdown,
}

/// The reactor's end of the writer thread: a [`LineSink`] that never blocks.
pub(crate) struct FileSink {
    sender: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl LineSink for FileSink {
    fn write_line(&self, line: &[u8]) {
        match self.sender.try_send(Message::Line(line.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer is gone (the LogGuard was dropped): stderr rather than nowhere.
            Err(TrySendError::Disconnected(_)) => {
                let _ = io::stderr().write_all(line);
            }
        }
    }
}

/// Stops the writer thread, after it has written everything queued, and waits for it.
pub(crate) struct WriterGuard {
    sender: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        // A blocking send: the writer is draining, so room comes.
        let _ = self.sender.send(Message::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread over `out`, with room for `capacity` lines; `format` writes
/// its notices ("N log events dropped"), `name` names the file in error reports.
///
/// # Errors
///
/// The error spawning the thread.
pub(crate) fn spawn_writer(
    out: impl LineWrite,
    capacity: usize,
    format: Arc<dyn Format>,
    name: String,
) -> io::Result<(FileSink, WriterGuard)> {
    let (sender, receiver) = mpsc::sync_channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut writer = Writer {
        out,
        format,
        name,
        dropped: dropped.clone(),
        failing: false,
        lost: 0,
    };
    let thread = std::thread::Builder::new()
        .name("torsion-log-writer".into())
        .spawn(move || writer.run(receiver))?;
    Ok((
        FileSink {
            sender: sender.clone(),
            dropped,
        },
        WriterGuard {
            sender,
            thread: Some(thread),
        },
    ))
}

/// The writer thread's state.
struct Writer<W> {
    out: W,
    format: Arc<dyn Format>,
    name: String,
    dropped: Arc<AtomicU64>,
    /// Whether the last write failed (reported once on stderr until one succeeds).
    failing: bool,
    /// Lines lost to write errors since the last report.
    lost: u64,
}

impl<W: LineWrite> Writer<W> {
    fn run(&mut self, receiver: Receiver<Message>) {
        loop {
            let message = match receiver.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => {
                    // Caught up: flush, then wait for more.
                    self.flush();
                    match receiver.recv() {
                        Ok(message) => message,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            match message {
                Message::Line(line) => self.write(&line),
                Message::Shutdown => break,
            }
            // A line was taken, so there is room again: say what was dropped meanwhile.
            self.report_dropped();
        }
        self.report_dropped();
        self.flush();
    }

    fn report_dropped(&mut self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let mut notice = Vec::new();
            self.format.format(&Record::dropped(dropped), &mut notice);
            self.write(&notice);
        }
    }

    fn write(&mut self, line: &[u8]) {
        match self.out.write_line(line) {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    self.dropped.fetch_add(self.lost, Ordering::Relaxed);
                    self.lost = 0;
                }
            }
            Err(e) => {
                self.lost += 1;
                self.report(&e);
            }
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.report(&e);
        }
    }

    fn report(&mut self, error: &io::Error) {
        if !self.failing {
            self.failing = true;
            eprintln!(
                "torsion: cannot write the log file '{}': {error}; log events are lost until \
                 it can be written again",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use super::*;
    use crate::logging::text::TextFormat;

    /// A writer that blocks until released, then records lines.
    #[derive(Clone, Default)]
    struct Slow(Arc<(Mutex<SlowState>, Condvar)>);

    #[derive(Default)]
    struct SlowState {
        entered: bool,
        released: bool,
        lines: Vec<Vec<u8>>,
    }

    impl Slow {
        fn wait_until_entered(&self) {
            let (state, cv) = &*self.0;
            drop(
                cv.wait_while(state.lock().unwrap(), |s| !s.entered)
                    .unwrap(),
            );
        }

        fn release(&self) {
            let (state, cv) = &*self.0;
            state.lock().unwrap().released = true;
            cv.notify_all();
        }

        fn lines(&self) -> Vec<String> {
            let state = self.0.0.lock().unwrap();
            state
                .lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect()
        }
    }

    impl LineWrite for Slow {
        fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
            let (state, cv) = &*self.0;
            let mut guard = state.lock().unwrap();
            guard.entered = true;
            cv.notify_all();
            let mut guard = cv.wait_while(guard, |s| !s.released).unwrap();
            guard.lines.push(line.to_vec());
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_channel_drops_and_then_reports_the_count() {
        let slow = Slow::default();
        let (sink, guard) =
            spawn_writer(slow.clone(), 2, Arc::new(TextFormat), "test".into()).unwrap();
        // The writer takes the first line and blocks in it; probes fill the channel; the
        // ten lines after are dropped, without blocking this thread.
        sink.write_line(b"line 0\n");
        slow.wait_until_entered();
        while sink
            .sender
            .try_send(Message::Line(b"probe\n".to_vec()))
            .is_ok()
        {
            std::thread::yield_now();
        }
        for i in 1..=10 {
            sink.write_line(format!("line {i}\n").as_bytes());
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 10);
        slow.release();
        drop(guard);
        let lines = slow.lines();
        assert_eq!(lines[0], "line 0\n");
        assert!(!lines.iter().any(|l| l.starts_with("line 1")), "{lines:?}");
        let notices: Vec<&String> = lines.iter().filter(|l| l.contains("dropped")).collect();
        assert_eq!(notices.len(), 1, "{lines:?}");
        assert!(
            notices[0].contains("[torsion_cli::logging#warn] 10 log events dropped"),
            "{lines:?}"
        );
    }

    /// A writer that fails its first `failures` writes.
    struct Failing {
        failures: usize,
        lines: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl LineWrite for Failing {
        fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(io::Error::other("disk full"));
            }
            self.lines.lock().unwrap().push(line.to_vec());
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_lost_to_write_errors_are_counted_and_reported_once_writable() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = Failing {
            failures: 3,
            lines: lines.clone(),
        };
        let (sink, guard) = spawn_writer(out, 16, Arc::new(TextFormat), "test".into()).unwrap();
        for i in 0..5 {
            sink.write_line(format!("line {i}\n").as_bytes());
        }
        drop(guard);
        let lines: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_eq!(lines[0], "line 3\n");
        assert!(lines[1].contains("3 log events dropped"), "{lines:?}");
        assert_eq!(lines[2], "line 4\n");
    }

    #[test]
    fn rotation_shifts_files_and_keeps_the_bound() {
        let dir = std::env::temp_dir().join(format!("torsion-rotate-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.log");
        let mut file = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..40 {
            file.write_line(format!("line {i:04}\n").as_bytes())
                .unwrap(); // 10 bytes
        }
        file.flush().unwrap();
        // 40 lines of 10 bytes, 10 a file: app.log holds the last 10, .1 and .2 the 20
        // before; the oldest were deleted.
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert!(read(path.clone()).starts_with("line 0030"));
        assert!(read(dir.join("app.log.1")).starts_with("line 0020"));
        assert!(read(dir.join("app.log.2")).starts_with("line 0010"));
        assert!(!dir.join("app.log.3").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}

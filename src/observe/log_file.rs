//! A log file written off the request path: records go into a bounded queue, and a
//! thread of the file's own formats and writes them. A worker never waits for the disk:
//! when the queue is full the record is dropped and counted. The thread takes what has
//! queued every [`INTERVAL`] rather than waking for each record, so a request pays for
//! no wake-up and a busy log is written in large writes. [`LogFile::reopen`]
//! (on `SIGUSR1`) makes the thread close the file and open the path again, so a log
//! rotated by renaming continues in a new file.
//!
//! Boxed records go back to the workers once written ([`LogFile::boxed`]): a box made
//! by a worker and freed by the log's thread would make the allocator collect it across
//! threads, which costs more than the box itself. The log's thread empties a record of
//! what it shares with requests ([`Line::recycle`]) before handing its box back.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

/// A record that knows how to write itself as one line (without the newline).
pub trait Line: Send + 'static {
    fn write_line(&self, out: &mut Vec<u8>);

    /// Once written: let go of what the record shares with requests (header values,
    /// names), so that its allocation can be used again, and say whether it can. A
    /// record that cannot is dropped.
    fn recycle(&mut self) -> bool {
        false
    }
}

/// A boxed record moves through the queue as a pointer.
impl<T: Line + ?Sized> Line for Box<T> {
    fn write_line(&self, out: &mut Vec<u8>) {
        (**self).write_line(out)
    }

    fn recycle(&mut self) -> bool {
        (**self).recycle()
    }
}

/// Written records whose allocations wait to be used again, at most this many (a busy
/// log's records of one [`INTERVAL`]; an idle log holds as many as it ever had queued).
const SPARES: usize = 4096;

impl<T: Line> LogFile<Box<T>> {
    /// `record` in a box: a written record's, when one waits to be used again.
    pub fn boxed(&self, record: T) -> Box<T> {
        match self.spare() {
            Some(mut spare) => {
                *spare = record;
                spare
            }
            None => Box::new(record),
        }
    }

    /// A written record, emptied by [`Line::recycle`], when one waits to be used again
    /// (to take buffers it kept before it is overwritten).
    pub fn spare(&self) -> Option<Box<T>> {
        self.spares.pop()
    }
}

/// How often the writer takes the queued records.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

enum Message<R> {
    Record(R),
    /// Wake the writer (for a reopen), or a flush whose end is told through the sender.
    Flush(Option<SyncSender<()>>),
}

/// The sending side of one log file; cheap to share behind an `Arc`.
pub struct LogFile<R: Line> {
    path: PathBuf,
    queue: SyncSender<Message<R>>,
    dropped: AtomicU64,
    reopen: Arc<AtomicBool>,
    /// Written records, emptied, for [`LogFile::boxed`].
    spares: Arc<ArrayQueue<R>>,
}

impl<R: Line> std::fmt::Debug for LogFile<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile")
            .field("path", &self.path)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl<R: Line> LogFile<R> {
    /// Open `path` for appending (its folder is made when missing) and start the writer
    /// with a queue of `capacity` records.
    pub fn open(path: &Path, capacity: usize) -> io::Result<LogFile<R>> {
        LogFile::open_gated(path, capacity, None)
    }

    /// [`LogFile::open`] whose writer waits for `gate` before its first record (tests).
    fn open_gated(
        path: &Path,
        capacity: usize,
        gate: Option<Receiver<()>>,
    ) -> io::Result<LogFile<R>> {
        let file = open_append(path)?;
        let (queue, records) = mpsc::sync_channel(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let spares = Arc::new(ArrayQueue::new(SPARES));
        let writer = Writer {
            path: path.to_path_buf(),
            file,
            reopen: reopen.clone(),
            pending: Vec::with_capacity(WRITE_AT + 4096),
        };
        let writer_spares = spares.clone();
        std::thread::Builder::new()
            .name("albatross-log".into())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                writer.run(records, &writer_spares)
            })?;
        Ok(LogFile {
            path: path.to_path_buf(),
            queue,
            dropped: AtomicU64::new(0),
            reopen,
            spares,
        })
    }

    /// Queue `record`; false (and counted) when the queue is full.
    pub fn write(&self, record: R) -> bool {
        match self.queue.try_send(Message::Record(record)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Close the file and open the path again before the next record.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        let _ = self.queue.try_send(Message::Flush(None));
    }

    /// Wait until every record queued so far is written (blocking: not for workers).
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.queue.send(Message::Flush(Some(done))).is_ok() {
            let _ = wait.recv();
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer writes to the file once this much is formatted (and at the end of each
/// batch).
const WRITE_AT: usize = 32 * 1024;

struct Writer {
    path: PathBuf,
    file: File,
    reopen: Arc<AtomicBool>,
    /// Lines formatted and not yet written: each line is formatted in place here.
    pending: Vec<u8>,
}

impl Writer {
    fn run<R: Line>(mut self, records: Receiver<Message<R>>, spares: &ArrayQueue<R>) {
        loop {
            // Nobody waits in `recv`, so queuing a record wakes no one.
            std::thread::sleep(INTERVAL);
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.reopen_file();
            }
            let mut wrote = false;
            loop {
                match records.try_recv() {
                    Ok(m) => {
                        wrote = true;
                        if let Some(mut written) = self.handle(m) {
                            if written.recycle() {
                                // When the spares are full the record is dropped here.
                                let _ = spares.push(written);
                            }
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            if wrote {
                self.flush();
            }
        }
    }

    /// Write or flush as `message` says; the record, once formatted.
    fn handle<R: Line>(&mut self, message: Message<R>) -> Option<R> {
        match message {
            Message::Record(r) => {
                r.write_line(&mut self.pending);
                self.pending.push(b'\n');
                if self.pending.len() >= WRITE_AT {
                    self.flush();
                }
                Some(r)
            }
            Message::Flush(done) => {
                self.flush();
                if self.reopen.swap(false, Ordering::AcqRel) {
                    self.reopen_file();
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
                None
            }
        }
    }

    /// Write what is formatted. A failed write is logged and its lines are lost (the
    /// next batch tries again).
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&self.pending) {
            tracing::warn!("Writing the log {} failed: {e}.", self.path.display());
        }
        self.pending.clear();
    }

    /// Close the file and open its path again (after what is formatted is written to
    /// the old one).
    fn reopen_file(&mut self) {
        self.flush();
        match open_append(&self.path) {
            Ok(file) => self.file = file,
            Err(e) => tracing::warn!(
                "Reopening the log {} failed: {e}; writing on to the old file.",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Text(&'static str);

    impl Line for Text {
        fn write_line(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(self.0.as_bytes());
        }
    }

    #[test]
    fn lines_are_written_and_a_reopen_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/access.log");
        let log = LogFile::open(&path, 16).unwrap();
        assert!(log.write(Text("one")));
        log.flush();
        std::fs::rename(&path, dir.path().join("logs/access.log.1")).unwrap();
        assert!(log.write(Text("two")));
        log.flush();
        log.reopen();
        assert!(log.write(Text("three")));
        log.flush();
        let old = std::fs::read_to_string(dir.path().join("logs/access.log.1")).unwrap();
        assert_eq!(
            old, "one\ntwo\n",
            "written to the renamed file until the reopen"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (open_gate, gate) = mpsc::channel();
        let log = LogFile::open_gated(&path, 2, Some(gate)).unwrap();
        assert!(log.write(Text("a")));
        assert!(log.write(Text("b")));
        assert!(!log.write(Text("c")), "the queue holds two");
        assert!(!log.write(Text("d")));
        assert_eq!(log.dropped(), 2);
        open_gate.send(()).unwrap();
        log.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
    }

    /// A record that shares something with "requests" until it is recycled.
    struct Shared(Option<Arc<str>>);

    impl Line for Shared {
        fn write_line(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(self.0.as_deref().unwrap_or("-").as_bytes());
        }

        fn recycle(&mut self) -> bool {
            self.0 = None;
            true
        }
    }

    #[test]
    fn written_records_come_back_emptied_for_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log: LogFile<Box<Shared>> = LogFile::open(&path, 16).unwrap();
        let name: Arc<str> = Arc::from("shared");
        let first = log.boxed(Shared(Some(name.clone())));
        let first_at = &*first as *const Shared as usize;
        assert!(log.write(first));
        log.flush();
        assert_eq!(
            Arc::strong_count(&name),
            1,
            "the written record let go of it"
        );
        let second = log.boxed(Shared(None));
        assert_eq!(
            &*second as *const Shared as usize, first_at,
            "the same box again"
        );
        assert!(log.write(second));
        log.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "shared\n-\n");
        // Records that cannot be recycled are simply dropped.
        let texts = LogFile::open(&dir.path().join("t.log"), 4).unwrap();
        assert!(texts.write(Text("x")));
        texts.flush();
        assert!(texts.spares.is_empty());
    }
}

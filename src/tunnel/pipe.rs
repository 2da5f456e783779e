//! Kernel pipes lent to spliced tunnel directions only while bytes are in flight.
//!
//! A [`PipeLease`] is taken when a socket turns readable and dropped as soon as
//! it is empty and the socket has nothing more to give, so an idle spliced
//! tunnel holds no pipe. An empty pipe goes back to a small per-thread free
//! list; a pipe still holding bytes (the tunnel ended mid-transfer) is closed,
//! so a pooled pipe is always empty.
//!
//! Pipes keep the kernel's default size (16 slots, 64 KiB of pages). Growing
//! them with `F_SETPIPE_SZ` to 256 KiB or 1 MiB gave no measurable gain on
//! loopback (benches/tunnel_throughput.rs) and would spend the per-user pipe
//! budget (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default) four to
//! sixteen times faster; past that budget the kernel hands out 2-slot pipes.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Free pipes kept per thread (at most `2 * POOL_CAP` descriptors idle).
const POOL_CAP: usize = 8;

/// The most bytes one splice(2) call is asked to move.
const MAX_CHUNK: usize = 1 << 20;

thread_local! {
    static FREE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Pipes taken minus pipes given back or closed on this thread.
    static LENT: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
    /// Pipes ever taken on this thread.
    static TAKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Makes socket → pipe splices fail with `EINVAL`, as on a kernel or
    /// socket type without splice support.
    static UNSUPPORTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Both ends of a non-blocking pipe.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn create() -> io::Result<Pipe> {
        let mut fds = [-1 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        Ok(pipe)
    }
}

/// A pipe on loan, with the number of bytes currently in it. Dropping it
/// returns an empty pipe to this thread's free list and closes a non-empty one.
pub(crate) struct PipeLease {
    pipe: Option<Pipe>,
    len: usize,
}

impl PipeLease {
    /// Takes a free pipe from this thread's list, or creates one.
    pub(crate) fn take() -> io::Result<Self> {
        let reused = FREE
            .try_with(|free| free.try_borrow_mut().ok().and_then(|mut f| f.pop()))
            .ok()
            .flatten();
        let pipe = match reused {
            Some(pipe) => pipe,
            None => Pipe::create()?,
        };
        #[cfg(test)]
        {
            LENT.with(|lent| lent.set(lent.get() + 1));
            TAKEN.with(|taken| taken.set(taken.get() + 1));
        }
        Ok(PipeLease {
            pipe: Some(pipe),
            len: 0,
        })
    }

    /// Bytes in the pipe, not yet spliced out.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn pipe(&self) -> &Pipe {
        self.pipe
            .as_ref()
            .expect("a lease holds its pipe until dropped")
    }

    /// Splices from the socket `from` into the pipe; `Ok(0)` is EOF.
    pub(crate) fn fill_from(&mut self, from: RawFd) -> io::Result<usize> {
        #[cfg(test)]
        if UNSUPPORTED.with(|u| u.get()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let n = splice(from, self.pipe().write.as_raw_fd(), MAX_CHUNK)?;
        self.len += n;
        Ok(n)
    }

    /// Splices bytes held in the pipe out to the socket `to`.
    pub(crate) fn drain_to(&mut self, to: RawFd) -> io::Result<usize> {
        let n = splice(self.pipe().read.as_raw_fd(), to, self.len)?;
        self.len -= n;
        Ok(n)
    }
}

impl Drop for PipeLease {
    fn drop(&mut self) {
        #[cfg(test)]
        let _ = LENT.try_with(|lent| lent.set(lent.get() - 1));
        let Some(pipe) = self.pipe.take() else {
            return;
        };
        if self.len != 0 {
            return; // closed: stale bytes must never reach another tunnel
        }
        // If the thread is being torn down or the list is full, the pipe is
        // simply closed.
        let _ = FREE.try_with(|free| {
            if let Ok(mut free) = free.try_borrow_mut() {
                if free.len() < POOL_CAP {
                    free.push(pipe);
                }
            }
        });
    }
}

/// One non-blocking splice(2) of up to `len` bytes; retries `EINTR`.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the duration of the call and
        // null offsets mean "current position"; no memory is passed.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether a splice error means "not supported here" rather than an I/O error.
pub(crate) fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// Pipes currently on loan on this thread (tests only).
#[cfg(test)]
pub(crate) fn lent_on_this_thread() -> isize {
    LENT.with(|lent| lent.get())
}

/// Pipes ever taken on this thread (tests only).
#[cfg(test)]
pub(crate) fn taken_on_this_thread() -> u64 {
    TAKEN.with(|taken| taken.get())
}

/// Makes splices on this thread fail as unsupported (tests only).
#[cfg(test)]
pub(crate) fn pretend_unsupported(on: bool) {
    UNSUPPORTED.with(|u| u.set(on));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_on_this_thread() -> usize {
        FREE.with(|free| free.borrow().len())
    }

    #[test]
    fn empty_pipe_is_pooled_and_a_pipe_with_bytes_is_closed() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let lent = lent_on_this_thread();
        let free = free_on_this_thread();

        drop(PipeLease::take().unwrap());
        assert_eq!(free_on_this_thread(), free + 1, "empty pipe not pooled");
        assert_eq!(lent_on_this_thread(), lent);

        use std::io::Write;
        a.write_all(b"stale").unwrap();
        let mut lease = PipeLease::take().unwrap();
        assert_eq!(free_on_this_thread(), free, "pooled pipe not reused");
        assert_eq!(lease.fill_from(b.as_raw_fd()).unwrap(), 5);
        assert_eq!(lease.len(), 5);
        drop(lease);
        assert_eq!(
            free_on_this_thread(),
            free,
            "a pipe holding bytes was pooled"
        );
        assert_eq!(lent_on_this_thread(), lent);
    }
}

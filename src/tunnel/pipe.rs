//! Kernel pipes lent to spliced tunnel directions only while bytes are in flight.
//!
//! A [`PipeLease`] is taken when a socket turns readable and dropped as soon as
//! it is empty and the socket has nothing more to give, so an idle spliced
//! tunnel holds no pipe. An empty pipe goes back to a small per-thread free
//! list; a pipe still holding bytes (the tunnel ended mid-transfer) is closed,
//! so a pooled pipe is always empty.
//!
//! Pipes are grown to 256 KiB (`F_SETPIPE_SZ`) so one splice(2) moves up to four
//! times the kernel's default 64 KiB: on loopback, a 64 KiB-frame stream through the
//! proxy (`benches/run.sh`, scenario `tput`) moved 5–12 % more MB/s for 8–15 % less
//! proxy CPU per MB in two sets of alternating runs (1 MiB pipes were no better than
//! 256 KiB; an earlier in-process bench had shown no gain). Pipe pages count
//! against a per-user budget (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by
//! default), past which the kernel hands out 2-slot pipes, so at most
//! [`GROWN_CAP`] pipes are grown at a time; the rest keep the default size, and a
//! pipe whose growth is refused keeps it too.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Free pipes kept per thread (at most `2 * POOL_CAP` descriptors idle).
const POOL_CAP: usize = 8;

/// The most bytes one splice(2) call is asked to move.
const MAX_CHUNK: usize = 1 << 20;

/// Size a pipe is grown to.
const GROWN_SIZE: libc::c_int = 256 * 1024;

/// Most grown pipes alive at once in the process: 32 MiB of pipe pages, half the
/// default per-user budget, leaving the other half for default-sized pipes (512 of
/// them) and for other processes of the same user.
const GROWN_CAP: usize = 128;

/// Grown pipes alive in the process.
static GROWN: AtomicUsize = AtomicUsize::new(0);

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
    /// Counted in [`GROWN`].
    grown: bool,
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
        let mut pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
                grown: false,
            }
        };
        pipe.grow();
        Ok(pipe)
    }

    /// Grows the pipe to [`GROWN_SIZE`] if fewer than [`GROWN_CAP`] pipes are grown;
    /// a refusal (the user's pipe budget is spent) leaves it at the default size.
    fn grow(&mut self) {
        if GROWN.fetch_add(1, Ordering::Relaxed) >= GROWN_CAP {
            GROWN.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own; no memory is passed.
        let rc = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_SETPIPE_SZ, GROWN_SIZE) };
        if rc < 0 {
            GROWN.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.grown = true;
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.grown {
            GROWN.fetch_sub(1, Ordering::Relaxed);
        }
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

    #[test]
    fn pipes_are_grown_up_to_the_cap_and_counted_until_closed() {
        let pipe = Pipe::create().unwrap();
        // SAFETY: F_GETPIPE_SZ on a pipe descriptor we own.
        let size = unsafe { libc::fcntl(pipe.read.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if pipe.grown {
            assert_eq!(size, GROWN_SIZE);
            assert!(GROWN.load(Ordering::Relaxed) >= 1);
        } else {
            // Refused (the user's pipe budget is spent) or the cap is reached by
            // tests running at the same time: the default size stays.
            assert!(size > 0 && size < GROWN_SIZE, "size {size}");
        }
        drop(pipe);

        // Past the cap, pipes keep the default size and are not counted.
        let before = GROWN.swap(GROWN_CAP, Ordering::Relaxed);
        let pipe = Pipe::create().unwrap();
        assert!(!pipe.grown);
        assert_eq!(GROWN.load(Ordering::Relaxed), GROWN_CAP);
        drop(pipe);
        GROWN.fetch_sub(GROWN_CAP - before, Ordering::Relaxed);
    }

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

//! Copy buffers lent to tunnels only while bytes are in flight.
//!
//! A tunnel takes a [`PoolBuf`] just before a read and gives it back as soon as
//! the read comes back `Pending` or the bytes it read are fully written, so an
//! idle tunnel holds no buffer at all. Free buffers wait in a small
//! per-thread free list, so the steady state allocates nothing per read.

use std::cell::RefCell;
use std::mem;

/// Size of one copy buffer. Big enough to move a 64 KiB WebSocket frame in
/// one read; only tunnels with bytes in flight hold one.
pub const BUF_SIZE: usize = 64 * 1024;

/// Free buffers kept per thread (at most `POOL_CAP * BUF_SIZE` bytes idle).
const POOL_CAP: usize = 16;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Buffers taken minus buffers given back on this thread.
    static LENT: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// A copy buffer on loan; dropping it returns it to the current thread's free list.
pub(crate) struct PoolBuf(Box<[u8]>);

impl PoolBuf {
    /// Takes a free buffer from this thread's list, or allocates one.
    pub(crate) fn take() -> Self {
        let reused = FREE
            .try_with(|free| free.try_borrow_mut().ok().and_then(|mut f| f.pop()))
            .ok()
            .flatten();
        #[cfg(test)]
        LENT.with(|lent| lent.set(lent.get() + 1));
        PoolBuf(reused.unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice()))
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        #[cfg(test)]
        let _ = LENT.try_with(|lent| lent.set(lent.get() - 1));
        let buf = mem::take(&mut self.0);
        if buf.len() != BUF_SIZE {
            return;
        }
        // If the thread is being torn down or the list is full, the buffer is
        // simply freed.
        let _ = FREE.try_with(|free| {
            if let Ok(mut free) = free.try_borrow_mut() {
                if free.len() < POOL_CAP {
                    free.push(buf);
                }
            }
        });
    }
}

/// Buffers currently on loan from this thread (tests only).
#[cfg(test)]
pub(crate) fn lent_on_this_thread() -> isize {
    LENT.with(|lent| lent.get())
}

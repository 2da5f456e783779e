//! Which WebSocket belongs to which user, for `POST /notify/ID`.
//!
//! Each open socket holds a [`Registration`]; dropping it removes the socket.
//! Delivery never waits: a socket whose outgoing queue is full misses the
//! notification (and it is not counted as delivered).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::socket::Outbound;

type Sockets = HashMap<String, HashMap<u64, mpsc::Sender<Outbound>>>;

/// The open sockets of one backend instance, by user.
#[derive(Default)]
pub(super) struct Registry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    sockets: Mutex<Sockets>,
    next_id: AtomicU64,
    /// The number of registered sockets, observable.
    open: watch::Sender<usize>,
}

impl Inner {
    fn sockets(&self) -> MutexGuard<'_, Sockets> {
        // The map stays consistent even if a holder panicked: every change is
        // a single insert or remove.
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registry {
    /// Count a socket as open and make it reachable as `user`.
    pub(super) fn register(&self, user: &str, sender: mpsc::Sender<Outbound>) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .sockets()
            .entry(user.to_owned())
            .or_default()
            .insert(id, sender);
        self.inner.open.send_modify(|open| *open += 1);
        Registration {
            inner: self.inner.clone(),
            user: user.to_owned(),
            id,
        }
    }

    /// The number of registered sockets.
    pub(super) fn open_sockets(&self) -> usize {
        *self.inner.open.borrow()
    }

    /// Follows the number of registered sockets.
    pub(super) fn watch_open_sockets(&self) -> watch::Receiver<usize> {
        self.inner.open.subscribe()
    }

    /// Queue `message` as a text message on every socket of `user`; returns
    /// how many sockets accepted it.
    pub(super) fn deliver(&self, user: &str, message: Bytes) -> usize {
        self.deliver_with(user, || message)
    }

    /// [`Registry::deliver`] for a message borrowed from elsewhere (one that
    /// arrived through Redis): it is copied only when `user` has a socket here.
    pub(super) fn deliver_copy(&self, user: &str, message: &[u8]) -> usize {
        self.deliver_with(user, || Bytes::copy_from_slice(message))
    }

    fn deliver_with(&self, user: &str, message: impl FnOnce() -> Bytes) -> usize {
        let sockets = self.inner.sockets();
        let Some(user_sockets) = sockets.get(user) else {
            return 0;
        };
        let message = message();
        let mut delivered = 0;
        for sender in user_sockets.values() {
            match sender.try_send(Outbound::Text(message.clone())) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!("A notification for user {user} was dropped: the socket's queue is full.")
                }
                // The socket is ending; it is about to unregister.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        delivered
    }
}

/// Keeps a socket registered until dropped.
pub(super) struct Registration {
    inner: Arc<Inner>,
    user: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sockets = self.inner.sockets();
        if let Some(user_sockets) = sockets.get_mut(&self.user) {
            user_sockets.remove(&self.id);
            if user_sockets.is_empty() {
                sockets.remove(&self.user);
            }
        }
        drop(sockets);
        self.inner.open.send_modify(|open| *open -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(outbound: Outbound) -> Bytes {
        match outbound {
            Outbound::Text(text) => text,
            _ => panic!("expected a text message"),
        }
    }

    #[test]
    fn delivers_to_every_socket_of_the_user_only() {
        let registry = Registry::default();
        let (a1, mut a1_rx) = mpsc::channel(4);
        let (a2, mut a2_rx) = mpsc::channel(4);
        let (b, mut b_rx) = mpsc::channel(4);
        let _ra1 = registry.register("a", a1);
        let _ra2 = registry.register("a", a2);
        let _rb = registry.register("b", b);
        assert_eq!(registry.open_sockets(), 3);

        assert_eq!(registry.deliver("a", Bytes::from_static(b"x")), 2);
        assert_eq!(text(a1_rx.try_recv().unwrap()), "x");
        assert_eq!(text(a2_rx.try_recv().unwrap()), "x");
        assert!(b_rx.try_recv().is_err());
        assert_eq!(registry.deliver("nobody", Bytes::from_static(b"x")), 0);

        assert_eq!(registry.deliver_copy("b", b"y"), 1);
        assert_eq!(text(b_rx.try_recv().unwrap()), "y");
        assert_eq!(registry.deliver_copy("nobody", b"y"), 0);
    }

    #[test]
    fn dropping_the_registration_unregisters() {
        let registry = Registry::default();
        let (a, _a_rx) = mpsc::channel(4);
        let registration = registry.register("a", a);
        drop(registration);
        assert_eq!(registry.open_sockets(), 0);
        assert_eq!(registry.deliver("a", Bytes::from_static(b"x")), 0);
        assert!(registry.inner.sockets().is_empty());
    }

    #[test]
    fn a_full_queue_is_not_counted() {
        let registry = Registry::default();
        let (a, _a_rx) = mpsc::channel(1);
        let _r = registry.register("a", a);
        assert_eq!(registry.deliver("a", Bytes::from_static(b"1")), 1);
        assert_eq!(registry.deliver("a", Bytes::from_static(b"2")), 0);
    }
}

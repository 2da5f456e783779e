//! The open tunnels of one proxy: id → a small handle that tells what the tunnel joins
//! and can end it. A tunnel is registered when it opens ([`Tunnels::open`]) and leaves
//! when its task ends ([`Registration`] is dropped). Nothing here is touched while bytes
//! move: the registry is read only to list tunnels and to end some of them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::control::{EndRequest, EndSignal, TunnelControl};

/// A tunnel's id, unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(pub u64);

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a tunnel joins, fixed when it opens.
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    pub id: TunnelId,
    /// The listener port the client connected to.
    pub listener_port: u16,
    pub client: SocketAddr,
    pub target: SocketAddr,
    /// The name of the target's group.
    pub target_group: Arc<str>,
    /// Who registered the target, as the caller keys targets (the target's id): the
    /// tunnels of one target are ended together.
    pub target_key: u64,
    /// When it opened, in microseconds since the Unix epoch (see
    /// [`TunnelInfo::opened_at`]; eight bytes instead of sixteen, per open tunnel).
    opened_us: u64,
}

impl TunnelInfo {
    /// When the tunnel opened.
    pub fn opened_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.opened_us)
    }
}

/// A new tunnel's [`TunnelInfo`] before it has an id and an opening time.
#[derive(Debug, Clone)]
pub struct NewTunnel {
    pub listener_port: u16,
    pub client: SocketAddr,
    pub target: SocketAddr,
    pub target_group: Arc<str>,
    pub target_key: u64,
}

/// One open tunnel, as the registry and the tunnel itself share it.
#[derive(Debug)]
pub struct TunnelHandle {
    info: TunnelInfo,
    control: TunnelControl,
}

impl TunnelHandle {
    pub fn info(&self) -> &TunnelInfo {
        &self.info
    }

    /// Ask the tunnel to end for `why`; true when no end was requested before.
    pub fn end(&self, why: EndRequest) -> bool {
        self.control.end(why)
    }

    /// The end requested, if any.
    pub fn requested(&self) -> Option<EndRequest> {
        self.control.requested()
    }
}

impl EndSignal for TunnelHandle {
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<EndRequest> {
        self.control.poll_end(cx)
    }
}

// Every open tunnel holds one handle: with the `Arc`'s two counts it is 160 bytes, one
// of the allocator's size classes (a few more bytes would cost 32).
const _: () = assert!(std::mem::size_of::<TunnelHandle>() <= 144);

/// The open tunnels of one proxy.
#[derive(Debug, Default)]
pub struct Tunnels {
    open: Mutex<HashMap<u64, Arc<TunnelHandle>>>,
    next_id: AtomicU64,
    /// Set by [`Tunnels::close`]: a tunnel opening afterwards is ended at once.
    closed: Mutex<Option<EndRequest>>,
    any_closed: AtomicBool,
}

impl Tunnels {
    pub fn new() -> Tunnels {
        Tunnels::default()
    }

    /// Register a tunnel that opens now. It stays listed until the returned
    /// [`Registration`] is dropped (when its task ends).
    pub fn open(self: &Arc<Self>, new: NewTunnel) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(TunnelHandle {
            info: TunnelInfo {
                id: TunnelId(id),
                listener_port: new.listener_port,
                client: new.client,
                target: new.target,
                target_group: new.target_group,
                target_key: new.target_key,
                opened_us: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            },
            control: TunnelControl::new(),
        });
        lock(&self.open).insert(id, handle.clone());
        if self.any_closed.load(Ordering::Acquire) {
            if let Some(why) = *lock(&self.closed) {
                handle.end(why);
            }
        }
        Registration {
            handle,
            tunnels: self.clone(),
        }
    }

    /// The open tunnels, in no particular order.
    pub fn list(&self) -> Vec<Arc<TunnelHandle>> {
        lock(&self.open).values().cloned().collect()
    }

    /// The open tunnel `id`.
    pub fn get(&self, id: TunnelId) -> Option<Arc<TunnelHandle>> {
        lock(&self.open).get(&id.0).cloned()
    }

    /// How many tunnels are open.
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// End tunnel `id` for `why`; false when no such tunnel is open.
    pub fn end(&self, id: TunnelId, why: EndRequest) -> bool {
        match self.get(id) {
            Some(handle) => {
                handle.end(why);
                true
            }
            None => false,
        }
    }

    /// End every open tunnel whose info matches `which`; how many were asked to.
    pub fn end_where(&self, which: impl Fn(&TunnelInfo) -> bool, why: EndRequest) -> usize {
        let chosen: Vec<Arc<TunnelHandle>> = lock(&self.open)
            .values()
            .filter(|h| which(&h.info))
            .cloned()
            .collect();
        for handle in &chosen {
            handle.end(why);
        }
        chosen.len()
    }

    /// End every open tunnel for `why`, and every tunnel that opens from now on.
    pub fn close(&self, why: EndRequest) -> usize {
        *lock(&self.closed) = Some(why);
        self.any_closed.store(true, Ordering::Release);
        self.end_where(|_| true, why)
    }
}

/// A tunnel's place in the registry, held by its task; dropping it unlists the tunnel.
#[derive(Debug)]
pub struct Registration {
    handle: Arc<TunnelHandle>,
    tunnels: Arc<Tunnels>,
}

impl Registration {
    pub fn handle(&self) -> &Arc<TunnelHandle> {
        &self.handle
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.tunnels.open).remove(&self.handle.info.id.0);
    }
}

/// Lock a mutex whose holders never panic mid-update; recover the data if one did.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_tunnel(target_key: u64) -> NewTunnel {
        NewTunnel {
            listener_port: 443,
            client: "127.0.0.1:50000".parse().unwrap(),
            target: "127.0.0.1:9001".parse().unwrap(),
            target_group: Arc::from("app"),
            target_key,
        }
    }

    #[test]
    fn tunnels_are_listed_while_registered_and_ended_by_id_or_target() {
        let tunnels = Arc::new(Tunnels::new());
        let a = tunnels.open(new_tunnel(1));
        let b = tunnels.open(new_tunnel(2));
        assert_ne!(a.handle().info().id, b.handle().info().id);
        assert_eq!(tunnels.len(), 2);

        assert!(tunnels.end(a.handle().info().id, EndRequest::Shutdown));
        assert_eq!(a.handle().requested(), Some(EndRequest::Shutdown));
        assert_eq!(b.handle().requested(), None);

        assert_eq!(
            tunnels.end_where(|i| i.target_key == 2, EndRequest::Deregistration),
            1
        );
        assert_eq!(b.handle().requested(), Some(EndRequest::Deregistration));

        let gone = a.handle().info().id;
        drop(a);
        assert_eq!(tunnels.len(), 1);
        assert!(!tunnels.end(gone, EndRequest::Shutdown));
    }

    #[test]
    fn after_close_new_tunnels_are_ended_at_once() {
        let tunnels = Arc::new(Tunnels::new());
        let open = tunnels.open(new_tunnel(1));
        assert_eq!(tunnels.close(EndRequest::Shutdown), 1);
        assert_eq!(open.handle().requested(), Some(EndRequest::Shutdown));
        let late = tunnels.open(new_tunnel(1));
        assert_eq!(late.handle().requested(), Some(EndRequest::Shutdown));
    }
}

//! The open tunnels of one proxy: id → a small handle that tells what the tunnel joins
//! and can end it. A tunnel is registered when it opens ([`Tunnels::open`]) and leaves
//! when its task ends ([`Registration`] is dropped). Nothing here is touched while bytes
//! move: the registry is read only to list tunnels and to end some of them.
//!
//! Every open tunnel holds one handle, so it is kept small: the target is the caller's
//! own record of it ([`TunnelTarget`], shared, not copied), the opening time eight bytes,
//! and the registry's table one pointer per tunnel.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use atomic_waker::AtomicWaker;
use rustc_hash::FxHashSet;

use super::control::{self, DisconnectMode, EndRequest, Supervisor};
use super::record::{CloseCause, CopyPath, TunnelRecord};

/// A tunnel's id, unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(pub u64);

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a tunnel knows of its target: the caller's record of a registered target.
pub trait TunnelTarget: fmt::Debug + Send + Sync {
    /// The target's address.
    fn addr(&self) -> SocketAddr;
    /// The name of the target group it is registered in.
    fn group(&self) -> &Arc<str>;
    /// Which registration of the target this is: the tunnels of one registration are
    /// ended together (see [`Tunnels::end_where`]).
    fn key(&self) -> u64;
}

/// What a tunnel joins (fixed when it opens) and how far it got (as of the moment this
/// was taken).
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    pub id: TunnelId,
    /// The listener port the client connected to.
    pub listener_port: u16,
    pub client: SocketAddr,
    pub target: Arc<dyn TunnelTarget>,
    /// How its bytes are copied.
    pub path: CopyPath,
    /// When it opened, in microseconds since the Unix epoch.
    opened_us: u64,
    /// Bytes the client sent through the tunnel so far (bytes read past its request head
    /// included), as of the last time bytes moved.
    pub bytes_from_client: u64,
    /// Bytes sent to the client through the tunnel so far (bytes read past the `101`
    /// included).
    pub bytes_to_client: u64,
    /// How long no byte has moved either way (since it opened, if none has).
    pub idle_for: Duration,
}

impl TunnelInfo {
    /// When the tunnel opened.
    pub fn opened_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.opened_us)
    }

    /// The target's address.
    pub fn target_addr(&self) -> SocketAddr {
        self.target.addr()
    }

    /// The name of the target's group.
    pub fn target_group(&self) -> &Arc<str> {
        self.target.group()
    }
}

/// A new tunnel, before it has an id and an opening time.
#[derive(Debug, Clone)]
pub struct NewTunnel {
    pub listener_port: u16,
    pub client: SocketAddr,
    pub target: Arc<dyn TunnelTarget>,
    pub path: CopyPath,
}

/// One open tunnel, as the registry and the tunnel itself share it: what it joins, how
/// far it got, and its end request (the fields of a [`super::TunnelControl`], side by
/// side with the rest so no padding is paid twice).
pub struct TunnelHandle {
    id: TunnelId,
    opened_us: u64,
    client: PackedAddr,
    target: Arc<dyn TunnelTarget>,
    listener_port: u16,
    path: CopyPath,
    requested: AtomicU8,
    waker: AtomicWaker,
    /// Bytes written client → target and target → client, stored by the tunnel (one
    /// writer) each time bytes moved; read only to list tunnels.
    up: AtomicU64,
    down: AtomicU64,
    /// When bytes last moved, in microseconds since [`clock_base`].
    last_activity_us: AtomicU64,
}

// With the `Arc`'s two counts a handle is 128 bytes, one of the allocator's size
// classes; a few bytes more would cost 32.
const _: () = assert!(std::mem::size_of::<TunnelHandle>() <= 112);

/// The instant activity times are counted from: the first time a tunnel opened.
fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// `at` in microseconds since [`clock_base`].
fn since_base(at: Instant) -> u64 {
    at.saturating_duration_since(clock_base()).as_micros() as u64
}

/// A socket address in 19 bytes instead of 32: the IP (an IPv4 address as IPv4-mapped
/// IPv6), the port, and which family it was (no IPv6 flow label or scope id).
#[derive(Debug, Clone, Copy)]
struct PackedAddr {
    ip: [u8; 16],
    port: u16,
    v4: bool,
}

impl From<SocketAddr> for PackedAddr {
    fn from(addr: SocketAddr) -> PackedAddr {
        let (ip, v4) = match addr.ip() {
            IpAddr::V4(ip) => (ip.to_ipv6_mapped().octets(), true),
            IpAddr::V6(ip) => (ip.octets(), false),
        };
        PackedAddr {
            ip,
            port: addr.port(),
            v4,
        }
    }
}

impl From<PackedAddr> for SocketAddr {
    fn from(p: PackedAddr) -> SocketAddr {
        let ip = Ipv6Addr::from(p.ip);
        match (p.v4, ip.to_ipv4_mapped()) {
            (true, Some(v4)) => SocketAddr::new(IpAddr::V4(v4), p.port),
            _ => SocketAddr::new(IpAddr::V6(ip), p.port),
        }
    }
}

impl fmt::Debug for TunnelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelHandle")
            .field("info", &self.info())
            .field("requested", &self.requested())
            .finish()
    }
}

impl TunnelHandle {
    pub fn id(&self) -> TunnelId {
        self.id
    }

    /// What the tunnel joins, and how far it got now.
    pub fn info(&self) -> TunnelInfo {
        let last = Duration::from_micros(self.last_activity_us.load(Ordering::Relaxed));
        TunnelInfo {
            id: self.id,
            listener_port: self.listener_port,
            client: self.client.into(),
            target: self.target.clone(),
            path: self.path,
            opened_us: self.opened_us,
            bytes_from_client: self.up.load(Ordering::Relaxed),
            bytes_to_client: self.down.load(Ordering::Relaxed),
            idle_for: Instant::now().saturating_duration_since(clock_base() + last),
        }
    }

    /// Ask the tunnel to end for `why`; true when no end was requested before.
    pub fn end(&self, why: EndRequest) -> bool {
        control::request(&self.requested, &self.waker, why)
    }

    /// The end requested, if any.
    pub fn requested(&self) -> Option<EndRequest> {
        control::requested(&self.requested)
    }
}

impl Supervisor for TunnelHandle {
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<EndRequest> {
        control::poll_requested(&self.requested, &self.waker, cx, None)
    }

    fn poll_end_after(&self, cx: &mut Context<'_>, seen: EndRequest) -> Poll<EndRequest> {
        control::poll_requested(&self.requested, &self.waker, cx, Some(seen))
    }

    /// Plain stores: the tunnel is the only writer.
    fn progress(&self, up: u64, down: u64, at: Instant) {
        self.up.store(up, Ordering::Relaxed);
        self.down.store(down, Ordering::Relaxed);
        self.last_activity_us
            .store(since_base(at), Ordering::Relaxed);
    }
}

/// A handle in the registry's table, found by its id.
struct ById(Arc<TunnelHandle>);

impl PartialEq for ById {
    fn eq(&self, other: &ById) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.0.hash(state)
    }
}

impl Borrow<u64> for ById {
    fn borrow(&self) -> &u64 {
        &self.0.id.0
    }
}

/// The open tunnels of one proxy.
#[derive(Default)]
pub struct Tunnels {
    /// Tunnel ids are a counter: Fx hashing spreads them well enough, for less than
    /// SipHash costs per tunnel opened and closed.
    open: Mutex<FxHashSet<ById>>,
    next_id: AtomicU64,
    /// Set by [`Tunnels::close`]: a tunnel opening afterwards is ended at once, for
    /// the same reason.
    closed: OnceLock<EndRequest>,
    /// The records of the last [`RECENT`] tunnels that ended, newest last.
    recent: Mutex<VecDeque<Arc<TunnelRecord>>>,
    /// Ended tunnels by cause (index: [`CloseCause::index`]).
    ended: [AtomicU64; CloseCause::ALL.len()],
    /// Bytes ended tunnels carried, both ways.
    bytes: AtomicU64,
}

/// How many ended tunnels' records are kept for the dashboard.
pub const RECENT: usize = 50;

impl fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnels")
            .field("open", &self.len())
            .finish_non_exhaustive()
    }
}

impl Tunnels {
    pub fn new() -> Tunnels {
        Tunnels::default()
    }

    /// Register a tunnel that opens now. It stays listed until the returned
    /// [`Registration`] is dropped (when its task ends).
    pub fn open(self: &Arc<Self>, new: NewTunnel) -> Registration {
        let id = TunnelId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let handle = Arc::new(TunnelHandle {
            id,
            opened_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            client: new.client.into(),
            target: new.target,
            listener_port: new.listener_port,
            path: new.path,
            requested: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            last_activity_us: AtomicU64::new(since_base(Instant::now())),
        });
        lock(&self.open).insert(ById(handle.clone()));
        if let Some(&why) = self.closed.get() {
            handle.end(why);
        }
        Registration {
            handle,
            tunnels: self.clone(),
        }
    }

    /// The open tunnels, in no particular order.
    pub fn list(&self) -> Vec<Arc<TunnelHandle>> {
        lock(&self.open).iter().map(|h| h.0.clone()).collect()
    }

    /// What each open tunnel joins and how far it got, by id.
    pub fn infos(&self) -> Vec<TunnelInfo> {
        let mut open: Vec<TunnelInfo> = self.list().iter().map(|h| h.info()).collect();
        open.sort_by_key(|t| t.id);
        open
    }

    /// The open tunnel `id`.
    pub fn get(&self, id: TunnelId) -> Option<Arc<TunnelHandle>> {
        lock(&self.open).get(&id.0).map(|h| h.0.clone())
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

    /// End every open tunnel whose handle matches `which`; how many were asked to.
    pub fn end_where(&self, which: impl Fn(&TunnelHandle) -> bool, why: EndRequest) -> usize {
        let chosen: Vec<Arc<TunnelHandle>> = lock(&self.open)
            .iter()
            .filter(|h| which(&h.0))
            .map(|h| h.0.clone())
            .collect();
        for handle in &chosen {
            handle.end(why);
        }
        chosen.len()
    }

    /// Disconnect tunnel `id` as `mode` says; what it was, or `None` when no such tunnel
    /// is open.
    pub fn disconnect(&self, id: TunnelId, mode: DisconnectMode) -> Option<TunnelInfo> {
        let handle = self.get(id)?;
        handle.end(EndRequest::Disconnect(mode));
        Some(handle.info())
    }

    /// Disconnect every open tunnel to `target` in group `group` as `mode` says; what
    /// they were, by id.
    pub fn disconnect_target(
        &self,
        group: &str,
        target: SocketAddr,
        mode: DisconnectMode,
    ) -> Vec<TunnelInfo> {
        let mut chosen: Vec<TunnelInfo> = lock(&self.open)
            .iter()
            .filter(|h| &**h.0.target.group() == group && h.0.target.addr() == target)
            .map(|h| h.0.info())
            .collect();
        chosen.sort_by_key(|t| t.id);
        for t in &chosen {
            self.end(t.id, EndRequest::Disconnect(mode));
        }
        chosen
    }

    /// End the tunnels of the target registration `key` (see [`TunnelTarget::key`]).
    pub fn end_target(&self, key: u64, why: EndRequest) -> usize {
        self.end_where(|h| h.target.key() == key, why)
    }

    /// The records of the tunnels that ended last (at most [`RECENT`]), newest first.
    pub fn recent(&self) -> Vec<Arc<TunnelRecord>> {
        lock(&self.recent).iter().rev().cloned().collect()
    }

    /// How many tunnels ended, by cause (every cause listed, zeros included).
    pub fn ended(&self) -> [(CloseCause, u64); CloseCause::ALL.len()] {
        CloseCause::ALL.map(|c| (c, self.ended[c.index()].load(Ordering::Relaxed)))
    }

    /// Bytes the tunnels that ended carried, both ways.
    pub fn ended_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Keep `record` of a tunnel that ended, and count it.
    fn note_end(&self, record: Arc<TunnelRecord>) {
        self.ended[record.cause.index()].fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(
            record.bytes_from_client + record.bytes_to_client,
            Ordering::Relaxed,
        );
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// End every open tunnel for `why`, and every tunnel that opens from now on.
    pub fn close(&self, why: EndRequest) -> usize {
        let _ = self.closed.set(why);
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

    /// The tunnel ended as `report` says: make its record, log it, keep it among the
    /// recent ones and count its cause; then the tunnel leaves the registry.
    pub fn finish(self, report: super::TunnelReport) -> Arc<TunnelRecord> {
        let record = Arc::new(TunnelRecord::new(&self.handle.info(), report));
        record.log();
        self.tunnels.note_end(record.clone());
        record
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.tunnels.open).remove(&self.handle.id.0);
    }
}

/// Lock a mutex whose holders never panic mid-update; recover the data if one did.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Target(u64, Arc<str>);

    impl TunnelTarget for Target {
        fn addr(&self) -> SocketAddr {
            "127.0.0.1:9001".parse().unwrap()
        }
        fn group(&self) -> &Arc<str> {
            &self.1
        }
        fn key(&self) -> u64 {
            self.0
        }
    }

    fn new_tunnel(target_key: u64) -> NewTunnel {
        NewTunnel {
            listener_port: 443,
            client: "127.0.0.1:50000".parse().unwrap(),
            target: Arc::new(Target(target_key, Arc::from("app"))),
            path: CopyPath::Splice,
        }
    }

    #[test]
    fn tunnels_are_listed_while_registered_and_ended_by_id_or_target() {
        let tunnels = Arc::new(Tunnels::new());
        let a = tunnels.open(new_tunnel(1));
        let b = tunnels.open(new_tunnel(2));
        assert_ne!(a.handle().id(), b.handle().id());
        assert_eq!(tunnels.len(), 2);
        let info = a.handle().info();
        assert_eq!((info.listener_port, &**info.target_group()), (443, "app"));
        assert_eq!(info.target_addr(), "127.0.0.1:9001".parse().unwrap());

        assert!(tunnels.end(a.handle().id(), EndRequest::Shutdown));
        assert_eq!(a.handle().requested(), Some(EndRequest::Shutdown));
        assert_eq!(b.handle().requested(), None);

        assert_eq!(tunnels.end_target(2, EndRequest::Deregistration), 1);
        assert_eq!(b.handle().requested(), Some(EndRequest::Deregistration));

        let gone = a.handle().id();
        drop(a);
        assert_eq!(tunnels.len(), 1);
        assert!(!tunnels.end(gone, EndRequest::Shutdown));
    }

    #[test]
    fn client_addresses_keep_their_family() {
        for addr in ["127.0.0.1:50000", "[::1]:443", "[::ffff:10.0.0.1]:8080"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(SocketAddr::from(PackedAddr::from(addr)), addr, "{addr}");
        }
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

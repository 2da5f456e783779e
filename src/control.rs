//! The control plane: the running config and every change to it.
//!
//! A change is a whole new config, validated by `config` before anything moves; a
//! reload reads it from where the running one came from. Applying it is one step for
//! requests:
//!
//! 1. listeners the config adds are bound (a port that cannot be bound fails the change,
//!    and nothing else has moved);
//! 2. target groups follow it (`target_group::TargetGroups::apply`): kept groups keep
//!    their targets and health, new ones start, removed ones drain;
//! 3. every listener it keeps switches to a view of the new model at once; new
//!    listeners start accepting; removed ones stop accepting.
//!
//! A request reads its listener's view once, so it is served by one config or the next,
//! never half of each; a tunnel keeps the target and idle timeout it started with, and no
//! change closes one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::{self, Config, ConfigErrors, Origin};
use crate::listener::{BindError, BoundListener, Listeners};
use crate::proxy::{Model, Runtime};
use crate::target_group::{HealthState, TargetsError};
use crate::tunnel::{DisconnectMode, TunnelId, TunnelInfo};

/// Where the running config came from, so that a reload can read it again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, read again at each reload.
    File(PathBuf),
    /// A text (the embedded default, or a string given to the library).
    Text(String),
    /// A [`Config`] built by the caller: there is nothing to read again.
    Value,
}

/// Why a change was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The new config has errors (every one of them).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A listener the new config adds cannot be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The running config was given as a value, not read from a file or a text.
    #[error(
        "The running configuration was not read from a file or a text; there is nothing to reload."
    )]
    NoSource,
}

/// The admin listener's socket, bound by the control plane and handed to the admin
/// server: `Some` to serve (replacing the one served before), `None` to stop.
pub type AdminSocket = Option<(TcpListener, SocketAddr)>;

/// Why an edit of the running config was not applied.
#[derive(Debug, thiserror::Error)]
pub enum EditError<E> {
    /// The edit itself refused (e.g. it names something that does not exist).
    #[error("{0}")]
    Refused(E),
    /// The edited config was refused as a whole.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The running config was given as a value: there is no text to edit.
    #[error("The running configuration was given as a value, not as a text; it cannot be edited.")]
    NoDocument,
}

/// What a change applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub listeners: usize,
    pub rules: usize,
    pub target_groups: usize,
}

/// The running config and the means to change it.
pub struct Control {
    runtime: Arc<Runtime>,
    listeners: Listeners,
    /// The folder relative paths resolve against, and the name errors carry.
    origin: Origin,
    source: ConfigSource,
    model: ArcSwap<Model>,
    /// The running config as a TOML document, which API changes edit (`None` when the
    /// config was given as a value).
    document: Mutex<Option<toml::Table>>,
    /// Where the admin server takes its socket from, and the socket's addresses
    /// (configured, bound).
    admin: mpsc::UnboundedSender<AdminSocket>,
    admin_addr: Mutex<Option<(SocketAddr, SocketAddr)>>,
    /// Counts applied reloads (the file becoming the running state again).
    reloads: std::sync::atomic::AtomicU64,
    /// Serialises changes.
    changing: tokio::sync::Mutex<()>,
}

impl Control {
    /// Serve `config`, read from `source` (relative paths against `origin`): bind every
    /// listener first, so a port that cannot be bound fails the start before anything
    /// runs.
    pub async fn start(
        runtime: Arc<Runtime>,
        config: Config,
        origin: Origin,
        source: ConfigSource,
        admin: mpsc::UnboundedSender<AdminSocket>,
    ) -> Result<Control, BindError> {
        let listeners = Listeners::new();
        let bound = listeners.bind(&config).await?;
        let admin_socket = bind_admin(&config, None).await?;
        let document = match &source {
            ConfigSource::File(path) => std::fs::read_to_string(path).ok(),
            ConfigSource::Text(text) => Some(text.clone()),
            ConfigSource::Value => None,
        }
        .and_then(|t| t.parse::<toml::Table>().ok());
        let model = runtime.model(Arc::new(config)).await;
        listeners.serve(&model, bound, &runtime);
        let control = Control {
            runtime,
            listeners,
            origin,
            source,
            model: ArcSwap::new(model),
            document: Mutex::new(document),
            admin,
            admin_addr: Mutex::new(None),
            reloads: std::sync::atomic::AtomicU64::new(0),
            changing: tokio::sync::Mutex::new(()),
        };
        control.hand_admin_socket(admin_socket);
        Ok(control)
    }

    /// The admin listener's bound address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        lock(&self.admin_addr).map(|(_, bound)| bound)
    }

    /// How many reloads were applied since the start: what the API derived from the
    /// running state (e.g. the ids of moved rules) is stale once it moved.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Hand the admin server what `bind_admin` decided.
    fn hand_admin_socket(&self, socket: AdminChange) {
        match socket {
            AdminChange::Keep => {}
            AdminChange::Stop => {
                *lock(&self.admin_addr) = None;
                let _ = self.admin.send(None);
            }
            AdminChange::Serve {
                configured,
                socket,
                bound,
            } => {
                tracing::info!("Admin listener on http://{bound}");
                *lock(&self.admin_addr) = Some((configured, bound));
                let _ = self.admin.send(Some((socket, bound)));
            }
        }
    }

    /// The model requests are served with now.
    pub fn model(&self) -> Arc<Model> {
        self.model.load_full()
    }

    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        self.model.load().config.clone()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The open tunnels, by id.
    pub fn tunnels(&self) -> Vec<TunnelInfo> {
        self.runtime.tunnels.infos()
    }

    /// End tunnel `id` as `mode` says; what it was, or `None` when no such tunnel is open.
    pub fn disconnect(&self, id: TunnelId, mode: DisconnectMode) -> Option<TunnelInfo> {
        self.runtime.tunnels.disconnect(id, mode)
    }

    /// End every open tunnel to `target` of group `group` as `mode` says; what they were,
    /// by id. An unknown group, or a target that is neither registered in it nor has a
    /// tunnel from it, is an error.
    pub fn disconnect_target(
        &self,
        group: &str,
        target: SocketAddr,
        mode: DisconnectMode,
    ) -> Result<Vec<TunnelInfo>, TargetsError> {
        let registered = self
            .runtime
            .targets
            .by_name(group)?
            .describe_target(target)
            .state
            != HealthState::Unused;
        let ended = self.runtime.tunnels.disconnect_target(group, target, mode);
        if ended.is_empty() && !registered {
            return Err(TargetsError::NotRegistered(target));
        }
        Ok(ended)
    }

    /// The listeners as bound, in config order.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.listeners.list()
    }

    /// Serve `config` from now on (see the module docs), the change lock held. On an
    /// error nothing changed.
    async fn apply_locked(&self, config: Config) -> Result<Applied, ChangeError> {
        let bound = self.listeners.bind(&config).await?;
        let configured_admin = lock(&self.admin_addr).map(|(configured, _)| configured);
        let admin_socket = bind_admin(&config, configured_admin).await?;
        let applied = Applied {
            listeners: config.listeners.len(),
            rules: config.listeners.iter().map(|l| l.rules.len()).sum(),
            target_groups: config.target_groups.len(),
        };
        let old = self.model.load_full();
        if old.config.backends != config.backends {
            tracing::warn!(
                "The in-process backends ([[backend]]) changed; they keep running as they \
                 started until the process restarts."
            );
        }
        let model = self.runtime.model(Arc::new(config)).await;
        self.listeners.serve(&model, bound, &self.runtime);
        self.model.store(model);
        self.hand_admin_socket(admin_socket);
        Ok(applied)
    }

    /// Edit the running config's document with `edit` (the API's changes), then validate
    /// and apply the result as a whole, like a reload; on any refusal nothing changed.
    /// TLS settings the edit did not touch keep their server config (and so their
    /// session tickets). Warnings are not logged again.
    pub async fn edit<E>(
        &self,
        edit: impl FnOnce(&mut toml::Table, &Config) -> Result<(), E>,
    ) -> Result<Applied, EditError<E>> {
        let _changing = self.changing.lock().await;
        let Some(mut document) = lock(&self.document).clone() else {
            return Err(EditError::NoDocument);
        };
        let old = self.config();
        edit(&mut document, &old).map_err(EditError::Refused)?;
        let text = toml::to_string(&document).map_err(|e| {
            EditError::Change(ChangeError::Config(ConfigErrors(vec![
                config::ConfigError {
                    file: self.origin.name.clone(),
                    line: None,
                    column: None,
                    message: format!("the edited configuration cannot be written as TOML: {e}"),
                },
            ])))
        })?;
        let mut config = config::validate::validate_quietly(&text, &self.origin)
            .result
            .map_err(ChangeError::Config)?;
        config.source = old.source.clone();
        for (new, old) in config.listeners.iter_mut().zip(old.listeners.iter()) {
            if let (Some(n), Some(o)) = (&mut new.tls, &old.tls) {
                if n.certificates == o.certificates && n.ssl_policy == o.ssl_policy {
                    n.server_config = o.server_config.clone();
                }
            }
        }
        let applied = self.apply_locked(config).await?;
        *lock(&self.document) = Some(document);
        Ok(applied)
    }

    /// Read the config again from where it came from and apply it. A config with errors
    /// changes nothing; the errors are logged and returned.
    pub async fn reload(&self) -> Result<Applied, ChangeError> {
        let text = match &self.source {
            ConfigSource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => {
                    let e = ChangeError::Config(ConfigErrors(vec![config::ConfigError {
                        file: self.origin.name.clone(),
                        line: None,
                        column: None,
                        message: format!("cannot read the config file: {e}"),
                    }]));
                    tracing::warn!("The reload was refused; the running configuration stays:\n{e}");
                    return Err(e);
                }
            },
            ConfigSource::Text(text) => text.clone(),
            ConfigSource::Value => return Err(ChangeError::NoSource),
        };
        self.reload_str(&text).await
    }

    /// Apply the config `text` (relative paths resolve as the running config's did); it
    /// becomes the document API changes edit.
    pub async fn reload_str(&self, text: &str) -> Result<Applied, ChangeError> {
        let result = config::validate::validate(text, &self.origin).result;
        let outcome = match result {
            Ok(mut config) => {
                if let ConfigSource::File(path) = &self.source {
                    config.source = Some(path.clone());
                }
                let _changing = self.changing.lock().await;
                let applied = self.apply_locked(config).await;
                if applied.is_ok() {
                    *lock(&self.document) = text.parse::<toml::Table>().ok();
                    self.reloads
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                applied
            }
            Err(e) => Err(ChangeError::Config(e)),
        };
        match &outcome {
            Ok(a) => tracing::info!(
                "Configuration reloaded: {} listeners, {} rules, {} target groups.",
                a.listeners,
                a.rules,
                a.target_groups
            ),
            Err(e) => {
                tracing::warn!("The reload was refused; the running configuration stays:\n{e}")
            }
        }
        outcome
    }
}

/// What a config asks of the admin listener, against what is served.
enum AdminChange {
    Keep,
    Stop,
    Serve {
        configured: SocketAddr,
        socket: TcpListener,
        bound: SocketAddr,
    },
}

/// Bind `config`'s admin listener unless `serving` (the configured address served now)
/// is already it.
async fn bind_admin(
    config: &Config,
    serving: Option<SocketAddr>,
) -> Result<AdminChange, BindError> {
    match (&config.admin, serving) {
        (None, None) => Ok(AdminChange::Keep),
        (None, Some(_)) => Ok(AdminChange::Stop),
        (Some(a), Some(s)) if a.listen == s => Ok(AdminChange::Keep),
        (Some(a), _) => {
            let socket = TcpListener::bind(a.listen)
                .await
                .map_err(|source| BindError {
                    addr: a.listen,
                    source,
                })?;
            let bound = socket.local_addr().map_err(|source| BindError {
                addr: a.listen,
                source,
            })?;
            Ok(AdminChange::Serve {
                configured: a.listen,
                socket,
                bound,
            })
        }
    }
}

/// Lock a mutex whose holders never panic mid-update; recover the data if one did.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{self, Config, ConfigErrors, Origin};
use crate::listener::{BindError, BoundListener, Listeners};
use crate::proxy::{Model, Runtime};

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
    ) -> Result<Control, BindError> {
        let listeners = Listeners::new();
        let bound = listeners.bind(&config).await?;
        let model = runtime.model(Arc::new(config)).await;
        listeners.serve(&model, bound, &runtime);
        Ok(Control {
            runtime,
            listeners,
            origin,
            source,
            model: ArcSwap::new(model),
            changing: tokio::sync::Mutex::new(()),
        })
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

    /// The listeners as bound, in config order.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.listeners.list()
    }

    /// Serve `config` from now on (see the module docs). On an error nothing changed.
    pub async fn apply(&self, config: Config) -> Result<Applied, ChangeError> {
        let _changing = self.changing.lock().await;
        let bound = self.listeners.bind(&config).await?;
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
        Ok(applied)
    }

    /// Read the config again from where it came from and apply it. A config with errors
    /// changes nothing; the errors are logged and returned.
    pub async fn reload(&self) -> Result<Applied, ChangeError> {
        let validated = match &self.source {
            ConfigSource::File(path) => config::check_file(path),
            ConfigSource::Text(text) => config::validate::validate(text, &self.origin),
            ConfigSource::Value => return Err(ChangeError::NoSource),
        };
        self.apply_validated(validated.result).await
    }

    /// Apply the config `text` (relative paths resolve as the running config's did).
    pub async fn reload_str(&self, text: &str) -> Result<Applied, ChangeError> {
        let validated = config::validate::validate(text, &self.origin);
        self.apply_validated(validated.result).await
    }

    async fn apply_validated(
        &self,
        result: Result<Config, ConfigErrors>,
    ) -> Result<Applied, ChangeError> {
        let outcome = match result {
            Ok(mut config) => {
                if let ConfigSource::File(path) = &self.source {
                    config.source = Some(path.clone());
                }
                self.apply(config).await
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

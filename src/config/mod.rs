//! Config: TOML text in, validated [`model::Config`] out.
//!
//! `file` mirrors the TOML exactly (serde, unknown keys rejected); `validate` turns it into
//! the immutable runtime `model`, collecting every problem with its location.
//!
//! Flow: text → `document` (TOML syntax, unknown keys, types; each table on its own) →
//! [`file::FileConfig`] → `validate` (defaults, ALB ranges, names, certificates) →
//! [`model::Config`]. Errors display as `FILE:LINE:COL: message`; durations below one of
//! ALB's minimums are accepted and logged as `FILE:LINE:COL: warning: message`.
//!
//! Precedence of settings: a rule's action, else the listener's default action; a forward
//! action's stickiness (`AWSALBTG`) picks the target group, then the target group's own
//! stickiness and algorithm pick the target; `[load_balancer]` timeouts apply everywhere.

mod describe;
mod document;
pub mod duration;
pub mod file;
pub mod model;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::Config;

/// The embedded default configuration (`config/default.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// One problem found in a config, with its location when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or a name such as `<embedded default>`).
    pub file: String,
    /// 1-based line and column, when the problem has a place in the text.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// A sentence.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in a config, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where a config text came from: its display name and the folder that relative paths
/// (certificates, logs) are resolved against.
#[derive(Debug, Clone)]
pub struct Origin {
    pub name: String,
    pub base_dir: PathBuf,
}

pub use describe::{describe, forward_groups};
pub use duration::parse as parse_duration;
pub use validate::Validated;

impl Origin {
    /// The origin of a file: named as given, relative paths resolved against its folder.
    pub fn file(path: &Path) -> Origin {
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Origin {
            name: path.display().to_string(),
            base_dir,
        }
    }

    /// The embedded default config: relative paths resolve against the working directory.
    pub fn embedded() -> Origin {
        Origin {
            name: "<embedded default>".to_string(),
            base_dir: PathBuf::from("."),
        }
    }
}

/// Read and validate a config file. Warnings are logged (`tracing::warn!`).
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    check_file(path).result
}

/// Read and validate a config file, returning the warnings too (for `albatross check`).
pub fn check_file(path: &Path) -> Validated {
    let origin = Origin::file(path);
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut v = validate::validate(&text, &origin);
            if let Ok(c) = &mut v.result {
                c.source = Some(path.to_path_buf());
            }
            v
        }
        Err(e) => Validated {
            result: Err(ConfigErrors(vec![ConfigError {
                file: origin.name,
                line: None,
                column: None,
                message: format!("cannot read the config file: {e}"),
            }])),
            warnings: Vec::new(),
        },
    }
}

/// Validate a config text. Warnings are logged (`tracing::warn!`).
pub fn from_str(text: &str, origin: &Origin) -> Result<Config, ConfigErrors> {
    validate::validate(text, origin).result
}

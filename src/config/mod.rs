//! Config: TOML text in, validated [`model::Config`] out.
//!
//! `file` mirrors the TOML exactly (serde, unknown keys rejected); `validate` turns it into
//! the immutable runtime `model`, collecting every problem with its location.

pub mod model;

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

/// Read and validate a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let _ = path;
    Err(ConfigErrors(vec![]))
}

/// Validate a config text.
pub fn from_str(text: &str, origin: &Origin) -> Result<Config, ConfigErrors> {
    let _ = (text, origin);
    Err(ConfigErrors(vec![]))
}

/// A human-readable description of the effective model, for `albatross check`.
pub fn describe(config: &Config) -> String {
    format!("{config:#?}")
}

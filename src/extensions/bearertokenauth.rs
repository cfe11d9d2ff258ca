//! `bearertokenauth` extension (the collector's contrib `extension/bearertokenauthextension`): a
//! bearer token that receivers require and exporters send, through `auth: { authenticator:
//! bearertokenauth }` (see [`super::auth`] for how the references are resolved).
//!
//! ```yaml
//! extensions:
//!   bearertokenauth:
//!     token: ${env:OTLP_TOKEN}      # or
//!     filename: /run/secrets/token  # read once at start (not watched)
//!     scheme: Bearer                # the collector's default; exporters send "<scheme> <token>"
//!     header: Authorization
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::auth::Passive;
use crate::component::{BuildResult, Extension, Factory, Registration};
use crate::config::{self, types::Secret, DecodeError, Value};

pub const REGISTRATION: Registration = Registration {
    type_name: "bearertokenauth",
    factory: Factory::Extension { build },
    defaults: crate::component::defaults::<BearerTokenConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BearerTokenConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<PathBuf>,
    pub scheme: String,
    pub header: String,
}

impl Default for BearerTokenConfig {
    fn default() -> Self {
        BearerTokenConfig {
            token: None,
            filename: None,
            scheme: "Bearer".into(),
            header: "Authorization".into(),
        }
    }
}

impl BearerTokenConfig {
    /// The token: inline, or the trimmed contents of `filename`.
    pub fn token(&self) -> Result<String, DecodeError> {
        match (&self.token, &self.filename) {
            (Some(t), None) if !t.expose().is_empty() => Ok(t.expose().to_string()),
            (Some(_), None) => Err(DecodeError::new("token", "is empty")),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    DecodeError::new("filename", format!("cannot read {}: {e}", f.display()))
                })
                .and_then(|t| {
                    if t.is_empty() {
                        Err(DecodeError::new(
                            "filename",
                            format!("{} is empty", f.display()),
                        ))
                    } else {
                        Ok(t)
                    }
                }),
            (Some(_), Some(_)) => Err(DecodeError::new(
                "filename",
                "set either token or filename, not both",
            )),
            (None, None) => Err(DecodeError::new("token", "token or filename is required")),
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Extension> {
    let cfg: BearerTokenConfig = config::decode(v)?;
    match (&cfg.token, &cfg.filename) {
        (Some(t), None) if t.expose().is_empty() => Err(DecodeError::new("token", "is empty")),
        (Some(_), Some(_)) => Err(DecodeError::new(
            "filename",
            "set either token or filename, not both",
        )),
        _ => Ok(Box::new(Passive)),
    }
}

//! `basicauth` extension (the collector's contrib `extension/basicauthextension`): HTTP Basic
//! credentials that exporters send (`client_auth`) and receivers check (`htpasswd`), through
//! `auth: { authenticator: basicauth }` (see [`super::auth`]).
//!
//! ```yaml
//! extensions:
//!   basicauth/client:
//!     client_auth: { username: agent, password: ${env:PASSWORD} }
//!   basicauth/server:
//!     htpasswd:
//!       inline: |
//!         agent:s3cret          # plain `user:password` lines
//!       file: /etc/otelcol/htpasswd
//! ```
//!
//! `htpasswd` lines must hold plain passwords: hashed entries (`$apr1$`, `{SHA}`, bcrypt) are
//! refused with a clear error.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::auth::Passive;
use crate::component::{BuildResult, Extension, Factory, Registration};
use crate::config::{self, types::Secret, DecodeError, Value};

pub const REGISTRATION: Registration = Registration {
    type_name: "basicauth",
    factory: Factory::Extension { build },
    defaults: crate::component::defaults::<BasicAuthConfig>,
};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<Htpasswd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Htpasswd {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline: Option<Secret>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAuth {
    pub username: String,
    pub password: Secret,
}

impl BasicAuthConfig {
    /// `(user, password)` pairs of `htpasswd` (inline, then the file).
    pub fn users(&self) -> Result<Vec<(String, String)>, DecodeError> {
        let Some(h) = &self.htpasswd else {
            return Err(DecodeError::new(
                "htpasswd",
                "is required to check credentials",
            ));
        };
        let mut text = h
            .inline
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        if let Some(f) = &h.file {
            let file = std::fs::read_to_string(f).map_err(|e| {
                DecodeError::new("htpasswd.file", format!("cannot read {}: {e}", f.display()))
            })?;
            text.push('\n');
            text.push_str(&file);
        }
        parse_htpasswd(&text)
    }

    /// The `Authorization` value an exporter sends.
    pub fn client_header(&self) -> Result<String, DecodeError> {
        use base64::Engine as _;
        let Some(c) = &self.client_auth else {
            return Err(DecodeError::new(
                "client_auth",
                "is required to send credentials",
            ));
        };
        let raw = format!("{}:{}", c.username, c.password.expose());
        Ok(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }
}

/// `user:password` lines; blank lines and `#` comments skipped.
pub fn parse_htpasswd(text: &str) -> Result<Vec<(String, String)>, DecodeError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, pass)) = line.split_once(':') else {
            return Err(DecodeError::new(
                "htpasswd",
                format!("line {}: expected user:password", i + 1),
            ));
        };
        if pass.starts_with("$apr1$") || pass.starts_with("{SHA}") || pass.starts_with("$2") {
            return Err(DecodeError::new(
                "htpasswd",
                format!(
                    "line {}: hashed passwords are not supported; write user:password",
                    i + 1
                ),
            ));
        }
        out.push((user.to_string(), pass.to_string()));
    }
    Ok(out)
}

fn build(v: &Value) -> BuildResult<dyn Extension> {
    let cfg: BasicAuthConfig = config::decode(v)?;
    if let Some(h) = &cfg.htpasswd {
        if let Some(inline) = &h.inline {
            parse_htpasswd(inline.expose())?;
        }
    }
    Ok(Box::new(Passive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_and_client_header() {
        assert_eq!(
            parse_htpasswd("# users\nagent:s3cret\n\nbob:pw:with:colons\n").unwrap(),
            vec![
                ("agent".into(), "s3cret".into()),
                ("bob".into(), "pw:with:colons".into())
            ]
        );
        assert!(parse_htpasswd("agent:$apr1$xyz").is_err());
        assert!(parse_htpasswd("nocolon").is_err());
        let c: BasicAuthConfig = config::decode(
            &serde_yaml_ng::from_str("client_auth: {username: Aladdin, password: 'open sesame'}")
                .unwrap(),
        )
        .unwrap();
        // RFC 7617's example.
        assert_eq!(
            c.client_header().unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}

//! What `auth: { authenticator: <extension id> }` on a receiver or an exporter becomes: the
//! collector's `configauth` references to `bearertokenauth` and `basicauth` extensions, resolved
//! before components are built ([`resolve_auth`]) into the settings celeriac's components already
//! have, so no component reads another's internals:
//!
//! * on an exporter (`otlp`, `otlphttp`, ...): the extension's header is added to `headers`
//!   (`authorization: Bearer <token>`, or `Basic <base64(user:password)>`);
//! * on the `otlp` receiver (`auth:` at its top, or under `protocols.grpc`/`protocols.http`, or
//!   under `grpc`/`http`): a `bearertokenauth` becomes the receiver's `auth.bearer_token`,
//!   which both protocols then require. `basicauth` on a receiver is refused (not supported).
//!
//! The referenced extension must be declared, of an auth type, and listed in
//! `service.extensions`; anything else is a validation error at the reference.

use serde::{Deserialize, Serialize};

use crate::component::{BoxRun, Context, Extension, Host};

use crate::config::{
    self, ComponentDecl, ComponentId, Config, DecodeError, Diagnostics, Section, Value,
};
use crate::extensions::basicauth::BasicAuthConfig;
use crate::extensions::bearertokenauth::BearerTokenConfig;

/// `auth: { authenticator: <id> }`, the collector's `configauth.Config`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthRef {
    pub authenticator: String,
}

/// The credential an extension stands for.
enum Credential {
    Bearer {
        header: String,
        scheme: String,
        token: String,
    },
    Basic(BasicAuthConfig),
}

fn lookup(config: &Config, enabled: &[ComponentId], name: &str) -> Result<Credential, String> {
    let id = ComponentId::parse(name).map_err(|e| format!("authenticator `{name}`: {e}"))?;
    let Some(ext) = config.component(Section::Extensions, &id) else {
        return Err(format!("authenticator {name} is not a declared extension"));
    };
    if !enabled.contains(&id) {
        return Err(format!(
            "authenticator {name} is not listed in service.extensions"
        ));
    }
    match id.type_name.as_str() {
        "bearertokenauth" => {
            let c: BearerTokenConfig = config::decode(&ext.settings)
                .map_err(|e| format!("authenticator {name}: {}", e.message))?;
            let token = c
                .token()
                .map_err(|e| format!("authenticator {name}: {} {}", e.path, e.message))?;
            Ok(Credential::Bearer {
                header: c.header,
                scheme: c.scheme,
                token,
            })
        }
        "basicauth" => Ok(Credential::Basic(config::decode(&ext.settings).map_err(
            |e: DecodeError| format!("authenticator {name}: {}", e.message),
        )?)),
        other => Err(format!(
            "authenticator {name} is a {other} extension, not bearertokenauth or basicauth"
        )),
    }
}

/// Take `auth.authenticator` out of `map` (removing `auth`), if present.
fn take_ref(map: &mut serde_yaml_ng::Mapping) -> Option<Result<String, String>> {
    let auth = map.get("auth")?.as_mapping()?;
    let name = auth.get("authenticator")?;
    let r = match name.as_str() {
        Some(s) if auth.len() == 1 => Ok(s.to_string()),
        Some(_) => Err("auth: with authenticator, no other key is accepted".to_string()),
        None => Err("auth.authenticator must be an extension id".to_string()),
    };
    map.remove("auth");
    Some(r)
}

/// The declared components with every `auth: { authenticator }` resolved (see the module docs).
/// Problems are reported in `d`.
pub fn resolve_auth(
    config: &Config,
    components: Vec<ComponentDecl>,
    d: &mut Diagnostics,
) -> Vec<ComponentDecl> {
    let enabled = config.enabled_extensions();
    let mut out = components;
    for decl in &mut out {
        let Some(map) = decl.settings.as_mapping_mut() else {
            continue;
        };
        let mut err = |path: &str, msg: String| {
            d.error(
                &DecodeError::new(path, "").full_path(&decl.path),
                format!("{} {}: {msg}", decl.section.noun(), decl.id),
            );
        };
        match decl.section {
            Section::Exporters => {
                let Some(r) = take_ref(map) else { continue };
                let cred = r.and_then(|name| lookup(config, &enabled, &name));
                let (header, value) = match cred {
                    Err(m) => {
                        err("auth", m);
                        continue;
                    }
                    Ok(Credential::Bearer {
                        header,
                        scheme,
                        token,
                    }) => (header.to_ascii_lowercase(), format!("{scheme} {token}")),
                    Ok(Credential::Basic(b)) => match b.client_header() {
                        Ok(v) => ("authorization".to_string(), v),
                        Err(e) => {
                            err("auth", format!("{} {}", e.path, e.message));
                            continue;
                        }
                    },
                };
                let headers = map
                    .entry(Value::from("headers"))
                    .or_insert_with(|| Value::Mapping(Default::default()));
                if headers.is_null() {
                    *headers = Value::Mapping(Default::default());
                }
                if let Some(h) = headers.as_mapping_mut() {
                    h.insert(Value::from(header), Value::from(value));
                }
            }
            Section::Receivers => {
                // Where the collector (and celeriac's own shape) put it.
                let mut found: Vec<(String, Result<String, String>)> = Vec::new();
                if let Some(r) = take_ref(map) {
                    found.push(("auth".into(), r));
                }
                for outer in ["protocols", ""] {
                    for proto in ["grpc", "http"] {
                        let node = if outer.is_empty() {
                            map.get_mut(proto)
                        } else {
                            map.get_mut(outer)
                                .and_then(Value::as_mapping_mut)
                                .and_then(|m| m.get_mut(proto))
                        };
                        if let Some(r) = node.and_then(Value::as_mapping_mut).and_then(take_ref) {
                            let path = if outer.is_empty() {
                                format!("{proto}.auth")
                            } else {
                                format!("{outer}.{proto}.auth")
                            };
                            found.push((path, r));
                        }
                    }
                }
                let mut token: Option<String> = None;
                for (path, r) in found {
                    match r.and_then(|name| lookup(config, &enabled, &name)) {
                        Err(m) => err(&path, m),
                        Ok(Credential::Basic(_)) => err(
                            &path,
                            "basicauth is not supported on receivers yet; use bearertokenauth"
                                .into(),
                        ),
                        Ok(Credential::Bearer {
                            header,
                            scheme,
                            token: t,
                        }) => {
                            if !header.eq_ignore_ascii_case("authorization") || scheme != "Bearer" {
                                err(&path, "a receiver checks `Authorization: Bearer <token>` only; leave header and scheme at their defaults".into());
                            } else if token.as_ref().is_some_and(|old| *old != t) {
                                err(
                                    &path,
                                    "grpc and http must use the same authenticator".into(),
                                );
                            } else {
                                token = Some(t);
                            }
                        }
                    }
                }
                if let Some(t) = token {
                    let mut auth = serde_yaml_ng::Mapping::new();
                    auth.insert(Value::from("bearer_token"), Value::from(t));
                    map.insert(Value::from("auth"), Value::Mapping(auth));
                }
            }
            _ => {}
        }
    }
    out
}

/// What an auth extension runs: nothing. Its credentials are applied where they are referenced
/// ([`resolve_auth`]); it waits for shutdown.
pub struct Passive;

impl Extension for Passive {
    fn run(self: Box<Self>, ctx: Context, _host: Host) -> BoxRun {
        Box::pin(async move {
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::graph::Graph;

    fn check(yaml: &str) -> (bool, String, Vec<ComponentDecl>) {
        let (cfg, mut d) = crate::config::parse(yaml, "t.yaml");
        let cfg = cfg.unwrap_or_else(|| panic!("{}", d.render()));
        let resolved = resolve_auth(
            &cfg,
            cfg.components.clone(),
            &mut Diagnostics::new("t.yaml", ""),
        );
        let ok = Graph::build(&cfg, &mut d).is_some();
        (ok, d.render(), resolved)
    }

    fn find(v: &[ComponentDecl], s: Section) -> &Value {
        &v.iter().find(|c| c.section == s).unwrap().settings
    }

    #[test]
    fn exporters_send_the_extensions_credentials() {
        let (ok, out, r) = check("extensions:\n  bearertokenauth:\n    token: s3cret\n  basicauth/c:\n    client_auth: {username: u, password: p}\nreceivers:\n  otlp:\nexporters:\n  otlp:\n    auth: {authenticator: bearertokenauth}\n    headers: {x-team: a}\n  otlphttp:\n    auth: {authenticator: basicauth/c}\nservice:\n  extensions: [bearertokenauth, basicauth/c]\n  pipelines:\n    traces: { receivers: [otlp], exporters: [otlp, otlphttp] }\n");
        assert!(ok, "{out}");
        let exps: Vec<_> = r
            .iter()
            .filter(|c| c.section == Section::Exporters)
            .collect();
        assert_eq!(
            exps[0].settings["headers"]["authorization"],
            Value::from("Bearer s3cret")
        );
        assert_eq!(exps[0].settings["headers"]["x-team"], Value::from("a"));
        assert!(exps[0].settings.get("auth").is_none());
        assert_eq!(
            exps[1].settings["headers"]["authorization"],
            Value::from("Basic dTpw")
        );
    }

    #[test]
    fn receivers_require_the_token() {
        let (ok, out, r) = check("extensions:\n  bearertokenauth:\n    token: s3cret\nreceivers:\n  otlp:\n    grpc:\n      auth: {authenticator: bearertokenauth}\nexporters:\n  debug:\nservice:\n  extensions: [bearertokenauth]\n  pipelines:\n    traces: { receivers: [otlp], exporters: [debug] }\n");
        assert!(ok, "{out}");
        assert_eq!(
            find(&r, Section::Receivers)["auth"]["bearer_token"],
            Value::from("s3cret")
        );
    }

    #[test]
    fn bad_references_are_errors() {
        let (ok, out, _) = check("extensions:\n  bearertokenauth:\n    token: s3cret\n  basicauth:\n    htpasswd: {inline: 'u:p'}\nreceivers:\n  otlp:\n    auth: {authenticator: basicauth}\nexporters:\n  otlp:\n    auth: {authenticator: bearertokenauth/missing}\n  otlphttp:\n    auth: {authenticator: bearertokenauth}\nservice:\n  extensions: [basicauth]\n  pipelines:\n    traces: { receivers: [otlp], exporters: [otlp, otlphttp] }\n");
        assert!(!ok);
        assert!(
            out.contains("authenticator bearertokenauth/missing is not a declared extension"),
            "{out}"
        );
        assert!(
            out.contains("authenticator bearertokenauth is not listed in service.extensions"),
            "{out}"
        );
        assert!(
            out.contains("basicauth is not supported on receivers yet"),
            "{out}"
        );
    }
}

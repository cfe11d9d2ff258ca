//! `file_storage` extension: a directory where exporters keep their persistent sending queue, as
//! the collector's `extension/storage/filestorage` provides one, used through an exporter's
//! `sending_queue: { storage: file_storage/<name> }`.
//!
//! This module owns the extension's settings and the resolution of those references
//! ([`resolve_storage`]): before components are built, an exporter's `sending_queue.storage`
//! naming a `file_storage` extension becomes celeriac's own `storage: file` with that
//! extension's `directory` (each exporter's queue is a subdirectory named after the exporter). A
//! reference to an extension that is not declared, not a `file_storage`, or not listed in
//! `service.extensions` is a validation error. At run time the extension creates its directory
//! (`create_directory`) and checks that it can write there.
//!
//! ```yaml
//! extensions:
//!   file_storage:
//!     directory: /var/lib/otelcol/file_storage   # the collector's default
//!     create_directory: false
//!     timeout: 1s          # accepted (the collector's lock timeout)
//!     fsync: false         # accepted: the queue always syncs its writes
//!     compaction: { ... }  # accepted: the queue compacts itself
//! exporters:
//!   otlp:
//!     sending_queue: { storage: file_storage }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::component::{
    BoxRun, BuildResult, ComponentError, Context, Extension, Factory, Host, Registration,
};
use crate::config::{
    self, types, ComponentDecl, ComponentId, Config, DecodeError, Diagnostics, Section, Value,
};

pub const REGISTRATION: Registration = Registration {
    type_name: "file_storage",
    factory: Factory::Extension { build },
    defaults: crate::component::defaults::<FileStorageConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileStorageConfig {
    pub directory: PathBuf,
    pub create_directory: bool,
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    pub fsync: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<Value>,
    /// The collector's permissions for a created directory (octal string): accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory_permissions: Option<String>,
}

impl Default for FileStorageConfig {
    /// The collector's defaults on Linux.
    fn default() -> Self {
        FileStorageConfig {
            directory: PathBuf::from("/var/lib/otelcol/file_storage"),
            create_directory: false,
            timeout: Duration::from_secs(1),
            fsync: false,
            compaction: None,
            directory_permissions: None,
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Extension> {
    let cfg: FileStorageConfig = config::decode(v)?;
    if cfg.directory.as_os_str().is_empty() {
        return Err(DecodeError::new("directory", "is empty"));
    }
    if !cfg.directory.is_absolute() {
        return Err(DecodeError::new("directory", "must be an absolute path"));
    }
    Ok(Box::new(FileStorage { cfg }))
}

pub struct FileStorage {
    cfg: FileStorageConfig,
}

impl Extension for FileStorage {
    fn run(self: Box<Self>, ctx: Context, _host: Host) -> BoxRun {
        Box::pin(async move {
            let dir = &self.cfg.directory;
            if self.cfg.create_directory {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    ComponentError::Other(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let probe = dir.join(".celeriac-write-test");
            tokio::fs::write(&probe, b"").await.map_err(|e| {
                ComponentError::Other(format!("cannot write in {}: {e}", dir.display()))
            })?;
            let _ = tokio::fs::remove_file(&probe).await;
            tracing::info!(component = %ctx.id, directory = %dir.display(), "file_storage ready.");
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    }
}

/// The declared components with every exporter's `sending_queue.storage: <file_storage id>`
/// replaced by `storage: file` and that extension's `directory`. Bad references are reported
/// in `d` (and replaced by `memory`, so that each mistake is reported once).
pub fn resolve_storage(config: &Config, d: &mut Diagnostics) -> Vec<ComponentDecl> {
    let enabled = config.enabled_extensions();
    let mut out = config.components.clone();
    for decl in out.iter_mut().filter(|c| c.section == Section::Exporters) {
        let Some(queue) = decl
            .settings
            .as_mapping_mut()
            .and_then(|m| m.get_mut("sending_queue"))
            .and_then(Value::as_mapping_mut)
        else {
            continue;
        };
        let Some(name) = queue
            .get("storage")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            continue;
        };
        if name == "memory" || name == "file" {
            continue;
        }
        let path = DecodeError::new("sending_queue.storage", "").full_path(&decl.path);
        let resolved = resolve_one(config, &enabled, &name);
        match resolved {
            Ok(dir) => {
                queue.insert(Value::from("storage"), Value::from("file"));
                queue.insert(
                    Value::from("directory"),
                    Value::from(dir.to_string_lossy().into_owned()),
                );
            }
            Err(msg) => {
                d.error(&path, format!("exporter {}: {msg}", decl.id));
                queue.insert(Value::from("storage"), Value::from("memory"));
            }
        }
    }
    out
}

fn resolve_one(config: &Config, enabled: &[ComponentId], name: &str) -> Result<PathBuf, String> {
    let id = ComponentId::parse(name).map_err(|e| format!("storage `{name}`: {e}"))?;
    let Some(ext) = config.component(Section::Extensions, &id) else {
        return Err(format!(
            "storage `{name}` is neither memory, file nor a declared extension"
        ));
    };
    if id.type_name != "file_storage" {
        return Err(format!(
            "storage `{name}` is a {} extension, not a file_storage",
            id.type_name
        ));
    }
    if !enabled.contains(&id) {
        return Err(format!(
            "storage extension {name} is not listed in service.extensions"
        ));
    }
    let cfg: FileStorageConfig = config::decode(&ext.settings)
        .map_err(|e| format!("storage extension {name}: {}", e.message))?;
    Ok(cfg.directory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::graph::Graph;

    fn check(yaml: &str) -> (bool, String, Vec<ComponentDecl>) {
        let (cfg, mut d) = crate::config::parse(yaml, "t.yaml");
        let cfg = cfg.unwrap_or_else(|| panic!("{}", d.render()));
        let resolved = resolve_storage(&cfg, &mut Diagnostics::new("t.yaml", ""));
        let ok = Graph::build(&cfg, &mut d).is_some();
        (ok, d.render(), resolved)
    }

    const PIPE: &str = "receivers:\n  otlp:\nservice:\n  extensions: [file_storage]\n  pipelines:\n    traces: { receivers: [otlp], exporters: [otlp] }\n";

    /// The collector's exporterhelper: `sending_queue.storage` names a storage extension.
    #[test]
    fn exporters_queue_in_a_file_storage_directory() {
        let (ok, out, resolved) = check(&format!(
            "extensions:\n  file_storage:\n    directory: /tmp/q\nexporters:\n  otlp:\n    sending_queue: {{ enabled: true, num_consumers: 2, queue_size: 50, storage: file_storage }}\n{PIPE}"
        ));
        assert!(ok, "{out}");
        let otlp = resolved
            .iter()
            .find(|c| c.section == Section::Exporters)
            .unwrap();
        let q = &otlp.settings["sending_queue"];
        assert_eq!(q["storage"], Value::from("file"));
        assert_eq!(q["directory"], Value::from("/tmp/q"));
    }

    #[test]
    fn undeclared_or_disabled_storage_is_an_error() {
        let (ok, out, _) = check(&format!(
            "extensions:\n  file_storage:\n    directory: /tmp/q\nexporters:\n  otlp:\n    sending_queue: {{ storage: file_storage/other }}\n{PIPE}"
        ));
        assert!(!ok);
        assert!(
            out.contains(
                "storage `file_storage/other` is neither memory, file nor a declared extension"
            ),
            "{out}"
        );
        assert_eq!(out.matches("error:").count(), 1, "{out}");
        let (ok, out, _) = check("extensions:\n  file_storage:\n    directory: /tmp/q\nexporters:\n  otlp:\n    sending_queue: { storage: file_storage }\nreceivers:\n  otlp:\nservice:\n  pipelines:\n    traces: { receivers: [otlp], exporters: [otlp] }\n");
        assert!(!ok);
        assert!(
            out.contains("storage extension file_storage is not listed in service.extensions"),
            "{out}"
        );
        let bad = |y: &str| crate::component::rejected_key(build, y).unwrap();
        assert_eq!(bad("directory: relative/dir"), "directory");
        assert_eq!(bad("bogus: 1"), "bogus");
    }
}

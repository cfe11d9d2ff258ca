//! deploy/kubernetes/: every manifest against the Kubernetes schemas, and the configs they embed
//! against `celeriac validate`.
//!
//! * `manifests_are_valid_kubernetes_objects`: tests/python/k8s_validate.py runs the PyPI
//!   `kubernetes-validate` package (strict, latest Kubernetes version it ships, network cut off in
//!   the process) over every file; all are valid but the kustomization and the optional
//!   ServiceMonitor (custom resources: no shipped schema); the kustomization lists every manifest;
//!   a broken Deployment is reported invalid (the check can fail). The workloads run non-root with
//!   a read-only root filesystem, probe `/healthz`, set resources; the gateway has 2 replicas and a
//!   PodDisruptionBudget.
//! * `embedded_configs_pass_celeriac_validate`: the ConfigMaps' `config.yaml`, with the
//!   environment of `celeriac-env`, pass `celeriac validate`; the gateway's has leader election.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use support::*;

fn dir() -> PathBuf {
    repo_root().join("deploy").join("kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 10, "manifests: {v:?}");
    v
}

/// Runs k8s_validate.py over `files`: {file name: [row]}.
fn validate(files: &[PathBuf]) -> BTreeMap<String, Vec<Json>> {
    let out = Command::new(python())
        .arg(python_dir().join("k8s_validate.py"))
        .args(files)
        .output()
        .expect("run k8s_validate.py (CELERIAC_TEST_PYTHON)");
    assert!(
        out.status.success(),
        "k8s_validate.py failed (is kubernetes-validate in tests/python/requirements.txt installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).expect("JSON from k8s_validate.py");
    v["files"]
        .as_object()
        .expect("files")
        .iter()
        .map(|(k, rows)| {
            let name = Path::new(k)
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, rows.as_array().expect("rows").clone())
        })
        .collect()
}

fn docs_of_kind<'a>(all: &'a BTreeMap<String, Vec<Json>>, kind: &str) -> Vec<&'a Json> {
    all.values()
        .flatten()
        .filter(|r| r["kind"] == kind)
        .map(|r| &r["doc"])
        .collect()
}

#[test]
fn manifests_are_valid_kubernetes_objects() {
    let files = manifests();
    let all = validate(&files);
    for (file, rows) in &all {
        assert!(!rows.is_empty(), "{file} has no object");
        for r in rows {
            let want = match r["kind"].as_str() {
                Some("Kustomization") | Some("ServiceMonitor") => "no_schema",
                _ => "valid",
            };
            assert_eq!(r["result"], want, "{file}: {} {}", r["kind"], r["error"]);
        }
    }

    // The kustomization lists every manifest (the ServiceMonitor commented out: it needs CRDs).
    let kustomization = std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap();
    let listed: BTreeSet<String> = docs_of_kind(&all, "Kustomization")[0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("name").to_string())
        .collect();
    for f in all.keys() {
        if f == "kustomization.yaml" {
            continue;
        }
        if f == "servicemonitor.yaml" {
            assert!(kustomization.contains("# - servicemonitor.yaml"));
            continue;
        }
        assert!(listed.contains(f), "{f} not in kustomization.yaml");
    }
    assert!(listed.iter().all(|f| all.contains_key(f)), "{listed:?}");

    // Workloads: non-root, read-only root filesystem, /healthz probes, resources.
    let mut workloads = docs_of_kind(&all, "DaemonSet");
    workloads.extend(docs_of_kind(&all, "Deployment"));
    assert_eq!(workloads.len(), 2);
    for w in &workloads {
        let pod = &w["spec"]["template"]["spec"];
        let name = &w["metadata"]["name"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        for c in pod["containers"].as_array().expect("containers") {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            for probe in ["readinessProbe", "livenessProbe"] {
                assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{name} {probe}");
            }
            assert!(c["resources"]["requests"]["memory"].is_string(), "{name}");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
        }
    }
    let gw = docs_of_kind(&all, "Deployment")[0];
    assert_eq!(gw["spec"]["replicas"], 2);
    let pdb = docs_of_kind(&all, "PodDisruptionBudget")[0];
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        gw["spec"]["selector"]["matchLabels"]
    );

    // The check can fail: a broken Deployment is reported invalid.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yaml");
    let text = std::fs::read_to_string(dir().join("gateway-deployment.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: two");
    std::fs::write(&broken, text).unwrap();
    let r = validate(&[broken]);
    assert_eq!(r["broken.yaml"][0]["result"], "invalid", "{r:?}");
}

#[test]
fn embedded_configs_pass_celeriac_validate() {
    let all = validate(&manifests());
    let maps = docs_of_kind(&all, "ConfigMap");
    let env: Vec<(String, String)> = maps
        .iter()
        .find(|m| m["metadata"]["name"] == "celeriac-env")
        .expect("celeriac-env")["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for m in &maps {
        let Some(cfg) = m["data"]["config.yaml"].as_str() else {
            continue;
        };
        let name = m["metadata"]["name"].as_str().expect("name");
        let path = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&path, cfg).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
            .args(["validate", "-c"])
            .arg(&path)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("celeriac validate");
        assert!(
            out.status.success(),
            "{name}: celeriac validate failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if name == "celeriac-gateway" {
            assert!(cfg.contains("leader_election:"), "{cfg}");
        }
        checked.push(name.to_string());
    }
    checked.sort();
    assert_eq!(checked, ["celeriac-agent", "celeriac-gateway"]);

    // And a broken one is refused (the check can fail).
    let bad = tmp.path().join("bad.yaml");
    let gw = maps
        .iter()
        .find(|m| m["metadata"]["name"] == "celeriac-gateway")
        .expect("gateway")["data"]["config.yaml"]
        .as_str()
        .expect("config")
        .replace("lease: 15s", "lease: 10ms");
    std::fs::write(&bad, gw).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["validate", "-c"])
        .arg(&bad)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("celeriac validate");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("must be at least 500ms"), "{text}");
}

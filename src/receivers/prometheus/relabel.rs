//! Prometheus relabeling (`relabel_configs` on targets, `metric_relabel_configs` on samples):
//! actions `replace` (default), `keep`, `drop`, `labeldrop`, `labelkeep`, `labelmap`, with
//! Prometheus's defaults (`separator: ;`, `regex: (.*)` anchored at both ends,
//! `replacement: $1`).

use serde::{Deserialize, Serialize};

use crate::config::DecodeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    LabelDrop,
    LabelKeep,
    LabelMap,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default)]
    pub separator: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub target_label: Option<String>,
    #[serde(default)]
    pub replacement: Option<String>,
    #[serde(default)]
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct Rule {
    source: Vec<String>,
    separator: String,
    regex: regex::Regex,
    target: String,
    replacement: String,
    action: Action,
}

pub type Labels = Vec<(String, String)>;

fn get<'a>(l: &'a Labels, k: &str) -> &'a str {
    l.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

pub fn set(l: &mut Labels, k: &str, v: String) {
    match l.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v,
        None => l.push((k.to_string(), v)),
    }
}

impl Rule {
    pub fn build(c: &RelabelConfig, at: &str) -> Result<Rule, DecodeError> {
        let re = c.regex.as_deref().unwrap_or("(.*)");
        let regex = regex::Regex::new(&format!("^(?:{re})$"))
            .map_err(|e| DecodeError::new(format!("{at}.regex"), e.to_string()))?;
        let target = c.target_label.clone().unwrap_or_default();
        match c.action {
            Action::Replace if target.is_empty() => {
                return Err(DecodeError::new(
                    format!("{at}.target_label"),
                    "required for action replace",
                ))
            }
            Action::Keep | Action::Drop if c.source_labels.is_empty() => {
                return Err(DecodeError::new(
                    format!("{at}.source_labels"),
                    "required for actions keep and drop",
                ))
            }
            _ => {}
        }
        Ok(Rule {
            source: c.source_labels.clone(),
            separator: c.separator.clone().unwrap_or_else(|| ";".into()),
            regex,
            target,
            replacement: c.replacement.clone().unwrap_or_else(|| "$1".into()),
            action: c.action,
        })
    }

    /// Apply to `l`; `false` when the series/target is dropped.
    pub fn apply(&self, l: &mut Labels) -> bool {
        let value = || {
            self.source
                .iter()
                .map(|s| get(l, s))
                .collect::<Vec<_>>()
                .join(&self.separator)
        };
        match self.action {
            Action::Keep => self.regex.is_match(&value()),
            Action::Drop => !self.regex.is_match(&value()),
            Action::Replace => {
                let v = value();
                if let Some(c) = self.regex.captures(&v) {
                    let mut target = String::new();
                    c.expand(&self.target, &mut target);
                    let mut out = String::new();
                    c.expand(&self.replacement, &mut out);
                    if target.is_empty() {
                        return true;
                    }
                    if out.is_empty() {
                        l.retain(|(n, _)| *n != target);
                    } else {
                        set(l, &target, out);
                    }
                }
                true
            }
            Action::LabelDrop => {
                l.retain(|(n, _)| !self.regex.is_match(n));
                true
            }
            Action::LabelKeep => {
                l.retain(|(n, _)| self.regex.is_match(n));
                true
            }
            Action::LabelMap => {
                let mut add = Vec::new();
                for (n, v) in l.iter() {
                    if let Some(c) = self.regex.captures(n) {
                        let mut name = String::new();
                        c.expand(&self.replacement, &mut name);
                        add.push((name, v.clone()));
                    }
                }
                for (n, v) in add {
                    set(l, &n, v);
                }
                true
            }
        }
    }
}

pub fn build_all(cs: &[RelabelConfig], at: &str) -> Result<Vec<Rule>, DecodeError> {
    cs.iter()
        .enumerate()
        .map(|(i, c)| Rule::build(c, &format!("{at}[{i}]")))
        .collect()
}

/// Run every rule; `false` when one dropped the labels.
pub fn process(rules: &[Rule], l: &mut Labels) -> bool {
    rules.iter().all(|r| r.apply(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<Rule> {
        let c: Vec<RelabelConfig> = serde_yaml_ng::from_str(yaml).unwrap();
        build_all(&c, "r").unwrap()
    }

    fn l(p: &[(&str, &str)]) -> Labels {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn actions() {
        let r = rules(
            r#"
- { source_labels: [__name__], regex: 'go_.*', action: drop }
- { source_labels: [status], regex: '(.+)', target_label: outcome, replacement: 'was_$1' }
- { regex: 'tmp_.*', action: labeldrop }
"#,
        );
        let mut a = l(&[("__name__", "go_gc"), ("x", "1")]);
        assert!(!process(&r, &mut a));
        let mut b = l(&[("__name__", "tasks"), ("status", "ok"), ("tmp_x", "1")]);
        assert!(process(&r, &mut b));
        assert_eq!(
            b,
            l(&[
                ("__name__", "tasks"),
                ("status", "ok"),
                ("outcome", "was_ok")
            ])
        );
        let k = rules(
            "[{ source_labels: [job, env], separator: '/', regex: 'app/prod', action: keep }]",
        );
        assert!(process(&k, &mut l(&[("job", "app"), ("env", "prod")])));
        assert!(!process(&k, &mut l(&[("job", "app"), ("env", "dev")])));
        let lk = rules("[{ regex: '__name__|keep', action: labelkeep }]");
        let mut c = l(&[("__name__", "m"), ("keep", "1"), ("other", "2")]);
        process(&lk, &mut c);
        assert_eq!(c, l(&[("__name__", "m"), ("keep", "1")]));
        let lm = rules("[{ regex: '__meta_(.+)', action: labelmap }]");
        let mut d = l(&[("__meta_zone", "a")]);
        process(&lm, &mut d);
        assert_eq!(get(&d, "zone"), "a");
        // The regex is anchored: 'go' does not match 'go_gc'.
        let anch = rules("[{ source_labels: [__name__], regex: go, action: drop }]");
        assert!(process(&anch, &mut l(&[("__name__", "go_gc")])));
        // An empty replacement result deletes the target label.
        let del = rules("[{ source_labels: [nope], target_label: status, replacement: '' }]");
        let mut e = l(&[("status", "x")]);
        process(&del, &mut e);
        assert!(e.is_empty());
    }

    #[test]
    fn bad_rules() {
        for y in [
            "[{ action: replace, source_labels: [a] }]",
            "[{ action: keep }]",
            "[{ source_labels: [a], regex: '(', target_label: b }]",
        ] {
            let c: Vec<RelabelConfig> = serde_yaml_ng::from_str(y).unwrap();
            assert!(build_all(&c, "r").is_err(), "{y}");
        }
        let c: Result<Vec<RelabelConfig>, _> = serde_yaml_ng::from_str("[{ action: hashmod }]");
        assert!(c.is_err());
    }
}

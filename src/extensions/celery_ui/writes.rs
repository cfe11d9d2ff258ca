//! Flower's write API on the running dashboard: who asks, the CSRF and `read_only` refusals, the
//! request's parameters, the action run over the broker seam ([`super::control`]) or the
//! result backend, and the log line and counter of every action.

use std::collections::BTreeSet;

use base64::Engine;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value as Json};

use super::control::{self, Answer, Pidbox};
use super::http::{full, json_error, json_reply, query_pairs, same_origin, Body, MAX_POST_BODY};
use super::server::Ui;
use crate::time::now_secs;

impl Ui {
    /// Who is asking, for the control log: the basic-auth user, `bearer`, or `anonymous`.
    pub(super) fn who(&self, req: &Request<Incoming>) -> String {
        let h = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let (scheme, cred) = h.split_once(' ').unwrap_or((h, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(user) = base64::engine::general_purpose::STANDARD
                .decode(cred.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|up| up.split_once(':').map(|(u, _)| u.to_string()))
            {
                return user;
            }
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return "bearer".into();
        }
        "anonymous".into()
    }

    pub(super) fn count(&self, action: &'static str, result: &'static str) {
        if let Some(c) = self.control_total.get(&(action, result)) {
            c.inc();
        }
    }

    /// A write request (Flower's control API). Refused across origins (a browser's form or
    /// script posting from another site carries an `Origin` that is not ours), and when
    /// `read_only`.
    pub(super) async fn post(&self, req: Request<Incoming>, path: String) -> Response<Body> {
        let Some((action, target)) = control::route(&path) else {
            self.count("unknown", "refused");
            return if path.starts_with("/api/") {
                json_error(StatusCode::NOT_FOUND, format!("no such API path: {path}"))
            } else {
                json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here")
            };
        };
        let who = self.who(&req);
        let refuse = |status: StatusCode, why: &str| {
            self.count(action, "refused");
            tracing::warn!(who = %who, action, target = %target, reason = why, "Refused a control action.");
            full(status, "text/plain; charset=utf-8", why.to_string())
        };
        if let Err(why) = same_origin(&req) {
            return refuse(StatusCode::FORBIDDEN, &why);
        }
        if self.cfg.read_only {
            return refuse(StatusCode::FORBIDDEN, "Read only mode is enabled");
        }
        let mut args = query_pairs(req.uri().query().unwrap_or(""));
        let form = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = match http_body_util::Limited::new(req.into_body(), MAX_POST_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let mut json_body = None;
        if form {
            args.extend(query_pairs(&String::from_utf8_lossy(&body)));
        } else if !body.is_empty() {
            match serde_json::from_slice::<Json>(&body) {
                Ok(v) => json_body = Some(v),
                Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        let answer = if action == "task.abort" {
            match &self.backend {
                None => Err(Answer::Text(StatusCode::SERVICE_UNAVAILABLE, String::new())),
                Some(b) => match b.abort(&target, now_secs()).await {
                    Ok(()) => Ok(Answer::Json(
                        StatusCode::OK,
                        json!({ "message": format!("Aborted '{target}'") }),
                    )),
                    Err(e) => Err(Answer::Text(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
                },
            }
        } else {
            let Some(pidbox) = self.inspector.as_ref().map(|i| i as &dyn Pidbox) else {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "remote control is disabled (inspect.enabled: false)",
                );
            };
            let known = self.known();
            let r = control::Request {
                action,
                target: target.clone(),
                args,
                body: json_body,
            };
            let mut a = control::run(pidbox, self.cfg.inspect.timeout, &known, &r).await;
            // Flower adds the result backend's state to a published task's answer.
            if let (Ok(Answer::Json(_, v)), Some(b)) = (&mut a, &self.backend) {
                if let Some(id) = v.get("task-id").and_then(Json::as_str).map(str::to_string) {
                    match b.state(&id).await {
                        Ok(state) => v["state"] = json!(state),
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot read a published task's state.")
                        }
                    }
                }
            }
            a
        };
        let (result, answer) = match answer {
            Ok(a) => ("ok", a),
            Err(a) if a.status() == StatusCode::FORBIDDEN || a.status().is_server_error() => {
                ("failed", a)
            }
            Err(a) => ("refused", a),
        };
        self.count(action, result);
        tracing::info!(who = %who, action, target = %target, result, status = answer.status().as_u16(), "Control action.");
        match answer {
            Answer::Json(s, v) => json_reply(s, &v),
            Answer::Text(s, t) => full(s, "text/plain; charset=utf-8", t),
        }
    }

    /// Workers (from events and remote control) and task names (seen, or registered at a
    /// worker) the control API accepts.
    pub(super) fn known(&self) -> control::Known {
        let inspected = self.inspected.read().unwrap_or_else(|e| e.into_inner());
        let mut workers: BTreeSet<String> = inspected.keys().cloned().collect();
        let mut tasks: BTreeSet<String> = inspected
            .values()
            .filter_map(|i| i.get("registered").and_then(Json::as_array))
            .flatten()
            .filter_map(|t| t.as_str())
            // `registered` may carry options: `name [rate_limit=...]`.
            .map(|t| t.split(' ').next().unwrap_or(t).to_string())
            .collect();
        drop(inspected);
        self.view.read(|v| {
            workers.extend(v.workers().keys().cloned());
            tasks.extend(v.names().map(str::to_string));
        });
        control::Known { workers, tasks }
    }
}

//! celeriac: a telemetry pipeline agent for Celery.
//!
//! A YAML file declares receivers → processors → exporters and the pipelines that wire them,
//! in the OpenTelemetry Collector's shape. The crate is laid out by role:
//!
//! * [`config`]: the file's shape, env expansion, diagnostics with `file:line:col`;
//! * [`component`]: the role traits, what the runtime hands them, and the factory types each
//!   component describes itself with;
//! * [`registry`]: the one list of component types (imported by `main` and `pipeline` only);
//! * [`pipeline`]: validation of the whole graph, wiring with bounded channels, lifecycle;
//! * [`signal`]: the batches that flow (OTLP types and Celery events, behind `Arc`);
//! * [`celery`]: the Celery domain (event model, envelope decoding);
//! * [`receivers`], [`processors`], [`connectors`], [`exporters`]: one file or folder per
//!   component; pieces several of them share sit beside them (`exporters::retry`,
//!   `exporters::backoff`, `exporters::sending_queue`, `exporters::prom`);
//! * [`otlp`]: building and reading OTLP data (attributes, resources, scopes, the clock,
//!   attribute values as text or JSON), shared by the components that make or read it;
//! * [`extensions`]: components beside the pipelines (the `celery_ui` dashboard and API);
//! * [`prompb`]: the Prometheus remote-write protobuf messages;
//! * [`telemetry`]: the agent's own `/metrics`, `/healthz` and logs;
//! * [`reload`]: re-reading the config on SIGHUP or `POST /-/reload`, and `celeriac reload`;
//! * [`redis_broker`]: reaching a Redis broker (wire format, addresses, Sentinel), shared by
//!   the Redis receivers and `celery_ui`;
//! * [`amqp`]: AMQP (RabbitMQ) broker URLs and connections, shared by the AMQP components;
//! * [`serve`]: serving HTTP (bind, serve, graceful drain), shared by every server;
//! * [`tls`]: TLS settings and rustls configurations shared by servers and clients;
//! * [`time`]: wall clock, ISO 8601 / RFC 3339 timestamps, shared by every component.

pub mod amqp;
pub mod celery;
pub mod component;
pub mod config;
pub mod connectors;
pub mod exporters;
pub mod extensions;
pub mod otlp;
pub mod pipeline;
pub mod processors;
pub mod prompb;
pub mod receivers;
pub mod redis_broker;
pub mod registry;
pub mod reload;
pub mod serve;
pub mod signal;
pub mod telemetry;
pub mod time;
pub mod tls;

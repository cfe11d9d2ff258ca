//! `amqps://` for real: a TLS listener (rustls, the test PKI's server certificate for
//! 127.0.0.1) in front of the machine's RabbitMQ, each session piped to 127.0.0.1:5672. The
//! `celery_amqp` and `amqp_queues` receivers connect through it with the shared TLS settings
//! (`tls.ca_file`) and read events and queue depths; a receiver trusting another CA gets a clear
//! certificate error, counted, and retries without a crash.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::rabbitmq::{await_sample, await_sent, publish_sent, value, Vhost, HOST};
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

/// A TLS-terminating proxy to RabbitMQ's plain AMQP port; counts finished handshakes.
struct TlsProxy {
    port: u16,
    handshakes: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl TlsProxy {
    fn start(pki: &pki::Pki) -> TlsProxy {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.server_cert())
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("server certificate");
        let key = PrivateKeyDer::from_pem_file(pki.server_key()).expect("server.key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate and key");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let count = handshakes.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, count) = (acceptor.clone(), count.clone());
                tokio::spawn(async move {
                    // A client that rejects our certificate aborts the handshake here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(HOST).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    }
                });
            }
        });
        TlsProxy {
            port,
            handshakes,
            _rt: rt,
        }
    }
}

#[test]
fn amqps_through_tls_with_the_shared_settings_and_a_wrong_ca_is_counted() {
    let pki = pki::Pki::generate();
    let proxy = TlsProxy::start(&pki);
    let vhost = Vhost::create("tls");
    let tls_url = format!(
        "amqps://guest:guest@127.0.0.1:{}/{}",
        proxy.port, vhost.name
    );
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let ca = pki.ca().display().to_string();
    let other_ca = pki.path("other-ca.pem").display().to_string();
    let agent = Agent::start(
        bin(),
        &AgentConfig::new()
            .receiver("celery_amqp", &format!("endpoint: {tls_url}\ntls: {{ ca_file: {ca} }}"))
            .receiver(
                "celery_amqp/wrongca",
                &format!("endpoint: {tls_url}\ntls: {{ ca_file: {other_ca} }}"),
            )
            .receiver(
                "amqp_queues",
                &format!(
                    "endpoint: {tls_url}\ntls: {{ ca_file: {ca} }}\nqueues: [celery]\ninterval: 200ms"
                ),
            )
            .connector("celery_correlate", "metrics_interval: 200ms")
            .exporter("prometheus", &format!("endpoint: 127.0.0.1:{prom}"))
            .telemetry(tel)
            .pipeline(
                "celery",
                &["celery_amqp", "celery_amqp/wrongca"],
                &["celery_correlate"],
            )
            .pipeline(
                "metrics",
                &["celery_correlate", "amqp_queues"],
                &["prometheus"],
            )
            .yaml(),
    );
    assert!(
        wait_until(Duration::from_secs(15), || value(
            &tel_addr,
            "celeriac_celery_amqp_connected",
            &[("component", "receiver/celery_amqp")]
        ) == Some(1.0)),
        "not consuming over TLS\n{}",
        agent.output()
    );
    // Events published on the plain port reach the receiver through its TLS session.
    publish_sent(&vhost.url(), 40, "tls.task");
    await_sent(&agent, &prom_addr, "tls.task", 40.0);
    // Queue depth over TLS too (the queue does not exist: 0, read, not an error).
    await_sample(
        &agent,
        10,
        &prom_addr,
        "celery_queue_length",
        &[("queue_name", "celery")],
        |v| v == 0.0,
    );
    assert!(proxy.handshakes.load(Ordering::SeqCst) >= 2);
    // The receiver trusting another CA: a clear certificate error, counted, retried.
    assert!(
        wait_until(Duration::from_secs(15), || value(
            &tel_addr,
            "celeriac_receiver_errors_total",
            &[
                ("component", "receiver/celery_amqp/wrongca"),
                ("reason", "connect")
            ]
        )
        .is_some_and(|v| v >= 2.0)),
        "{}",
        agent.output()
    );
    assert_eq!(
        value(
            &tel_addr,
            "celeriac_celery_amqp_connected",
            &[("component", "receiver/celery_amqp/wrongca")]
        ),
        Some(0.0)
    );
    let err = agent.stderr();
    assert!(
        err.contains("Cannot consume Celery events from RabbitMQ; retrying.")
            && err.contains("UnknownIssuer"),
        "{}",
        agent.output()
    );
    // Still running and consuming after all of that.
    publish_sent(&vhost.url(), 5, "tls.task");
    await_sent(&agent, &prom_addr, "tls.task", 45.0);
}

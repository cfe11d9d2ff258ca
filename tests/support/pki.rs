//! A throwaway PKI for TLS tests, made with the `openssl` command: one CA, a server certificate
//! for 127.0.0.1/localhost and a client certificate, all signed by that CA, plus a second CA
//! that signs nothing the servers trust (for "wrong client certificate" cases).

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct Pki {
    dir: TempDir,
}

fn openssl<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(dir: &Path, args: &[S]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &new_key_request(
            name,
            &[
                "-x509",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ),
    );
}

/// `openssl req` making a new P-256 key `<name>.key` for the subject `celeriac test <name>`, with
/// the caller's further arguments (self-signed certificate or signing request).
fn new_key_request(name: &str, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(format!("{name}.key"));
    args.push("-subj".into());
    args.push(format!("/CN=celeriac test {name}"));
    args.extend(more.iter().map(|a| a.to_string()));
    args
}

fn leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    openssl(
        dir,
        &new_key_request(name, &["-out", &format!("{name}.csr")]),
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("celeriac-pki-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        ca(d, "ca");
        ca(d, "other-ca");
        leaf(
            d,
            "ca",
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        leaf(
            d,
            "ca",
            "client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        leaf(
            d,
            "other-ca",
            "stranger",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }
    /// A client certificate signed by a CA nobody trusts.
    pub fn stranger_cert(&self) -> PathBuf {
        self.path("stranger.pem")
    }
    pub fn stranger_key(&self) -> PathBuf {
        self.path("stranger.key")
    }
}

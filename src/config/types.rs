//! serde helpers for the value types that settings share: durations (`200ms`, `5s`, `1h`),
//! socket addresses (`127.0.0.1:9540`, `localhost:9540`, `[::1]:4317`) and settings that take
//! one string or a list of them (`endpoint: redis://a` or `endpoint: [redis://a, redis://b]`).

use std::net::{SocketAddr, ToSocketAddrs};

/// Parse `host:port`; a host name must resolve locally (e.g. `localhost`). `:port` (Go's
/// notation, common in collector files) is every interface, `0.0.0.0:port`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()) {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let bad = || format!("invalid address `{s}`: expected host:port, e.g. 127.0.0.1:9540");
    if !s.contains(':') {
        return Err(bad());
    }
    s.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// A listen address as the collector writes it: `host:port`, `localhost:port` (IPv4 loopback),
/// or `:port` (every interface, as Go's net.Listen does).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        return parse_addr(&format!("0.0.0.0:{port}"));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return parse_addr(&format!("127.0.0.1:{port}"));
    }
    parse_addr(s)
}

pub mod listen_addr {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_listen_addr(&s).map_err(serde::de::Error::custom)
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("invalid duration `{s}`: expected e.g. 200ms, 5s, 2m, 1h"))
}

pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Written back the way it is read: `200ms`, `5s`, `1h`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// `Option<Duration>`; use with `#[serde(default, with = "types::opt_duration")]`.
pub mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub mod addr {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_addr(&s).map_err(serde::de::Error::custom)
    }
}

pub mod opt_addr {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.collect_str(a),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse_addr(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A credential from the config (token, password): deserialized like a string, never printed
/// (`Debug` shows `<redacted>`). Settings where an empty value can only be a mistake (an unset
/// `${env:…}`, not "no authentication") read it with [`non_empty_secret`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Written out (by `celeriac components`) as `<redacted>`, like its `Debug`, or empty when unset.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// `Option<Secret>` (null or absent: `None`) that refuses an empty string:
/// `#[serde(default, deserialize_with = "types::non_empty_secret::deserialize")]`.
pub mod non_empty_secret {
    use super::Secret;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        match Option::<Secret>::deserialize(d)? {
            Some(s) if s.0.is_empty() => Err(serde::de::Error::custom(
                "is empty (is the environment variable set?)",
            )),
            other => Ok(other),
        }
    }
}

pub mod one_or_many {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let v = match OneOrMany::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a string or a list of strings"))?
        {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if v.is_empty() {
            return Err(serde::de::Error::custom("the list is empty"));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:9540").unwrap().port(), 9540);
        assert!(parse_addr("localhost:1").unwrap().ip().is_loopback());
        assert!(parse_addr("[::1]:4317").is_ok());
        assert!(parse_addr("9540").is_err());
        assert!(parse_addr("nohost:x").is_err());
        assert_eq!(
            parse_listen_addr(":4317").unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 4317))
        );
        assert_eq!(
            parse_listen_addr("localhost:4318").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 4318))
        );
    }

    #[test]
    fn durations() {
        for text in ["200ms", "5s", "1h", "0s", "1m 30s"] {
            let d = parse_duration(text).unwrap();
            let back = humantime::format_duration(d).to_string();
            assert_eq!(parse_duration(&back).unwrap(), d, "{text} -> {back}");
        }
        assert_eq!(parse_duration("200ms").unwrap().as_millis(), 200);
        assert_eq!(parse_duration("1h").unwrap().as_secs(), 3600);
        assert!(parse_duration("5x").is_err());
    }
}

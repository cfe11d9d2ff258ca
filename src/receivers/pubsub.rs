//! A minimal Redis pub/sub subscriber speaking RESP2 over TCP, for [`super::celery_redis`].
//!
//! Why not the `redis` crate's `PubSub`: it moves every message into an unbounded channel, so a
//! subscriber that falls behind grows without limit instead of letting Redis apply its
//! `client-output-buffer-limit`. Here messages are parsed straight out of one read buffer and
//! handed to the caller as slices; if the caller is slow the socket is simply read later, memory
//! stays bounded, and Redis cuts the connection when its limit is hit, which the receiver sees
//! and counts as a gap.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::redis_broker::resp::{command, parse, Frame, RespError};
pub use crate::redis_broker::Endpoint;
use crate::tls::{Conn, Connector};

#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    #[error("connect: {0}")]
    Io(#[from] io::Error),
    #[error("Redis refused: {0}")]
    Server(String),
    #[error(transparent)]
    Resp(#[from] RespError),
    #[error("connection closed by the server")]
    Closed,
    #[error("the node says it is not the master (ROLE: {0:?})")]
    NotMaster(String),
    #[error("connect, TLS, AUTH and subscribe not done within connect_timeout ({0:?})")]
    Timeout(Duration),
    #[error("no data for {0:?}; the connection is presumed dead")]
    Idle(Duration),
}

/// Payload bytes handed to the caller per [`Subscriber::read_batch`] call (one more message may
/// end past it).
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// A subscribed connection.
pub struct Subscriber {
    stream: Conn,
    buf: BytesMut,
    idle_limit: Duration,
    ping_every: Duration,
    /// The largest frame accepted (`max_message_size_mib`); a larger one is a protocol error.
    max_frame: usize,
    /// When the bytes still in `buf` were read.
    arrivals: Arrivals,
}

/// When the bytes still in the read buffer were read: one entry per socket read, oldest first,
/// with how many of its bytes are not consumed yet.
#[derive(Debug, Default)]
struct Arrivals(VecDeque<(usize, Instant)>);

impl Arrivals {
    fn read(&mut self, bytes: usize, at: Instant) {
        if bytes > 0 {
            self.0.push_back((bytes, at));
        }
    }

    /// When the oldest byte not consumed yet was read.
    fn oldest(&self) -> Option<Instant> {
        self.0.front().map(|&(_, at)| at)
    }

    fn consumed(&mut self, mut bytes: usize) {
        while bytes > 0 {
            let Some(front) = self.0.front_mut() else {
                return;
            };
            if front.0 > bytes {
                front.0 -= bytes;
                return;
            }
            bytes -= front.0;
            self.0.pop_front();
        }
    }
}

/// What one [`Subscriber::read_batch`] call handed out.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub messages: usize,
    /// When the first of these messages was read from the socket (it may have waited in the
    /// read buffer while earlier ones were handled).
    pub since: Instant,
}

/// A message delivered on a pattern subscription.
pub struct Message<'a> {
    pub payload: &'a [u8],
}

impl Subscriber {
    /// Connect (with TLS for `rediss://`, through `tls`), authenticate and PSUBSCRIBE to
    /// `patterns`. `timeout` bounds all of it together: TCP connect, TLS handshake, AUTH and
    /// every pattern's confirmation.
    pub async fn connect(
        ep: &Endpoint,
        tls: Option<&Connector>,
        patterns: &[String],
        timeout: Duration,
        max_frame: usize,
        verify_master: bool,
    ) -> Result<Subscriber, PubSubError> {
        tokio::time::timeout(
            timeout,
            Self::handshake(ep, tls, patterns, max_frame, verify_master),
        )
        .await
        .map_err(|_| PubSubError::Timeout(timeout))?
    }

    async fn handshake(
        ep: &Endpoint,
        tls: Option<&Connector>,
        patterns: &[String],
        max_frame: usize,
        verify_master: bool,
    ) -> Result<Subscriber, PubSubError> {
        let stream = TcpStream::connect((ep.host.as_str(), ep.port)).await?;
        stream.set_nodelay(true)?;
        let stream = match (ep.tls, tls) {
            (false, _) => Conn::Plain(stream),
            (true, Some(c)) => c.connect(&ep.host, stream).await?,
            (true, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "rediss:// endpoint without a TLS configuration",
                )
                .into())
            }
        };
        let mut s = Subscriber {
            stream,
            buf: BytesMut::with_capacity(256 * 1024),
            idle_limit: Duration::from_secs(45),
            ping_every: Duration::from_secs(15),
            max_frame,
            arrivals: Arrivals::default(),
        };
        if let Some(pass) = &ep.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &ep.username {
                args.push(u.as_bytes());
            }
            args.push(pass.as_bytes());
            s.stream.write_all(&command(&args)).await?;
            if let Err(msg) = s.reply().await? {
                return Err(PubSubError::Server(format!("AUTH failed: {msg}")));
            }
        }
        if verify_master {
            // With Sentinel: never subscribe on a node that is (or has just become) a replica.
            s.stream.write_all(&command(&[b"ROLE"])).await?;
            let role = loop {
                if let Some((f, n)) = parse(&s.buf, s.max_frame)? {
                    let role = match f {
                        Frame::Array(items) => match items.first() {
                            Some(Frame::Bulk(Some(r))) => String::from_utf8_lossy(r).into_owned(),
                            _ => String::new(),
                        },
                        Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
                        _ => String::new(),
                    };
                    s.buf.advance(n);
                    break role;
                }
                if s.stream.read_buf(&mut s.buf).await? == 0 {
                    return Err(PubSubError::Closed);
                }
            };
            if role != "master" {
                return Err(PubSubError::NotMaster(role));
            }
        }
        let mut args: Vec<&[u8]> = vec![b"PSUBSCRIBE"];
        args.extend(patterns.iter().map(|p| p.as_bytes()));
        s.stream.write_all(&command(&args)).await?;
        // Subscribed means Redis confirmed every pattern, not merely that the bytes left.
        for _ in patterns {
            if let Err(msg) = s.reply().await? {
                return Err(PubSubError::Server(format!("PSUBSCRIBE failed: {msg}")));
            }
        }
        // Messages already read behind the confirmations.
        s.arrivals.read(s.buf.len(), Instant::now());
        Ok(s)
    }

    /// Read one reply to AUTH or PSUBSCRIBE: Ok(Ok) on `+OK` or a `psubscribe` confirmation,
    /// Ok(Err(msg)) on an error reply.
    async fn reply(&mut self) -> Result<Result<(), String>, PubSubError> {
        loop {
            if let Some((f, n)) = parse(&self.buf, self.max_frame)? {
                let out = match f {
                    Frame::Simple(_) => Ok(()),
                    Frame::Array(items)
                        if matches!(items.first(), Some(Frame::Bulk(Some(b"psubscribe")))) =>
                    {
                        Ok(())
                    }
                    Frame::Error(e) => Err(String::from_utf8_lossy(e).into_owned()),
                    _ => Err("unexpected reply".into()),
                };
                self.buf.advance(n);
                return Ok(out);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(PubSubError::Closed);
            }
        }
    }

    /// Wait for data, then call `f` for every complete message now in the buffer (up to about
    /// 64 KiB of them). Returns how many messages were handled and when the first was read.
    /// Subscribe confirmations and pongs are consumed silently; an error reply from the server
    /// is returned as an error.
    pub async fn read_batch<F: FnMut(Message<'_>)>(
        &mut self,
        mut f: F,
    ) -> Result<Delivered, PubSubError> {
        let mut waited = Duration::ZERO;
        loop {
            let since = self.arrivals.oldest();
            let mut handled = 0;
            let mut consumed = 0;
            // At most ~64 KiB of messages per call, whatever the backlog in the buffer: each call
            // becomes one batch downstream, so this bounds the memory the bounded queues can hold.
            while consumed < MAX_BATCH_BYTES {
                match parse(&self.buf[consumed..], self.max_frame)? {
                    None => break,
                    Some((frame, n)) => {
                        consumed += n;
                        match frame {
                            Frame::Array(items) => {
                                if let [Frame::Bulk(Some(kind)), rest @ ..] = items.as_slice() {
                                    match (*kind, rest) {
                                        (b"pmessage", [_, _, Frame::Bulk(Some(p))]) => {
                                            f(Message { payload: p });
                                            handled += 1;
                                        }
                                        (b"message", [_, Frame::Bulk(Some(p))]) => {
                                            f(Message { payload: p });
                                            handled += 1;
                                        }
                                        _ => {}
                                    }
                                }
                            }
                            Frame::Error(e) => {
                                return Err(PubSubError::Server(
                                    String::from_utf8_lossy(e).into_owned(),
                                ))
                            }
                            _ => {}
                        }
                    }
                }
            }
            self.buf.advance(consumed);
            self.arrivals.consumed(consumed);
            if handled > 0 {
                return Ok(Delivered {
                    messages: handled,
                    since: since.unwrap_or_else(Instant::now),
                });
            }
            if consumed >= MAX_BATCH_BYTES {
                continue; // only non-message frames so far: parse the rest before reading
            }
            if self.buf.capacity() - self.buf.len() < 64 * 1024 {
                self.buf.reserve(256 * 1024);
            }
            match tokio::time::timeout(self.ping_every, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(PubSubError::Closed),
                Ok(Ok(n)) => {
                    self.arrivals.read(n, Instant::now());
                    waited = Duration::ZERO;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    waited += self.ping_every;
                    if waited >= self.idle_limit {
                        return Err(PubSubError::Idle(waited));
                    }
                    self.stream.write_all(&command(&[b"PING"])).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_as_old_as_the_read_that_brought_its_first_byte() {
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_millis(1), t0 + Duration::from_millis(2));
        let mut a = Arrivals::default();
        a.read(100, t0);
        a.read(0, t1); // a read of nothing leaves no entry
        a.read(50, t2);
        assert_eq!(a.oldest(), Some(t0));
        a.consumed(99); // one byte of the first read left (a message split across reads)
        assert_eq!(a.oldest(), Some(t0));
        a.consumed(1);
        assert_eq!(a.oldest(), Some(t2));
        a.consumed(60); // more than is held: nothing left, no panic
        assert_eq!(a.oldest(), None);
    }
}

//! The Celery domain: the typed event model, decoding of kombu envelopes
//! (Redis) and bare message bodies (AMQP) from the broker, accounting of dropped input, and the
//! random ids Celery's messages carry (task ids, tickets, queue names), and the broker settings
//! an event receiver shares with the dashboard ([`broker`]).

mod b64;
pub mod broker;
pub mod drops;
pub mod envelope;
pub mod event;
mod scan;

/// A random (version 4) UUID string.
pub fn uuid4() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No system randomness: fall back to the clock, still unique enough per process.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
            .to_bits()
            .to_le_bytes();
        b[..8].copy_from_slice(&n);
        b[8..].copy_from_slice(&std::process::id().to_le_bytes().repeat(2));
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

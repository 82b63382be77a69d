//! The protocol's tunables and their environment overrides.

use crate::error::{err, ErrorClass, MpiError, MpiResult};

/// Tunables of the protocol, per transport kind where that matters.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Largest message sent eagerly.
    pub eager_limit_bytes: usize,
    /// Size of one rendezvous `Data` frame.
    pub chunk_bytes: usize,
    /// Bound on bytes of unexpected eager data held for receives not yet posted. Past it the
    /// job stops with an explicit error rather than growing without limit.
    pub unexpected_limit_bytes: usize,
    /// Bound on frames waiting in the core's outbox.
    pub outbox_limit_frames: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            eager_limit_bytes: 64 << 10,
            chunk_bytes: 1 << 20,
            unexpected_limit_bytes: 1 << 30,
            outbox_limit_frames: 1 << 20,
        }
    }
}

impl CoreConfig {
    /// The largest frame the protocol sends, header included: what a transport with bounded
    /// buffers (the shared-memory rings) must carry.
    pub fn largest_frame_bytes(&self) -> usize {
        self.chunk_bytes.max(self.eager_limit_bytes) + kawarimi_transports::wire::HEADER_LEN
    }

    /// The protocol's tunables, with the environment's overrides:
    /// `KAWARIMI_EAGER_LIMIT_BYTES`, `KAWARIMI_CHUNK_BYTES`, `KAWARIMI_UNEXPECTED_LIMIT_BYTES`.
    pub fn from_env() -> MpiResult<CoreConfig> {
        let mut c = CoreConfig::default();
        if let Some(v) = env_bytes("KAWARIMI_EAGER_LIMIT_BYTES")? {
            c.eager_limit_bytes = v;
        }
        if let Some(v) = env_bytes("KAWARIMI_CHUNK_BYTES")? {
            c.chunk_bytes = v;
        }
        if let Some(v) = env_bytes("KAWARIMI_UNEXPECTED_LIMIT_BYTES")? {
            c.unexpected_limit_bytes = v;
        }
        let max = kawarimi_transports::wire::MAX_PAYLOAD_LEN as usize;
        if c.chunk_bytes == 0 || c.chunk_bytes > max || c.eager_limit_bytes > max {
            return err(ErrorClass::Arg, format!("eager limit and chunk size must be in 1..={max} bytes"));
        }
        Ok(c)
    }
}

/// Reads a byte count from `var`, if set.
fn env_bytes(var: &str) -> MpiResult<Option<usize>> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| MpiError::new(ErrorClass::Arg, format!("{var}={v:?} is not a byte count"))),
    }
}

//! The control protocol between the job coordinator and its clients (the ranks, `kawarimi
//! ctl`, the VMM driver).
//!
//! One JSON object per line, at most [`MAX_LINE_BYTES`]. Every connection first proves it
//! holds the per-job secret (`kawarimi_transports::auth`, challenge-response, never the secret
//! itself), then speaks. A line that does not parse is answered with `Reply::Error` and the
//! connection is closed; the job is not affected. Fields are only ever added.

use serde::{Deserialize, Serialize};

/// Version of the control protocol; a client of another version is refused.
pub const CONTROL_VERSION: u32 = 1;
/// Longest line either side accepts.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Identity of the coordinator in the authentication handshake (ranks use their rank).
pub const COORDINATOR_ID: u32 = u32::MAX - 1;
/// Identity of a `kawarimi ctl` or VMM-driver client in the handshake.
pub const CTL_CLIENT_ID: u32 = u32::MAX - 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// A rank introduces itself.
    Hello { version: u32, rank: u32, size: u32, host: String, pid: u32 },
    /// A control client (`kawarimi ctl`, the VMM driver) introduces itself.
    CtlHello { version: u32 },
    /// Publishes `value` (hex) under `key` for this rank (wire-up without PMIx).
    Put { key: String, value: String },
    /// Collective over all ranks: answered by `FenceDone` once every rank has sent the fence
    /// with the same `seq`, or `FenceFailed` naming the ranks that did not.
    Fence { seq: u64 },
    /// Reads `key` of `rank`.
    Get { rank: u32, key: String },
    /// The job's state.
    Status,
    /// A rank is finalizing: its connection closing next is expected, not a failure.
    Goodbye,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Welcome { job: String },
    FenceDone { seq: u64 },
    FenceFailed { seq: u64, missing: Vec<u32>, reason: String },
    Value { rank: u32, key: String, value: Option<String> },
    Status { status: JobStatus },
    Error { message: String },
}

/// What `kawarimi ctl status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    /// Ranks the job has, once the first rank said; `None` before.
    pub size: Option<u32>,
    /// Every rank that connected, by rank. (A list, not a map: JSON object keys are strings,
    /// which internally tagged enums cannot turn back into numbers.)
    pub ranks: Vec<RankInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankInfo {
    pub rank: u32,
    pub host: String,
    pub pid: u32,
    pub connected: bool,
    /// The rank said goodbye (it called `MPI_Finalize`).
    pub finalized: bool,
}

pub fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Encodes a message as one line (with its newline).
pub fn to_line<T: Serialize>(m: &T) -> String {
    let mut s = serde_json::to_string(m).expect("control messages always serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_garbage_is_rejected() {
        let r = Request::Hello { version: 1, rank: 3, size: 4, host: "h".into(), pid: 9 };
        let line = to_line(&r);
        assert!(line.ends_with('\n'));
        assert_eq!(serde_json::from_str::<Request>(line.trim()).unwrap(), r);
        assert!(serde_json::from_str::<Request>("{\"type\":\"fence\"}").is_err());
        assert!(serde_json::from_str::<Request>("{\"type\":\"status\",\"extra\":1}").is_err());
        assert!(serde_json::from_str::<Request>("not json").is_err());
        assert_eq!(decode_hex(&encode_hex(&[0, 1, 254, 255])).unwrap(), vec![0, 1, 254, 255]);
        assert!(decode_hex("abc").is_none());
        assert!(decode_hex("zz").is_none());
    }
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The job's state. (Empty braces rather than a unit variant, so that unknown fields
    /// are refused here too.)
    Status {},
    /// A rank is finalizing: its connection closing next is expected, not a failure.
    Goodbye {},
    /// A rank's control thread opens its command channel: the coordinator pushes
    /// `Reply::Command`s on this connection from now on.
    Subscribe {
        version: u32,
        rank: u32,
        /// The transport carrying this rank's data path (`tcp`, `none` for a job of one).
        #[serde(default)]
        transport: Option<String>,
        /// Where the rank runs, for `ctl status` (sent when it subscribes to a host leader
        /// rather than saying hello to the coordinator itself).
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        pid: Option<u32>,
    },
    /// A host leader's relay attaches to its parent (the coordinator or another relay).
    /// `listen` is where relays below it can attach; the coordinator may answer
    /// `Reply::Redirect` to place it deeper in the tree.
    Join { version: u32, size: u32, leader: u32, listen: Option<String> },
    /// A relay's news about the ranks below it: new ones, finalized ones, lost ones.
    Members { members: Vec<Member> },
    /// A relay's answer to a switch command for every rank below it: all of them reached
    /// `phase` (with their times in `done`), or the step failed (`phase` is `failed`,
    /// `missing` names the ranks that did not finish and `detail` says why).
    GroupReport {
        epoch: u32,
        phase: SwitchPhase,
        done: Vec<RankDone>,
        missing: Vec<u32>,
        detail: Option<String>,
        /// The step failed by the relay's deadline (the ranks in `missing` are late, those in
        /// `done` finished), not by a rank's error or loss.
        #[serde(default)]
        timed_out: bool,
    },
    /// A rank reports that it reached `phase` of switch `epoch`, after `millis` in the step;
    /// `transport` is what carries its data path after a resume.
    Report {
        epoch: u32,
        phase: SwitchPhase,
        millis: f64,
        detail: Option<String>,
        #[serde(default)]
        transport: Option<String>,
        /// (With `detached`) the peers whose data link died under this rank in the epoch
        /// that ends: the resume repairs each such pair (see `Reply::Command::repair`).
        #[serde(default)]
        broken: Vec<u32>,
    },
    /// A rank's data link to `peer` died outside a switch (`reason` says how), in the rank's
    /// `epoch`: it asks for a switch that repairs it. Relays pass it up as it is.
    Repair {
        rank: u32,
        peer: u32,
        reason: String,
        #[serde(default)]
        epoch: u32,
    },
    /// (ctl) Quiesce the job: every rank drains and releases every device resource. Answered
    /// by `SafeToUnplug` or `SwitchFailed`.
    Quiesce { timeout_ms: u64 },
    /// (ctl) Resume a quiesced job: every rank rediscovers its networks and reconnects.
    /// Answered by `Resumed` or `SwitchFailed`.
    Resume { timeout_ms: u64, transport: Option<String> },
}

/// Where a rank is in a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchPhase {
    Running,
    Draining,
    /// Drained and every data-path resource released: safe to unplug.
    Detached,
    Reconnecting,
    /// The step failed; `detail` says why.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Welcome {
        job: String,
    },
    FenceDone {
        seq: u64,
    },
    FenceFailed {
        seq: u64,
        missing: Vec<u32>,
        reason: String,
    },
    Value {
        rank: u32,
        key: String,
        value: Option<String>,
    },
    Status {
        status: JobStatus,
    },
    Error {
        message: String,
    },
    /// Pushed down the control tree: start a switch step. A relay fails the step for the
    /// ranks below it that have not finished within `timeout_ms`, so that it, not only the
    /// coordinator, can name them.
    Command {
        command: SwitchCommand,
        epoch: u32,
        transport: Option<String>,
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// How much less a relay gives the level below it (the same at every level, chosen
        /// by the coordinator from the tree's depth).
        #[serde(default)]
        margin_ms: Option<u64>,
        /// (With `resume`) pairs of ranks whose link died in the epoch that ends, by either
        /// end's account: both ends send each other again what the other has not confirmed,
        /// and reach each other by TCP. Each child gets the pairs that concern its ranks.
        #[serde(default)]
        repair: Vec<(u32, u32)>,
    },
    /// (to a relay that joined) Attach under the relay listening at `parent` instead.
    Redirect {
        parent: String,
    },
    /// Every rank has drained and released its devices.
    SafeToUnplug {
        epoch: u32,
        ranks: u32,
        total_ms: f64,
        slowest_rank_ms: f64,
    },
    /// Every rank has reconnected and runs again.
    Resumed {
        epoch: u32,
        ranks: u32,
        total_ms: f64,
        slowest_rank_ms: f64,
    },
    /// A switch step could not finish; `missing` names the ranks that did not report.
    SwitchFailed {
        epoch: u32,
        missing: Vec<u32>,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchCommand {
    Quiesce,
    Resume,
}

/// One rank as the control tree knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub rank: u32,
    pub host: String,
    pub pid: u32,
    pub transport: String,
    /// Its control connection is up (false once lost or closed).
    pub connected: bool,
    pub finalized: bool,
}

/// One rank's finished switch step, carried up the control tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankDone {
    pub rank: u32,
    pub millis: f64,
    pub transport: Option<String>,
    /// Peers whose link died under this rank (see `Request::Report::broken`).
    #[serde(default)]
    pub broken: Vec<u32>,
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
    /// Switches completed so far.
    pub epoch: u32,
    /// `running`, `quiescing`, `quiesced` or `resuming`.
    pub phase: String,
    /// The host leaders' relays that joined, in order (the control tree's shape: relay `i`
    /// past the coordinator's fan-out `k` sits below relay `i / k - 1`).
    #[serde(default)]
    pub relays: Vec<RelayInfo>,
}

/// A host leader's relay in the control tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// The rank that runs it.
    pub leader: u32,
    /// Where it listens (`None`: it takes no relays below it).
    pub listen: Option<String>,
    /// Where it attached: `None` for the coordinator, else the relay above it.
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankInfo {
    pub rank: u32,
    pub host: String,
    pub pid: u32,
    pub connected: bool,
    /// The rank said goodbye (it called `MPI_Finalize`).
    pub finalized: bool,
    /// The rank's last reported switch phase.
    pub switch_phase: SwitchPhase,
    /// Its control thread is subscribed (it can take part in a switch).
    pub subscribed: bool,
    /// What carries its data path to its peers (`tcp:3`; while quiesced `detached; before
    /// switch N: ran ROUTES, sent BYTES BY KIND`).
    pub transport: String,
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

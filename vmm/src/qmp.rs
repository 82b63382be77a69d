//! The QEMU Machine Protocol (QMP) as a sans-IO state machine, in the style of the runtime's
//! protocol core: bytes from QEMU go in ([`Qmp::feed`]), bytes for QEMU come out
//! ([`Qmp::poll_transmit`]), and what happened comes out as [`Output`]s
//! ([`Qmp::poll_output`]). It reads no clock (every call that needs the time takes `now`) and
//! touches no socket, so a recorded exchange replays exactly in a test.
//!
//! The protocol (QEMU's `docs/interop/qmp-spec`): on connecting, QEMU sends a greeting
//! `{"QMP": {"version": …, "capabilities": […]}}` and accepts nothing but
//! `qmp_capabilities` until that has been answered; then each command
//! `{"execute": NAME, "arguments": {…}, "id": ID}` gets exactly one reply carrying its `id`,
//! `{"return": …}` or `{"error": {"class": …, "desc": …}}`, in order. Asynchronous events
//! `{"event": NAME, "data": {…}, "timestamp": {…}}` come at any time, between replies too.
//! Every message is one JSON object on one line.
//!
//! Commands are QEMU's own, typed from its schema (`qapi_qmp`, any [`qapi_spec::Command`]);
//! a reply is handed out as JSON and typed by whoever asked ([`Reply::into_result`]), since
//! the core holds commands of every type at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest line accepted from QEMU. Its largest replies here (`query-pci` of a machine
/// with many devices, `query-migrate`) are a few tens of KiB.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How many commands may wait for the greeting, or be in flight, at once.
pub const MAX_COMMANDS: usize = 256;

/// How many outputs may wait to be taken: a caller that never takes events must not make
/// the core grow for ever (an event stream of a running migration is unbounded).
pub const MAX_OUTPUTS: usize = 4096;

/// The id of a command, as the core numbers them (0 is `qmp_capabilities`).
pub type CommandId = u64;

/// What made the connection unusable; the core refuses all further input after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("QMP: a line of more than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("QMP: a line that is not a JSON object: {line}")]
    Malformed { line: String },
    #[error("QMP: the first message is not a greeting: {line}")]
    NoGreeting { line: String },
    #[error("QMP: qmp_capabilities was refused: {0}")]
    CapabilitiesRefused(QmpError),
    #[error("QMP: a reply with no command waiting for it: {line}")]
    UnexpectedReply { line: String },
    #[error("QMP: a message that is neither a reply nor an event: {line}")]
    Unknown { line: String },
    #[error("QMP: more than {MAX_COMMANDS} commands waiting")]
    TooManyCommands,
    #[error("QMP: more than {MAX_OUTPUTS} replies and events not taken")]
    TooManyOutputs,
    #[error("QMP: {0}")]
    Closed(String),
}

/// An error reply: QEMU's class (`GenericError`, `DeviceNotFound`, …) and its description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {desc}")]
pub struct QmpError {
    pub class: String,
    pub desc: String,
}

/// What QEMU said it is in its greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// `major.minor.micro`.
    pub version: (u64, u64, u64),
    /// The distribution's package string (for example `Debian 1:7.2+dfsg-7`).
    pub package: String,
    /// The capabilities offered (`oob`); none is asked for.
    pub capabilities: Vec<String>,
}

/// The reply to command `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub id: CommandId,
    /// The command's name, for messages.
    pub command: &'static str,
    pub result: Result<Value, ReplyError>,
}

/// Why a command has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("{0}")]
    Qmp(QmpError),
    #[error("no reply within {0:?}")]
    TimedOut(Duration),
}

impl Reply {
    /// The result typed as command `C` answers (the caller knows which command `id` was).
    pub fn into_result<C: qapi_spec::Command>(self) -> Result<C::Ok, CommandFailed> {
        let command = self.command;
        let value = self.result.map_err(|error| CommandFailed::Refused { command, error })?;
        // QEMU answers a command that returns nothing with `{}`; the schema's unit type
        // (`Empty`) reads it as such.
        serde_json::from_value(value.clone()).map_err(|e| CommandFailed::Unreadable {
            command,
            reason: e.to_string(),
            reply: value.to_string(),
        })
    }
}

/// Why a typed command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandFailed {
    #[error("{command}: {error}")]
    Refused { command: &'static str, error: ReplyError },
    #[error("{command}: a reply that does not read as the schema says ({reason}): {reply}")]
    Unreadable { command: &'static str, reason: String, reply: String },
}

/// An asynchronous event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// `DEVICE_DELETED`, `MIGRATION`, `STOP`, …
    pub name: String,
    pub data: Value,
    /// QEMU's clock when it happened, microseconds since the epoch.
    pub timestamp_us: u64,
}

impl EventRecord {
    /// The event typed by QEMU's schema; `None` for one this schema does not know (a newer
    /// QEMU's) or that does not read as it says.
    pub fn typed(&self) -> Option<qapi_qmp::Event> {
        let seconds = self.timestamp_us / 1_000_000;
        let microseconds = self.timestamp_us % 1_000_000;
        let v = serde_json::json!({
            "event": self.name,
            "data": self.data,
            "timestamp": {"seconds": seconds, "microseconds": microseconds},
        });
        serde_json::from_value(v).ok()
    }
}

/// What the core has to say.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The greeting was read and `qmp_capabilities` answered: commands now go out.
    Ready(Greeting),
    Reply(Reply),
    Event(EventRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingGreeting,
    Negotiating,
    Ready,
}

struct Pending {
    command: &'static str,
    deadline: Instant,
    timeout: Duration,
}

/// One QMP connection's protocol state.
pub struct Qmp {
    state: State,
    failed: Option<ProtocolError>,
    /// Bytes of the line being received.
    line: Vec<u8>,
    next_id: CommandId,
    /// Commands sent (or queued to be) and not yet answered, by id.
    pending: BTreeMap<CommandId, Pending>,
    /// Commands waiting for the negotiation to end, already encoded.
    held: VecDeque<Vec<u8>>,
    transmit: VecDeque<Vec<u8>>,
    outputs: VecDeque<Output>,
    greeting: Option<Greeting>,
    capabilities_deadline: Instant,
    /// Commands that timed out, whose late replies are dropped (at most [`MAX_COMMANDS`], the
    /// oldest forgotten first).
    forgotten: BTreeSet<CommandId>,
}

/// The id of `qmp_capabilities`.
const CAPABILITIES_ID: CommandId = 0;

impl Qmp {
    /// A connection just opened at `now`; the greeting and the negotiation must be over by
    /// `now + negotiate_timeout`.
    pub fn new(now: Instant, negotiate_timeout: Duration) -> Qmp {
        Qmp {
            state: State::AwaitingGreeting,
            failed: None,
            line: Vec::new(),
            next_id: CAPABILITIES_ID + 1,
            pending: BTreeMap::new(),
            held: VecDeque::new(),
            transmit: VecDeque::new(),
            outputs: VecDeque::new(),
            greeting: None,
            capabilities_deadline: now + negotiate_timeout,
            forgotten: BTreeSet::new(),
        }
    }

    /// The greeting, once read.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Whether commands go out now (the negotiation is over).
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready && self.failed.is_none()
    }

    /// Sends command `cmd` (at once if the negotiation is over, else after it); its reply
    /// comes as an [`Output::Reply`] with the returned id, or as a timeout after `timeout`.
    pub fn execute<C: qapi_spec::Command>(
        &mut self,
        cmd: &C,
        now: Instant,
        timeout: Duration,
    ) -> Result<CommandId, ProtocolError> {
        self.check()?;
        if self.pending.len() >= MAX_COMMANDS {
            return Err(ProtocolError::TooManyCommands);
        }
        let id = self.next_id;
        self.next_id += 1;
        let bytes = encode(C::NAME, cmd, id);
        self.pending.insert(id, Pending { command: C::NAME, deadline: now + timeout, timeout });
        match self.state {
            State::Ready => self.transmit.push_back(bytes),
            _ => self.held.push_back(bytes),
        }
        Ok(id)
    }

    /// Bytes QEMU sent, in any pieces.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.check()?;
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            if self.line.len() + body.len() > MAX_LINE_BYTES {
                return self.fail(ProtocolError::LineTooLong);
            }
            self.line.extend_from_slice(body);
            if ends {
                let line = std::mem::take(&mut self.line);
                if let Err(e) = self.handle_line(&line) {
                    return self.fail(e);
                }
            }
        }
        Ok(())
    }

    /// The next bytes to write to QEMU.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether an output waits to be taken.
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// The earliest time [`Qmp::handle_timeout`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let commands = self.pending.values().map(|p| p.deadline).min();
        match self.state {
            State::Ready => commands,
            _ => Some(commands.map_or(self.capabilities_deadline, |c| c.min(self.capabilities_deadline))),
        }
    }

    /// Fails what has waited past its deadline at `now`: a command's reply (it comes as an
    /// [`Output::Reply`] with [`ReplyError::TimedOut`], and a late reply to it is then
    /// ignored), or the whole connection when the greeting or negotiation has.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ProtocolError> {
        self.check()?;
        if self.state != State::Ready && now >= self.capabilities_deadline {
            let what = if self.state == State::AwaitingGreeting { "greeting" } else { "qmp_capabilities reply" };
            return self.fail(ProtocolError::Closed(format!("no {what} from QEMU in time")));
        }
        let late: Vec<CommandId> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(&id, _)| id).collect();
        for id in late {
            let p = self.pending.remove(&id).expect("listed");
            self.forgotten.insert(id);
            if self.forgotten.len() > MAX_COMMANDS {
                self.forgotten.pop_first();
            }
            let reply = Reply { id, command: p.command, result: Err(ReplyError::TimedOut(p.timeout)) };
            self.push(Output::Reply(reply))?;
        }
        Ok(())
    }

    /// The connection ended (`why`): every later call fails with it.
    pub fn close(&mut self, why: &str) {
        if self.failed.is_none() {
            self.failed = Some(ProtocolError::Closed(why.to_string()));
        }
    }

    /// The error that ended the connection, if one has.
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.failed.as_ref()
    }

    fn check(&self) -> Result<(), ProtocolError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn fail<T>(&mut self, e: ProtocolError) -> Result<T, ProtocolError> {
        self.failed = Some(e.clone());
        Err(e)
    }

    fn push(&mut self, o: Output) -> Result<(), ProtocolError> {
        if self.outputs.len() >= MAX_OUTPUTS {
            return self.fail(ProtocolError::TooManyOutputs);
        }
        self.outputs.push_back(o);
        Ok(())
    }

    fn handle_line(&mut self, line: &[u8]) -> Result<(), ProtocolError> {
        let text = || String::from_utf8_lossy(line).into_owned();
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(line) else {
            return Err(ProtocolError::Malformed { line: text() });
        };
        if self.state == State::AwaitingGreeting {
            let Some(g) = m.get("QMP").and_then(read_greeting) else {
                return Err(ProtocolError::NoGreeting { line: text() });
            };
            self.greeting = Some(g);
            self.state = State::Negotiating;
            self.transmit.push_back(encode_raw("qmp_capabilities", None, CAPABILITIES_ID));
            return Ok(());
        }
        if let Some(Value::String(name)) = m.get("event") {
            let name = name.clone();
            let data = m.remove("data").unwrap_or(Value::Object(Default::default()));
            let ts = m.get("timestamp");
            let part = |k: &str| ts.and_then(|t| t.get(k)).and_then(Value::as_u64).unwrap_or(0);
            let timestamp_us = part("seconds").saturating_mul(1_000_000).saturating_add(part("microseconds"));
            return self.push(Output::Event(EventRecord { name, data, timestamp_us }));
        }
        let result = if let Some(v) = m.remove("return") {
            Ok(v)
        } else if let Some(e) = m.get("error") {
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Err(QmpError { class: field("class"), desc: field("desc") })
        } else {
            return Err(ProtocolError::Unknown { line: text() });
        };
        let Some(id) = m.get("id").and_then(Value::as_u64) else {
            return Err(ProtocolError::UnexpectedReply { line: text() });
        };
        if self.state == State::Negotiating {
            if id != CAPABILITIES_ID {
                return Err(ProtocolError::UnexpectedReply { line: text() });
            }
            if let Err(e) = result {
                return Err(ProtocolError::CapabilitiesRefused(e));
            }
            self.state = State::Ready;
            self.transmit.extend(self.held.drain(..));
            let g = self.greeting.clone().expect("read before the negotiation");
            return self.push(Output::Ready(g));
        }
        let Some(p) = self.pending.remove(&id) else {
            // A reply to a command that timed out is late, not wrong.
            if self.forgotten.remove(&id) {
                return Ok(());
            }
            return Err(ProtocolError::UnexpectedReply { line: text() });
        };
        self.push(Output::Reply(Reply { id, command: p.command, result: result.map_err(ReplyError::Qmp) }))
    }
}

fn read_greeting(g: &Value) -> Option<Greeting> {
    let v = g.get("version")?;
    let q = v.get("qemu")?;
    let n = |k: &str| q.get(k).and_then(Value::as_u64);
    Some(Greeting {
        version: (n("major")?, n("minor")?, n("micro")?),
        package: v.get("package").and_then(Value::as_str).unwrap_or("").to_string(),
        capabilities: g
            .get("capabilities")?
            .as_array()?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect(),
    })
}

/// A command's line: `{"execute": name, "arguments": cmd, "id": id}` (no `arguments` for a
/// command without any).
fn encode<C: qapi_spec::Command>(name: &str, cmd: &C, id: CommandId) -> Vec<u8> {
    let args = serde_json::to_value(cmd).ok().filter(|a| a.as_object().is_some_and(|o| !o.is_empty()));
    encode_raw(name, args, id)
}

fn encode_raw(name: &str, args: Option<Value>, id: CommandId) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    m.insert("execute".into(), Value::String(name.into()));
    if let Some(a) = args {
        m.insert("arguments".into(), a);
    }
    m.insert("id".into(), Value::from(id));
    let mut bytes = serde_json::to_vec(&Value::Object(m)).expect("a JSON value serialises");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What QEMU 7.2 (Debian 12's) sent in one session, recorded in the lab: the greeting,
    /// the answer to `qmp_capabilities`, then the replies to `query-status`, `cont` (its
    /// `RESUME` event comes before its reply), `stop` (likewise `STOP`), `device_del` of a
    /// device that does not exist, and `query-version`.
    const QEMU_7_2: &str = concat!(
        r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#,
        "\n",
        r#"{"return": {}, "id": 0}"#,
        "\n",
        r#"{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": 1}"#,
        "\n",
        r#"{"timestamp": {"seconds": 1796675501, "microseconds": 754809}, "event": "RESUME"}"#,
        "\n",
        r#"{"return": {}, "id": 2}"#,
        "\n",
        r#"{"timestamp": {"seconds": 1796675501, "microseconds": 755251}, "event": "STOP"}"#,
        "\n",
        r#"{"return": {}, "id": 3}"#,
        "\n",
        r#"{"id": 4, "error": {"class": "DeviceNotFound", "desc": "Device 'hca0' not found"}}"#,
        "\n",
        r#"{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "id": 5}"#,
        "\n",
    );

    const T: Duration = Duration::from_secs(5);

    /// A core that has asked for the recorded session's five commands before connecting.
    fn with_commands(now: Instant) -> Qmp {
        let mut q = Qmp::new(now, T);
        assert_eq!(q.execute(&qapi_qmp::query_status {}, now, T), Ok(1));
        assert_eq!(q.execute(&qapi_qmp::cont {}, now, T), Ok(2));
        assert_eq!(q.execute(&qapi_qmp::stop {}, now, T), Ok(3));
        assert_eq!(q.execute(&qapi_qmp::device_del { id: "hca0".into() }, now, T), Ok(4));
        assert_eq!(q.execute(&qapi_qmp::query_version {}, now, T), Ok(5));
        q
    }

    fn sent(q: &mut Qmp) -> Vec<Value> {
        std::iter::from_fn(|| q.poll_transmit())
            .map(|b| {
                assert_eq!(b.last(), Some(&b'\n'), "one line per message");
                serde_json::from_slice(&b).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_recorded_session_replays_split_anywhere() {
        let bytes = QEMU_7_2.as_bytes();
        for cut in 0..=bytes.len() {
            let now = Instant::now();
            let mut q = with_commands(now);
            // Nothing goes out before the greeting; commands wait for the negotiation.
            assert!(sent(&mut q).is_empty());
            q.feed(&bytes[..cut]).unwrap();
            q.feed(&bytes[cut..]).unwrap();
            let out: Vec<Value> = sent(&mut q);
            assert_eq!(out[0], serde_json::json!({"execute": "qmp_capabilities", "id": 0}));
            assert_eq!(out[4], serde_json::json!({"execute": "device_del", "arguments": {"id": "hca0"}, "id": 4}));
            assert_eq!(out[1], serde_json::json!({"execute": "query-status", "id": 1}), "no empty arguments");
            assert_eq!(out.len(), 6);
            let outputs: Vec<Output> = std::iter::from_fn(|| q.poll_output()).collect();
            let Output::Ready(g) = &outputs[0] else { panic!("{outputs:?}") };
            assert_eq!((g.version, g.capabilities.clone()), ((7, 2, 22), vec!["oob".to_string()]));
            let reply = |i: usize| match &outputs[i] {
                Output::Reply(r) => r.clone(),
                other => panic!("output {i}: {other:?}"),
            };
            let status = reply(1).into_result::<qapi_qmp::query_status>().unwrap();
            assert_eq!((status.status, status.running), (qapi_qmp::RunState::prelaunch, false));
            let Output::Event(resume) = &outputs[2] else { panic!("{outputs:?}") };
            assert_eq!((resume.name.as_str(), resume.timestamp_us), ("RESUME", 1_796_675_501_754_809));
            assert!(matches!(resume.typed(), Some(qapi_qmp::Event::RESUME { .. })));
            assert_eq!(reply(3).id, 2);
            reply(3).into_result::<qapi_qmp::cont>().unwrap();
            assert!(matches!(&outputs[4], Output::Event(e) if e.name == "STOP"));
            assert_eq!(reply(5).id, 3);
            let refused = reply(6).into_result::<qapi_qmp::device_del>().unwrap_err();
            let CommandFailed::Refused { command: "device_del", error: ReplyError::Qmp(e) } = refused else {
                panic!("{refused:?}")
            };
            assert_eq!((e.class.as_str(), e.desc.as_str()), ("DeviceNotFound", "Device 'hca0' not found"));
            let v = reply(7).into_result::<qapi_qmp::query_version>().unwrap();
            assert_eq!((v.qemu.major, v.qemu.minor, v.qemu.micro), (7, 2, 22));
            assert_eq!(outputs.len(), 8);
        }
    }

    /// Each way a peer can break the protocol is refused, by name, and the core then refuses
    /// everything.
    #[test]
    fn a_broken_peer_is_refused_by_name() {
        let now = Instant::now();
        let greeting = QEMU_7_2.lines().next().unwrap().to_string() + "\n";
        let ready = greeting.clone() + "{\"return\": {}, \"id\": 0}\n";
        type Expected = fn(&ProtocolError) -> bool;
        let cases: Vec<(String, Expected)> = vec![
            ("not json\n".into(), |e| matches!(e, ProtocolError::Malformed { .. })),
            ("[1, 2]\n".into(), |e| matches!(e, ProtocolError::Malformed { .. })),
            ("{\"return\": {}, \"id\": 0}\n".into(), |e| matches!(e, ProtocolError::NoGreeting { .. })),
            (
                greeting.clone() + "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": 0}\n",
                |e| matches!(e, ProtocolError::CapabilitiesRefused(q) if q.desc == "no"),
            ),
            (greeting.clone() + "{\"return\": {}, \"id\": 7}\n", |e| {
                matches!(e, ProtocolError::UnexpectedReply { .. })
            }),
            (ready.clone() + "{\"return\": {}, \"id\": 99}\n", |e| matches!(e, ProtocolError::UnexpectedReply { .. })),
            (ready.clone() + "{\"return\": {}}\n", |e| matches!(e, ProtocolError::UnexpectedReply { .. })),
            (ready.clone() + "{\"hello\": 1}\n", |e| matches!(e, ProtocolError::Unknown { .. })),
            (ready.clone() + &"x".repeat(MAX_LINE_BYTES + 1), |e| *e == ProtocolError::LineTooLong),
        ];
        for (input, expected) in cases {
            let mut q = Qmp::new(now, T);
            let e = q.feed(input.as_bytes()).expect_err("refused");
            assert!(expected(&e), "{e:?} for {:?}", &input[..input.len().min(200)]);
            assert_eq!(q.feed(b"\n"), Err(e.clone()), "refuses everything after");
            assert_eq!(q.execute(&qapi_qmp::stop {}, now, T), Err(e));
        }
    }

    #[test]
    fn a_command_without_a_reply_times_out_and_its_late_reply_is_dropped() {
        let now = Instant::now();
        let mut q = Qmp::new(now, T);
        let lines: Vec<&str> = QEMU_7_2.lines().collect();
        q.feed(format!("{}\n{}\n", lines[0], lines[1]).as_bytes()).unwrap();
        assert!(matches!(q.poll_output(), Some(Output::Ready(_))));
        let id = q.execute(&qapi_qmp::query_status {}, now, Duration::from_secs(1)).unwrap();
        assert_eq!(q.next_deadline(), Some(now + Duration::from_secs(1)));
        q.handle_timeout(now + Duration::from_millis(999)).unwrap();
        assert_eq!(q.poll_output(), None);
        q.handle_timeout(now + Duration::from_secs(1)).unwrap();
        let Some(Output::Reply(r)) = q.poll_output() else { panic!() };
        assert_eq!((r.id, r.result), (id, Err(ReplyError::TimedOut(Duration::from_secs(1)))));
        // The reply comes after all: dropped, not an error.
        q.feed(format!("{}\n", lines[2]).as_bytes()).unwrap();
        assert_eq!(q.poll_output(), None);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn a_qemu_that_never_greets_fails_the_connection_at_its_deadline() {
        let now = Instant::now();
        let mut q = Qmp::new(now, Duration::from_secs(2));
        assert_eq!(q.next_deadline(), Some(now + Duration::from_secs(2)));
        q.handle_timeout(now + Duration::from_secs(1)).unwrap();
        let e = q.handle_timeout(now + Duration::from_secs(2)).unwrap_err();
        assert!(matches!(&e, ProtocolError::Closed(why) if why.contains("greeting")), "{e:?}");
    }

    /// Events nobody takes do not grow the core without bound.
    #[test]
    fn outputs_not_taken_are_bounded() {
        let now = Instant::now();
        let mut q = Qmp::new(now, T);
        let lines: Vec<&str> = QEMU_7_2.lines().collect();
        q.feed(format!("{}\n{}\n", lines[0], lines[1]).as_bytes()).unwrap();
        let event = format!("{}\n", lines[3]);
        let mut fed = 0;
        let e = loop {
            match q.feed(event.as_bytes()) {
                Ok(()) => fed += 1,
                Err(e) => break e,
            }
        };
        assert_eq!((e, fed), (ProtocolError::TooManyOutputs, MAX_OUTPUTS - 1));
    }
}

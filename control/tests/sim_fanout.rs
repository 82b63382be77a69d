//! The control plane's fan-out at scale, simulated: the real [`Coordinator`] and a real
//! [`Relay`] per host, for up to 100,000 simulated ranks, with every control message passed
//! as a value through a round-based network (one round = every message in flight is
//! delivered; replies go out in the next round).
//!
//! What it shows, per phase (quiesce, resume): the rounds from `ctl`'s request to its answer,
//! the messages in all, the most messages any one node handled, what the coordinator itself
//! handled, and the bytes that reached the coordinator. Rounds grow with the depth of the
//! relay tree, `1 + ceil(log_k(hosts))`, so with the logarithm of the rank count; the
//! coordinator's messages stay bounded by the fan-out `k`; the total is linear (every rank
//! must hear the command and answer).
//!
//! Run the table (written to docs/control-tree.md by hand, with this command):
//! `cargo test --release -p kawarimi-runtime --test sim_fanout -- --nocapture`

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use kawarimi_control::coordinator::{Coordinator, CoordinatorConfig};
use kawarimi_control::fanout::ConnId;
use kawarimi_control::proto::{Reply, Request, SwitchCommand, SwitchPhase, CONTROL_VERSION};
use kawarimi_control::relay::{Relay, MEMBERS_BATCH};

/// A node of the simulated control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Node {
    Ctl,
    Coordinator,
    Relay(u32),
    Rank(u32),
}

/// A message in flight on connection `conn`, whose server side is `server` and client side
/// `client`.
#[derive(Debug)]
enum Msg {
    /// Client to server.
    Up { conn: ConnId, req: Request },
    /// Server to client.
    Down { conn: ConnId, reply: Reply },
}

#[derive(Debug, Default, Clone, Copy)]
struct PhaseCost {
    rounds: u32,
    messages: u64,
    coordinator_messages: u64,
    busiest_node_messages: u64,
    bytes_to_coordinator: u64,
}

struct Sim {
    coord: Coordinator,
    relays: Vec<Relay>,
    /// Each relay's connection to its parent.
    up_conn: Vec<ConnId>,
    /// Connection → (client, server).
    conns: HashMap<ConnId, (Node, Node)>,
    next_conn: ConnId,
    /// The relay each listen address belongs to.
    listen: HashMap<String, u32>,
    in_flight: VecDeque<Msg>,
    now: Instant,
    /// Ranks that ignore commands (a fault).
    silent: Vec<u32>,
    ctl_conn: ConnId,
    ctl_inbox: Vec<Reply>,
    /// Messages handled per node in the current phase.
    handled: HashMap<Node, u64>,
    bytes_to_coordinator: u64,
    delivered: u64,
}

impl Sim {
    fn connect(&mut self, client: Node, server: Node) -> ConnId {
        self.next_conn += 1;
        let c = self.next_conn;
        self.conns.insert(c, (client, server));
        match server {
            Node::Coordinator => self.coord.handle_connect(c),
            Node::Relay(h) => self.relays[h as usize].handle_connect(c),
            _ => unreachable!("only the coordinator and relays accept"),
        }
        c
    }

    /// Collects every output of every node into the network.
    fn collect(&mut self) {
        while let Some((conn, reply)) = self.coord.out.poll_reply() {
            self.in_flight.push_back(Msg::Down { conn, reply });
        }
        while self.coord.out.poll_close().is_some() {}
        while self.coord.out.poll_log().is_some() {}
        for relay in &mut self.relays {
            while let Some((conn, reply)) = relay.out.poll_reply() {
                self.in_flight.push_back(Msg::Down { conn, reply });
            }
            while relay.out.poll_close().is_some() {}
            while relay.out.poll_log().is_some() {}
        }
        for (h, relay) in self.relays.iter_mut().enumerate() {
            while let Some(req) = relay.poll_up() {
                let conn = self.up_conn[h];
                self.in_flight.push_back(Msg::Up { conn, req });
            }
        }
    }

    /// Delivers everything in flight (one round); returns how many messages that was.
    fn round(&mut self) -> usize {
        self.collect();
        let batch: Vec<Msg> = self.in_flight.drain(..).collect();
        let n = batch.len();
        for m in batch {
            self.delivered += 1;
            match m {
                Msg::Up { conn, req } => {
                    let (client, server) = self.conns[&conn];
                    *self.handled.entry(client).or_default() += 1;
                    *self.handled.entry(server).or_default() += 1;
                    match server {
                        Node::Coordinator => {
                            self.bytes_to_coordinator += serde_json::to_string(&req).unwrap().len() as u64 + 1;
                            self.coord.handle_request(conn, req, self.now)
                        }
                        Node::Relay(h) => self.relays[h as usize].handle_request(conn, req, self.now),
                        _ => unreachable!(),
                    }
                }
                Msg::Down { conn, reply } => {
                    let (client, server) = self.conns[&conn];
                    *self.handled.entry(client).or_default() += 1;
                    *self.handled.entry(server).or_default() += 1;
                    self.deliver_to_client(client, conn, reply);
                }
            }
        }
        n
    }

    /// A reply reaches a client: a relay's parent link, a rank, or ctl.
    fn deliver_to_client(&mut self, client: Node, conn: ConnId, reply: Reply) {
        match client {
            Node::Ctl => self.ctl_inbox.push(reply),
            Node::Relay(h) => match reply {
                Reply::Welcome { .. } if self.up_conn[h as usize] == conn => {
                    self.relays[h as usize].handle_attached(self.now)
                }
                Reply::Redirect { parent } => {
                    let p = self.listen[&parent];
                    let c = self.connect(Node::Relay(h), Node::Relay(p));
                    self.up_conn[h as usize] = c;
                    let join = self.relays[h as usize].join_request(Some(format!("relay-{h}")));
                    self.in_flight.push_back(Msg::Up { conn: c, req: join });
                }
                other => self.relays[h as usize].handle_parent(other, self.now),
            },
            Node::Rank(r) => {
                let Reply::Command { command, epoch, .. } = reply else { return };
                if self.silent.contains(&r) {
                    return;
                }
                let phase = match command {
                    SwitchCommand::Quiesce => SwitchPhase::Detached,
                    SwitchCommand::Resume => SwitchPhase::Running,
                };
                let req = Request::Report {
                    epoch,
                    phase,
                    millis: 1.0,
                    detail: None,
                    transport: Some("tcp".into()),
                    broken: vec![],
                };
                self.in_flight.push_back(Msg::Up { conn, req });
            }
            Node::Coordinator => unreachable!(),
        }
    }
}

impl Sim {
    /// `ranks` ranks, `per_host` per host (one relay each), the coordinator taking at most
    /// `fanout` relays. Builds the tree through the real joins and redirects, and subscribes
    /// every rank; returns once the coordinator knows every rank.
    fn new(ranks: u32, per_host: u32, fanout: usize) -> Sim {
        let hosts = ranks.div_ceil(per_host);
        let cfg = CoordinatorConfig { relay_fanout: fanout, ..Default::default() };
        let mut sim = Sim {
            coord: Coordinator::new("sim", cfg),
            relays: (0..hosts).map(|h| Relay::new(h * per_host, ranks)).collect(),
            up_conn: vec![0; hosts as usize],
            conns: HashMap::new(),
            next_conn: 0,
            listen: (0..hosts).map(|h| (format!("relay-{h}"), h)).collect(),
            in_flight: VecDeque::new(),
            now: Instant::now(),
            silent: Vec::new(),
            ctl_conn: 0,
            ctl_inbox: Vec::new(),
            handled: HashMap::new(),
            bytes_to_coordinator: 0,
            delivered: 0,
        };
        // Relays join in host order (the coordinator places them by arrival).
        for h in 0..hosts {
            let c = sim.connect(Node::Relay(h), Node::Coordinator);
            sim.up_conn[h as usize] = c;
            let join = sim.relays[h as usize].join_request(Some(format!("relay-{h}")));
            sim.coord.handle_request(c, join, sim.now);
            sim.collect();
            while !sim.in_flight.is_empty() {
                sim.round();
            }
        }
        for r in 0..ranks {
            let h = r / per_host;
            let c = sim.connect(Node::Rank(r), Node::Relay(h));
            let sub = Request::Subscribe {
                version: CONTROL_VERSION,
                rank: r,
                transport: Some("tcp".into()),
                host: Some(format!("host{h}")),
                pid: Some(r),
            };
            sim.relays[h as usize].handle_request(c, sub, sim.now);
        }
        // Members news is batched: let the batches go up the tree.
        for _ in 0..64 {
            sim.now += MEMBERS_BATCH;
            for relay in &mut sim.relays {
                relay.handle_timeout(sim.now);
            }
            while sim.round() > 0 {}
            let st = sim.coord.status();
            if st.ranks.len() as u32 == ranks && st.ranks.iter().all(|r| r.subscribed) {
                sim.ctl_conn = sim.connect(Node::Ctl, Node::Coordinator);
                sim.coord.handle_request(sim.ctl_conn, Request::CtlHello { version: CONTROL_VERSION }, sim.now);
                while sim.round() > 0 {}
                assert!(matches!(sim.ctl_inbox.pop(), Some(Reply::Welcome { .. })));
                return sim;
            }
        }
        panic!("the tree did not learn every rank");
    }

    /// Runs one phase from ctl's request to its answer; returns the answer and what it cost.
    /// Time advances `tick` per round, so that deadlines can pass.
    fn phase(&mut self, req: Request, tick: Duration) -> (Reply, PhaseCost) {
        self.handled.clear();
        self.bytes_to_coordinator = 0;
        let delivered0 = self.delivered;
        self.coord.handle_request(self.ctl_conn, req, self.now);
        // The request reaching the coordinator is the first round; the loop counts the rest.
        let mut rounds = 2;
        loop {
            self.now += tick;
            self.coord.handle_timeout(self.now);
            for relay in &mut self.relays {
                if relay.poll_timeout().is_some_and(|t| t <= self.now) {
                    relay.handle_timeout(self.now);
                }
            }
            self.round();
            if let Some(reply) = self.ctl_inbox.pop() {
                let busiest = self.handled.values().copied().max().unwrap_or(0);
                let cost = PhaseCost {
                    rounds,
                    messages: self.delivered - delivered0 + 1,
                    coordinator_messages: self.handled.get(&Node::Coordinator).copied().unwrap_or(0) + 1,
                    busiest_node_messages: busiest,
                    bytes_to_coordinator: self.bytes_to_coordinator,
                };
                return (reply, cost);
            }
            rounds += 1;
            assert!(rounds < 10_000, "no answer");
        }
    }
}

/// Depth of a k-ary tree of `hosts` relays placed as the coordinator places them.
fn relay_depth(hosts: u32, k: u32) -> u32 {
    let (mut depth, mut level, mut placed) = (0, 1u64, 0u64);
    while placed < hosts as u64 {
        level *= k as u64;
        placed += level;
        depth += 1;
    }
    depth
}

fn quiesce() -> Request {
    Request::Quiesce { timeout_ms: 30_000 }
}

fn resume() -> Request {
    Request::Resume { timeout_ms: 30_000, transport: None }
}

const PER_HOST: u32 = 32;
const FANOUT: usize = 16;

#[test]
fn rounds_grow_with_the_logarithm_of_the_rank_count_and_the_coordinator_stays_bounded() {
    println!("| ranks | hosts | relay depth | phase | rounds | messages | coordinator msgs | busiest node msgs | bytes to coordinator |");
    println!("|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    let mut rounds_seen = Vec::new();
    for ranks in [1_000u32, 10_000, 100_000] {
        let t = Instant::now();
        let mut sim = Sim::new(ranks, PER_HOST, FANOUT);
        let hosts = ranks.div_ceil(PER_HOST);
        let depth = relay_depth(hosts, FANOUT as u32);
        for (name, req) in [("quiesce", quiesce()), ("resume", resume())] {
            let (reply, cost) = sim.phase(req, Duration::from_micros(100));
            match reply {
                Reply::SafeToUnplug { ranks: n, .. } | Reply::Resumed { ranks: n, .. } => assert_eq!(n, ranks),
                other => panic!("{name} at {ranks} ranks: {other:?}"),
            }
            println!(
                "| {ranks} | {hosts} | {depth} | {name} | {} | {} | {} | {} | {} |",
                cost.rounds,
                cost.messages,
                cost.coordinator_messages,
                cost.busiest_node_messages,
                cost.bytes_to_coordinator
            );
            // ctl -> coordinator -> `depth` levels of relays -> ranks, and the same way back.
            assert_eq!(cost.rounds, 2 * (depth + 2), "{name} at {ranks} ranks");
            // Every rank hears the command and answers; each relay once each way.
            assert_eq!(cost.messages, 2 * (ranks as u64 + hosts as u64) + 2, "{name} at {ranks} ranks");
            // The coordinator talks to at most `FANOUT` relays (and ctl).
            assert!(cost.coordinator_messages <= 2 * FANOUT as u64 + 2, "{name}: {cost:?}");
            // No node handles more than its children and its parent.
            assert!(cost.busiest_node_messages <= 2 * (PER_HOST as u64 + FANOUT as u64 + 1), "{name}: {cost:?}");
            rounds_seen.push(cost.rounds);
        }
        eprintln!("{ranks} ranks simulated in {:?}", t.elapsed());
    }
    assert!(rounds_seen.windows(2).all(|w| w[1] >= w[0]));
}

#[test]
fn a_silent_rank_among_100000_is_named_by_its_relay_before_the_coordinator_times_out() {
    let ranks = 100_000;
    let mut sim = Sim::new(ranks, PER_HOST, FANOUT);
    sim.silent.push(77_777);
    // 30 s of budget at 10 ms per round: the relay of rank 77,777 fails the step first.
    let (reply, cost) = sim.phase(quiesce(), Duration::from_millis(10));
    match reply {
        Reply::SwitchFailed { missing, reason, .. } => {
            assert_eq!(missing, vec![77_777], "{reason}");
            assert!(reason.contains("timed out"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(cost.rounds * 10 < 30_000, "named before the coordinator's own deadline: {cost:?}");
    // The job is left quiesced; once the rank answers again, a resume works.
    sim.silent.clear();
    let (reply, _) = sim.phase(resume(), Duration::from_micros(100));
    assert!(matches!(reply, Reply::Resumed { ranks: 100_000, .. }), "{reply:?}");
}

#[test]
fn a_relay_lost_as_a_quiesce_starts_fails_it_at_once_naming_its_ranks() {
    let ranks = 10_000;
    let mut sim = Sim::new(ranks, PER_HOST, FANOUT);
    // Host 100's relay (ranks 3200..3232) dies while the command is on its way down: its
    // parent sees the connection close before the command arrives, and tells its own parent
    // at once (not in the next batch of news), so the step fails without waiting for its
    // deadline.
    let up = sim.up_conn[100];
    let (_, server) = sim.conns[&up];
    sim.coord.handle_request(sim.ctl_conn, quiesce(), sim.now);
    match server {
        Node::Coordinator => sim.coord.handle_disconnect(up, sim.now),
        Node::Relay(p) => sim.relays[p as usize].handle_disconnect(up, sim.now),
        _ => unreachable!(),
    }
    let mut answer = None;
    for _ in 0..100 {
        sim.now += Duration::from_micros(100);
        sim.round();
        if let Some(r) = sim.ctl_inbox.pop() {
            answer = Some(r);
            break;
        }
    }
    match answer {
        Some(Reply::SwitchFailed { missing, .. }) => assert_eq!(missing, (3200..3232).collect::<Vec<u32>>()),
        other => panic!("{other:?}"),
    }
}

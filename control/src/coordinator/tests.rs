use super::*;

fn hello(c: &mut Coordinator, conn: ConnId, rank: u32, size: u32, now: Instant) {
    c.handle_connect(conn);
    c.handle_request(
        conn,
        Request::Hello { version: CONTROL_VERSION, rank, size, host: "h".into(), pid: 100 + rank },
        now,
    );
    assert_eq!(c.out.poll_reply(), Some((conn, Reply::Welcome { job: "j".into() })));
}

/// A coordinator whose `n` ranks said hello (conns 10..) and subscribed (conns 1..=n).
fn subscribed(n: u32, cfg: CoordinatorConfig, now: Instant) -> Coordinator {
    let mut c = Coordinator::new("j", cfg);
    for r in 0..n {
        hello(&mut c, 10 + r as u64, r, n, now);
        let conn = 1 + r as u64;
        c.handle_connect(conn);
        let sub = Request::Subscribe { version: CONTROL_VERSION, rank: r, transport: None, host: None, pid: None };
        c.handle_request(conn, sub, now);
        assert!(matches!(c.out.poll_reply(), Some((_, Reply::Welcome { .. }))));
    }
    c
}

/// A rank's report of a step of switch `epoch`.
fn report(epoch: u32, phase: SwitchPhase, detail: Option<&str>, transport: Option<&str>, broken: Vec<u32>) -> Request {
    Request::Report {
        epoch,
        phase,
        millis: 1.0,
        detail: detail.map(String::from),
        transport: transport.map(String::from),
        broken,
    }
}

/// Rank 0 asks for a repair of its link to rank 1: the quiesce goes to all `n` ranks.
fn repair_begins(c: &mut Coordinator, n: usize, now: Instant) {
    c.handle_request(1, Request::Repair { rank: 0, peer: 1, reason: "reset".into(), epoch: 0 }, now);
    assert_eq!(std::iter::from_fn(|| c.out.poll_reply()).count(), n, "the repair's quiesce");
}

/// Checks that `cmds` are `command` for epoch 1 to every subscribed child, each naming the
/// repaired pairs of its own ranks (`want(conn)`).
fn assert_repair_lists(cmds: &[(ConnId, Reply)], command: SwitchCommand, want: impl Fn(ConnId) -> Vec<(u32, u32)>) {
    for (conn, cmd) in cmds {
        let Reply::Command { command: got, epoch: 1, repair, .. } = cmd else { panic!("{cmd:?}") };
        assert_eq!(*got, command, "to conn {conn}");
        assert_eq!(repair, &want(*conn), "the {command:?} to conn {conn}");
    }
}

#[test]
fn fence_completes_when_all_arrive_and_values_are_served() {
    let now = Instant::now();
    let mut c = Coordinator::new("j", CoordinatorConfig::default());
    for r in 0..3 {
        hello(&mut c, r as u64, r, 3, now);
        c.handle_request(r as u64, Request::Put { key: "a".into(), value: format!("{r:02x}") }, now);
    }
    for r in 0..2 {
        c.handle_request(r as u64, Request::Fence { seq: 1 }, now);
    }
    assert_eq!(c.out.poll_reply(), None, "no answer before the last rank");
    c.handle_request(2, Request::Fence { seq: 1 }, now);
    let mut done: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
    done.sort_by_key(|d| d.0);
    assert_eq!(done, (0..3).map(|r| (r, Reply::FenceDone { seq: 1 })).collect::<Vec<_>>());
    c.handle_request(0, Request::Get { rank: 2, key: "a".into() }, now);
    assert_eq!(c.out.poll_reply(), Some((0, Reply::Value { rank: 2, key: "a".into(), value: Some("02".into()) })));
    c.handle_request(0, Request::Get { rank: 2, key: "b".into() }, now);
    assert_eq!(c.out.poll_reply(), Some((0, Reply::Value { rank: 2, key: "b".into(), value: None })));
}

#[test]
fn fence_times_out_naming_the_missing_ranks() {
    let now = Instant::now();
    let cfg = CoordinatorConfig { fence_timeout: Duration::from_secs(5), ..Default::default() };
    let mut c = Coordinator::new("j", cfg);
    for r in 0..4 {
        hello(&mut c, r as u64, r, 4, now);
    }
    c.handle_request(0, Request::Fence { seq: 7 }, now);
    c.handle_request(2, Request::Fence { seq: 7 }, now);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(5)));
    c.handle_timeout(now + Duration::from_secs(4));
    assert_eq!(c.out.poll_reply(), None);
    c.handle_timeout(now + Duration::from_secs(5));
    let r = c.out.poll_reply().unwrap();
    assert!(matches!(&r.1, Reply::FenceFailed { seq: 7, missing, .. } if missing == &vec![1, 3]), "{r:?}");
    assert!(c.out.poll_log().unwrap().contains("missing ranks [1, 3]"));
}

#[test]
fn a_rank_that_disconnects_fails_the_fence_at_once() {
    let now = Instant::now();
    let mut c = Coordinator::new("j", CoordinatorConfig::default());
    hello(&mut c, 0, 0, 2, now);
    hello(&mut c, 1, 1, 2, now);
    c.handle_request(0, Request::Fence { seq: 1 }, now);
    c.handle_disconnect(1, now);
    assert!(
        matches!(c.out.poll_reply(), Some((0, Reply::FenceFailed { ref missing, ref reason, .. })) if missing == &vec![1] && reason.contains("rank 1 disconnected"))
    );
    assert!(!c.status().ranks[1].connected);
}

#[test]
fn bad_requests_are_refused_and_the_job_goes_on() {
    let now = Instant::now();
    let mut c = Coordinator::new("j", CoordinatorConfig::default());
    hello(&mut c, 0, 0, 2, now);
    // Before hello: only hello is allowed.
    c.handle_connect(9);
    c.handle_request(9, Request::Fence { seq: 1 }, now);
    assert!(matches!(c.out.poll_reply(), Some((9, Reply::Error { .. }))));
    assert_eq!(c.out.poll_close(), Some(9));
    // Inconsistent size, duplicate rank, wrong version.
    c.handle_connect(10);
    c.handle_request(10, Request::Hello { version: CONTROL_VERSION, rank: 1, size: 3, host: "x".into(), pid: 1 }, now);
    assert!(matches!(c.out.poll_reply(), Some((10, Reply::Error { ref message })) if message.contains("3 ranks")));
    c.handle_connect(11);
    c.handle_request(11, Request::Hello { version: CONTROL_VERSION, rank: 0, size: 2, host: "x".into(), pid: 1 }, now);
    assert!(
        matches!(c.out.poll_reply(), Some((11, Reply::Error { ref message })) if message.contains("already connected"))
    );
    c.handle_connect(12);
    c.handle_request(12, Request::CtlHello { version: 99 }, now);
    assert!(matches!(c.out.poll_reply(), Some((12, Reply::Error { .. }))));
    c.handle_connect(13);
    c.handle_malformed(13, "expected value at line 1");
    assert!(matches!(c.out.poll_reply(), Some((13, Reply::Error { ref message })) if message.contains("malformed")));
    // A ctl client may read status but not publish.
    c.handle_connect(14);
    c.handle_request(14, Request::CtlHello { version: CONTROL_VERSION }, now);
    assert!(matches!(c.out.poll_reply(), Some((14, Reply::Welcome { .. }))));
    c.handle_request(14, Request::Put { key: "k".into(), value: "00".into() }, now);
    assert!(matches!(c.out.poll_reply(), Some((14, Reply::Error { .. }))));
    // The rank that was connected is still there and still served.
    c.handle_request(0, Request::Status {}, now);
    assert!(
        matches!(c.out.poll_reply(), Some((0, Reply::Status { ref status })) if status.ranks[0].connected && status.size == Some(2))
    );
}

#[test]
fn a_repair_is_a_quiesce_and_a_resume_the_coordinator_runs_itself_naming_the_pair() {
    let now = Instant::now();
    // Three ranks subscribed directly (conns 1..=3); a ctl client on 99.
    let mut c = subscribed(3, CoordinatorConfig::default(), now);
    // A rank may only speak for itself.
    c.handle_request(1, Request::Repair { rank: 2, peer: 1, reason: "x".into(), epoch: 0 }, now);
    assert!(matches!(c.out.poll_reply(), Some((1, Reply::Error { .. }))), "rank 0 cannot ask for rank 2");
    c.handle_request(2, Request::Repair { rank: 1, peer: 0, reason: "verbs send failed".into(), epoch: 0 }, now);
    let quiesce: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
    assert_eq!(quiesce.len(), 3, "a quiesce to every rank: {quiesce:?}");
    // Each child hears of the pairs of its own ranks: rank 2 (conn 3) of none.
    let pairs_of = |conn| if conn == 3 { vec![] } else { vec![(0, 1)] };
    assert_repair_lists(&quiesce, SwitchCommand::Quiesce, pairs_of);
    // A second request for the same loss during the repair starts nothing more.
    c.handle_request(1, Request::Repair { rank: 0, peer: 1, reason: "reset".into(), epoch: 0 }, now);
    assert_eq!(c.out.poll_reply(), None);
    // An operator's quiesce meanwhile is refused, saying why.
    c.handle_connect(99);
    c.handle_request(99, Request::CtlHello { version: CONTROL_VERSION }, now);
    c.out.poll_reply();
    c.handle_request(99, Request::Quiesce { timeout_ms: 8000 }, now);
    let refused = c.out.poll_reply();
    assert!(
        matches!(&refused, Some((99, Reply::SwitchFailed { reason, .. })) if reason.contains("repair 1 of rank pairs {(0, 1)} is under way")),
        "{refused:?}"
    );
    c.handle_request(1, report(1, SwitchPhase::Detached, None, None, vec![1]), now);
    c.handle_request(2, report(1, SwitchPhase::Detached, None, None, vec![0]), now);
    assert_eq!(c.out.poll_reply(), None, "no resume before every rank detached");
    c.handle_request(3, report(1, SwitchPhase::Detached, None, None, vec![]), now);
    let resume: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
    assert_eq!(resume.len(), 3, "the resume follows at once, with no ctl client: {resume:?}");
    assert_repair_lists(&resume, SwitchCommand::Resume, pairs_of);
    for conn in 1..=3 {
        c.handle_request(conn, report(1, SwitchPhase::Running, None, Some("tcp:2"), vec![]), now);
    }
    assert_eq!(c.status().phase, "running");
    assert_eq!(c.status().epoch, 1);
    let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
    assert!(log.iter().any(|l| l.contains("repaired the links of rank pairs {(0, 1)}")), "{log:?}");
    // The pairs were repaired: an operator's next switch names none.
    c.handle_request(99, Request::Quiesce { timeout_ms: 8000 }, now);
    for (_, cmd) in std::iter::from_fn(|| c.out.poll_reply()) {
        assert!(matches!(cmd, Reply::Command { ref repair, .. } if repair.is_empty()), "{cmd:?}");
    }
}

#[test]
fn a_repair_whose_quiesce_fails_resumes_the_ranks_rather_than_leave_them_waiting() {
    let now = Instant::now();
    let mut c = subscribed(2, CoordinatorConfig::default(), now);
    repair_begins(&mut c, 2, now);
    c.handle_request(1, report(1, SwitchPhase::Detached, None, None, vec![1]), now);
    c.handle_request(2, report(1, SwitchPhase::Failed, Some("drain stuck"), None, vec![]), now);
    let resume: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
    assert_eq!(resume.len(), 2, "both ranks are told to resume: {resume:?}");
    assert!(resume.iter().all(|(_, r)| matches!(r, Reply::Command { command: SwitchCommand::Resume, .. })));
    let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
    assert!(log.iter().any(|l| l.contains("failed") && l.contains("drain stuck")), "{log:?}");
}

#[test]
fn a_repair_that_lost_a_rank_still_resumes_the_others() {
    let now = Instant::now();
    let mut c = subscribed(3, CoordinatorConfig::default(), now);
    repair_begins(&mut c, 3, now);
    c.handle_request(1, report(1, SwitchPhase::Detached, None, None, vec![1]), now);
    c.handle_request(2, report(1, SwitchPhase::Detached, None, None, vec![0]), now);
    // Rank 2's control thread goes (its process died, say) before it detached.
    c.handle_disconnect(3, now);
    c.handle_timeout(now + Duration::from_secs(61));
    let resume: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
    assert_eq!(resume.iter().map(|(conn, _)| *conn).collect::<Vec<_>>(), vec![1, 2], "{resume:?}");
    assert_repair_lists(&resume, SwitchCommand::Resume, |_| vec![(0, 1)]);
    let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
    assert!(log.iter().any(|l| l.contains("resuming without ranks [2]")), "{log:?}");
}

#[test]
fn a_repair_that_cannot_start_does_not_count_against_the_pair() {
    let now = Instant::now();
    let cfg = CoordinatorConfig { pair_repair_limit: 1, ..Default::default() };
    let mut c = subscribed(3, cfg, now);
    c.handle_disconnect(3, now);
    c.handle_request(1, Request::Repair { rank: 0, peer: 1, reason: "reset".into(), epoch: 0 }, now);
    assert_eq!(c.out.poll_reply(), None, "no quiesce without rank 2");
    let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
    assert!(log.iter().any(|l| l.contains("cannot repair it: ranks [2] have no control thread")), "{log:?}");
    c.handle_connect(4);
    let sub = Request::Subscribe { version: CONTROL_VERSION, rank: 2, transport: None, host: None, pid: None };
    c.handle_request(4, sub, now);
    c.out.poll_reply();
    repair_begins(&mut c, 3, now);
}

#[test]
fn a_pair_whose_link_keeps_dying_is_repaired_only_so_often() {
    let t0 = Instant::now();
    let cfg =
        CoordinatorConfig { pair_repair_limit: 2, pair_repair_window: Duration::from_secs(60), ..Default::default() };
    let mut c = subscribed(3, cfg, t0);
    // Runs one whole repair of `pair` (asked by its first rank) at `now`; returns whether
    // the coordinator began it.
    let repair = |c: &mut Coordinator, (a, b): (u32, u32), now: Instant| -> bool {
        let epoch = c.status().epoch;
        let ask = Request::Repair { rank: a, peer: b, reason: "reset".into(), epoch };
        c.handle_request(1 + a as u64, ask, now);
        let quiesce: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
        if quiesce.is_empty() {
            return false;
        }
        let e = epoch + 1;
        for r in 0..3u32 {
            let broken = if r == a { vec![b] } else { vec![] };
            c.handle_request(1 + r as u64, report(e, SwitchPhase::Detached, None, None, broken), now);
        }
        assert_eq!(std::iter::from_fn(|| c.out.poll_reply()).count(), 3, "the resume");
        for r in 0..3u64 {
            c.handle_request(1 + r, report(e, SwitchPhase::Running, None, Some("tcp:2"), vec![]), now);
        }
        assert_eq!(c.status().phase, "running");
        true
    };
    assert!(repair(&mut c, (0, 1), t0));
    assert!(repair(&mut c, (1, 0), t0 + Duration::from_secs(10)), "asked by the other end: the same pair");
    assert!(!repair(&mut c, (0, 1), t0 + Duration::from_secs(20)), "a third time within the window");
    let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
    assert!(log.iter().any(|l| l.contains("not repairing ranks 0 and 1 again")), "{log:?}");
    assert!(repair(&mut c, (1, 2), t0 + Duration::from_secs(20)), "another pair is repaired");
    assert!(repair(&mut c, (0, 1), t0 + Duration::from_secs(65)), "once the first repair left the window");
}

#[test]
fn relays_beyond_the_fanout_are_placed_below_earlier_ones_and_a_switch_is_one_message_each() {
    let now = Instant::now();
    let cfg = CoordinatorConfig { relay_fanout: 2, ..Default::default() };
    let mut c = Coordinator::new("j", cfg);
    // Five host leaders of 2 ranks each join: relays 0 and 1 attach here, 2 and 3 go
    // under relay 0, 4 under relay 1.
    let mut parents = Vec::new();
    for h in 0..5u32 {
        let conn = 10 + h as u64;
        c.handle_connect(conn);
        let listen = Some(format!("10.0.0.{h}:1"));
        c.handle_request(conn, Request::Join { version: CONTROL_VERSION, size: 10, leader: 2 * h, listen }, now);
        match c.out.poll_reply() {
            Some((_, Reply::Welcome { .. })) => parents.push(None),
            Some((_, Reply::Redirect { parent })) => {
                assert_eq!(c.out.poll_close(), Some(conn));
                parents.push(Some(parent));
            }
            other => panic!("{other:?}"),
        }
    }
    let p = |s: &str| Some(s.to_string());
    assert_eq!(parents, vec![None, None, p("10.0.0.0:1"), p("10.0.0.0:1"), p("10.0.0.1:1")]);
    // The two attached relays speak for all ten ranks.
    let member = |rank| Member {
        rank,
        host: format!("h{}", rank / 2),
        pid: rank,
        transport: "tcp".into(),
        connected: true,
        finalized: false,
    };
    c.handle_request(10, Request::Members { members: [0, 1, 4, 5, 6, 7].into_iter().map(member).collect() }, now);
    c.handle_request(11, Request::Members { members: [2, 3, 8, 9].into_iter().map(member).collect() }, now);
    assert!(c.status().ranks.iter().all(|r| r.subscribed && r.connected), "{:?}", c.status());
    c.handle_connect(99);
    c.handle_request(99, Request::CtlHello { version: CONTROL_VERSION }, now);
    c.out.poll_reply();
    c.handle_request(99, Request::Quiesce { timeout_ms: 8000 }, now);
    let sent: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
    assert_eq!(sent.len(), 2, "one command per attached relay: {sent:?}");
    let done = |ranks: &[u32]| {
        ranks.iter().map(|&rank| RankDone { rank, millis: rank as f64, transport: None, broken: vec![] }).collect()
    };
    let report = |d| Request::GroupReport {
        epoch: 1,
        phase: SwitchPhase::Detached,
        done: d,
        missing: vec![],
        detail: None,
        timed_out: false,
    };
    c.handle_request(10, report(done(&[0, 1, 4, 5, 6, 7])), now);
    assert_eq!(c.out.poll_reply(), None);
    c.handle_request(11, report(done(&[2, 3, 8, 9])), now);
    match c.out.poll_reply() {
        Some((99, Reply::SafeToUnplug { ranks: 10, slowest_rank_ms, .. })) => assert_eq!(slowest_rank_ms, 9.0),
        other => panic!("{other:?}"),
    }
    // A relay lost during the next step fails it, naming the ranks it carried.
    c.handle_request(99, Request::Resume { timeout_ms: 8000, transport: None }, now);
    while c.out.poll_reply().is_some() {}
    c.handle_disconnect(11, now);
    match c.out.poll_reply() {
        Some((99, Reply::SwitchFailed { missing, .. })) => {
            assert_eq!(missing, vec![2, 3, 8, 9])
        }
        other => panic!("{other:?}"),
    }
}

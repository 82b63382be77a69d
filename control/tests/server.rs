//! The coordinator over real TCP on loopback: wire-up through it, authentication, malformed
//! requests, and a fence that cannot finish.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use kawarimi_control::client::{CtlClient, RankClient};
use kawarimi_control::coordinator::CoordinatorConfig;
use kawarimi_control::proto::CTL_CLIENT_ID;
use kawarimi_control::server::{self, CoordinatorHandle};
use kawarimi_transports::auth::{authenticate_stream, JobSecret, Role};
use kawarimi_transports::bootstrap::Bootstrap;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn coordinator(fence_timeout: Duration) -> (CoordinatorHandle, JobSecret) {
    let secret = JobSecret::generate().unwrap();
    let cfg = CoordinatorConfig { fence_timeout, ..Default::default() };
    let h = server::spawn(Some(LOCAL), LOCAL, "test-job".into(), secret.clone(), cfg).unwrap();
    (h, secret)
}

#[test]
fn ranks_exchange_values_through_fences() {
    let (coord, secret) = coordinator(Duration::from_secs(20));
    let n = 4;
    let threads: Vec<_> = (0..n)
        .map(|r| {
            let (addr, secret) = (coord.addr(), secret.clone());
            thread::spawn(move || {
                let mut c = RankClient::connect(addr, &secret, r, n, "host").unwrap();
                for round in 0..3u32 {
                    c.put("addr", format!("{r}/{round}").as_bytes()).unwrap();
                    c.commit().unwrap();
                    c.fence(Duration::from_secs(20)).unwrap();
                    for p in 0..n {
                        assert_eq!(c.get(p, "addr").unwrap(), format!("{p}/{round}").into_bytes());
                    }
                    // Nobody may publish the next round before everyone has read this one.
                    c.fence(Duration::from_secs(20)).unwrap();
                }
                assert!(c.get(0, "missing").unwrap_err().to_string().contains("published no"));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = coord.status();
    assert_eq!(st.size, Some(n));
    assert_eq!(st.ranks.len(), n as usize);
}

#[test]
fn ctl_without_the_secret_is_refused_and_with_it_is_served() {
    let (coord, secret) = coordinator(Duration::from_secs(20));
    let wrong = JobSecret::generate().unwrap();
    let e = CtlClient::connect(coord.addr(), &wrong, Duration::from_secs(5)).err().expect("refused");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    let _rank = RankClient::connect(coord.addr(), &secret, 0, 2, "h0").unwrap();
    let mut ctl = CtlClient::connect(coord.addr(), &secret, Duration::from_secs(5)).unwrap();
    let st = ctl.status().unwrap();
    assert_eq!(st.size, Some(2));
    assert_eq!(st.ranks[0].host, "h0");
    assert!(st.ranks[0].connected);
}

#[test]
fn a_malformed_request_is_rejected_and_the_job_goes_on() {
    let (coord, secret) = coordinator(Duration::from_secs(20));
    let mut rank = RankClient::connect(coord.addr(), &secret, 0, 1, "h").unwrap();
    let mut raw = TcpStream::connect(coord.addr()).unwrap();
    authenticate_stream(&mut raw, Role::Initiator, CTL_CLIENT_ID, None, &secret, Duration::from_secs(5)).unwrap();
    raw.write_all(b"{\"type\": \"quiesce_everything_now\"}\n").unwrap();
    let mut line = String::new();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(raw);
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"error\"") && line.contains("malformed"), "{line}");
    line.clear();
    assert_eq!(reader.read_line(&mut line).unwrap(), 0, "the connection is closed after the refusal");
    // The rank's connection still works.
    rank.put("k", b"v").unwrap();
    rank.fence(Duration::from_secs(5)).unwrap();
    assert_eq!(rank.get(0, "k").unwrap(), b"v");
}

#[test]
fn a_fence_that_cannot_finish_times_out_naming_the_missing_rank() {
    let (coord, secret) = coordinator(Duration::from_millis(300));
    let _late = RankClient::connect(coord.addr(), &secret, 2, 3, "h").unwrap();
    let threads: Vec<_> = (0..2)
        .map(|r| {
            let (addr, secret) = (coord.addr(), secret.clone());
            thread::spawn(move || {
                let mut c = RankClient::connect(addr, &secret, r, 3, "h").unwrap();
                let t = Instant::now();
                let e = c.fence(Duration::from_secs(10)).unwrap_err().to_string();
                (e, t.elapsed())
            })
        })
        .collect();
    for t in threads {
        let (e, took) = t.join().unwrap();
        assert!(e.contains("[2]") && e.contains("timed out"), "{e}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
}

//! Migration between networks: every rank runs in its own network namespace, and while the
//! job is quiesced each rank's data address is taken away and replaced by one in another
//! subnet; after the resume the job must reconnect on the new addresses and go on checking
//! every byte.
//!
//! The network (all inside namespaces this test creates, plus one bridge address in the root
//! namespace; benchmark ranges of RFC 2544, checked unused on the host first):
//!
//! ```text
//!   root namespace: kawarimi run (coordinator on 198.18.K.1), mpirun, kawarimi ctl
//!        │ bridge kw<pid>c 198.18.K.1/24              bridge kw<pid>d (no address)
//!        ├── veth ── ns kw<pid>-i: ctl 198.18.K.(10+i)   data 198.19.1.(10+i) ──┤
//!        ...                                  then 198.19.2.(10+i), then 198.19.3.(10+i)
//! ```
//!
//! The control network lives in the root namespace, so K is chosen per run (parallel runs
//! must not share a subnet there); the data networks exist only inside this run's
//! namespaces, so they are fixed. Ranks are started by mpirun in the root namespace as
//! `sh -c 'exec ip netns exec kw<pid>-$OMPI_COMM_WORLD_RANK stress 12'`: mpirun's PMIx server
//! is out of their reach, so addresses go through kawarimi's coordinator
//! (`KAWARIMI_WIREUP=coordinator`), and the data path is pinned to `data`
//! (`KAWARIMI_TCP_IF=data`, re-read at every reconnect).
//!
//! What is checked: the job starts on 198.19.1; each `kawarimi ctl migrate --exec` runs
//! `tests/netns/move-data-addresses.sh` while the job is detached (which first checks that no
//! namespace holds a data socket any more); after each resume every rank's sockets, read from
//! `/proc/<pid>/net/tcp` (the rank's own namespace) and matched to its file descriptors, are
//! control connections on the control network (to the coordinator or to rank 0's relay, which
//! leads the host, and that relay's listener and accepted connections), one established connection to each
//! other rank between the NEW addresses, at most a listener on its new address, and nothing
//! else — no established connection anywhere in its namespace touches an old subnet — and
//! bytes flow on every rank's `data` interface. The stress program checksums every message
//! and must end with `OK stress`.
//!
//! Needs root and `ip` (iproute2). Without them the test prints why and passes (skips),
//! except under `CI=true`, where it fails.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kawarimi_tests::compiled;
use kawarimi_tests::job::{cli, KawarimiJob};

const RANKS: u32 = 4;
/// How long the stress program runs: enough for start-up under load and both migrations.
const STRESS_SECONDS: &str = "8";
/// The data subnets in order: the job starts on the first and is moved to each next one.
const DATA_NETS: [&str; 3] = ["198.19.1", "198.19.2", "198.19.3"];
const NETNS_DIR: &str = "/var/run/netns";

fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("netns").join("move-data-addresses.sh")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `'...'` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs a command to completion within `bound`; `Err` says what ran and what it printed.
fn run_bounded(cmd: &mut Command, bound: Duration) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let out = capture(child.stdout.take().unwrap());
    let err = capture(child.stderr.take().unwrap());
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => Err(format!("{what} failed ({s}): {}{}", err.trim(), out.trim())),
        None => Err(format!("{what} did not finish within {bound:?}: {}{}", err.trim(), out.trim())),
    }
}

fn capture<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

// -------------------------------------------------------------------------------------------
// The network
// -------------------------------------------------------------------------------------------

/// This run's namespaces, veths and bridges; dropping it deletes them all (also when the test
/// fails half-way).
struct Net {
    ip: PathBuf,
    /// `kw<pid>`: every name of this run starts with it.
    tag: String,
    /// First three octets of the control subnet (in the root namespace).
    ctl_net: String,
    namespaces: Vec<String>,
    /// Root-namespace links: veth ends first, bridges last.
    links: Vec<String>,
}

impl Net {
    fn ns(&self, rank: u32) -> String {
        format!("{}-{rank}", self.tag)
    }
    fn ns_prefix(&self) -> String {
        format!("{}-", self.tag)
    }
    fn coord_ip(&self) -> Ipv4Addr {
        format!("{}.1", self.ctl_net).parse().unwrap()
    }
    fn ctl_ip(&self, rank: u32) -> Ipv4Addr {
        format!("{}.{}", self.ctl_net, 10 + rank).parse().unwrap()
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        run_bounded(Command::new(&self.ip).args(args), Duration::from_secs(10))
    }

    /// Creates the bridges and `ranks` namespaces. `Err` is "this host cannot do it" (the
    /// first command that failed, and why); whatever was made is removed by `Drop`.
    fn create(ip: PathBuf, ranks: u32) -> Result<Net, String> {
        let tag = format!("kw{}", std::process::id());
        let mut net = Net { ip, tag: tag.clone(), ctl_net: String::new(), namespaces: Vec::new(), links: Vec::new() };
        net.remove_stale();
        let (cbr, dbr) = (format!("{tag}c"), format!("{tag}d"));
        for br in [&cbr, &dbr] {
            // The namespaces' traffic is bridged: keep it out of the host's iptables (with
            // br_netfilter loaded, a FORWARD policy of DROP would otherwise eat it).
            net.ip(&[
                "link",
                "add",
                br,
                "type",
                "bridge",
                "nf_call_iptables",
                "0",
                "nf_call_ip6tables",
                "0",
                "nf_call_arptables",
                "0",
            ])?;
            net.links.push(br.clone());
            net.ip(&["link", "set", br, "addrgenmode", "none"])?;
            net.ip(&["link", "set", br, "up"])?;
        }
        net.ctl_net = net.claim_ctl_subnet(&cbr)?;
        for i in 0..ranks {
            let ns = net.ns(i);
            net.ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            net.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            for (kind, br, addr) in [
                ("ctl", &cbr, format!("{}/24", net.ctl_ip(i))),
                ("data", &dbr, format!("{}.{}/24", DATA_NETS[0], 10 + i)),
            ] {
                let host_end = format!("{tag}{}{i}", &kind[..1]);
                net.ip(&["link", "add", &host_end, "type", "veth", "peer", "name", kind, "netns", &ns])?;
                net.links.insert(0, host_end.clone());
                net.ip(&["link", "set", &host_end, "addrgenmode", "none"])?;
                net.ip(&["link", "set", &host_end, "master", br, "up"])?;
                net.ip(&["-n", &ns, "link", "set", kind, "addrgenmode", "none"])?;
                net.ip(&["-n", &ns, "addr", "add", &addr, "dev", kind])?;
                net.ip(&["-n", &ns, "link", "set", kind, "up"])?;
            }
        }
        Ok(net)
    }

    /// Picks a /24 in 198.18.0.0/16 that no interface of the host uses and puts its `.1` on
    /// the control bridge; a parallel run that picked the same one at the same moment is
    /// detected afterwards and one of them moves on.
    fn claim_ctl_subnet(&self, bridge: &str) -> Result<String, String> {
        let pid = std::process::id();
        for attempt in 0..16u32 {
            let k = (pid.wrapping_add(attempt.wrapping_mul(pid % 97 + 1))) % 256;
            let net = format!("198.18.{k}");
            let users = |addrs: &str| addrs.lines().filter(|l| l.contains(&format!(" {net}."))).count();
            if users(&self.ip(&["-o", "-4", "addr"])?) != 0 {
                continue;
            }
            self.ip(&["addr", "add", &format!("{net}.1/24"), "dev", bridge])?;
            thread::sleep(Duration::from_millis(20));
            if users(&self.ip(&["-o", "-4", "addr"])?) == 1 {
                return Ok(net);
            }
            self.ip(&["addr", "del", &format!("{net}.1/24"), "dev", bridge])?;
        }
        Err("no free /24 in 198.18.0.0/16 for the control network".into())
    }

    /// Removes what runs killed before their `Drop` left behind: names of this test's
    /// pattern (`kw<pid>-<i>`, `kw<pid>c…`, `kw<pid>d…`) whose process is gone.
    fn remove_stale(&self) {
        let dead_owner = |name: &str| -> bool {
            let Some(rest) = name.strip_prefix("kw") else {
                return false;
            };
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let tail = &rest[digits.len()..];
            let ours = !digits.is_empty()
                && (tail == "c"
                    || tail == "d"
                    || ["-", "c", "d"].iter().any(|p| {
                        tail.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                    }));
            ours && !Path::new(&format!("/proc/{digits}")).exists()
        };
        if let Ok(list) = self.ip(&["netns", "list"]) {
            for ns in list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| dead_owner(n)) {
                let _ = self.ip(&["netns", "del", ns]);
            }
        }
        if let Ok(links) = self.ip(&["-o", "link"]) {
            for l in links.lines() {
                let Some(name) = l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else {
                    continue;
                };
                if dead_owner(name) {
                    let _ = self.ip(&["link", "del", name]);
                }
            }
        }
    }

    /// The inode of namespace `ns`, to compare with `/proc/<pid>/ns/net`.
    fn ns_inode(ns: &str) -> u64 {
        fs::metadata(Path::new(NETNS_DIR).join(ns)).map(|m| m.ino()).unwrap_or(0)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut left = Vec::new();
        // Root-side veth ends first (each takes its peer in the namespace with it), then the
        // bridges, then the namespaces (one still holding a process lives on until it exits,
        // but without links it reaches nothing).
        let present = self.ip(&["-o", "link"]).unwrap_or_default();
        for l in &self.links {
            if present.contains(&format!(": {l}:")) || present.contains(&format!(": {l}@")) {
                if let Err(e) = self.ip(&["link", "del", l]) {
                    left.push(e);
                }
            }
        }
        for ns in &self.namespaces {
            if let Err(e) = self.ip(&["netns", "del", ns]) {
                left.push(e);
            }
        }
        let tag = &self.tag;
        let ours = |names: &str| {
            names.lines().any(|l| {
                [format!("{tag}-"), format!("{tag}c"), format!("{tag}d")].iter().any(|p| l.contains(p.as_str()))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let names = self.ip(&["netns", "list"]).unwrap_or_default() + &self.ip(&["-o", "link"]).unwrap_or_default();
            if !ours(&names) {
                break;
            }
            if Instant::now() > deadline {
                left.push(format!("still present after clean-up: {names}"));
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if !left.is_empty() {
            let _ = writeln!(std::io::stderr(), "netns_migration: clean-up of {tag} incomplete: {left:?}");
        }
    }
}

/// Runs `f` on a thread that has entered namespace `ns` (sockets it opens live there).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    let path = Path::new(NETNS_DIR).join(ns);
    let ns = ns.to_string();
    thread::spawn(move || {
        let file = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: setns(2) on a valid descriptor of a network namespace; it changes only the
        // calling thread, which ends when `f` returns.
        let rc = unsafe { nix::libc::setns(file.as_raw_fd(), nix::libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns into {ns}: {}", std::io::Error::last_os_error()));
        }
        f()
    })
    .join()
    .unwrap_or_else(|_| Err("panicked".into()))
}

/// Before the job: the coordinator's address is reachable from every namespace, and every
/// namespace reaches rank 0's data address, so a failure later is kawarimi's.
fn preflight(net: &Net) -> Result<(), String> {
    let t = Duration::from_secs(3);
    let coord = TcpListener::bind((net.coord_ip(), 0)).map_err(|e| format!("bind {}: {e}", net.coord_ip()))?;
    let coord_addr = coord.local_addr().unwrap();
    let data0: Ipv4Addr = format!("{}.10", DATA_NETS[0]).parse().unwrap();
    let data = in_netns(&net.ns(0), move || TcpListener::bind((data0, 0)).map_err(|e| format!("bind {data0}: {e}")))?;
    let data_addr = data.local_addr().unwrap();
    for i in 0..RANKS {
        in_netns(&net.ns(i), move || {
            TcpStream::connect_timeout(&coord_addr, t)
                .map_err(|e| format!("control network: connect {coord_addr}: {e}"))?;
            if i != 0 {
                TcpStream::connect_timeout(&data_addr, t)
                    .map_err(|e| format!("data network: connect {data_addr}: {e}"))?;
            }
            Ok(())
        })
        .map_err(|e| format!("from {}: {e}", net.ns(i)))?;
    }
    Ok(())
}

// -------------------------------------------------------------------------------------------
// The job
// -------------------------------------------------------------------------------------------

/// Starts the stress program on `RANKS` ranks, rank `i` inside namespace `i`, under
/// `kawarimi run` with coordinator wire-up and the data path pinned to the `data` interfaces.
fn start_job(net: &Net, exe: &Path) -> KawarimiJob {
    let name = format!("netns-migration-{}", std::process::id());
    // $0 = ip, $1 = namespace prefix, the rest = the program and its arguments.
    let launch = r#"ns="$1$OMPI_COMM_WORLD_RANK"; shift; exec "$0" netns exec "$ns" "$@""#;
    let mut words: Vec<std::ffi::OsString> = ["--oversubscribe", "--allow-run-as-root", "--bind-to", "none"]
        .iter()
        // The namespaces share one kernel and IPC namespace, so shared memory would carry
        // every pair by default; this test is about TCP moving between subnets.
        .chain(&["-x", "KAWARIMI_WIREUP=coordinator", "-x", "KAWARIMI_TCP_IF=data", "-x", "KAWARIMI_SHM=0", "-np"])
        .map(|s| s.into())
        .collect();
    words.push(RANKS.to_string().into());
    words.extend(["sh".into(), "-c".into(), launch.into()]);
    words.push(net.ip.clone().into());
    words.push(net.ns_prefix().into());
    words.push(exe.into());
    words.push(STRESS_SECONDS.into());
    let coord_ip = net.coord_ip().to_string();
    KawarimiJob::start(&name, &words, |cmd| {
        cmd.env("KAWARIMI_COORD_IP", coord_ip).env_remove("KAWARIMI_TCP_IF").env_remove("KAWARIMI_WIREUP");
    })
}

/// Ends the job and fails the test with `what` and everything the job printed.
fn fail(job: &mut KawarimiJob, what: String) -> ! {
    job.stop();
    let (out, err) = job.output();
    panic!("{what}\njob {} stdout:\n{out}\njob stderr:\n{err}", job.name);
}

// -------------------------------------------------------------------------------------------
// What the ranks hold
// -------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sock {
    local: SocketAddrV4,
    remote: SocketAddrV4,
    /// `/proc/net/tcp` state: 01 established, 0A listening, 06 time-wait, ...
    state: u8,
    inode: u64,
}

/// `0A0113C6:C6B6` as `/proc/net/tcp` prints it (the address word in host byte order).
fn parse_v4(s: &str) -> Option<SocketAddrV4> {
    let (a, p) = s.split_once(':')?;
    let word = u32::from_str_radix(a, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(word.to_ne_bytes()), u16::from_str_radix(p, 16).ok()?))
}

/// Every IPv4 TCP socket of the namespace `pid` is in, and the raw lines of its IPv6 ones.
fn tcp_of(pid: u32) -> (Vec<Sock>, Vec<(u64, String)>) {
    let mut v4 = Vec::new();
    for line in fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default().lines().skip(1) {
        let c: Vec<&str> = line.split_whitespace().collect();
        if c.len() < 10 {
            continue;
        }
        if let (Some(local), Some(remote), Ok(state), Ok(inode)) =
            (parse_v4(c[1]), parse_v4(c[2]), u8::from_str_radix(c[3], 16), c[9].parse())
        {
            v4.push(Sock { local, remote, state, inode });
        }
    }
    let v6 = fs::read_to_string(format!("/proc/{pid}/net/tcp6"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| Some((l.split_whitespace().nth(9)?.parse().ok()?, l.trim().to_string())))
        .collect();
    (v4, v6)
}

fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter_map(|t| t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes sent on the `data` interface of `pid`'s namespace.
fn data_tx_bytes(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("data:").and_then(|r| r.split_whitespace().nth(8)?.parse().ok()))
        .unwrap_or(0)
}

fn data_ip(net: usize, rank: u32) -> Ipv4Addr {
    format!("{}.{}", DATA_NETS[net], 10 + rank).parse().unwrap()
}

fn in_net(ip: &Ipv4Addr, net: usize) -> bool {
    ip.to_string().starts_with(&format!("{}.", DATA_NETS[net]))
}

/// The data path of every rank runs between the addresses of `DATA_NETS[net]` and touches
/// no earlier subnet; bytes flow on every rank's `data` interface. Returns a summary line.
fn check_data_path(pids: &[u32], coord: SocketAddr, net: usize) -> Result<String, String> {
    let tx0: Vec<u64> = pids.iter().map(|&p| data_tx_bytes(p)).collect();
    let mut summary = Vec::new();
    for (r, &pid) in pids.iter().enumerate() {
        let r = r as u32;
        let me = data_ip(net, r);
        let others: BTreeSet<Ipv4Addr> = (0..RANKS).filter(|&o| o != r).map(|o| data_ip(net, o)).collect();
        let (v4, v6) = tcp_of(pid);
        let held = socket_inodes(pid);
        let ctx = |what: String| format!("rank {r} (pid {pid}), data network {}.0/24: {what}", DATA_NETS[net]);
        // Namespace-wide: no established connection over an earlier subnet.
        let stale: Vec<_> = v4
            .iter()
            .filter(|s| s.state == 0x01 && (0..net).any(|o| in_net(s.local.ip(), o) || in_net(s.remote.ip(), o)))
            .collect();
        if !stale.is_empty() {
            return Err(ctx(format!("established connections over an old subnet: {stale:?}")));
        }
        let v6_held: Vec<_> = v6.iter().filter(|(i, _)| held.contains(i)).collect();
        if !v6_held.is_empty() {
            return Err(ctx(format!("holds IPv6 TCP sockets: {v6_held:?}")));
        }
        let mine: Vec<&Sock> = v4.iter().filter(|s| held.contains(&s.inode)).collect();
        let (mut control, mut peers, mut listeners, mut unexpected) = (0, BTreeSet::new(), Vec::new(), Vec::new());
        let mut data_conns = 0;
        // The control plane stays on the control network: connections to the coordinator
        // or to a host leader's relay, and a relay's listener.
        let on_ctl = |ip: &Ipv4Addr| match coord.ip() {
            std::net::IpAddr::V4(c) => ip.octets()[..3] == c.octets()[..3],
            std::net::IpAddr::V6(_) => false,
        };
        for s in mine {
            match s.state {
                0x01 if on_ctl(s.local.ip()) && on_ctl(s.remote.ip()) => control += 1,
                0x0A if on_ctl(s.local.ip()) => {}
                0x01 if *s.local.ip() == me && others.contains(s.remote.ip()) => {
                    data_conns += 1;
                    peers.insert(*s.remote.ip());
                }
                0x0A if *s.local.ip() == me => listeners.push(s.local),
                _ => unexpected.push(s),
            }
        }
        if !unexpected.is_empty() {
            return Err(ctx(format!("sockets that are neither control (on the network of {coord}) nor data between {me} and the other ranks' new addresses: {unexpected:?}")));
        }
        if control == 0 {
            return Err(ctx(format!("no control connection on the network of the coordinator {coord}")));
        }
        if peers != others || data_conns != others.len() {
            return Err(ctx(format!("{data_conns} data connections to {peers:?}, expected one to each of {others:?}")));
        }
        if listeners.len() > 1 {
            return Err(ctx(format!("several listeners: {listeners:?}")));
        }
        summary.push(format!("rank {r} {me}: {data_conns} peers, {control} control, {} listener", listeners.len()));
    }
    // Bytes flow over the (only) data interface on every rank.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tx: Vec<u64> = pids.iter().map(|&p| data_tx_bytes(p)).collect();
        if tx.iter().zip(&tx0).all(|(a, b)| a > b) {
            let grew: Vec<u64> = tx.iter().zip(&tx0).map(|(a, b)| a - b).collect();
            summary.push(format!("data tx bytes since the check began {grew:?}"));
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no traffic on some rank's data interface on {}.0/24: tx {tx0:?} -> {tx:?}",
                DATA_NETS[net]
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(summary.join("; "))
}

// -------------------------------------------------------------------------------------------
// The test
// -------------------------------------------------------------------------------------------

/// Why namespaces cannot be used here, or the network.
fn network() -> Result<Net, String> {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let euid = unsafe { nix::libc::geteuid() };
    if euid != 0 {
        return Err(format!("not root (euid {euid}): creating network namespaces, veths and bridges needs CAP_SYS_ADMIN and CAP_NET_ADMIN"));
    }
    let ip = find_in_path("ip").ok_or("`ip` (iproute2) not found in PATH (ci/install-deps installs it)")?;
    Net::create(ip, RANKS)
}

#[test]
fn ranks_move_to_new_subnets_while_detached_and_reconnect_on_them() {
    let t0 = Instant::now();
    let net = match network() {
        Ok(n) => n,
        Err(why) if in_ci() => {
            panic!("CI=true, but this host cannot run the network-namespace test: {why}")
        }
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "netns_migration: SKIPPED: {why}");
            return;
        }
    };
    let t_setup = t0.elapsed();
    let exe = compiled("stress", build_dir());
    let cli = cli();
    let t_compiled = t0.elapsed();
    if let Err(e) = preflight(&net) {
        panic!("the test's own network does not work (not a kawarimi failure; a host firewall?): {e}");
    }
    let t_preflight = t0.elapsed();

    let mut job = start_job(&net, &exe);
    let (mut ctl, pids, coord) = job.ready(RANKS, Duration::from_secs(30));
    let t_ready = t0.elapsed();
    assert_eq!(coord.ip(), net.coord_ip(), "the coordinator publishes KAWARIMI_COORD_IP");
    for (r, &pid) in pids.iter().enumerate() {
        let ns = net.ns(r as u32);
        let link = fs::read_link(format!("/proc/{pid}/ns/net")).map(|p| p.display().to_string()).unwrap_or_default();
        if link != format!("net:[{}]", Net::ns_inode(&ns)) {
            fail(&mut job, format!("rank {r} (pid {pid}) is not in namespace {ns} ({}): {link}", Net::ns_inode(&ns)));
        }
    }
    let start = check_data_path(&pids, coord, 0).unwrap_or_else(|e| fail(&mut job, format!("at the start: {e}")));
    let mut log = vec![format!("start on {}.0/24: {start}", DATA_NETS[0])];

    let mut migrations = Vec::new();
    for net_idx in 1..DATA_NETS.len() {
        let exec = format!(
            "sh {} {} {RANKS} {} {} {}",
            sh_quote(&script().display().to_string()),
            net.ns_prefix(),
            net.ctl_net,
            DATA_NETS[net_idx - 1],
            DATA_NETS[net_idx]
        );
        let t = Instant::now();
        let out = run_bounded(
            Command::new(&cli).args(["ctl", "--job", &job.name, "--timeout", "20", "migrate", "--exec", &exec]),
            Duration::from_secs(40),
        )
        .unwrap_or_else(|e| fail(&mut job, format!("migration to {}.0/24: {e}", DATA_NETS[net_idx])));
        let took = t.elapsed();
        let st = ctl.status().unwrap_or_else(|e| fail(&mut job, format!("status after migration {net_idx}: {e}")));
        if st.epoch != net_idx as u32 {
            fail(&mut job, format!("epoch {} after migration {net_idx}", st.epoch));
        }
        let summary = check_data_path(&pids, coord, net_idx)
            .unwrap_or_else(|e| fail(&mut job, format!("after migration {net_idx}: {e}")));
        migrations.push(took);
        log.push(format!(
            "migration {net_idx} to {}.0/24 in {took:?}:\n{}\n  {summary}",
            DATA_NETS[net_idx],
            out.trim_end()
        ));
    }
    let t_migrated = t0.elapsed();

    let (ok, out, err) = job.finish(Duration::from_secs(90));
    let t_done = t0.elapsed();
    assert!(
        ok && out.lines().any(|l| l.trim_end() == "OK stress"),
        "stress failed after moving networks:\nstdout:\n{out}\nstderr:\n{err}"
    );
    drop(job);
    drop(net);
    eprintln!("{}", log.join("\n"));
    eprintln!(
        "netns migration: network up {t_setup:?}, preflight {:?}, job ready {:?}, migrations {migrations:?}, \
         ran on after them for {:?} ({}), clean-up {:?}",
        t_preflight - t_compiled,
        t_ready - t_preflight,
        t_done - t_migrated,
        err.lines().find(|l| l.starts_with("stress:")).unwrap_or("?"),
        t0.elapsed() - t_done
    );
}

/// A data link that dies under the running job, with no quiesce (both ends' sockets reset,
/// as when a NIC or a switch port fails; here `ss -K` in rank 0's namespace kills its
/// connection to rank 1): rank 0 and rank 1 ask for a repair, the coordinator runs a switch
/// by itself (epoch 1 without any `ctl`), both ends send each other again what the other had
/// not confirmed, over a new TCP connection, and the stress program, which checksums every
/// message, ends with `OK stress`.
#[test]
fn a_data_link_reset_under_the_running_job_is_repaired_and_loses_nothing() {
    let net = match network() {
        Ok(n) => n,
        Err(why) if in_ci() => panic!("CI=true, but this host cannot run the network-namespace test: {why}"),
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "netns_migration: SKIPPED: {why}");
            return;
        }
    };
    let exe = compiled("stress", build_dir());
    if let Err(e) = preflight(&net) {
        panic!("the test's own network does not work (not a kawarimi failure; a host firewall?): {e}");
    }
    let mut job = start_job(&net, &exe);
    let (mut ctl, _pids, _coord) = job.ready(RANKS, Duration::from_secs(30));
    // Let messages flow on the link first, so that some are in flight when it dies.
    thread::sleep(Duration::from_secs(1));
    let peer = data_ip(0, 1).to_string();
    let t = Instant::now();
    let killed = run_bounded(
        Command::new(&net.ip).args(["netns", "exec", &net.ns(0), "ss", "-K", "-t", "dst", &peer]),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| fail(&mut job, format!("ss -K: {e}")));
    if !killed.contains(&peer) {
        fail(&mut job, format!("ss -K killed no connection to {peer}:\n{killed}"));
    }
    let repaired = loop {
        match ctl.status() {
            Ok(st) if st.epoch >= 1 && st.phase == "running" => break t.elapsed(),
            Ok(_) if t.elapsed() < Duration::from_secs(60) => thread::sleep(Duration::from_millis(50)),
            other => fail(&mut job, format!("no repair switch within 60 s of the reset: {other:?}")),
        }
    };
    let (ok, out, err) = job.finish(Duration::from_secs(90));
    assert!(
        ok && out.lines().any(|l| l.trim_end() == "OK stress"),
        "stress failed after its link was reset:\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        err.contains("lost its data link to rank"),
        "no rank said it lost its link (so nothing was repaired?):\n{err}"
    );
    let story: Vec<&str> = err.lines().filter(|l| l.contains("repair") || l.contains("lost its data link")).collect();
    assert!(
        story.iter().any(|l| l.contains("repaired the links of rank pairs {(0, 1)}")),
        "the coordinator did not report the pair (0, 1) repaired:\n{err}"
    );
    eprintln!(
        "link reset: job running again in epoch 1 {repaired:?} after `ss -K`; {}\n{}",
        err.lines().find(|l| l.starts_with("stress:")).unwrap_or("?"),
        story.join("\n")
    );
}

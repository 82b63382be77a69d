//! Start-up wire-up: find the peers, the coordinator and the secret, and connect the data
//! path.
//!
//! Three situations:
//! - **`kawarimi run`** sets `KAWARIMI_COORD` (its coordinator) and `KAWARIMI_JOB_SECRET`.
//!   Every rank opens its control connection to that coordinator. Addresses are exchanged
//!   through the launcher's PMIx server when there is one, else through the coordinator.
//! - **plain `mpirun`** with the library preloaded: rank 0 generates the secret, starts the
//!   coordinator inside its own process and publishes both through PMIx (which serves only
//!   this job's processes); every rank then connects to it.
//! - **no launcher service** (a single process started by hand): a job of one.
//!
//! `KAWARIMI_WIREUP=coordinator` forces address exchange through the coordinator even
//! where PMIx exists (for launchers whose PMIx is unusable, and for tests).
//!
//! Then every rank binds a TCP listener and, when its host has a verbs port, opens a queue
//! pair per peer; it publishes both under [`TCP_ADDR_KEY`] and [`VERBS_ADDR_KEY`], fences,
//! reads every peer's, and connects: verbs to peers on the same fabric, TCP to the rest.
//! Each TCP connection proves it holds the secret before carrying a frame.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use kawarimi_transports::auth::JobSecret;
use kawarimi_transports::bootstrap::{self, Bootstrap, Pmix, Singleton};
use kawarimi_transports::routed::Routed;
use kawarimi_transports::shm::{
    self,
    transport::{ShmConfig, ShmEndpoint},
};
use kawarimi_transports::verbs::{self, device::QpAddress, device::VerbsConfig, device::VerbsEndpoint};
use kawarimi_transports::{tcp, Transport};

use crate::error::{ErrorClass, MpiError, MpiResult};
use crate::launch::ProcInfo;
use kawarimi_control::client::{RankClient, COORD_ENV};
use kawarimi_control::coordinator::CoordinatorConfig;
use kawarimi_control::jobfile::JobFile;
use kawarimi_control::server::{self, CoordinatorHandle, RelayHandle};

/// Bootstrap key under which a rank publishes its TCP listener address.
pub const TCP_ADDR_KEY: &str = "kawarimi.tcp.addr";
/// Bootstrap key under which a rank publishes its verbs fabric and, per peer, the address of
/// its queue pair for that peer (empty when it has no usable verbs port).
pub const VERBS_ADDR_KEY: &str = "kawarimi.verbs.addr";
/// Bootstrap keys of the shared-memory wire-up (per epoch): the host identity a rank offers
/// shared memory under (empty: none), its segment's name, and the peers whose segments it
/// mapped.
pub const SHM_ID_KEY: &str = "kawarimi.shm.id";
pub const SHM_NAME_KEY: &str = "kawarimi.shm.name";
pub const SHM_OK_KEY: &str = "kawarimi.shm.ok";
/// Bootstrap key under which a rank publishes its control group and, if it leads the group,
/// where its relay listens (`group` `\n` `host:port`).
pub const CTL_KEY: &str = "kawarimi.ctl";
/// Ranks per control group (instead of one group per host), for tests and for hosts with
/// very many ranks.
pub const CTL_GROUP_ENV: &str = "KAWARIMI_CTL_GROUP_RANKS";
/// Bootstrap keys under which rank 0 publishes the secret and the coordinator it started.
pub const SECRET_KEY: &str = "kawarimi.secret";
pub const COORD_KEY: &str = "kawarimi.coord";

fn boot_err(what: &str, e: impl std::fmt::Display) -> MpiError {
    MpiError::new(ErrorClass::Other, format!("wire-up: {what}: {e}"))
}

/// The text rank `rank` published under `key`; `what` names it in the error.
fn read_text(boot: &mut dyn Bootstrap, rank: u32, key: &str, what: &str) -> MpiResult<String> {
    let raw = boot.get(rank, key).map_err(|e| boot_err(what, e))?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// A coordinator hosted by this rank, and the job file that lets `kawarimi ctl` find it.
/// Dropping it removes the file and stops the coordinator.
pub struct HostedCoordinator {
    pub handle: CoordinatorHandle,
    pub jobfile: JobFile,
}

impl Drop for HostedCoordinator {
    /// The hosting rank finalizes too: it keeps the coordinator up until every other rank
    /// has said goodbye (bounded), so none of them sees its coordinator vanish mid-finalize.
    fn drop(&mut self) {
        self.jobfile.remove();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let st = self.handle.status();
            if st.ranks.iter().all(|r| r.finalized || !r.connected) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A relay this rank runs as its host's leader. Dropping it waits (bounded) until every
/// rank that subscribed to it has said goodbye, then stops it.
pub struct HostedRelay(pub RelayHandle);

impl Drop for HostedRelay {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline && !self.0.all_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The control-plane side of a rank: where its control thread subscribes, and the relay and
/// coordinator it runs, if it does.
pub struct ControlPlane {
    /// Where the coordinator listens (`None` for a job of one started by hand).
    pub coordinator: Option<SocketAddr>,
    /// The relay of this rank's host leader, which its control thread subscribes to.
    pub relay_addr: Option<SocketAddr>,
    /// The relay this rank runs, if it is its host's leader.
    pub relay: Option<HostedRelay>,
    pub hosted: Option<HostedCoordinator>,
    pub secret: JobSecret,
}

/// The result of wire-up.
pub struct Wired {
    pub transport: Option<Box<dyn Transport>>,
    pub control: ControlPlane,
    /// Connects the rank again after a switch, through the same wire-up service.
    pub rewire: Rewire,
}

/// Rediscovers and reconnects after a switch (see [`crate::switch::Reconnect`]): a fresh
/// listener on whatever address the rank has now, published under a key of the new epoch
/// (never an old address or key), a fence, and a new mesh.
pub struct Rewire {
    proc: ProcInfo,
    bootstrap: Box<dyn Bootstrap>,
    secret: JobSecret,
    /// [`crate::core::CoreConfig::largest_frame_bytes`] of this rank's core.
    largest_frame: usize,
}

/// The transports this build can open, in order of preference.
pub const TRANSPORTS: &[&str] = &["verbs", "tcp"];

/// The transport forced by `ctl resume --transport` (`flag`) or by `KAWARIMI_TRANSPORT`, if
/// any; an unknown one is an error rather than a silent fallback.
fn forced_transport(flag: Option<&str>) -> MpiResult<Option<String>> {
    let forced = flag.map(str::to_string).or_else(|| std::env::var("KAWARIMI_TRANSPORT").ok());
    match forced {
        Some(t) if !TRANSPORTS.contains(&t.as_str()) => {
            Err(boot_err("transport", format!("{t:?} is not available (this build has {TRANSPORTS:?})")))
        }
        other => Ok(other),
    }
}

impl crate::switch::Reconnect for Rewire {
    fn reconnect(
        &mut self,
        epoch: u32,
        transport: Option<&str>,
        by_tcp: &[u32],
        timeout: Duration,
    ) -> MpiResult<Option<Box<dyn Transport>>> {
        let forced = forced_transport(transport)?;
        if self.proc.size == 1 {
            return Ok(None);
        }
        let choice = Choice { forced: forced.as_deref(), by_tcp };
        let path = DataPath { epoch, choice, largest_frame: self.largest_frame };
        connect_data_path(&self.proc, self.bootstrap.as_mut(), &self.secret, path, timeout).map(Some)
    }
}

/// The address other hosts reach this one's coordinator at: `KAWARIMI_COORD_IP` when set
/// (the operator names the VM's Ethernet address, which survives the move), else the first
/// non-loopback, non-IPoIB address.
pub fn public_ip() -> Result<IpAddr, String> {
    match std::env::var("KAWARIMI_COORD_IP") {
        Ok(v) => v.trim().parse().map_err(|_| format!("KAWARIMI_COORD_IP={v:?} is not an IP address")),
        Err(_) => Ok(tcp::local_addresses().into_iter().next().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
    }
}

/// The address the data path listens on, rediscovered at every (re)connect: the first
/// address of the interfaces named in `KAWARIMI_TCP_IF` (comma-separated), or `None` for
/// every interface (publishing the first usable address).
fn data_ip() -> MpiResult<Option<IpAddr>> {
    let Ok(list) = std::env::var("KAWARIMI_TCP_IF") else {
        return Ok(None);
    };
    let names: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    match tcp::addresses_of(&names).into_iter().next() {
        Some(ip) => Ok(Some(ip)),
        None => Err(boot_err("KAWARIMI_TCP_IF", format!("no usable address on {names:?} now"))),
    }
}

/// Rank 0 under plain `mpirun`: makes the secret and starts the coordinator.
fn host_coordinator(proc: &ProcInfo) -> MpiResult<(JobSecret, HostedCoordinator)> {
    let secret = JobSecret::generate().map_err(|e| boot_err("secret", e))?;
    let job = format!("kw-{}", std::process::id());
    let ip = public_ip().map_err(|e| boot_err("coordinator address", e))?;
    let config = CoordinatorConfig::from_env().map_err(|e| boot_err("coordinator", e))?;
    let handle =
        server::spawn(None, ip, job.clone(), secret.clone(), config).map_err(|e| boot_err("start coordinator", e))?;
    let jobfile = JobFile::new(job, handle.addr(), &secret);
    jobfile.write().map_err(|e| boot_err("write job file", e))?;
    debug_assert_eq!(proc.rank, 0);
    Ok((secret, HostedCoordinator { handle, jobfile }))
}

/// Finds the peers and connects this rank to every other rank of the job, with transports
/// that carry frames of up to `largest_frame` bytes
/// ([`crate::core::CoreConfig::largest_frame_bytes`]).
pub fn wire_up(proc: &ProcInfo, timeout: Duration, largest_frame: usize) -> MpiResult<Wired> {
    let host = crate::launch::hostname();
    let force_coordinator = std::env::var("KAWARIMI_WIREUP").is_ok_and(|v| v == "coordinator");
    let pmix = bootstrap::pmix_available() && !force_coordinator;
    let coord_addr = match std::env::var(COORD_ENV) {
        Ok(v) => Some(v.parse::<SocketAddr>().map_err(|_| boot_err(COORD_ENV, format!("{v:?} is not host:port")))?),
        Err(_) => None,
    };

    let control = match coord_addr {
        Some(addr) => {
            let secret = JobSecret::from_env().map_err(|e| boot_err("secret", e))?;
            let boot: Box<dyn Bootstrap> = if pmix {
                Box::new(Pmix::init().map_err(|e| boot_err("PMIx", e))?)
            } else {
                let client = RankClient::connect(addr, &secret, proc.rank, proc.size, &host)
                    .map_err(|e| boot_err("coordinator", e))?;
                Box::new(client)
            };
            (boot, ControlPlane { coordinator: Some(addr), relay_addr: None, relay: None, hosted: None, secret })
        }
        None if pmix => {
            let mut boot = Pmix::init().map_err(|e| boot_err("PMIx", e))?;
            let hosted = if proc.rank == 0 {
                let (s, h) = host_coordinator(proc)?;
                boot.put(SECRET_KEY, s.as_bytes()).map_err(|e| boot_err("publish secret", e))?;
                boot.put(COORD_KEY, h.handle.addr().to_string().as_bytes())
                    .map_err(|e| boot_err("publish coordinator", e))?;
                Some((s, h))
            } else {
                None
            };
            boot.commit().map_err(|e| boot_err("commit", e))?;
            boot.fence(timeout).map_err(|e| boot_err("fence", e))?;
            let (secret, hosted) = match hosted {
                Some((s, h)) => (s, Some(h)),
                None => {
                    let b = boot.get(0, SECRET_KEY).map_err(|e| boot_err("read secret", e))?;
                    let b: [u8; 32] = b.try_into().map_err(|_| boot_err("read secret", "not 32 bytes"))?;
                    (JobSecret::from_bytes(b), None)
                }
            };
            let text = read_text(&mut boot, 0, COORD_KEY, "read coordinator address")?;
            let addr: SocketAddr = text.parse().map_err(|_| boot_err("coordinator address", format!("{text:?}")))?;
            (
                Box::new(boot) as Box<dyn Bootstrap>,
                ControlPlane { coordinator: Some(addr), relay_addr: None, relay: None, hosted, secret },
            )
        }
        None => {
            if proc.size != 1 {
                return Err(boot_err(
                    "launcher",
                    format!(
                        "{} says this is rank {} of {}, but there is neither a PMIx server nor a kawarimi coordinator \
                         ({COORD_ENV}) to find the peers through: start the job with mpirun or kawarimi run",
                        proc.launcher, proc.rank, proc.size
                    ),
                ));
            }
            let secret = JobSecret::generate().map_err(|e| boot_err("secret", e))?;
            (
                Box::new(Singleton::new()) as Box<dyn Bootstrap>,
                ControlPlane { coordinator: None, relay_addr: None, relay: None, hosted: None, secret },
            )
        }
    };
    let (mut bootstrap, mut control) = control;
    if bootstrap.rank() != proc.rank || bootstrap.size() != proc.size {
        return Err(boot_err(
            "launcher disagrees with itself",
            format!(
                "environment says rank {} of {}, the wire-up service says rank {} of {}",
                proc.rank,
                proc.size,
                bootstrap.rank(),
                bootstrap.size()
            ),
        ));
    }
    let forced = forced_transport(None)?;
    // The control tree: this rank's host leader runs a relay; its address rides on the
    // data path's own fence.
    let group = control.coordinator.map(|_| control_group(proc, &host)).transpose()?;
    if let (Some((key, leader)), Some(coord)) = (&group, control.coordinator) {
        let mut value = format!("{key}\n");
        if *leader {
            let ip = route_source(coord).map_err(|e| boot_err("control address", e))?;
            let relay = server::spawn_relay(ip, coord, proc.rank, proc.size, control.secret.clone())
                .map_err(|e| boot_err("start relay", e))?;
            value.push_str(&relay.addr().to_string());
            control.relay_addr = Some(relay.addr());
            control.relay = Some(HostedRelay(relay));
        }
        bootstrap.put(CTL_KEY, value.as_bytes()).map_err(|e| boot_err("publish control group", e))?;
    }
    let transport = if proc.size == 1 {
        None
    } else {
        let path = DataPath { epoch: 0, choice: Choice { forced: forced.as_deref(), by_tcp: &[] }, largest_frame };
        Some(connect_data_path(proc, bootstrap.as_mut(), &control.secret, path, timeout)?)
    };
    if let (Some((key, false)), None) = (&group, control.relay_addr) {
        control.relay_addr = Some(find_relay(proc, bootstrap.as_mut(), key)?);
    }
    let rewire = Rewire { proc: proc.clone(), bootstrap, secret: control.secret.clone(), largest_frame };
    Ok(Wired { transport, control, rewire })
}

/// This rank's control group (its host, or a block of `KAWARIMI_CTL_GROUP_RANKS` ranks on
/// it) and whether it leads the group (local rank 0, or the block's first rank).
fn control_group(proc: &ProcInfo, host: &str) -> MpiResult<(String, bool)> {
    match std::env::var(CTL_GROUP_ENV) {
        Ok(v) => {
            let n: u32 = v
                .trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| boot_err(CTL_GROUP_ENV, format!("{v:?} is not a positive number of ranks")))?;
            Ok((format!("{host}/{}", proc.rank / n), proc.rank.is_multiple_of(n)))
        }
        Err(_) => Ok((host.to_string(), proc.local_rank == 0)),
    }
}

/// The local address this host reaches `peer` from: the control network's, which survives a
/// move (no packet is sent; connecting a UDP socket only picks the route).
fn route_source(peer: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr =
        if peer.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = std::net::UdpSocket::bind(any)?;
    sock.connect(peer)?;
    Ok(sock.local_addr()?.ip())
}

/// Finds the relay of this rank's group after the fence: its leader is usually the rank
/// `local_rank` places below this one (block placement), otherwise found by reading every
/// rank's entry.
fn find_relay(proc: &ProcInfo, boot: &mut dyn Bootstrap, key: &str) -> MpiResult<SocketAddr> {
    let guess = match std::env::var(CTL_GROUP_ENV).ok().and_then(|v| v.trim().parse::<u32>().ok()).filter(|&n| n > 0) {
        Some(n) => proc.rank / n * n,
        None => proc.rank.saturating_sub(proc.local_rank),
    };
    let candidates = std::iter::once(guess).chain((0..proc.size).filter(|&r| r != guess));
    for r in candidates {
        let text = read_text(boot, r, CTL_KEY, &format!("control group of rank {r}"))?;
        let Some((group, relay)) = text.split_once('\n') else {
            continue;
        };
        if group == key && !relay.is_empty() {
            return relay
                .parse()
                .map_err(|_| boot_err(&format!("relay of rank {r}"), format!("{relay:?} is not ip:port")));
        }
    }
    Err(boot_err("control group", format!("no rank leads group {key:?}")))
}

/// What decides the network of each peer besides what both ends have.
#[derive(Debug, Clone, Copy, Default)]
struct Choice<'a> {
    /// `verbs` fails unless every peer can be reached by verbs, `tcp` does not open verbs
    /// at all.
    forced: Option<&'a str>,
    /// Peers reached by TCP whatever else both ends have: their link died in the epoch that
    /// ends (both ends get the same list from the coordinator, so they choose alike).
    by_tcp: &'a [u32],
}

/// One wire-up of the data path: its epoch, the choice of networks, and the largest frame
/// its transports must carry.
#[derive(Debug, Clone, Copy)]
struct DataPath<'a> {
    epoch: u32,
    choice: Choice<'a>,
    largest_frame: usize,
}

/// Publishes this rank's data-path addresses for `path.epoch` (TCP always; verbs when this host
/// has a usable port now, found by a fresh discovery), learns everyone else's, and connects:
/// verbs to every peer whose port is on the same fabric, TCP to the rest. Both ends of a
/// pair read the same two entries, so they choose alike.
fn connect_data_path(
    proc: &ProcInfo,
    boot: &mut dyn Bootstrap,
    secret: &JobSecret,
    path: DataPath,
    timeout: Duration,
) -> MpiResult<Box<dyn Transport>> {
    let DataPath { epoch, choice, .. } = path;
    let forced = choice.forced;
    let peers: Vec<u32> = (0..proc.size).filter(|&r| r != proc.rank).collect();
    let verbs = if forced == Some("tcp") { None } else { open_verbs(proc, &peers, forced == Some("verbs"))? };
    let endpoint = tcp::bind(proc.rank, data_ip()?, secret.clone()).map_err(|e| boot_err("bind", e))?;
    let tcp_key = format!("{TCP_ADDR_KEY}.{epoch}");
    let verbs_key = format!("{VERBS_ADDR_KEY}.{epoch}");
    boot.put(&tcp_key, endpoint.local_addr().to_string().as_bytes()).map_err(|e| boot_err("publish address", e))?;
    let identity = if shm_wanted(forced)? { shm::host_identity(proc.rank) } else { String::new() };
    boot.put(&format!("{SHM_ID_KEY}.{epoch}"), identity.as_bytes())
        .map_err(|e| boot_err("publish host identity", e))?;
    let mut mine = String::new();
    if let Some((ep, fabric)) = &verbs {
        mine.push_str(fabric);
        for &p in &peers {
            let a = ep.address_for(p).expect("a queue pair per peer");
            mine.push_str(&format!("\n{p} {}", a.encode()));
        }
    }
    boot.put(&verbs_key, mine.as_bytes()).map_err(|e| boot_err("publish verbs address", e))?;
    boot.commit().map_err(|e| boot_err("commit", e))?;
    boot.fence(timeout).map_err(|e| boot_err("fence", e))?;
    let shm = connect_shm(proc, boot, &path, &identity, &peers, timeout)?;
    let by_shm: &[u32] = shm.as_ref().map_or(&[], |(_, p)| p);
    let mut tcp_peers = Vec::with_capacity(peers.len());
    let mut verbs_peers = std::collections::BTreeMap::new();
    for &r in &peers {
        let text = read_text(boot, r, &tcp_key, &format!("address of rank {r}"))?;
        let sa: SocketAddr =
            text.parse().map_err(|_| boot_err(&format!("address of rank {r}"), format!("{text:?} is not ip:port")))?;
        let theirs = read_text(boot, r, &verbs_key, &format!("verbs address of rank {r}"))?;
        // A pair whose link died goes on over TCP; with verbs forced it gets new queue pairs on
        // the devices both ends found again instead (a device that is gone is not found, and
        // the pair then fails below, naming the peer).
        let avoid_verbs = choice.by_tcp.contains(&r) && forced != Some("verbs");
        match (&verbs, verbs_address_for(&theirs, proc.rank)?) {
            _ if by_shm.contains(&r) => {}
            (Some((_, fabric)), Some((their_fabric, addr))) if *fabric == their_fabric && !avoid_verbs => {
                verbs_peers.insert(r, addr);
            }
            _ if forced == Some("verbs") => {
                return Err(boot_err(
                    "transport",
                    format!("verbs was forced, but rank {r} has no verbs port on this rank's fabric"),
                ))
            }
            _ => tcp_peers.push((r, sa)),
        }
    }
    let tcp = endpoint.connect_all(&tcp_peers, timeout).map_err(|e| boot_err("connect", e))?;
    let tcp_ranks: Vec<u32> = tcp_peers.iter().map(|&(r, _)| r).collect();
    // Always behind `Routed`, even with TCP alone: it counts what each network carried.
    let mut parts: Vec<(Box<dyn Transport>, Vec<u32>)> = Vec::new();
    if let Some((t, peers)) = shm {
        parts.push((Box::new(t), peers));
    }
    if let Some((ep, _)) = verbs.filter(|_| !verbs_peers.is_empty()) {
        let verbs = ep.connect(&verbs_peers).map_err(|e| boot_err("verbs connect", e))?;
        for slow in verbs.slow_routes() {
            // One write, so that the lines of ranks that say this together do not interleave.
            let line = format!(
                "kawarimi: rank {}: the route to rank {} resolved after {} attempts ({:.1} s): a cold neighbour table or slow ARP on the RDMA network\n",
                proc.rank,
                slow.peer,
                slow.attempts,
                slow.took.as_secs_f64()
            );
            eprint!("{line}");
        }
        // Every queue pair must be ready to receive before anything is sent to it.
        boot.commit().map_err(|e| boot_err("commit", e))?;
        boot.fence(timeout).map_err(|e| boot_err("fence after verbs connect", e))?;
        parts.push((Box::new(verbs), verbs_peers.keys().copied().collect()));
    }
    // A TCP transport that carries no peer (all on shared memory or verbs) would only cost
    // every progress round a look at it.
    if !tcp_ranks.is_empty() || parts.is_empty() {
        parts.push((Box::new(tcp), tcp_ranks));
    }
    Ok(Box::new(Routed::new(parts)))
}

/// Whether this rank offers shared memory to its co-located peers: yes unless
/// `KAWARIMI_SHM=0` says no or a transport is forced for every peer.
fn shm_wanted(forced: Option<&str>) -> MpiResult<bool> {
    let wanted = match std::env::var("KAWARIMI_SHM").as_deref() {
        Err(_) | Ok("1") => true,
        Ok("0") => false,
        Ok(other) => return Err(boot_err("KAWARIMI_SHM", format!("{other:?} is neither 0 nor 1"))),
    };
    Ok(wanted && forced.is_none())
}

/// The shared-memory part of a wire-up, after the first fence has published every rank's
/// host identity (empty where a rank offers none). Ranks with this rank's identity are
/// candidates; each creates its segment of inbound rings for them, maps theirs, and says
/// which it could map; a pair uses shared memory when both ends mapped the other's segment,
/// so both choose alike. The two rounds this takes are fences, collective over the job: every
/// rank takes them when any rank offers shared memory, none when none does. A segment that
/// cannot be made or mapped is not an error: that pair stays on the network.
fn connect_shm(
    proc: &ProcInfo,
    boot: &mut dyn Bootstrap,
    path: &DataPath,
    identity: &str,
    peers: &[u32],
    timeout: Duration,
) -> MpiResult<Option<(kawarimi_transports::shm::transport::ShmTransport, Vec<u32>)>> {
    let (me, epoch, by_tcp, largest_frame) = (proc.rank, path.epoch, path.choice.by_tcp, path.largest_frame);
    let get = |boot: &mut dyn Bootstrap, r: u32, key: &str| {
        read_text(boot, r, &format!("{key}.{epoch}"), &format!("{key} of rank {r}"))
    };
    let mut ids = Vec::with_capacity(peers.len());
    for &r in peers {
        ids.push((r, get(boot, r, SHM_ID_KEY)?));
    }
    if identity.is_empty() && ids.iter().all(|(_, id)| id.is_empty()) {
        return Ok(None);
    }
    let local: Vec<u32> = if identity.is_empty() {
        Vec::new()
    } else {
        ids.iter().filter(|(r, id)| id == identity && !by_tcp.contains(r)).map(|&(r, _)| r).collect()
    };
    let mut endpoint = None;
    if !local.is_empty() {
        // What jobs killed during their wire-up left in /dev/shm goes before this one adds.
        shm::segment::reclaim();
        let config = ShmConfig::from_env(largest_frame).map_err(|e| boot_err("shared memory", e))?;
        match ShmEndpoint::create(me, &local, config, &format!("e{epoch}")) {
            Ok(ep) => endpoint = Some(ep),
            Err(e) => tracing::warn!(rank = me, "no shared memory: {e}"),
        }
    }
    let name = endpoint.as_ref().map_or(String::new(), |ep| ep.segment_name().to_string());
    boot.put(&format!("{SHM_NAME_KEY}.{epoch}"), name.as_bytes()).map_err(|e| boot_err("publish segment", e))?;
    boot.commit().map_err(|e| boot_err("commit", e))?;
    boot.fence(timeout).map_err(|e| boot_err("fence after shared-memory segments", e))?;
    let mut mapped = Vec::new();
    if let Some(ep) = endpoint.as_mut() {
        for &r in &local {
            let theirs = get(boot, r, SHM_NAME_KEY)?;
            if theirs.is_empty() {
                continue;
            }
            match ep.attach(r, &theirs) {
                Ok(()) => mapped.push(r),
                Err(why) => tracing::warn!(rank = me, peer = r, "no shared memory with this peer: {why}"),
            }
        }
        ep.check_single_copy().map_err(|e| boot_err("shared memory", e))?;
        for (r, why) in ep.unreadable() {
            tracing::debug!(rank = me, peer = r, "large messages from this peer take two copies: {why}");
        }
    }
    let ok: Vec<String> = mapped.iter().map(u32::to_string).collect();
    boot.put(&format!("{SHM_OK_KEY}.{epoch}"), ok.join(",").as_bytes()).map_err(|e| boot_err("publish mapped", e))?;
    boot.commit().map_err(|e| boot_err("commit", e))?;
    boot.fence(timeout).map_err(|e| boot_err("fence after shared-memory mapping", e))?;
    let mut both = Vec::new();
    for &r in &mapped {
        let theirs = get(boot, r, SHM_OK_KEY)?;
        if theirs.split(',').any(|p| p == me.to_string()) {
            both.push(r);
        }
    }
    let Some(ep) = endpoint else { return Ok(None) };
    if both.is_empty() {
        return Ok(None);
    }
    let t = ep.connect(&both).map_err(|e| boot_err("shared-memory connect", e))?;
    tracing::debug!(
        rank = me,
        "shared memory with ranks {both:?}; single copy (process_vm_readv) from {:?}",
        t.single_copy_peers()
    );
    Ok(Some((t, both)))
}

/// Opens this rank's verbs endpoint on the first usable port, with its fabric id; `None`
/// when the host has none now (an error instead when verbs is `required`).
fn open_verbs(proc: &ProcInfo, peers: &[u32], required: bool) -> MpiResult<Option<(VerbsEndpoint, String)>> {
    let found = verbs::discover();
    let Some(port) = found.ports.first() else {
        if required {
            return Err(boot_err("transport", format!("verbs was forced, but {}", found.skipped.join("; "))));
        }
        return Ok(None);
    };
    match VerbsEndpoint::open(port, proc.rank, peers, VerbsConfig::from_env().map_err(|e| boot_err("verbs", e))?) {
        Ok(ep) => Ok(Some((ep, port.fabric_id()))),
        Err(e) if required => Err(boot_err("verbs", e)),
        Err(e) => {
            tracing::warn!("rank {}: verbs port {} unusable, using TCP: {e}", proc.rank, port.device);
            Ok(None)
        }
    }
}

/// Reads a peer's published verbs entry: its fabric and its queue pair's address for rank
/// `me`, or `None` if it has no verbs.
fn verbs_address_for(entry: &str, me: u32) -> MpiResult<Option<(String, QpAddress)>> {
    let mut lines = entry.lines();
    let Some(fabric) = lines.next().filter(|f| !f.is_empty()) else { return Ok(None) };
    for line in lines {
        let Some((peer, addr)) = line.split_once(' ') else { continue };
        if peer.parse::<u32>().ok() == Some(me) {
            let addr = QpAddress::decode(addr).map_err(|e| boot_err("verbs address", e))?;
            return Ok(Some((fabric.to_string(), addr)));
        }
    }
    Err(boot_err("verbs address", format!("a peer's verbs entry has no queue pair for rank {me}")))
}

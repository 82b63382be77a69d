//! InfiniBand verbs through rdma-core's libibverbs, by the `sideway` binding (see
//! `docs/verbs.md` for why that binding).
//!
//! This first part is discovery: which devices and active ports this host has now, and for
//! each port the address a peer would reach it by (LID and GID) and the GID to use. Discovery
//! opens each device only for as long as it reads it, so it leaves nothing open behind: a
//! hot-unplug after it is never blocked by it (an open uverbs descriptor is enough to block
//! one). `sideway` loads libibverbs at run time, so on a host without rdma-core discovery
//! finds nothing and kawarimi runs without verbs.

pub mod channel;
pub mod device;
pub mod memory;
pub mod regcache;

use std::net::Ipv6Addr;

use sideway::ibverbs::address::GidType;
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::{LinkLayer, PortState};

/// What kind of network a port is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fabric {
    /// InfiniBand: peers reach the port by LID within its subnet.
    InfiniBand,
    /// RoCE: InfiniBand transport over Ethernet, peers reach the port by GID (an IP address).
    Ethernet,
}

/// The kind of a GID table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GidKind {
    InfiniBand,
    RoceV1,
    RoceV2,
}

/// One entry of a port's GID table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GidChoice {
    pub index: u32,
    pub kind: GidKind,
    pub gid: Ipv6Addr,
}

/// An active port of a verbs device, as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbsPort {
    /// Device name (`mlx5_0`, `rxe0`).
    pub device: String,
    /// Port number, from 1.
    pub port: u8,
    pub fabric: Fabric,
    /// The port's LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// The GID this port is addressed by, chosen by [`choose_gid`].
    pub gid: GidChoice,
    /// The network interface a RoCE GID belongs to, when the device says.
    pub netdev: Option<String>,
}

/// The GID a connection should use among a port's table entries, or `None` if none is usable.
///
/// On InfiniBand, the port GID (index 0). On RoCE, a RoCE v2 entry (routable over IP, what
/// every current RoCE fabric and Soft-RoCE use) holding an IPv4-mapped address
/// (`::ffff:a.b.c.d`), then any other RoCE v2 entry that is not link-local, then RoCE v1 as a
/// last resort; the lowest index wins a tie. Both ends apply the same rule, so they pick the
/// same kind of GID, which RoCE requires.
pub fn choose_gid(fabric: Fabric, entries: &[GidChoice]) -> Option<GidChoice> {
    let usable = entries.iter().filter(|e| !e.gid.is_unspecified());
    match fabric {
        Fabric::InfiniBand => usable.filter(|e| e.kind == GidKind::InfiniBand).min_by_key(|e| e.index).copied(),
        Fabric::Ethernet => usable
            .filter_map(|e| {
                let rank = match e.kind {
                    GidKind::RoceV2 if e.gid.to_ipv4_mapped().is_some() => 0,
                    GidKind::RoceV2 if !is_link_local(&e.gid) => 1,
                    GidKind::RoceV1 => 2,
                    _ => return None,
                };
                Some((rank, e.index, *e))
            })
            .min_by_key(|&(rank, index, _)| (rank, index))
            .map(|(_, _, e)| e),
    }
}

fn is_link_local(gid: &Ipv6Addr) -> bool {
    gid.segments()[0] & 0xffc0 == 0xfe80
}

impl VerbsPort {
    /// Which fabric the port is on, as text both ends of a connection compare: verbs is used
    /// between two ranks only when theirs are equal. InfiniBand ports must share a subnet
    /// (the GID prefix); RoCE v2 is routed over IP, so every RoCE v2 port is on one fabric.
    pub fn fabric_id(&self) -> String {
        match (self.fabric, self.gid.kind) {
            (Fabric::InfiniBand, _) => {
                let prefix: String = self.gid.gid.octets()[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("ib-{prefix}")
            }
            (Fabric::Ethernet, kind) => format!("roce-{kind:?}").to_lowercase(),
        }
    }
}

/// What discovery found: the active ports, and for every device or port it passed over, why.
#[derive(Debug, Default)]
pub struct Discovery {
    pub ports: Vec<VerbsPort>,
    pub skipped: Vec<String>,
}

/// Lists the active ports of every verbs device on this host. Never fails: a host without
/// rdma-core or without devices has no ports, and says why in `skipped`.
pub fn discover() -> Discovery {
    // The binding panics on values it does not know (a new link layer, a new GID type); a
    // device kawarimi cannot read is a device it does not use, never a failed MPI_Init.
    std::panic::catch_unwind(discover_inner).unwrap_or_else(|_| Discovery {
        ports: Vec::new(),
        skipped: vec!["libibverbs returned a value the verbs binding does not know; verbs not used".into()],
    })
}

fn discover_inner() -> Discovery {
    let mut found = Discovery::default();
    let list = match DeviceList::new() {
        Ok(list) => list,
        Err(e) => {
            found.skipped.push(format!("no verbs device list (is rdma-core installed?): {e}"));
            return found;
        }
    };
    if list.is_empty() {
        found.skipped.push("no verbs devices".into());
    }
    for device in list.iter() {
        let name = device.name();
        let context = match device.open() {
            Ok(c) => c,
            Err(e) => {
                found.skipped.push(format!("{name}: cannot open: {e}"));
                continue;
            }
        };
        let ports = match context.query_device() {
            Ok(attr) => attr.phys_port_cnt(),
            Err(e) => {
                found.skipped.push(format!("{name}: cannot query: {e}"));
                continue;
            }
        };
        let table = match context.query_gid_table() {
            Ok(t) => t,
            Err(e) => {
                found.skipped.push(format!("{name}: cannot read its GID table: {e}"));
                continue;
            }
        };
        for port in 1..=ports {
            let attr = match context.query_port(port) {
                Ok(a) => a,
                Err(e) => {
                    found.skipped.push(format!("{name} port {port}: cannot query: {e}"));
                    continue;
                }
            };
            if attr.port_state() != PortState::Active {
                found.skipped.push(format!("{name} port {port}: {:?}, not active", attr.port_state()));
                continue;
            }
            let fabric = match attr.link_layer() {
                LinkLayer::Ethernet => Fabric::Ethernet,
                _ => Fabric::InfiniBand,
            };
            let entries: Vec<_> = table.iter().filter(|e| e.port_num() == u32::from(port)).collect();
            let choices: Vec<GidChoice> = entries
                .iter()
                .map(|e| GidChoice {
                    index: e.gid_index(),
                    kind: match e.gid_type() {
                        GidType::InfiniBand => GidKind::InfiniBand,
                        GidType::RoceV1 => GidKind::RoceV1,
                        GidType::RoceV2 => GidKind::RoceV2,
                    },
                    gid: Ipv6Addr::from(e.gid()),
                })
                .collect();
            let Some(gid) = choose_gid(fabric, &choices) else {
                found.skipped.push(format!("{name} port {port}: no usable GID"));
                continue;
            };
            let netdev = entries.iter().find(|e| e.gid_index() == gid.index).and_then(|e| e.netdev_name().ok());
            found.ports.push(VerbsPort { device: name.clone(), port, fabric, lid: attr.lid(), gid, netdev });
        }
        // `context` drops here: the device is closed before the next one is opened.
    }
    found
}

/// The `/dev/infiniband/uverbs*` descriptors this process holds open, from `/proc/self/fd`:
/// after a detach there must be none.
pub fn open_uverbs_fds() -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let target = std::fs::read_link(e.path()).ok()?.to_string_lossy().into_owned();
        let fd = e.file_name().to_str()?.parse().ok()?;
        target.starts_with("/dev/infiniband/uverbs").then_some((fd, target))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(index: u32, kind: GidKind, gid: &str) -> GidChoice {
        GidChoice { index, kind, gid: gid.parse().unwrap() }
    }

    #[test]
    fn roce_prefers_v2_with_an_ipv4_address() {
        // The table Soft-RoCE shows on an interface with an IPv4 and an IPv6 address.
        let table = [
            g(0, GidKind::RoceV1, "fe80::5054:ff:fe12:3456"),
            g(1, GidKind::RoceV2, "fe80::5054:ff:fe12:3456"),
            g(2, GidKind::RoceV1, "::ffff:10.0.0.1"),
            g(3, GidKind::RoceV2, "::ffff:10.0.0.1"),
            g(4, GidKind::RoceV2, "2001:db8::1"),
        ];
        assert_eq!(choose_gid(Fabric::Ethernet, &table), Some(table[3]));
        assert_eq!(choose_gid(Fabric::Ethernet, &table[..3]), Some(table[0]), "v1 only when there is no routable v2");
        assert_eq!(choose_gid(Fabric::Ethernet, &[table[4], table[1]]), Some(table[4]));
        assert_eq!(choose_gid(Fabric::Ethernet, &[g(5, GidKind::RoceV2, "::")]), None);
    }

    #[test]
    fn infiniband_takes_the_port_gid() {
        let table = [g(1, GidKind::InfiniBand, "fe80::2:c903:a:1"), g(0, GidKind::InfiniBand, "fe80::2:c903:a:2")];
        assert_eq!(choose_gid(Fabric::InfiniBand, &table), Some(table[1]));
        assert_eq!(choose_gid(Fabric::InfiniBand, &[g(0, GidKind::RoceV2, "::ffff:10.0.0.1")]), None);
    }

    #[test]
    fn discovery_leaves_no_device_open() {
        let before = open_uverbs_fds();
        let found = discover();
        eprintln!("verbs ports: {:?}; skipped: {:?}", found.ports, found.skipped);
        assert!(found.ports.len() + found.skipped.len() > 0, "discovery says nothing at all");
        assert_eq!(open_uverbs_fds(), before, "discovery left a uverbs descriptor open");
    }
}

//! Which addresses the TCP transport may use: every address of an interface that is up,
//! never an IPoIB one (see the module doc of [`super`]), loopback only when nothing else exists.

use super::*;

/// One address of one interface, as [`local_addresses`] sees it (exposed for testing the
/// selection policy without a machine that has IPoIB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub name: String,
    pub ip: IpAddr,
    pub up: bool,
    pub loopback: bool,
    /// ARPHRD type from `/sys/class/net/<if>/type`, if readable.
    pub arphrd: Option<u16>,
}

/// The addresses this host can publish for the TCP transport: every address of every
/// interface that is up, IPv4 first, skipping IPoIB (ARPHRD_INFINIBAND, see the module
/// docs: the address dies with the HCA) and IPv6 link-local ones (they need a scope);
/// loopback only when nothing else is left.
pub fn local_addresses() -> Vec<IpAddr> {
    select_addresses(&interfaces())
}

/// The usable addresses of the interfaces named in `names` (IPv4 first), found afresh: used
/// to pin the data path to chosen networks (`KAWARIMI_TCP_IF`), as Open MPI's
/// `btl_tcp_if_include` does.
pub fn addresses_of(names: &[&str]) -> Vec<IpAddr> {
    let named: Vec<IfAddr> = interfaces().into_iter().filter(|i| names.contains(&i.name.as_str())).collect();
    let mut out: Vec<IpAddr> = named
        .iter()
        .filter(|i| i.up && i.arphrd != Some(ARPHRD_INFINIBAND) && !is_ipv6_link_local(&i.ip) && !i.ip.is_unspecified())
        .map(|i| i.ip)
        .collect();
    out.sort_by_key(|ip| ip.is_ipv6());
    out.dedup();
    out
}

/// Every address of every interface, read now (the set changes when a VM moves).
pub fn interfaces() -> Vec<IfAddr> {
    let mut found = Vec::new();
    if let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() {
        for ifa in ifaddrs {
            let Some(addr) = ifa.address.as_ref() else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            let arphrd = std::fs::read_to_string(format!("/sys/class/net/{}/type", ifa.interface_name))
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok());
            found.push(IfAddr {
                name: ifa.interface_name.clone(),
                ip,
                up: ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP),
                loopback: ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK),
                arphrd,
            });
        }
    }
    found
}

/// The selection policy of [`local_addresses`].
pub fn select_addresses(ifs: &[IfAddr]) -> Vec<IpAddr> {
    let usable = |i: &&IfAddr| {
        i.up && i.arphrd != Some(ARPHRD_INFINIBAND) && !is_ipv6_link_local(&i.ip) && !i.ip.is_unspecified()
    };
    let mut out: Vec<IpAddr> =
        ifs.iter().filter(usable).filter(|i| !i.loopback && !i.ip.is_loopback()).map(|i| i.ip).collect();
    if out.is_empty() {
        out = ifs.iter().filter(usable).filter(|i| i.loopback || i.ip.is_loopback()).map(|i| i.ip).collect();
    }
    out.sort_by_key(|ip| ip.is_ipv6());
    out.dedup();
    out
}

fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_selection_skips_ipoib_and_prefers_non_loopback() {
        let ifa = |name: &str, ip: &str, loopback: bool, arphrd: u16| IfAddr {
            name: name.into(),
            ip: ip.parse().unwrap(),
            up: true,
            loopback,
            arphrd: Some(arphrd),
        };
        let all = vec![
            ifa("lo", "127.0.0.1", true, 772),
            ifa("ib0", "10.1.0.5", false, ARPHRD_INFINIBAND),
            ifa("eth0", "fe80::1", false, 1),
            ifa("eth0", "2001:db8::5", false, 1),
            ifa("eth0", "192.0.2.5", false, 1),
        ];
        let got = select_addresses(&all);
        assert_eq!(got, vec!["192.0.2.5".parse::<IpAddr>().unwrap(), "2001:db8::5".parse().unwrap()]);
        let only_ib_and_lo = vec![ifa("lo", "127.0.0.1", true, 772), ifa("ib0", "10.1.0.5", false, ARPHRD_INFINIBAND)];
        assert_eq!(select_addresses(&only_ib_and_lo), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        // On this machine: never empty, never IPoIB.
        assert!(!local_addresses().is_empty());
    }
}

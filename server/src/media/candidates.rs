//! Which of a browser's ICE candidates the SFU may send connectivity checks
//! to. Every remote candidate makes the server send STUN to the address it
//! names, so a hostile page could otherwise use the SFU to probe anything
//! it can reach. A candidate is used only when it is well formed
//! ([`app::signal::IceCandidate::line`]), UDP, component 1 (bundled,
//! RTCP multiplexed), names an IP address (not a name to resolve) and a
//! port, and the address is public or inside an allowed network; at most
//! [`MAX_REMOTE_CANDIDATES`] per session are used.
//!
//! Loopback, private (RFC 1918, ULA), link-local and shared (CGNAT)
//! addresses are refused unless allowed: by default the networks of the
//! server's own ICE addresses of those kinds (a server on a LAN serves that
//! LAN, one on loopback serves this machine), plus `CLEANROOM_ICE_ALLOW_NETS`.
//! Unspecified, multicast and broadcast addresses are never used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use app::signal::IceCandidate;

/// Most remote candidates one session's connection uses (a browser sends a
/// handful: one per interface and kind).
pub const MAX_REMOTE_CANDIDATES: usize = 32;

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// The network's address (bits past the prefix are ignored).
    pub addr: IpAddr,
    /// How many leading bits of `addr` name the network.
    pub prefix: u8,
}

impl Net {
    /// The IPv4 network `a.b.c.d/prefix`.
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self { addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix }
    }

    const fn v6(first: u16, prefix: u8) -> Self {
        Self { addr: IpAddr::V6(Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 0)), prefix }
    }

    /// Parses `10.1.0.0/16` or `fd00::/8` (a bare address is the /32 or /128).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or(format!("`/{p}` is not a prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    /// `ip` is inside the network (an address of the other IP version never is).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Networks that are not the public internet: refused unless allowed.
const NON_PUBLIC: [Net; 9] = [
    Net::v4(127, 0, 0, 0, 8),
    Net::v4(10, 0, 0, 0, 8),
    Net::v4(172, 16, 0, 0, 12),
    Net::v4(192, 168, 0, 0, 16),
    Net::v4(169, 254, 0, 0, 16),
    Net::v4(100, 64, 0, 0, 10),
    Net::v6(0xfc00, 7),
    Net::v6(0xfe80, 10),
    Net { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix: 128 },
];

/// Why a candidate is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a candidate line we understand.
    Malformed,
    /// TCP, or an RTCP component: the SFU has neither.
    Unusable,
    /// A host name (mDNS) rather than an address.
    NotAnAddress,
    /// An address the server never sends to.
    Excluded,
    /// The session already has as many as it may.
    TooMany,
}

/// The rule for remote candidates (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct CandidatePolicy {
    /// Non-public networks whose addresses may be used.
    allowed: Vec<Net>,
}

impl CandidatePolicy {
    /// Allows the non-public networks of `own` (the server's ICE addresses)
    /// and `extra`.
    pub fn new(own: &[IpAddr], extra: &[Net]) -> Self {
        let mut allowed: Vec<Net> =
            own.iter().filter_map(|ip| NON_PUBLIC.iter().find(|n| n.contains(*ip)).copied()).collect();
        allowed.extend_from_slice(extra);
        Self { allowed }
    }

    /// Whether the SFU may send to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let never = ip.is_unspecified()
            || ip.is_multicast()
            || ip == IpAddr::V4(Ipv4Addr::BROADCAST)
            || matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 0 || v4.octets()[0] >= 240);
        if never {
            return false;
        }
        let public = !NON_PUBLIC.iter().any(|n| n.contains(ip));
        public || self.allowed.iter().any(|n| n.contains(ip))
    }

    /// Judges a candidate when the session already uses `used` of them.
    pub fn judge(&self, candidate: &IceCandidate, used: usize) -> Result<(), Refusal> {
        let line = candidate.line().ok_or(Refusal::Malformed)?;
        if line.component != 1 || line.transport != "udp" || line.port == 0 {
            return Err(Refusal::Unusable);
        }
        let ip: IpAddr = line.address.parse().map_err(|_| Refusal::NotAnAddress)?;
        if !self.allows(ip) {
            return Err(Refusal::Excluded);
        }
        if used >= MAX_REMOTE_CANDIDATES {
            return Err(Refusal::TooMany);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(line: &str) -> IceCandidate {
        IceCandidate { candidate: line.into(), sdp_mid: None, sdp_m_line_index: None, username_fragment: None }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses_pass_and_others_need_allowing() {
        let p = CandidatePolicy::new(&[ip("203.0.113.7")], &[]);
        assert!(p.allows(ip("198.51.100.20")));
        assert!(p.allows(ip("2001:db8::1")));
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!p.allows(ip(private)), "{private} is excluded by default");
        }
        for never in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1", "240.0.0.1"] {
            assert!(!p.allows(ip(never)), "{never} is never used");
        }
    }

    #[test]
    fn the_servers_own_networks_and_configured_ones_are_allowed() {
        let p = CandidatePolicy::new(&[ip("127.0.0.1"), ip("10.77.0.1")], &[Net::parse("192.168.5.0/24").unwrap()]);
        assert!(p.allows(ip("127.0.0.1")));
        assert!(p.allows(ip("10.200.0.9")), "the server's private network");
        assert!(p.allows(ip("192.168.5.40")));
        assert!(!p.allows(ip("192.168.6.40")));
        assert!(!p.allows(ip("172.16.0.1")));
    }

    #[test]
    fn candidates_are_judged_and_capped() {
        let p = CandidatePolicy::new(&[ip("127.0.0.1")], &[]);
        assert_eq!(p.judge(&c("candidate:1 1 udp 2122260223 127.0.0.1 4000 typ host"), 0), Ok(()));
        assert_eq!(
            p.judge(&c("candidate:1 1 udp 2122260223 127.0.0.1 4000 typ host"), MAX_REMOTE_CANDIDATES),
            Err(Refusal::TooMany)
        );
        assert_eq!(
            p.judge(&c("candidate:1 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active"), 0),
            Err(Refusal::Unusable)
        );
        assert_eq!(p.judge(&c("candidate:1 2 udp 2122260222 127.0.0.1 4001 typ host"), 0), Err(Refusal::Unusable));
        assert_eq!(
            p.judge(&c("candidate:1 1 udp 2122260223 1234-abcd.local 4000 typ host"), 0),
            Err(Refusal::NotAnAddress)
        );
        assert_eq!(p.judge(&c("candidate:1 1 udp 2122260223 10.0.0.1 4000 typ host"), 0), Err(Refusal::Excluded));
        assert_eq!(p.judge(&c("candidate:1 1 udp 2122260223 127.0.0.1 0 typ host"), 0), Err(Refusal::Unusable));
        assert_eq!(p.judge(&c("garbage"), 0), Err(Refusal::Malformed));
    }

    #[test]
    fn networks_parse() {
        assert_eq!(Net::parse("10.1.0.0/16").unwrap(), Net::v4(10, 1, 0, 0, 16));
        assert_eq!(Net::parse("10.1.2.3").unwrap().prefix, 32);
        assert!(Net::parse("10.1.0.0/33").is_err());
        assert!(Net::parse("nonsense/8").is_err());
        assert!(Net::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
    }
}

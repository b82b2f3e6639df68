//! The addresses the SFU announces to browsers: the bound ICE addresses,
//! or in their place the public addresses they are reached by (1:1 NAT, as
//! on every cloud VM: the interface holds a private address, the provider
//! forwards a public one to it). `CLEANROOM_ICE_PUBLIC_ADDRS` pairs with
//! `CLEANROOM_ICE_ADDRS` by position.
//!
//! The engine gathers host candidates on what it binds; this rewrites the
//! address of each of our candidates, trickled or inside an offer, before
//! it reaches the page. (The engine's own `nat_1to1_ips` setting is not
//! applied by its gatherer in this version.) Nothing else changes: the
//! browser's checks arrive at the public address, the NAT hands them to the
//! bound one, and answers leave from there.

use std::net::IpAddr;

/// Bound address → announced address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announce {
    pairs: Vec<(IpAddr, IpAddr)>,
}

impl Announce {
    /// Pairs `bound[i]` with `public[i]`; an empty `public` announces what
    /// is bound. (The lengths were checked with the configuration.)
    pub fn new(bound: &[IpAddr], public: &[IpAddr]) -> Self {
        Self { pairs: bound.iter().copied().zip(public.iter().copied()).filter(|(b, p)| b != p).collect() }
    }

    /// Whether anything is rewritten.
    pub fn is_identity(&self) -> bool {
        self.pairs.is_empty()
    }

    fn public(&self, bound: IpAddr) -> Option<IpAddr> {
        self.pairs.iter().find(|(b, _)| *b == bound).map(|(_, p)| *p)
    }

    /// One candidate attribute value (`candidate:… <address> <port> typ …`),
    /// with its connection address announced.
    pub fn candidate(&self, line: &str) -> String {
        if self.is_identity() {
            return line.to_owned();
        }
        let mut fields: Vec<&str> = line.split(' ').collect();
        let public = fields.get(4).and_then(|a| a.parse::<IpAddr>().ok()).and_then(|a| self.public(a));
        let Some(public) = public else { return line.to_owned() };
        let public = public.to_string();
        fields[4] = &public;
        fields.join(" ")
    }

    /// An SDP with every `a=candidate:` line announced.
    pub fn sdp(&self, sdp: &str) -> String {
        if self.is_identity() {
            return sdp.to_owned();
        }
        let mut out = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            let body = line.trim_end_matches(['\r', '\n']);
            match body.strip_prefix("a=") {
                Some(value) if value.starts_with("candidate:") => {
                    out.push_str("a=");
                    out.push_str(&self.candidate(value));
                    out.push_str(&line[body.len()..]);
                }
                _ => out.push_str(line),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn bound_addresses_are_announced_as_their_public_pair() {
        let map = Announce::new(&[ip("10.0.1.5"), ip("127.0.0.1")], &[ip("203.0.113.7"), ip("127.0.0.1")]);
        assert_eq!(
            map.candidate("candidate:1 1 udp 2130706431 10.0.1.5 40001 typ host"),
            "candidate:1 1 udp 2130706431 203.0.113.7 40001 typ host"
        );
        // The identical pair and unknown addresses stay as they are.
        let lo = "candidate:2 1 udp 2130706431 127.0.0.1 40001 typ host";
        assert_eq!(map.candidate(lo), lo);
        let other = "candidate:3 1 udp 2130706431 192.0.2.1 40001 typ host";
        assert_eq!(map.candidate(other), other);
        assert_eq!(map.candidate("garbage"), "garbage");
    }

    #[test]
    fn offers_get_every_candidate_line_announced_and_nothing_else() {
        let map = Announce::new(&[ip("10.0.1.5")], &[ip("203.0.113.7")]);
        let sdp = "v=0\r\nc=IN IP4 10.0.1.5\r\na=candidate:1 1 udp 2130706431 10.0.1.5 40001 typ host\r\na=mid:0\r\n";
        assert_eq!(
            map.sdp(sdp),
            "v=0\r\nc=IN IP4 10.0.1.5\r\na=candidate:1 1 udp 2130706431 203.0.113.7 40001 typ host\r\na=mid:0\r\n"
        );
        assert!(Announce::new(&[ip("10.0.1.5")], &[]).is_identity());
    }
}

//! The STUN and TURN servers a browser is handed with its join, and the
//! time-limited TURN credentials of each session.
//!
//! Credentials follow the TURN REST scheme that coturn implements with
//! `use-auth-secret`: the username is `<expiry unix seconds>:<user id>` and
//! the credential is base64(HMAC-SHA1(secret, username)). The TURN server
//! recomputes the HMAC from the shared secret and refuses an expired
//! username, so the page only ever holds a password that stops working
//! after `CLEANROOM_TURN_TTL_S`, never the secret.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use app::model::{IceServer, UserId};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::Config;

/// A parsed RFC 7064 (`stun:`/`stuns:`) or RFC 7065 (`turn:`/`turns:`) URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    /// `?transport=udp|tcp` (TURN only).
    transport: Option<Transport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Stun,
    Stuns,
    Turn,
    Turns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl IceUrl {
    /// Parses `scheme:host[:port][?transport=udp|tcp]`; the host is a name,
    /// an IPv4 address or a bracketed IPv6 address. The default ports are
    /// 3478, and 5349 for the TLS schemes.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{s}`: {why}");
        let (scheme, rest) = s.split_once(':').ok_or_else(|| bad("expected stun:, stuns:, turn: or turns:"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "stun" => Scheme::Stun,
            "stuns" => Scheme::Stuns,
            "turn" => Scheme::Turn,
            "turns" => Scheme::Turns,
            _ => return Err(bad("expected stun:, stuns:, turn: or turns:")),
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let transport = match query {
            None => None,
            Some(_) if matches!(scheme, Scheme::Stun | Scheme::Stuns) => {
                return Err(bad("a STUN URL takes no `?transport`"));
            }
            Some(q) => match q.to_ascii_lowercase().as_str() {
                "transport=udp" => Some(Transport::Udp),
                "transport=tcp" => Some(Transport::Tcp),
                _ => return Err(bad("expected `?transport=udp` or `?transport=tcp`")),
            },
        };
        if scheme == Scheme::Turns && transport == Some(Transport::Udp) {
            return Err(bad("turns: runs over TLS, which needs `transport=tcp`"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("expected host[:port]"))?;
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("not a port"))?,
            None if matches!(scheme, Scheme::Stuns | Scheme::Turns) => 5349,
            None => 3478,
        };
        Ok(Self { scheme, host: host.to_ascii_lowercase(), port, transport })
    }

    /// Whether this is a TURN server (which needs credentials).
    pub fn is_turn(&self) -> bool {
        matches!(self.scheme, Scheme::Turn | Scheme::Turns)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with a well-formed host.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (authority.get(..v6.len() + 2)?, None),
            p => (authority.get(..v6.len() + 2)?, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let name_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')));
    name_ok.then_some((host, port))
}

impl fmt::Display for IceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Stun => "stun",
            Scheme::Stuns => "stuns",
            Scheme::Turn => "turn",
            Scheme::Turns => "turns",
        };
        write!(f, "{scheme}:{}:{}", self.host, self.port)?;
        match self.transport {
            Some(Transport::Udp) => f.write_str("?transport=udp"),
            Some(Transport::Tcp) => f.write_str("?transport=tcp"),
            None => Ok(()),
        }
    }
}

/// What a joined session is handed: the configured STUN servers as they
/// are, and the TURN servers with fresh credentials for that user.
#[derive(Clone, Default)]
pub struct IceServers {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Option<String>,
    ttl: Duration,
}

impl fmt::Debug for IceServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("IceServers").field("stun", &self.stun).field("turn", &self.turn).finish_non_exhaustive()
    }
}

impl IceServers {
    /// From the (already validated) settings.
    pub fn from_config(c: &Config) -> Self {
        Self {
            stun: c.stun_urls.clone(),
            turn: c.turn_urls.clone(),
            secret: c.turn_secret.clone(),
            ttl: Duration::from_secs(c.turn_ttl_s),
        }
    }

    /// The servers for `user`, with TURN credentials valid until
    /// `now + ttl`.
    pub fn for_user(&self, user: &UserId, now: SystemTime) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if !self.stun.is_empty() {
            servers.push(IceServer { urls: self.stun.clone(), username: None, credential: None });
        }
        if let (false, Some(secret)) = (self.turn.is_empty(), &self.secret) {
            let expiry = now.checked_add(self.ttl).unwrap_or(now).duration_since(UNIX_EPOCH).unwrap_or_default();
            let username = format!("{}:{user}", expiry.as_secs());
            let credential = turn_credential(secret, &username);
            servers.push(IceServer { urls: self.turn.clone(), username: Some(username), credential: Some(credential) });
        }
        servers
    }
}

impl app::ports::IceServerSource for IceServers {
    fn ice_servers(&self, user: &UserId) -> Vec<IceServer> {
        self.for_user(user, SystemTime::now())
    }
}

/// base64(HMAC-SHA1(secret, username)), as coturn's `use-auth-secret` checks it.
pub fn turn_credential(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_default_ports() {
        let ok = |s: &str| IceUrl::parse(s).map(|u| u.to_string());
        assert_eq!(ok("stun:stun.example.org").unwrap(), "stun:stun.example.org:3478");
        assert_eq!(ok("turn:10.0.0.1?transport=tcp").unwrap(), "turn:10.0.0.1:3478?transport=tcp");
        assert_eq!(ok("TURNS:Turn.Example.org").unwrap(), "turns:turn.example.org:5349");
        assert_eq!(ok("turn:[2001:db8::1]:3479?transport=udp").unwrap(), "turn:[2001:db8::1]:3479?transport=udp");
        for bad in [
            "",
            "http://x",
            "turn:",
            "turn:host:0",
            "turn:host:99999",
            "turn:host?transport=sctp",
            "stun:host?transport=tcp",
            "turns:host?transport=udp",
            "turn:bad host",
            "turn:[nope]:3478",
            "turn:a..b",
        ] {
            assert!(IceUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn turn_credentials_follow_the_rest_scheme() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        assert_eq!(turn_credential("Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");

        let servers = IceServers {
            stun: vec!["stun:s.example.org:3478".into()],
            turn: vec!["turn:t.example.org:3478?transport=tcp".into()],
            secret: Some("a shared secret of coturn".into()),
            ttl: Duration::from_secs(600),
        };
        let user = UserId::parse("0f8fad5bd9cb469fa16570867728950e").expect("user id");
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let handed = servers.for_user(&user, now);
        assert_eq!(handed.len(), 2);
        assert_eq!(handed[0].username, None);
        let turn = &handed[1];
        let username = turn.username.as_deref().expect("username");
        assert_eq!(username, format!("1000600:{user}"));
        assert_eq!(turn.credential.as_deref(), Some(turn_credential("a shared secret of coturn", username).as_str()));
        assert!(!format!("{servers:?}").contains("shared secret"));
    }

    #[test]
    fn nothing_configured_hands_nothing() {
        let user = UserId::parse("0f8fad5bd9cb469fa16570867728950e").expect("user id");
        assert!(IceServers::default().for_user(&user, SystemTime::now()).is_empty());
    }
}

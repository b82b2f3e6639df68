//! Run-time configuration: every setting by flag or environment variable
//! (the flag wins), as the README's configuration table lists them.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, CommandFactory, Parser};

/// The `cleanroom` server's settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "cleanroom", version, about = "Cleanroom: video meetings that leave nothing behind.")]
pub struct Config {
    /// Address to listen on for HTTP.
    #[arg(long = "addr", env = "CLEANROOM_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Database: `sqlite://…` or `postgres://…`.
    #[arg(long = "database-url", env = "DATABASE_URL", default_value = "sqlite://data/cleanroom.db?mode=rwc")]
    pub database_url: String,

    /// Live-state store: `redis://…`; unset keeps live state in this process.
    #[arg(long = "redis-url", env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// The prefix of every key and channel this deployment uses in Redis
    /// (deployments sharing one Redis need different prefixes).
    #[arg(long = "store-prefix", env = "CLEANROOM_STORE_PREFIX", default_value = "cleanroom", value_parser = parse_store_prefix)]
    pub store_prefix: String,

    /// The URL by which this node is reached directly (the other nodes of
    /// the deployment relay to it there); derived from the listen address
    /// when unset.
    #[arg(long = "public-url", env = "CLEANROOM_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,

    /// This node's id in a multi-node deployment (random per start when unset).
    #[arg(long = "node-id", env = "CLEANROOM_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Serve `/api/debug/resources`.
    #[arg(
        long = "debug-api", env = "CLEANROOM_DEBUG_API", action = ArgAction::Set,
        value_parser = BoolishValueParser::new(), default_value = "false",
        num_args = 0..=1, default_missing_value = "true"
    )]
    pub debug_api: bool,

    /// Ask browsers for their camera in three simulcast layers, so that
    /// each subscriber gets the one that fits its tile and downlink; off,
    /// the camera is one full-size layer.
    #[arg(
        long = "simulcast", env = "CLEANROOM_SIMULCAST", action = ArgAction::Set,
        value_parser = BoolishValueParser::new(), default_value = "true",
        num_args = 0..=1, default_missing_value = "true"
    )]
    pub simulcast: bool,

    /// The video codecs a browser may send its camera and screen in, in
    /// the order it is asked to prefer them (comma-separated: `vp8`,
    /// `h264`): browsers send the first one they support. Subscribers get
    /// each video in the codec it was sent in.
    #[arg(
        long = "video-codecs", env = "CLEANROOM_VIDEO_CODECS", value_delimiter = ',',
        default_value = "vp8,h264", value_parser = parse_video_codec
    )]
    pub video_codecs: Vec<crate::media::VideoCodec>,

    /// Media (ICE) addresses to bind and announce, comma-separated.
    #[arg(long = "ice-addrs", env = "CLEANROOM_ICE_ADDRS", value_delimiter = ',', default_value = "127.0.0.1")]
    pub ice_addrs: Vec<IpAddr>,

    /// Private or loopback networks (CIDR, comma-separated) whose addresses
    /// browsers may name as ICE candidates, besides the networks of the ICE
    /// addresses themselves; public addresses are always allowed.
    #[arg(long = "ice-allow-nets", env = "CLEANROOM_ICE_ALLOW_NETS", value_delimiter = ',', value_parser = parse_net)]
    pub ice_allow_nets: Vec<crate::media::candidates::Net>,

    /// Media UDP port range `min-max` (any free port when unset).
    #[arg(long = "ice-ports", env = "CLEANROOM_ICE_PORTS", value_parser = parse_port_range)]
    pub ice_ports: Option<PortRange>,

    /// Abrupt loss: show a silent participant as `reconnecting` after this many ms.
    #[arg(long = "suspect-ms", env = "CLEANROOM_SUSPECT_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub suspect_ms: u64,

    /// Abrupt loss: remove a silent participant after this many ms.
    #[arg(long = "remove-ms", env = "CLEANROOM_REMOVE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub remove_ms: u64,

    /// Media: an SDP offer unanswered this long (ms) is rolled back and sent again.
    #[arg(long = "offer-timeout-ms", env = "CLEANROOM_OFFER_TIMEOUT_MS", default_value_t = 10_000, hide = true, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub offer_timeout_ms: u64,

    /// A request to join a private room expires after this many ms.
    #[arg(long = "pending-timeout-ms", env = "CLEANROOM_PENDING_TIMEOUT_MS", default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub pending_timeout_ms: u64,

    /// A room everybody left closes itself after this many ms.
    #[arg(long = "empty-room-ms", env = "CLEANROOM_EMPTY_ROOM_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(100..=2_592_000_000))]
    pub empty_room_ms: u64,

    /// A room nobody joined closes itself after this many ms.
    #[arg(long = "unused-room-ms", env = "CLEANROOM_UNUSED_ROOM_MS", default_value_t = 86_400_000, value_parser = clap::value_parser!(u64).range(100..=2_592_000_000))]
    pub unused_room_ms: u64,

    /// Reconciler: compare live sessions, the store and the database this often (ms).
    #[arg(long = "reconcile-ms", env = "CLEANROOM_RECONCILE_MS", default_value_t = 10_000, hide = true, value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    pub reconcile_ms: u64,

    /// HTTPS: the certificate chain (PEM). With `--tls-key` the listen
    /// address speaks only HTTPS and WSS; the files are read again when
    /// they change (a renewal needs no restart).
    #[arg(long = "tls-cert", env = "CLEANROOM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// HTTPS: the private key (PEM) of `--tls-cert`.
    #[arg(long = "tls-key", env = "CLEANROOM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// HTTPS with a certificate made at start for the ICE (and public)
    /// addresses and `localhost`, for a LAN; its SHA-256 fingerprint is logged.
    #[arg(
        long = "tls-self-signed", env = "CLEANROOM_TLS_SELF_SIGNED", action = ArgAction::Set,
        value_parser = BoolishValueParser::new(), default_value = "false",
        num_args = 0..=1, default_missing_value = "true"
    )]
    pub tls_self_signed: bool,

    /// HTTPS with certificates by ACME (TLS-ALPN-01 on the listen port) for
    /// these domains, comma-separated.
    #[arg(long = "acme-domains", env = "CLEANROOM_ACME_DOMAINS", value_delimiter = ',', value_parser = parse_domain)]
    pub acme_domains: Vec<String>,

    /// The ACME directory URL.
    #[arg(long = "acme-directory", env = "CLEANROOM_ACME_DIRECTORY", default_value = LETS_ENCRYPT)]
    pub acme_directory: String,

    /// Where ACME keeps its account and certificates.
    #[arg(long = "acme-cache", env = "CLEANROOM_ACME_CACHE", default_value = "data/acme")]
    pub acme_cache: PathBuf,

    /// Certificate authorities (PEM) to trust for the ACME directory's own
    /// HTTPS, for a private ACME server; unset trusts the public web roots.
    #[arg(long = "acme-directory-ca", env = "CLEANROOM_ACME_DIRECTORY_CA")]
    pub acme_directory_ca: Option<PathBuf>,

    /// Addresses announced to browsers instead of the bound ICE addresses
    /// (1:1 NAT), comma-separated, paired by position with `--ice-addrs`.
    #[arg(long = "ice-public-addrs", env = "CLEANROOM_ICE_PUBLIC_ADDRS", value_delimiter = ',')]
    pub ice_public_addrs: Vec<IpAddr>,

    /// STUN servers handed to browsers (`stun:host[:port]`), comma-separated.
    #[arg(long = "stun-urls", env = "CLEANROOM_STUN_URLS", value_delimiter = ',', value_parser = parse_stun_url)]
    pub stun_urls: Vec<String>,

    /// TURN servers handed to browsers (`turn:host[:port][?transport=udp|tcp]`
    /// or `turns:…`), comma-separated; needs `--turn-secret`.
    #[arg(long = "turn-urls", env = "CLEANROOM_TURN_URLS", value_delimiter = ',', value_parser = parse_turn_url, requires = "turn_secret")]
    pub turn_urls: Vec<String>,

    /// The TURN server's shared secret (coturn's `static-auth-secret`): each
    /// session gets credentials made from it, never the secret itself.
    #[arg(long = "turn-secret", env = "CLEANROOM_TURN_SECRET", hide_env_values = true, value_parser = parse_turn_secret)]
    pub turn_secret: Option<String>,

    /// Lifetime of a session's TURN credentials, seconds.
    #[arg(long = "turn-ttl-s", env = "CLEANROOM_TURN_TTL_S", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub turn_ttl_s: u64,

    /// Log lines as text (`text`, coloured only on a terminal) or one JSON
    /// object per line (`json`).
    #[arg(long = "log-format", env = "CLEANROOM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// How often the certificate files are checked for a change (ms).
    #[arg(long = "tls-reload-ms", env = "CLEANROOM_TLS_RELOAD_MS", default_value_t = 5_000, hide = true, value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    pub tls_reload_ms: u64,

    /// Secret for signing identity cookies (at least 32 bytes). When unset a
    /// random key is made at start, so identities last as long as the process.
    #[arg(long = "secret", env = "CLEANROOM_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// An inclusive UDP port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// The lowest port (at least 1).
    pub min: u16,
    /// The highest port (at least `min`).
    pub max: u16,
}

impl PortRange {
    /// The ports as a `min..=max` range.
    pub fn range(self) -> RangeInclusive<u16> {
        self.min..=self.max
    }
}

fn parse_public_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    let host = rest.map(|r| r.trim_end_matches('/')).unwrap_or_default();
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err("expected http://host[:port] or https://host[:port], without a path".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn parse_store_prefix(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected 1 to 64 of a-z, A-Z, 0-9, `-`, `_`, `.`, `:`".into())
    }
}

fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let (a, b) = s.split_once('-').ok_or("expected `min-max`, e.g. 40000-40100")?;
    let min: u16 = a.trim().parse().map_err(|_| format!("`{a}` is not a port"))?;
    let max: u16 = b.trim().parse().map_err(|_| format!("`{b}` is not a port"))?;
    if min == 0 || min > max {
        return Err("expected 1 <= min <= max".into());
    }
    Ok(PortRange { min, max })
}

fn parse_video_codec(s: &str) -> Result<crate::media::VideoCodec, String> {
    crate::media::VideoCodec::parse(s.trim()).ok_or_else(|| format!("`{s}` is not one of vp8, h264"))
}

fn parse_net(s: &str) -> Result<crate::media::candidates::Net, String> {
    crate::media::candidates::Net::parse(s)
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.len() <= 253 && d.contains('.') && d.split('.').all(label_ok) {
        Ok(d)
    } else {
        Err(format!("`{s}` is not a domain name"))
    }
}

fn parse_stun_url(s: &str) -> Result<String, String> {
    let url = crate::media::ice_servers::IceUrl::parse(s.trim())?;
    if url.is_turn() {
        return Err(format!("`{s}` is a TURN URL; list it in CLEANROOM_TURN_URLS"));
    }
    Ok(url.to_string())
}

fn parse_turn_url(s: &str) -> Result<String, String> {
    let url = crate::media::ice_servers::IceUrl::parse(s.trim())?;
    if !url.is_turn() {
        return Err(format!("`{s}` is a STUN URL; list it in CLEANROOM_STUN_URLS"));
    }
    Ok(url.to_string())
}

fn parse_turn_secret(s: &str) -> Result<String, String> {
    if s.len() < 16 {
        return Err("must be at least 16 bytes long".into());
    }
    Ok(s.to_owned())
}

fn parse_node_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected 1 to 64 characters of a-z, A-Z, 0-9, `-` or `_`".into())
    }
}

fn parse_secret(s: &str) -> Result<String, String> {
    if s.len() < 32 {
        return Err("must be at least 32 bytes long".into());
    }
    Ok(s.to_owned())
}

impl Config {
    /// Parses flags and environment. On a bad setting returns one line that
    /// names it (flag and variable), for the caller to print before exit 2.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigExit>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Self::try_parse_from(args).map_err(|e| {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ConfigExit::Info(e.to_string()),
                _ => ConfigExit::Invalid(one_line(&e)),
            }
        })?;
        config.check()?;
        Ok(config)
    }

    /// Settings that are valid one by one but not together; one line naming
    /// them, for exit 2.
    pub fn check(&self) -> Result<(), ConfigExit> {
        let invalid = |line: &str| Err(ConfigExit::Invalid(line.to_owned()));
        let https = [self.tls_cert.is_some(), self.tls_self_signed, !self.acme_domains.is_empty()];
        if https.iter().filter(|on| **on).count() > 1 {
            return invalid(
                "choose one of CLEANROOM_TLS_CERT/CLEANROOM_TLS_KEY, CLEANROOM_TLS_SELF_SIGNED and CLEANROOM_ACME_DOMAINS",
            );
        }
        if !self.ice_public_addrs.is_empty() && self.ice_public_addrs.len() != self.ice_addrs.len() {
            return Err(ConfigExit::Invalid(format!(
                "CLEANROOM_ICE_PUBLIC_ADDRS (--ice-public-addrs): {} addresses for {} in CLEANROOM_ICE_ADDRS; they pair by position",
                self.ice_public_addrs.len(),
                self.ice_addrs.len()
            )));
        }
        let codecs = &self.video_codecs;
        if codecs.is_empty() || codecs.iter().enumerate().any(|(i, c)| codecs[..i].contains(c)) {
            return invalid("CLEANROOM_VIDEO_CODECS (--video-codecs): each of vp8, h264 at most once, at least one");
        }
        if self.ice_public_addrs.iter().any(|ip| ip.is_unspecified() || ip.is_multicast()) {
            return invalid("CLEANROOM_ICE_PUBLIC_ADDRS (--ice-public-addrs): not an address browsers can reach");
        }
        Ok(())
    }

    /// Whether the listen address speaks HTTPS.
    pub fn https(&self) -> bool {
        self.tls_cert.is_some() || self.tls_self_signed || !self.acme_domains.is_empty()
    }

    /// Where this node is reached directly: `CLEANROOM_PUBLIC_URL`, or the
    /// listen address (an unspecified one as the first media address).
    pub fn public_url_or_derived(&self) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let scheme = if self.https() { "https" } else { "http" };
        let ip = match self.addr.ip() {
            ip if ip.is_unspecified() => self.ice_addrs.first().copied().unwrap_or(IpAddr::from([127, 0, 0, 1])),
            ip => ip,
        };
        format!("{scheme}://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The node id, generated when none is configured.
    pub fn node_id_or_random(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
    }
}

/// Why parsing stopped.
#[derive(Debug)]
pub enum ConfigExit {
    /// `--help` or `--version`: print, exit 0.
    Info(String),
    /// A bad setting: print the line, exit 2.
    Invalid(String),
}

/// Clap's first error line, with the environment variable of the flag it names.
fn one_line(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines.next().unwrap_or("invalid configuration").to_owned();
    // "the following required arguments were not provided:" lists them below.
    if first.ends_with(':') {
        let named: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage")).collect();
        first = format!("{first} {}", named.join(", "));
    }
    let env = Config::command()
        .get_arguments()
        .filter_map(|a| Some((a.get_long()?.to_owned(), a.get_env()?.to_string_lossy().into_owned())))
        .find(|(long, _)| {
            first.contains(&format!("--{long} "))
                || first.contains(&format!("--{long}'"))
                || first.ends_with(&format!("--{long}"))
        });
    match env {
        Some((_, var)) => format!("{first} (environment variable {var})"),
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigExit> {
        Config::from_args(std::iter::once("cleanroom").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.database_url, "sqlite://data/cleanroom.db?mode=rwc");
        assert_eq!(c.suspect_ms, 3000);
        assert_eq!(c.remove_ms, 10000);
        assert!(!c.debug_api);
        assert!(c.simulcast);
        assert_eq!(c.ice_addrs, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.store_prefix, "cleanroom");
        assert_eq!(c.public_url_or_derived(), "http://127.0.0.1:3000");
        let c = parse(&["--addr", "0.0.0.0:8080", "--ice-addrs", "10.0.0.5"]).unwrap();
        assert_eq!(c.public_url_or_derived(), "http://10.0.0.5:8080");
        let c = parse(&["--public-url", "https://n1.meet.example/"]).unwrap();
        assert_eq!(c.public_url_or_derived(), "https://n1.meet.example");
    }

    #[test]
    fn video_codecs_are_named_in_order_each_once() {
        use crate::media::VideoCodec::{Vp8, H264};
        assert_eq!(parse(&[]).unwrap().video_codecs, vec![Vp8, H264]);
        assert_eq!(parse(&["--video-codecs", "H264, vp8"]).unwrap().video_codecs, vec![H264, Vp8]);
        assert_eq!(parse(&["--video-codecs", "h264"]).unwrap().video_codecs, vec![H264]);
        for bad in ["av1", "vp8,vp8", "vp8,,h264"] {
            let Err(ConfigExit::Invalid(line)) = parse(&["--video-codecs", bad]) else { panic!("{bad} accepted") };
            assert!(line.contains("CLEANROOM_VIDEO_CODECS"), "{bad}: {line}");
        }
    }

    #[test]
    fn bad_settings_name_flag_and_variable_on_one_line() {
        let Err(ConfigExit::Invalid(line)) = parse(&["--addr", "nowhere"]) else { panic!("accepted") };
        assert!(line.contains("--addr") && line.contains("CLEANROOM_ADDR"), "{line}");
        assert!(!line.contains('\n'));
        let Err(ConfigExit::Invalid(line)) = parse(&["--ice-ports", "9-3"]) else { panic!("accepted") };
        assert!(line.contains("CLEANROOM_ICE_PORTS"), "{line}");
        // A brace would break the rooms' hash tags; a space, the channel name.
        for prefix in ["", "a{b}", "two words"] {
            let Err(ConfigExit::Invalid(line)) = parse(&["--store-prefix", prefix]) else {
                panic!("{prefix:?} accepted")
            };
            assert!(line.contains("CLEANROOM_STORE_PREFIX"), "{line}");
        }
        assert_eq!(parse(&["--store-prefix", "eu-1.cleanroom"]).unwrap().store_prefix, "eu-1.cleanroom");
        for url in ["n1.example", "ftp://n1.example", "http://", "http://n1.example/meet"] {
            let Err(ConfigExit::Invalid(line)) = parse(&["--public-url", url]) else { panic!("{url:?} accepted") };
            assert!(line.contains("CLEANROOM_PUBLIC_URL"), "{line}");
        }
    }

    #[test]
    fn real_network_settings_parse_and_check_together() {
        let c = parse(&[
            "--ice-addrs",
            "10.0.0.5,127.0.0.1",
            "--ice-public-addrs",
            "203.0.113.7,127.0.0.1",
            "--stun-urls",
            "stun:stun.example.org",
            "--turn-urls",
            "turn:turn.example.org?transport=tcp,turns:turn.example.org:5349",
            "--turn-secret",
            "0123456789abcdef",
        ])
        .unwrap();
        assert_eq!(c.ice_public_addrs.len(), 2);
        assert_eq!(c.turn_urls, ["turn:turn.example.org:3478?transport=tcp", "turns:turn.example.org:5349"]);
        assert_eq!(c.turn_ttl_s, 86_400);
        assert!(!c.https());

        let line = |args: &[&str]| match parse(args) {
            Err(ConfigExit::Invalid(line)) => line,
            other => panic!("accepted {args:?}: {other:?}"),
        };
        assert!(line(&["--ice-public-addrs", "203.0.113.7,203.0.113.8"]).contains("CLEANROOM_ICE_PUBLIC_ADDRS"));
        assert!(line(&["--turn-urls", "turn:t.example.org"]).contains("turn-secret"));
        assert!(line(&["--turn-urls", "stun:t.example.org", "--turn-secret", "0123456789abcdef"])
            .contains("CLEANROOM_TURN_URLS"));
        assert!(line(&["--stun-urls", "http://x"]).contains("CLEANROOM_STUN_URLS"));
        assert!(line(&["--tls-cert", "a.pem"]).contains("tls-key"));
        assert!(line(&["--tls-self-signed", "--acme-domains", "a.example.org"]).contains("CLEANROOM_ACME_DOMAINS"));
        assert!(line(&["--acme-domains", "not a domain"]).contains("CLEANROOM_ACME_DOMAINS"));
        assert!(line(&["--turn-ttl-s", "5"]).contains("CLEANROOM_TURN_TTL_S"));
        assert!(parse(&["--tls-self-signed"]).unwrap().https());
    }

    #[test]
    fn flags_parse() {
        let c = parse(&["--debug-api", "--ice-addrs", "10.0.0.1,127.0.0.1", "--ice-ports", "40000-40010"]).unwrap();
        assert!(c.debug_api);
        assert_eq!(c.ice_addrs.len(), 2);
        assert_eq!(c.ice_ports.unwrap().range(), 40000..=40010);
        let c = parse(&["--debug-api=0", "--simulcast=off"]).unwrap();
        assert!(!c.debug_api && !c.simulcast);
    }
}

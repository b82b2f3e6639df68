//! An ICE candidate line as a page sends it: reading it never panics, and
//! what it reads is what the line says.
#![no_main]

use app::signal::{IceCandidate, MAX_CANDIDATE_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let candidate = IceCandidate {
        candidate: String::from_utf8_lossy(data).into_owned(),
        sdp_mid: None,
        sdp_m_line_index: None,
        username_fragment: None,
    };
    if let Some(line) = candidate.line() {
        assert!(candidate.candidate.len() <= MAX_CANDIDATE_BYTES);
        assert!(line.transport == "udp" || line.transport == "tcp");
        assert!(matches!(line.kind, "host" | "srflx" | "prflx" | "relay"));
        assert!(candidate.candidate.contains(line.address));
    }
});

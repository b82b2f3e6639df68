//! A signalling frame from a page: parsing never panics, and what parses
//! survives a round trip unchanged.
#![no_main]

use app::signal::ClientMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(msg) = serde_json::from_str::<ClientMsg>(text) else { return };
    if let ClientMsg::IceCandidate { candidate } = &msg {
        let _ = candidate.line();
    }
    let again: ClientMsg = serde_json::from_str(&serde_json::to_string(&msg).expect("serialises")).expect("re-parses");
    assert_eq!(again, msg);
});

//! The leave beacon's body (any bytes a page or a stranger sends): the
//! session it names, if any, is always a well-formed id.
#![no_main]

use app::model::SessionId;
use app::signal::beacon_session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    if let Some(session) = beacon_session(&body) {
        assert!(SessionId::is_well_formed(session.as_str()));
        assert!(body.contains(session.as_str()));
    }
});

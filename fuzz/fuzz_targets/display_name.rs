//! Display names: validation never panics, what it accepts is within the
//! limits and free of what it refuses, and accepting is idempotent.
#![no_main]

use app::model::{validate_display_name, MAX_NAME_CHARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let Ok(name) = validate_display_name(&input) else { return };
    assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS);
    assert_eq!(name.trim(), name);
    assert!(!name.chars().any(|c| c.is_control() || c == '\u{FFFD}' || ('\u{202A}'..='\u{202E}').contains(&c)));
    assert_eq!(validate_display_name(&name).as_deref(), Ok(name.as_str()), "accepting twice changes nothing");
});

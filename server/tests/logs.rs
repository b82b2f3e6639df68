//! What the `cleanroom` binary writes to its log when it is not on a
//! terminal: plain text without colour codes by default, or one JSON object
//! per line with `CLEANROOM_LOG_FORMAT=json`.

mod common;

use std::time::Duration;

use common::tls::{temp_dir, Binary};

async fn run_and_stop(args: &[&str]) -> String {
    let dir = temp_dir("logs");
    let mut bin = Binary::start(&dir, args);
    let url = format!("http://{}/readyz", bin.wait_listening(Duration::from_secs(60)).await);
    bin.wait_ready(&reqwest::Client::new(), &url, Duration::from_secs(60)).await;
    let log = bin.log();
    bin.stop();
    let _ = std::fs::remove_dir_all(dir);
    log
}

#[tokio::test]
async fn text_logs_carry_no_colour_codes_off_a_terminal() {
    let log = run_and_stop(&[]).await;
    assert!(log.contains("listening on http://"), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI escape codes:\n{log}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let log = run_and_stop(&["--log-format", "json"]).await;
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string() && value["fields"].is_object(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("listening on http://")), "the listen line is among them:\n{log}");
}

//! What the edge refuses, and how: refusals are 4xx with the error the page
//! shows (5xx only for real failures), other sites' requests are refused
//! and plant no identity, limits answer 429 with `Retry-After` and write
//! nothing, pages carry their security headers, display names cannot hide
//! or disguise themselves.

mod common;

use app::error::AppError;
use app::model::{RoomCode, RoomOptions};
use app::ports::{Identity, RoomService};
use common::{Guest, TestServer};
use reqwest::StatusCode;

async fn post(guest: &Guest, server: &TestServer, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    guest.ensure_identity().await;
    guest.http().post(server.url(path)).form(form).send().await.expect("answered")
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, AppError) {
    let status = resp.status();
    let body = resp.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("an AppError body: {body}")))
}

async fn open_rooms(server: &TestServer) -> usize {
    server.state.rooms.db().open_rooms(10_000).await.unwrap().len()
}

#[tokio::test]
async fn refusals_are_4xx_with_the_reason() {
    let server = TestServer::sqlite_with(&[]).await;
    let (ada, eve) = (server.guest(), server.guest());
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode);
    let cases: Vec<Case> = vec![
        ("/api/join", vec![("code", room.as_str()), ("display_name", "   ")], StatusCode::BAD_REQUEST),
        ("/api/join", vec![("code", "not a code"), ("display_name", "Eve")], StatusCode::BAD_REQUEST),
        ("/api/join", vec![("code", "zzz-zzzz-zzz"), ("display_name", "Eve")], StatusCode::NOT_FOUND),
        ("/api/kick", vec![("session_id", a.session_id.as_str()), ("participant_id", "p1")], StatusCode::FORBIDDEN),
        ("/api/hand", vec![("session_id", "nosuchsession"), ("up", "true")], StatusCode::CONFLICT),
        (
            "/api/mute",
            vec![("session_id", a.session_id.as_str()), ("kind", "smell"), ("muted", "true")],
            StatusCode::BAD_REQUEST,
        ),
        ("/api/leave", vec![("session_id", "not/an id")], StatusCode::BAD_REQUEST),
        ("/api/join", vec![("code", room.as_str())], StatusCode::BAD_REQUEST),
    ];
    for (path, form, expected) in cases {
        let resp = post(&eve, &server, path, &form).await;
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(status, expected, "{path} {form:?}: {body}");
        assert!(serde_json::from_str::<AppError>(&body).is_ok(), "{path}: the page can read the error: {body}");
    }
    // A leave of somebody else's session: 403, and Ada is still in.
    let (status, error) =
        error_of(post(&eve, &server, "/api/leave", &[("session_id", a.session_id.as_str())]).await).await;
    assert_eq!((status, error), (StatusCode::FORBIDDEN, AppError::Forbidden));
    assert_eq!(server.resources(&room).await["sessions"], 1);
    server.stop().await;
}

#[tokio::test]
async fn other_sites_cannot_act_or_plant_an_identity() {
    let server = TestServer::sqlite_with(&[]).await;
    let victim = server.guest();
    victim.ensure_identity().await;
    let before = open_rooms(&server).await;

    // A form another site submits, with the victim's cookie attached.
    for (name, value) in
        [("sec-fetch-site", "cross-site"), ("sec-fetch-site", "same-site"), ("origin", "https://evil.example")]
    {
        let resp = victim
            .http()
            .post(server.url("/api/create-room"))
            .header(name, value)
            .form(&[("display_name", "Victim")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(resp.headers().get("set-cookie").is_none(), "{name}: no identity planted");
    }
    assert_eq!(open_rooms(&server).await, before, "nothing was created");

    // The same form from the page itself passes.
    let resp = victim
        .http()
        .post(server.url("/api/create-room"))
        .header("sec-fetch-site", "same-origin")
        .header("origin", server.url(""))
        .form(&[("display_name", "Victim")])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection() || resp.status().is_success(), "{}", resp.status());

    // Without a cookie (SameSite withholds it cross-site): refused, and no
    // identity is handed out by a request that is not a page load.
    let stranger = reqwest::Client::new();
    let resp = stranger.post(server.url("/api/create-room")).form(&[("display_name", "X")]).send().await.unwrap();
    assert!(resp.headers().get("set-cookie").is_none());
    let (status, error) = error_of(resp).await;
    assert_eq!((status, error), (StatusCode::FORBIDDEN, AppError::NoIdentity));
    for path in ["/healthz", "/favicon.svg", "/pkg/cleanroom.css"] {
        let resp = stranger.get(server.url(path)).send().await.unwrap();
        assert!(resp.headers().get("set-cookie").is_none(), "{path} sets no identity");
    }
    let resp = stranger.get(server.url("/")).header("sec-fetch-dest", "document").send().await.unwrap();
    assert!(resp.headers().get("set-cookie").is_some(), "a page load issues one");
    let resp = stranger.get(server.url("/")).header("sec-fetch-dest", "iframe").send().await.unwrap();
    assert!(resp.headers().get("set-cookie").is_none(), "a framed load does not");
    server.stop().await;
}

#[tokio::test]
async fn limits_answer_429_with_retry_after_and_write_nothing() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada = server.guest();

    // Rooms by one person: a burst, then wait.
    let mut made = Vec::new();
    loop {
        let resp = post(&ada, &server, "/api/create-room", &[("display_name", "Ada")]).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry >= 1, "Retry-After {retry}");
            let (_, error) = error_of(resp).await;
            assert!(matches!(error, AppError::Limited { retry_after_s, .. } if retry_after_s == retry));
            break;
        }
        assert!(resp.status().is_redirection() || resp.status().is_success(), "{}", resp.status());
        made.push(());
        assert!(made.len() <= 10, "no limit on creating rooms");
    }
    assert_eq!(open_rooms(&server).await, made.len(), "the refused one was not written");
    let room = server.state.rooms.db().open_rooms(1).await.unwrap()[0].code.clone();
    let room = RoomCode::parse(&room).unwrap();

    // Hand toggles: a burst, then 429, and the roster stops changing.
    let a = ada.join(&room, "Ada").await.unwrap();
    let mut limited = None;
    for i in 0..200 {
        let up = if i % 2 == 0 { "true" } else { "false" };
        let resp = post(&ada, &server, "/api/hand", &[("session_id", a.session_id.as_str()), ("up", up)]).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
            limited = Some((i, up == "true"));
            break;
        }
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    let (after, refused_up) = limited.expect("hand toggles are limited");
    let hands = server.state.rooms.store().hands(&room).await.unwrap();
    assert_eq!(!hands.is_empty(), !refused_up, "after {after} toggles the refused one changed nothing");

    // Guessing room codes: a burst of lookups, then wait (nothing answered
    // about the codes past the limit).
    let guesser = server.guest();
    let mut answered = 0;
    let limited = loop {
        let code = RoomCode::from_letters(&rand::random());
        let resp = post(&guesser, &server, "/api/go-to-room", &[("code", code.as_str())]).await;
        match resp.status() {
            StatusCode::NOT_FOUND => answered += 1,
            StatusCode::TOO_MANY_REQUESTS => break resp,
            other => panic!("a guess answered {other}"),
        }
        assert!(answered <= 100, "no limit on guessing codes");
    };
    assert!(limited.headers().contains_key("retry-after"));
    let page = guesser.http().get(server.url("/r/abc-defg-hij")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS, "room pages count as lookups too");

    // Requests waiting in a private room are capped.
    let private = server.guest().create_room("Host", true).await.unwrap();
    let mut refused = None;
    for i in 0..=server::room::MAX_PENDING {
        let g = server.guest();
        match g.join(&private, &format!("Knocker {i}")).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the requests are capped");
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(server.state.rooms.store().pending(&private).await.unwrap().len(), server::room::MAX_PENDING);
    server.stop().await;
}

#[tokio::test]
async fn open_rooms_per_person_are_capped() {
    let server = TestServer::sqlite_with(&[]).await;
    let who = Identity { user_id: app::model::UserId::new("ucapped"), display_name: Some("Cap".into()) };
    let rooms = &server.state.rooms;
    for _ in 0..server::room::MAX_OPEN_ROOMS_PER_PERSON {
        rooms.create_room(&who, RoomOptions::default()).await.expect("within the cap");
    }
    let refused = rooms.create_room(&who, RoomOptions::default()).await.expect_err("over the cap");
    assert!(matches!(refused, AppError::Limited { .. }), "{refused:?}");
    assert_eq!(rooms.db().open_rooms_created_by("ucapped").await.unwrap(), server::room::MAX_OPEN_ROOMS_PER_PERSON);
    server.stop().await;
}

#[tokio::test]
async fn pages_carry_their_security_headers() {
    let server = TestServer::sqlite_with(&[]).await;
    let guest = server.guest();
    let resp = guest.http().get(server.url("/")).send().await.unwrap();
    let headers = resp.headers().clone();
    let html = resp.text().await.unwrap();
    let csp = headers["content-security-policy"].to_str().unwrap().to_owned();
    let nonce = csp.split("'nonce-").nth(1).and_then(|r| r.split('\'').next()).expect("a script nonce in the policy");
    assert!(html.contains(&format!("nonce=\"{nonce}\"")), "the page's scripts carry the nonce");
    for directive in ["frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'", "'wasm-unsafe-eval'"] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("'unsafe-inline'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    // Another page load gets another nonce.
    let again = guest.http().get(server.url("/")).send().await.unwrap();
    assert_ne!(again.headers()["content-security-policy"].to_str().unwrap(), csp);
    // Non-pages allow nothing to run.
    let health = guest.http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.headers()["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
    assert_eq!(health.headers()["x-content-type-options"], "nosniff");
    server.stop().await;
}

#[tokio::test]
async fn display_names_are_normalised_and_disguises_refused() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    for bad in
        ["\u{202E}nimdA", "\u{200B}", "\u{3164}", "Ad\u{FFFD}a", "a\u{0300}\u{0301}\u{0302}\u{0303}\u{0304}\u{0305}"]
    {
        let e = server.guest().join(&room, bad).await.expect_err("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(matches!(e.error, Some(AppError::BadName(_))), "{bad:?}: {:?}", e.error);
    }
    // Invalid UTF-8 in the form arrives as U+FFFD and is refused too.
    let raw = server.guest();
    raw.ensure_identity().await;
    let resp = raw
        .http()
        .post(server.url("/api/join"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("code={room}&display_name=Ad%FF%FEa"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.resources(&room).await["sessions"], 0, "nothing was joined");

    // Decomposed accents are stored composed (NFC), as one name.
    let maria = server.guest().join(&room, "Ma\u{0301}ria").await.unwrap();
    let me = maria.roster.iter().find(|p| p.id == maria.participant_id).unwrap();
    assert_eq!(me.name, "M\u{00E1}ria");
    server.stop().await;
}

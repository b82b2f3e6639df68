//! The signalling socket's limits: one live socket per session (a new one
//! replaces the old), frames the protocol does not allow get the
//! documented 4002 close, another site's page cannot open one, and a
//! session's connection uses only so many of the candidates a page names.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use app::signal::{close_code, ClientMsg, IceCandidate};
use common::rtc_client::MediaGuest;
use common::{eventually, Seen, TestServer};
use futures::SinkExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// Reads until the server closes; returns the close code.
async fn close_code_of(socket: &mut common::Socket) -> Option<u16> {
    loop {
        if let Seen::Closed(code) = socket.next(WAIT).await {
            return code;
        }
    }
}

/// Sends a ping and reads until its pong; `what` names the socket in the
/// failure if the server closes it instead.
async fn ping(socket: &mut common::Socket, ping: &str, what: &str) {
    socket.send_text(ping).await;
    loop {
        match socket.next(WAIT).await {
            Seen::Msg(app::signal::ServerMsg::Pong) => return,
            Seen::Msg(_) => {}
            Seen::Closed(code) => panic!("{what} closed: {code:?}"),
        }
    }
}

#[tokio::test]
async fn a_new_socket_replaces_the_old_one() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let mut first = ada.socket(&room, &a.session_id).await;
    first.roster_of(1, WAIT).await;
    let mut others = Vec::new();
    for _ in 0..20 {
        others.push(ada.socket(&room, &a.session_id).await);
    }
    assert_eq!(close_code_of(&mut first).await, Some(close_code::REPLACED));
    let mut last = others.pop().unwrap();
    for mut older in others {
        assert_eq!(close_code_of(&mut older).await, Some(close_code::REPLACED));
    }
    eventually(WAIT, "one socket left", || async { (server.resources(&room).await["websockets"] == 1).then_some(()) })
        .await;
    // The newest one is the session's, and it lives on.
    ping(&mut last, r#"{"type":"ping"}"#, "the newest socket").await;
    assert_eq!(server.resources(&room).await["sessions"], 1);
    server.stop().await;
}

#[tokio::test]
async fn frames_the_protocol_does_not_allow_get_the_bad_frame_close() {
    let server = TestServer::sqlite_with(&["--suspect-ms", "300", "--remove-ms", "1500"]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let bad_frames: Vec<(&str, Message)> = vec![
        ("over 64 KiB", Message::Text("x".repeat(app::signal::MAX_FRAME_BYTES + 1).into())),
        ("not UTF-8", Message::Frame(Frame::message(vec![0xff, 0xfe, 0x80], OpCode::Data(Data::Text), true))),
        ("binary", Message::Binary(vec![1, 2, 3].into())),
        ("not a message", Message::Text(r#"{"type":"teleport"}"#.into())),
    ];
    for (what, frame) in bad_frames {
        let joined = ada.join(&room, "Ada").await.unwrap();
        let mut socket = ada.socket(&room, &joined.session_id).await;
        socket.roster_of(1, WAIT).await;
        socket.ws.send(frame).await.expect("sent");
        assert_eq!(close_code_of(&mut socket).await, Some(close_code::BAD_FRAME), "{what}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_frame_longer_than_the_read_buffer_arrives_whole() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let joined = ada.join(&room, "Ada").await.unwrap();
    let mut socket = ada.socket(&room, &joined.session_id).await;
    socket.roster_of(1, WAIT).await;
    // A ping padded to 60 KiB (JSON allows the spaces): several reads of
    // the server's 8 KiB buffer, still under the frame limit.
    let padded = format!(r#"{{"type":"ping"{}}}"#, " ".repeat(60 * 1024));
    assert!(padded.len() < app::signal::MAX_FRAME_BYTES);
    ping(&mut socket, &padded, "the socket sent a long frame").await;
    assert_eq!(server.resources(&room).await["websockets"], 1);
    server.stop().await;
}

#[tokio::test]
async fn another_sites_page_cannot_open_a_socket() {
    let server = TestServer::sqlite_with(&[]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let url = format!("ws://{}/ws/{room}?session={}", server.addr, a.session_id);
    for (name, value) in [("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")] {
        let mut req = url.clone().into_client_request().unwrap();
        req.headers_mut().insert("cookie", ada.cookie().unwrap().parse().unwrap());
        req.headers_mut().insert(name, value.parse().unwrap());
        let refused = tokio_tungstenite::connect_async(req).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403, "{name}"),
            other => panic!("{name}: expected a 403, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(server.resources(&room).await["websockets"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_uses_only_so_many_of_the_candidates_a_page_names() {
    let server = TestServer::sqlite_with(&[]).await;
    let host = server.guest();
    let room = host.create_room("Host", false).await.unwrap();
    // A page whose connection never completes: the server keeps checking
    // every candidate it accepted.
    let guest = MediaGuest::join_without_candidates(server.guest(), &room, "Prober").await;
    eventually(WAIT, "the connection exists", || async {
        (server.resources(&room).await["peer_connections"] == 1).then_some(())
    })
    .await;
    // Listeners of our own on loopback, more than the cap; the page names
    // them over and over (3 000 candidates).
    let mut listeners = Vec::new();
    for _ in 0..40 {
        listeners.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    let name_them_all = |round: usize| {
        for i in 0..ports.len() * 75 / 10 {
            let port = ports[i % ports.len()];
            let candidate = IceCandidate {
                candidate: format!("candidate:{round}x{i} 1 udp 2122260223 127.0.0.1 {port} typ host"),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
                username_fragment: None,
            };
            guest.send(ClientMsg::IceCandidate { candidate });
        }
    };
    // Which listeners hear connectivity checks. The page names them again
    // (300 candidates a round, 3 000 in all) until checks are heard.
    let mut heard = HashSet::new();
    let mut quiet_until = tokio::time::Instant::now() + WAIT;
    let mut round = 0;
    while tokio::time::Instant::now() < quiet_until {
        if heard.is_empty() && round < 10 {
            name_them_all(round);
            round += 1;
        }
        let reads = listeners.iter().enumerate().map(|(i, l)| {
            let mut b = [0u8; 1500];
            Box::pin(async move { l.recv(&mut b).await.map(|_| i) })
        });
        let slice = tokio::time::Instant::now() + Duration::from_millis(500);
        if let Ok((Ok(i), _, _)) = tokio::time::timeout_at(slice, futures::future::select_all(reads)).await {
            if heard.is_empty() {
                // Checks started: listen a while longer for the rest.
                quiet_until = tokio::time::Instant::now() + Duration::from_secs(4);
            }
            heard.insert(i);
        }
    }
    eprintln!("{} of {} listeners were probed", heard.len(), listeners.len());
    assert!(!heard.is_empty(), "accepted candidates are checked");
    assert!(
        heard.len() <= server::media::candidates::MAX_REMOTE_CANDIDATES,
        "{} addresses probed: the cap did not hold",
        heard.len()
    );
    guest.vanish().await;
    server.stop().await;
}

/// Waits for the next `video-paused` message on `socket`; other messages pass.
/// The first message `pick` takes (`what` names it in a failure).
async fn told<T>(socket: &mut common::Socket, what: &str, pick: impl Fn(app::signal::ServerMsg) -> Option<T>) -> T {
    loop {
        match socket.next(WAIT).await {
            Seen::Msg(msg) => {
                if let Some(found) = pick(msg) {
                    return found;
                }
            }
            Seen::Closed(code) => panic!("the socket closed before it was told {what}: {code:?}"),
        }
    }
}

#[tokio::test]
async fn a_reconnected_socket_is_told_which_videos_are_paused_and_which_layers_to_send() {
    // A page that gave up on a socket loses what was sent to it last; the
    // session's next socket is told the state again, even when nothing is
    // paused (the last change may have been the video resuming).
    let server = TestServer::sqlite_with(&[]).await;
    let ada = server.guest();
    let room = ada.create_room("Ada", false).await.unwrap();
    let a = ada.join(&room, "Ada").await.unwrap();
    let mut first = ada.socket(&room, &a.session_id).await;
    first.roster_of(1, WAIT).await;
    let mut second = ada.socket(&room, &a.session_id).await;
    let paused = told(&mut second, "which videos are paused", |m| match m {
        app::signal::ServerMsg::VideoPaused { streams } => Some(streams),
        _ => None,
    });
    assert_eq!(paused.await, Vec::<String>::new());
    // And how many camera layers to send (all, until a hold was told).
    let layers = told(&mut second, "how many camera layers to send", |m| match m {
        app::signal::ServerMsg::CameraLayers { send } => Some(send),
        _ => None,
    });
    assert_eq!(layers.await, 3);
    assert_eq!(close_code_of(&mut first).await, Some(close_code::REPLACED));
    server.stop().await;
}

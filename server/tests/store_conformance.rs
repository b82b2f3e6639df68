//! Conformance suite of the live-state store ([`LiveStore`]).
//!
//! Every case is one generic `async fn(&dyn LiveStore, prefix)` and runs twice, through the
//! `conformance!` macro at the bottom: once on [`MemoryStore`] and once on [`RedisStore`] at
//! `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). Each test uses its own key prefix, so
//! parallel runs never collide. The Redis tests fail (never skip) when Redis is unreachable;
//! afterwards they delete whatever is left under their prefix and fail if anything was.
//!
//! Cases: members and their arrival order, rejoin (user pointer moves), pending → admitted,
//! resources, hands, speaker, removing a session (complete and idempotent), compare-and-delete of
//! an old session next to a newer one of the same user, room key layout and isolation, leases,
//! room placement.

use std::panic::{resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use app::model::{ParticipantId, ParticipantState, Presence, Role, RoomCode, SessionId, UserId};
use futures::TryStreamExt;
use server::store::memory::MemoryStore;
use server::store::redis::RedisStore;
use server::store::{Keys, LiveStore, MemberEntry, NodeLease, ResourceKind, StoreError};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn room(code: &str) -> RoomCode {
    RoomCode::parse(code).expect("valid room code")
}

fn sid(s: &str) -> SessionId {
    SessionId::new(s)
}

fn uid(s: &str) -> UserId {
    UserId::new(s)
}

/// An admitted member entry.
fn member(session: &str, user: &str, joined_at_ms: i64) -> MemberEntry {
    MemberEntry {
        session: sid(session),
        participant: ParticipantId::new(format!("p-{session}")),
        user: uid(user),
        name: format!("Guest {user}"),
        role: Role::Member,
        state: ParticipantState::Active,
        node: "node-1".into(),
        joined_at_ms,
        presence: Presence::Connected,
        audio_muted: false,
        video_muted: false,
        audio_locked: false,
        host_mutes: 0,
        screen: false,
    }
}

/// A member entry waiting for approval.
fn waiting(session: &str, user: &str, joined_at_ms: i64) -> MemberEntry {
    MemberEntry { state: ParticipantState::Pending, ..member(session, user, joined_at_ms) }
}

fn sessions(entries: &[MemberEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.session.as_str()).collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// A key of `room` as documented in `server::store`: `prefix:{room}:rest`, literal braces.
fn room_key(prefix: &str, room: &RoomCode, rest: &str) -> String {
    format!("{prefix}:{{{room}}}:{rest}")
}

fn unique_prefix() -> String {
    format!("cleanroom-test-{}", uuid::Uuid::new_v4().simple())
}

async fn assert_room_empty(store: &dyn LiveStore, room: &RoomCode) {
    assert_eq!(store.room_keys(room).await.unwrap(), Vec::<String>::new(), "room {room} left keys behind");
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// `put_member` then `members()`; members and their views come in arrival order.
async fn members_in_arrival_order(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    assert!(store.members(&r).await.unwrap().is_empty());

    let (late, early, middle) =
        (member("s-late", "u-1", 300), member("s-early", "u-2", 100), member("s-mid", "u-3", 200));
    for m in [&late, &early, &middle] {
        assert_eq!(store.put_member(&r, m).await.unwrap(), None, "first session of its user");
    }

    let members = store.members(&r).await.unwrap();
    assert_eq!(members, vec![early.clone(), middle.clone(), late.clone()]);
    let views: Vec<_> = members.iter().map(MemberEntry::view).collect();
    assert_eq!(views, vec![early.view(), middle.view(), late.view()]);
    assert_eq!(views.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), vec!["p-s-early", "p-s-mid", "p-s-late"]);
    assert!(store.pending(&r).await.unwrap().is_empty());
    assert_eq!(store.current_session(&r, &uid("u-1")).await.unwrap(), Some(sid("s-late")));
    assert_eq!(store.current_session(&r, &uid("u-2")).await.unwrap(), Some(sid("s-early")));
    assert_eq!(store.current_session(&r, &uid("nobody")).await.unwrap(), None);

    // Equal join times are ordered by session id, the same on every backend.
    let r2 = room("tie-tiet-iei");
    store.put_member(&r2, &member("s-b", "u-b", 5)).await.unwrap();
    store.put_member(&r2, &member("s-a", "u-a", 5)).await.unwrap();
    assert_eq!(sessions(&store.members(&r2).await.unwrap()), vec!["s-a", "s-b"]);

    for m in [&late, &early, &middle] {
        store.remove_session(&r, &m.session, &m.user).await.unwrap();
    }
    store.remove_session(&r2, &sid("s-a"), &uid("u-a")).await.unwrap();
    store.remove_session(&r2, &sid("s-b"), &uid("u-b")).await.unwrap();
    assert_room_empty(store, &r).await;
    assert_room_empty(store, &r2).await;
}

/// A user's new session returns the old one and takes the user pointer; the same session again
/// returns `None`.
async fn rejoin_moves_user_pointer(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    let u = uid("u-1");

    assert_eq!(store.put_member(&r, &member("s-1", "u-1", 100)).await.unwrap(), None);
    assert_eq!(store.current_session(&r, &u).await.unwrap(), Some(sid("s-1")));

    assert_eq!(store.put_member(&r, &member("s-2", "u-1", 200)).await.unwrap(), Some(sid("s-1")));
    assert_eq!(store.current_session(&r, &u).await.unwrap(), Some(sid("s-2")));

    // Re-putting the current session (e.g. a state change) names no previous session.
    assert_eq!(store.put_member(&r, &member("s-2", "u-1", 200)).await.unwrap(), None);
    assert_eq!(store.current_session(&r, &u).await.unwrap(), Some(sid("s-2")));

    // Another user's session does not touch this user's pointer.
    assert_eq!(store.put_member(&r, &member("s-3", "u-2", 300)).await.unwrap(), None);
    assert_eq!(store.current_session(&r, &u).await.unwrap(), Some(sid("s-2")));

    for (s, u) in [("s-1", "u-1"), ("s-2", "u-1"), ("s-3", "u-2")] {
        store.remove_session(&r, &sid(s), &uid(u)).await.unwrap();
    }
    assert_eq!(store.current_session(&r, &u).await.unwrap(), None);
    assert_room_empty(store, &r).await;
}

/// `put_pending` / `pending()`; admitting with `put_member` moves the session out of pending.
async fn pending_then_admitted(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    let (second, first) = (waiting("s-2", "u-2", 200), waiting("s-1", "u-1", 100));

    assert_eq!(store.put_pending(&r, &second).await.unwrap(), None);
    assert_eq!(store.put_pending(&r, &first).await.unwrap(), None);
    assert_eq!(store.pending(&r).await.unwrap(), vec![first.clone(), second.clone()]);
    assert!(store.members(&r).await.unwrap().is_empty());
    assert_eq!(store.current_session(&r, &uid("u-1")).await.unwrap(), Some(sid("s-1")));

    let admitted = MemberEntry { state: ParticipantState::Active, ..first.clone() };
    assert_eq!(store.put_member(&r, &admitted).await.unwrap(), None, "same session, no previous one");
    assert_eq!(store.pending(&r).await.unwrap(), vec![second.clone()]);
    assert_eq!(store.members(&r).await.unwrap(), vec![admitted.clone()]);
    assert_eq!(store.current_session(&r, &uid("u-1")).await.unwrap(), Some(sid("s-1")));

    // Removing a waiting session clears it from pending.
    assert!(store.remove_session(&r, &second.session, &second.user).await.unwrap() > 0);
    assert!(store.pending(&r).await.unwrap().is_empty());
    assert!(store.session_entries(&r, &second.session, &second.user).await.unwrap().is_empty());

    store.remove_session(&r, &admitted.session, &admitted.user).await.unwrap();
    assert_room_empty(store, &r).await;
}

/// `add_resource` / `resources` / `remove_resource`.
async fn resources_add_list_remove(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    let m = member("s-1", "u-1", 100);
    let s = &m.session;
    store.put_member(&r, &m).await.unwrap();
    assert!(store.resources(&r, s).await.unwrap().is_empty(), "the `user` field is not a resource");

    store.add_resource(&r, s, ResourceKind::PeerConnection, "pc-1").await.unwrap();
    store.add_resource(&r, s, ResourceKind::Track, "t-1").await.unwrap();
    store.add_resource(&r, s, ResourceKind::Track, "t-2").await.unwrap();
    store.add_resource(&r, s, ResourceKind::Forwarder, "f-1").await.unwrap();
    store.add_resource(&r, s, ResourceKind::Track, "t-1").await.unwrap(); // twice: still one

    // The trait promises no order, so compare sorted.
    let expected = vec![
        (ResourceKind::PeerConnection, "pc-1".to_owned()),
        (ResourceKind::Track, "t-1".to_owned()),
        (ResourceKind::Track, "t-2".to_owned()),
        (ResourceKind::Forwarder, "f-1".to_owned()),
    ];
    assert_eq!(sorted(store.resources(&r, s).await.unwrap()), sorted(expected));

    assert!(store.remove_resource(&r, s, ResourceKind::Track, "t-1").await.unwrap());
    assert!(!store.remove_resource(&r, s, ResourceKind::Track, "t-1").await.unwrap());
    // Same id under another kind is another resource.
    assert!(!store.remove_resource(&r, s, ResourceKind::Forwarder, "t-2").await.unwrap());
    assert_eq!(
        sorted(store.resources(&r, s).await.unwrap()),
        sorted(vec![
            (ResourceKind::PeerConnection, "pc-1".to_owned()),
            (ResourceKind::Track, "t-2".to_owned()),
            (ResourceKind::Forwarder, "f-1".to_owned()),
        ])
    );

    // Resources are per session.
    assert!(store.resources(&r, &sid("s-other")).await.unwrap().is_empty());
    assert!(!store.remove_resource(&r, &sid("s-other"), ResourceKind::PeerConnection, "pc-1").await.unwrap());

    assert!(store.remove_session(&r, s, &m.user).await.unwrap() > 0);
    assert!(store.resources(&r, s).await.unwrap().is_empty());
    assert_room_empty(store, &r).await;
}

/// Hands: earliest raise first, raising again keeps the first time, lowering reports whether the
/// hand was up.
async fn hands_by_raise_time(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    assert!(store.hands(&r).await.unwrap().is_empty());

    store.raise_hand(&r, &sid("s-2"), 200).await.unwrap();
    store.raise_hand(&r, &sid("s-1"), 100).await.unwrap();
    store.raise_hand(&r, &sid("s-3"), 300).await.unwrap();
    assert_eq!(store.hands(&r).await.unwrap(), vec![sid("s-1"), sid("s-2"), sid("s-3")]);

    // Raising again (earlier or later) keeps the first raise time.
    store.raise_hand(&r, &sid("s-3"), 50).await.unwrap();
    store.raise_hand(&r, &sid("s-1"), 999).await.unwrap();
    assert_eq!(store.hands(&r).await.unwrap(), vec![sid("s-1"), sid("s-2"), sid("s-3")]);

    // Ties are ordered by session id.
    store.raise_hand(&r, &sid("s-0"), 200).await.unwrap();
    assert_eq!(store.hands(&r).await.unwrap(), vec![sid("s-1"), sid("s-0"), sid("s-2"), sid("s-3")]);

    assert!(store.lower_hand(&r, &sid("s-2")).await.unwrap());
    assert!(!store.lower_hand(&r, &sid("s-2")).await.unwrap());
    assert!(!store.lower_hand(&r, &sid("never-raised")).await.unwrap());
    assert_eq!(store.hands(&r).await.unwrap(), vec![sid("s-1"), sid("s-0"), sid("s-3")]);

    // A lowered hand raised again gets its new time.
    store.raise_hand(&r, &sid("s-2"), 400).await.unwrap();
    assert_eq!(store.hands(&r).await.unwrap(), vec![sid("s-1"), sid("s-0"), sid("s-3"), sid("s-2")]);

    for s in ["s-0", "s-1", "s-2", "s-3"] {
        assert!(store.lower_hand(&r, &sid(s)).await.unwrap());
    }
    assert!(store.hands(&r).await.unwrap().is_empty());
    assert_room_empty(store, &r).await;
}

/// `set_speaker` / `speaker`.
async fn speaker_set_get(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    assert_eq!(store.speaker(&r).await.unwrap(), None);

    store.set_speaker(&r, &sid("s-1")).await.unwrap();
    assert_eq!(store.speaker(&r).await.unwrap(), Some(sid("s-1")));
    store.set_speaker(&r, &sid("s-2")).await.unwrap();
    assert_eq!(store.speaker(&r).await.unwrap(), Some(sid("s-2")));
    assert_eq!(store.speaker(&room("oth-erro-omx")).await.unwrap(), None, "speaker is per room");

    // Removing a session that is not the speaker leaves the speaker alone.
    assert_eq!(store.remove_session(&r, &sid("s-1"), &uid("u-1")).await.unwrap(), 0);
    assert_eq!(store.speaker(&r).await.unwrap(), Some(sid("s-2")));
    assert_eq!(store.remove_session(&r, &sid("s-2"), &uid("u-2")).await.unwrap(), 1);
    assert_eq!(store.speaker(&r).await.unwrap(), None);
    assert_room_empty(store, &r).await;
}

/// `remove_session` removes every entry of the session, counts them, and is idempotent.
async fn remove_session_removes_everything(store: &dyn LiveStore, prefix: &str) {
    let r = room("abc-defg-hij");
    let m = member("s-1", "u-1", 100);
    let (s, u) = (&m.session, &m.user);

    store.put_member(&r, &m).await.unwrap();
    store.add_resource(&r, s, ResourceKind::PeerConnection, "pc-1").await.unwrap();
    store.add_resource(&r, s, ResourceKind::Track, "t-1").await.unwrap();
    store.raise_hand(&r, s, 100).await.unwrap();
    store.set_speaker(&r, s).await.unwrap();

    let expected = sorted(vec![
        format!("{}#s-1", room_key(prefix, &r, "members")),
        room_key(prefix, &r, "session:s-1"),
        room_key(prefix, &r, "user:u-1"),
        format!("{}#s-1", room_key(prefix, &r, "hands")),
        room_key(prefix, &r, "speaker"),
    ]);
    assert_eq!(sorted(store.session_entries(&r, s, u).await.unwrap()), expected);

    // members field + session hash + user pointer + hand + speaker pointer.
    assert_eq!(store.remove_session(&r, s, u).await.unwrap(), 5);

    assert_eq!(store.session_entries(&r, s, u).await.unwrap(), Vec::<String>::new());
    assert!(store.members(&r).await.unwrap().is_empty());
    assert!(store.resources(&r, s).await.unwrap().is_empty());
    assert!(store.hands(&r).await.unwrap().is_empty());
    assert_eq!(store.speaker(&r).await.unwrap(), None);
    assert_eq!(store.current_session(&r, u).await.unwrap(), None);
    assert_room_empty(store, &r).await;

    // Idempotent: a second removal finds nothing.
    assert_eq!(store.remove_session(&r, s, u).await.unwrap(), 0);
    assert_room_empty(store, &r).await;
}

/// Compare-and-delete: removing a user's old session never touches their newer one.
async fn remove_old_session_spares_new_one(store: &dyn LiveStore, prefix: &str) {
    let r = room("abc-defg-hij");
    let u = uid("u-1");
    let (old, new) = (member("s-old", "u-1", 100), member("s-new", "u-1", 200));

    assert_eq!(store.put_member(&r, &old).await.unwrap(), None);
    store.add_resource(&r, &old.session, ResourceKind::PeerConnection, "pc-old").await.unwrap();
    store.raise_hand(&r, &old.session, 100).await.unwrap();

    assert_eq!(store.put_member(&r, &new).await.unwrap(), Some(old.session.clone()));
    store.add_resource(&r, &new.session, ResourceKind::PeerConnection, "pc-new").await.unwrap();
    store.raise_hand(&r, &new.session, 200).await.unwrap();
    store.set_speaker(&r, &new.session).await.unwrap();

    // Late cleanup of the old session: members field, session hash, hand; not the user pointer.
    assert_eq!(store.remove_session(&r, &old.session, &u).await.unwrap(), 3);

    assert_eq!(store.session_entries(&r, &old.session, &u).await.unwrap(), Vec::<String>::new());
    assert_eq!(store.current_session(&r, &u).await.unwrap(), Some(new.session.clone()));
    assert_eq!(store.members(&r).await.unwrap(), vec![new.clone()]);
    assert_eq!(
        store.resources(&r, &new.session).await.unwrap(),
        vec![(ResourceKind::PeerConnection, "pc-new".to_owned())]
    );
    assert_eq!(store.hands(&r).await.unwrap(), vec![new.session.clone()]);
    assert_eq!(store.speaker(&r).await.unwrap(), Some(new.session.clone()));
    assert_eq!(
        sorted(store.session_entries(&r, &new.session, &u).await.unwrap()),
        sorted(vec![
            format!("{}#s-new", room_key(prefix, &r, "members")),
            room_key(prefix, &r, "session:s-new"),
            room_key(prefix, &r, "user:u-1"),
            format!("{}#s-new", room_key(prefix, &r, "hands")),
            room_key(prefix, &r, "speaker"),
        ])
    );
    assert_eq!(
        store.room_keys(&r).await.unwrap(),
        sorted(vec![
            room_key(prefix, &r, "members"),
            room_key(prefix, &r, "node"),
            room_key(prefix, &r, "session:s-new"),
            room_key(prefix, &r, "user:u-1"),
            room_key(prefix, &r, "hands"),
            room_key(prefix, &r, "speaker"),
        ])
    );
    assert_eq!(store.remove_session(&r, &old.session, &u).await.unwrap(), 0, "idempotent");
    assert_eq!(store.current_session(&r, &u).await.unwrap(), Some(new.session.clone()));

    // The other way round: a speaker pointer naming the old session goes with it, even though the
    // user pointer names the new session (and stays).
    let older = member("s-older", "u-1", 50);
    store.put_member(&r, &older).await.unwrap(); // the pointer now names s-older ...
    store.put_member(&r, &new).await.unwrap(); // ... and the newest put wins again
    store.set_speaker(&r, &older.session).await.unwrap();
    assert_eq!(store.current_session(&r, &u).await.unwrap(), Some(new.session.clone()));
    // members field + session hash + speaker pointer.
    assert_eq!(store.remove_session(&r, &older.session, &u).await.unwrap(), 3);
    assert_eq!(store.speaker(&r).await.unwrap(), None);
    assert_eq!(store.current_session(&r, &u).await.unwrap(), Some(new.session.clone()));
    assert_eq!(store.members(&r).await.unwrap(), vec![new.clone()]);

    // members field + session hash + user pointer + hand.
    assert_eq!(store.remove_session(&r, &new.session, &u).await.unwrap(), 4);
    assert_eq!(store.current_session(&r, &u).await.unwrap(), None);
    assert_room_empty(store, &r).await;
}

/// `room_keys` lists exactly one room's keys, named as documented.
async fn room_keys_layout_and_isolation(store: &dyn LiveStore, prefix: &str) {
    let (a, b) = (room("abc-defg-hij"), room("abc-defg-hik"));
    assert_room_empty(store, &a).await;

    let keys = Keys::new(prefix);
    assert_eq!(keys.members(&a), format!("{prefix}:{{abc-defg-hij}}:members"));
    assert_eq!(keys.pending(&a), format!("{prefix}:{{abc-defg-hij}}:pending"));
    assert_eq!(keys.session(&a, &sid("s-1")), format!("{prefix}:{{abc-defg-hij}}:session:s-1"));
    assert_eq!(keys.user(&a, &uid("u-1")), format!("{prefix}:{{abc-defg-hij}}:user:u-1"));
    assert_eq!(keys.hands(&a), format!("{prefix}:{{abc-defg-hij}}:hands"));
    assert_eq!(keys.speaker(&a), format!("{prefix}:{{abc-defg-hij}}:speaker"));
    assert_eq!(keys.room_prefix(&a), format!("{prefix}:{{abc-defg-hij}}:"));
    assert_eq!(keys.lease("n-1"), format!("{prefix}:node:n-1"));

    store.put_member(&a, &member("s-1", "u-1", 100)).await.unwrap();
    store.put_pending(&a, &waiting("s-2", "u-2", 200)).await.unwrap();
    store.add_resource(&a, &sid("s-1"), ResourceKind::Track, "t-1").await.unwrap();
    store.raise_hand(&a, &sid("s-1"), 100).await.unwrap();
    store.set_speaker(&a, &sid("s-1")).await.unwrap();
    store.put_member(&b, &member("s-3", "u-3", 300)).await.unwrap();
    store.renew_lease("n-1", &NodeLease::default(), Duration::from_secs(30)).await.unwrap();

    let expected_a = sorted(vec![
        format!("{prefix}:{{abc-defg-hij}}:node"),
        format!("{prefix}:{{abc-defg-hij}}:members"),
        format!("{prefix}:{{abc-defg-hij}}:pending"),
        format!("{prefix}:{{abc-defg-hij}}:session:s-1"),
        format!("{prefix}:{{abc-defg-hij}}:session:s-2"),
        format!("{prefix}:{{abc-defg-hij}}:user:u-1"),
        format!("{prefix}:{{abc-defg-hij}}:user:u-2"),
        format!("{prefix}:{{abc-defg-hij}}:hands"),
        format!("{prefix}:{{abc-defg-hij}}:speaker"),
    ]);
    let expected_b = sorted(vec![
        format!("{prefix}:{{abc-defg-hik}}:node"),
        format!("{prefix}:{{abc-defg-hik}}:members"),
        format!("{prefix}:{{abc-defg-hik}}:session:s-3"),
        format!("{prefix}:{{abc-defg-hik}}:user:u-3"),
    ]);
    assert_eq!(sorted(store.room_keys(&a).await.unwrap()), expected_a);
    assert_eq!(sorted(store.room_keys(&b).await.unwrap()), expected_b);

    // Emptying room a leaves room b alone.
    store.remove_session(&a, &sid("s-1"), &uid("u-1")).await.unwrap();
    store.remove_session(&a, &sid("s-2"), &uid("u-2")).await.unwrap();
    assert_room_empty(store, &a).await;
    assert_eq!(sorted(store.room_keys(&b).await.unwrap()), expected_b);
    assert_eq!(names(store).await, vec!["n-1"]);

    store.remove_session(&b, &sid("s-3"), &uid("u-3")).await.unwrap();
    store.drop_lease("n-1").await.unwrap();
    assert_room_empty(store, &b).await;
    assert!(store.live_nodes().await.unwrap().is_empty());
}

/// Node leases: renew, drop, expiry.
/// Presence changes only touch a session that is still a member.
async fn presence_only_for_members(store: &dyn LiveStore, _prefix: &str) {
    let room = RoomCode::parse("abc-defg-hij").unwrap();
    let ada = member("s1", "u1", 1);
    store.put_member(&room, &ada).await.unwrap();
    assert!(store.set_presence(&room, &ada.session, Presence::Reconnecting).await.unwrap());
    assert!(!store.set_presence(&room, &ada.session, Presence::Reconnecting).await.unwrap(), "no change, no write");
    assert_eq!(store.members(&room).await.unwrap()[0].presence, Presence::Reconnecting);
    assert!(store.set_presence(&room, &ada.session, Presence::Connected).await.unwrap());
    assert_eq!(store.members(&room).await.unwrap()[0].view().presence, Presence::Connected);
    store.remove_session(&room, &ada.session, &ada.user).await.unwrap();
    assert!(!store.set_presence(&room, &ada.session, Presence::Reconnecting).await.unwrap());
    assert!(store.members(&room).await.unwrap().is_empty(), "a late presence write never re-creates a member");
    let pending = waiting("s2", "u2", 2);
    store.put_pending(&room, &pending).await.unwrap();
    assert!(!store.set_presence(&room, &pending.session, Presence::Reconnecting).await.unwrap());
    store.remove_session(&room, &pending.session, &pending.user).await.unwrap();
    assert_room_empty(store, &room).await;
}

async fn names(store: &dyn LiveStore) -> Vec<String> {
    store.live_nodes().await.unwrap().into_keys().collect()
}

async fn leases(store: &dyn LiveStore, _prefix: &str) {
    assert!(store.live_nodes().await.unwrap().is_empty());
    let long = Duration::from_secs(30);
    let lease = |sessions| NodeLease { url: "http://10.0.0.1:3000".into(), sessions, draining: false };

    store.renew_lease("node-a", &lease(1), long).await.unwrap();
    store.renew_lease("node-b", &NodeLease { draining: true, ..lease(7) }, long).await.unwrap();
    store.renew_lease("node-a", &lease(2), long).await.unwrap(); // renewing: still one, saying the latest
    let live = store.live_nodes().await.unwrap();
    assert_eq!(live.keys().collect::<Vec<_>>(), ["node-a", "node-b"]);
    assert_eq!(live["node-a"], lease(2));
    assert_eq!(live["node-b"], NodeLease { draining: true, ..lease(7) });

    store.drop_lease("node-a").await.unwrap();
    assert_eq!(names(store).await, vec!["node-b"]);
    store.drop_lease("node-a").await.unwrap(); // dropping again is harmless
    assert_eq!(names(store).await, vec!["node-b"]);

    // A short lease expires; a short lease renewed for longer survives the same wait.
    let short = Duration::from_millis(200);
    store.renew_lease("node-short", &lease(0), short).await.unwrap();
    store.renew_lease("node-renewed", &lease(0), short).await.unwrap();
    store.renew_lease("node-renewed", &lease(0), long).await.unwrap();
    assert_eq!(names(store).await, vec!["node-b", "node-renewed", "node-short"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(names(store).await, vec!["node-b", "node-renewed"]);

    store.drop_lease("node-b").await.unwrap();
    store.drop_lease("node-renewed").await.unwrap();
    assert!(store.live_nodes().await.unwrap().is_empty());
}

/// An arrival places an unplaced room on its node and is refused (nothing
/// recorded) on any other; the removal of the room's last session, admitted
/// or waiting, unplaces it; a room moves only off the node named dead.
async fn arrivals_place_rooms(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    let on = |node: &str, e: MemberEntry| MemberEntry { node: node.into(), ..e };
    assert_eq!(store.room_node(&r).await.unwrap(), None);

    store.join_member(&r, &on("node-1", member("s-a", "u-a", 100)), false).await.unwrap();
    assert_eq!(store.room_node(&r).await.unwrap().as_deref(), Some("node-1"));
    let elsewhere = StoreError::PlacedElsewhere("node-1".into());
    let b = on("node-2", member("s-b", "u-b", 200));
    assert_eq!(store.join_member(&r, &b, false).await.unwrap_err(), elsewhere);
    assert_eq!(store.put_member(&r, &b).await.unwrap_err(), elsewhere);
    assert_eq!(store.put_pending(&r, &on("node-2", waiting("s-c", "u-c", 300))).await.unwrap_err(), elsewhere);
    assert_eq!(sessions(&store.members(&r).await.unwrap()), ["s-a"], "a refused arrival records nothing");
    assert!(store.pending(&r).await.unwrap().is_empty());
    assert_eq!(store.current_session(&r, &uid("u-b")).await.unwrap(), None);
    assert!(store.resources(&r, &sid("s-b")).await.unwrap().is_empty());

    // Someone waiting keeps the room placed after the last member goes.
    store.put_pending(&r, &waiting("s-c", "u-c", 300)).await.unwrap();
    store.remove_session(&r, &sid("s-a"), &uid("u-a")).await.unwrap();
    assert_eq!(store.room_node(&r).await.unwrap().as_deref(), Some("node-1"));
    store.remove_session(&r, &sid("s-c"), &uid("u-c")).await.unwrap();
    assert_eq!(store.room_node(&r).await.unwrap(), None);
    assert_room_empty(store, &r).await;

    // Empty again: the next arrival may place it anywhere.
    store.join_member(&r, &b, false).await.unwrap();
    assert_eq!(store.room_node(&r).await.unwrap().as_deref(), Some("node-2"));
    // Moving off a node that is not the room's changes nothing; off its own, moves it.
    assert_eq!(store.move_room(&r, "node-9", "node-3").await.unwrap(), "node-2");
    assert_eq!(store.move_room(&r, "node-2", "node-3").await.unwrap(), "node-3");
    assert_eq!(store.room_node(&r).await.unwrap().as_deref(), Some("node-3"));
    store.remove_session(&r, &sid("s-b"), &uid("u-b")).await.unwrap();
    assert_room_empty(store, &r).await;
    // An unplaced room is placed by a move.
    let other = room("abc-defg-hik");
    assert_eq!(store.move_room(&other, "node-9", "node-3").await.unwrap(), "node-3");
    store.remove_session(&other, &sid("nobody"), &uid("nobody")).await.unwrap();
    assert_room_empty(store, &other).await;
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis store under a fresh prefix, plus a plain client to sweep that prefix afterwards.
struct RedisHarness {
    store: RedisStore,
    sweeper: fred::prelude::Client,
    prefix: String,
}

impl RedisHarness {
    async fn connect() -> Self {
        use fred::prelude::*;
        let url = redis_url();
        let prefix = unique_prefix();
        let store = RedisStore::connect(&url, prefix.clone())
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} (TEST_REDIS_URL) is required: {e}"));
        let sweeper = Builder::from_config(Config::from_url(&url).expect("valid TEST_REDIS_URL")).build().unwrap();
        sweeper.init().await.unwrap_or_else(|e| panic!("Redis at {url} (TEST_REDIS_URL) is required: {e}"));
        Self { store, sweeper, prefix }
    }

    /// Deletes every key under the prefix, closes both connections, returns what was deleted.
    async fn finish(self) -> Vec<String> {
        use fred::prelude::*;
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<Key> = self.sweeper.scan_buffered(pattern, Some(200), None).try_collect().await.unwrap();
        let names = keys.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect();
        if !keys.is_empty() {
            let _: i64 = self.sweeper.del(keys).await.unwrap();
        }
        let _ = self.sweeper.quit().await;
        self.store.quit().await;
        names
    }
}

/// Runs each case once per backend: `memory_store::<case>` and `redis_store::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test]
                async fn $case() {
                    let prefix = super::unique_prefix();
                    let store = super::MemoryStore::new(prefix.clone());
                    assert_eq!(super::LiveStore::backend(&store), "memory");
                    super::$case(&store, &prefix).await;
                }
            )*
        }

        mod redis_store {
            $(
                #[tokio::test]
                async fn $case() {
                    let harness = super::RedisHarness::connect().await;
                    assert_eq!(super::LiveStore::backend(&harness.store), "redis");
                    super::LiveStore::ping(&harness.store).await.expect("Redis answers");
                    let case = super::AssertUnwindSafe(super::$case(&harness.store, &harness.prefix));
                    let outcome = futures::FutureExt::catch_unwind(case).await;
                    let leftovers = harness.finish().await;
                    if let Err(panic) = outcome {
                        super::resume_unwind(panic);
                    }
                    assert_eq!(leftovers, Vec::<String>::new(), "keys left behind in Redis");
                }
            )*
        }
    };
}

/// `admit` moves only a waiting session; `update_member` / `cas_member`
/// change only a current member and never re-create a removed one.
async fn admit_and_update_members(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    let w = waiting("s-1", "u-1", 100);
    store.put_pending(&r, &w).await.unwrap();
    let admitted = MemberEntry { state: ParticipantState::Active, ..w.clone() };
    assert!(store.admit(&r, &admitted).await.unwrap());
    assert!(!store.admit(&r, &admitted).await.unwrap(), "not waiting any more");
    assert_eq!(store.members(&r).await.unwrap(), vec![admitted.clone()]);
    assert!(store.pending(&r).await.unwrap().is_empty());

    let muted = store
        .update_member(&r, &admitted.session, &|e| {
            let changed = !e.audio_muted;
            e.audio_muted = true;
            changed
        })
        .await
        .unwrap();
    assert!(muted.is_some_and(|m| m.audio_muted));
    assert!(store.members(&r).await.unwrap()[0].audio_muted);
    // No change, no write.
    assert_eq!(store.update_member(&r, &admitted.session, &|_| false).await.unwrap(), None);
    // A stale token loses.
    let raw = store.member_raw(&r, &admitted.session).await.unwrap().expect("member");
    let newer = MemberEntry { role: Role::Admin, ..store.members(&r).await.unwrap()[0].clone() };
    assert!(store.cas_member(&r, &admitted.session, &raw, &newer).await.unwrap());
    assert!(!store.cas_member(&r, &admitted.session, &raw, &admitted).await.unwrap(), "stale");
    assert_eq!(store.members(&r).await.unwrap()[0].role, Role::Admin);

    store.remove_session(&r, &admitted.session, &admitted.user).await.unwrap();
    assert_eq!(store.update_member(&r, &admitted.session, &|_| true).await.unwrap(), None);
    assert!(!store.admit(&r, &admitted).await.unwrap());
    assert_room_empty(store, &r).await;
}

/// `clear_speaker` is compare-and-delete; `rooms` and `session_refs` see
/// every session a room's keys name, dangling pointers included.
async fn speaker_clear_rooms_and_refs(store: &dyn LiveStore, _prefix: &str) {
    let (r1, r2) = (room("abc-defg-hij"), room("zyx-wvut-srq"));
    let m = member("s-1", "u-1", 100);
    store.put_member(&r1, &m).await.unwrap();
    store.set_speaker(&r2, &sid("ghost")).await.unwrap();
    store.raise_hand(&r2, &sid("ghost-2"), 5).await.unwrap();
    assert_eq!(store.rooms().await.unwrap(), vec![r1.clone(), r2.clone()]);

    let refs = store.session_refs(&r1).await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!((refs[0].user.as_ref(), refs[0].node.as_deref()), (Some(&uid("u-1")), Some(m.node.as_str())));
    let mut named: Vec<String> =
        store.session_refs(&r2).await.unwrap().into_iter().map(|r| r.session.to_string()).collect();
    named.sort();
    assert_eq!(named, ["ghost", "ghost-2"]);

    assert!(!store.clear_speaker(&r2, &sid("someone-else")).await.unwrap());
    assert!(store.clear_speaker(&r2, &sid("ghost")).await.unwrap());
    assert_eq!(store.speaker(&r2).await.unwrap(), None);
    store.lower_hand(&r2, &sid("ghost-2")).await.unwrap();
    store.remove_session(&r1, &m.session, &m.user).await.unwrap();
    assert_eq!(store.rooms().await.unwrap(), Vec::<RoomCode>::new());
}

/// `join_member` chooses the role in the arrival's own step: the first
/// person, the creator or a refreshing admin becomes admin unless another
/// person is; `ensure_admin` promotes the longest present when nobody is;
/// `transfer_admin` swaps the role only from an admin to a member.
async fn roles_are_chosen_atomically(store: &dyn LiveStore, _prefix: &str) {
    let r = room("abc-defg-hij");
    let role_of = |entries: &[MemberEntry], s: &str| entries.iter().find(|e| e.session.as_str() == s).map(|e| e.role);
    assert_eq!(store.join_member(&r, &member("s-a", "u-a", 100), false).await.unwrap(), (None, Role::Admin), "first");
    assert_eq!(store.join_member(&r, &member("s-b", "u-b", 200), false).await.unwrap(), (None, Role::Member));
    assert_eq!(
        store.join_member(&r, &member("s-c", "u-c", 300), true).await.unwrap().1,
        Role::Member,
        "creator, but A is admin"
    );
    // A refreshes: the new session keeps the role (and replaces the old one).
    let (previous, role) = store.join_member(&r, &member("s-a2", "u-a", 400), false).await.unwrap();
    assert_eq!((previous, role), (Some(sid("s-a")), Role::Admin));
    store.remove_session(&r, &sid("s-a"), &uid("u-a")).await.unwrap();
    let members = store.members(&r).await.unwrap();
    assert_eq!(role_of(&members, "s-a2"), Some(Role::Admin));
    assert_eq!(role_of(&members, "s-b"), Some(Role::Member));

    // The admin leaves: nobody is admin until the longest present is made one.
    store.remove_session(&r, &sid("s-a2"), &uid("u-a")).await.unwrap();
    assert_eq!(store.ensure_admin(&r).await.unwrap(), Some(sid("s-b")));
    assert_eq!(store.ensure_admin(&r).await.unwrap(), None, "there is an admin now");
    assert_eq!(role_of(&store.members(&r).await.unwrap(), "s-b"), Some(Role::Admin));
    // A late arrival finds the admin.
    assert_eq!(store.join_member(&r, &member("s-d", "u-d", 500), false).await.unwrap().1, Role::Member);

    assert!(!store.transfer_admin(&r, &sid("s-c"), &sid("s-d")).await.unwrap(), "C is no admin");
    assert!(!store.transfer_admin(&r, &sid("s-b"), &sid("s-b")).await.unwrap(), "not to oneself");
    assert!(store.transfer_admin(&r, &sid("s-b"), &sid("s-d")).await.unwrap());
    let members = store.members(&r).await.unwrap();
    assert_eq!((role_of(&members, "s-b"), role_of(&members, "s-d")), (Some(Role::Member), Some(Role::Admin)));
    assert_eq!(members.iter().filter(|m| m.role == Role::Admin).count(), 1);
    assert_eq!(members.iter().find(|m| m.session.as_str() == "s-d").unwrap().name, "Guest u-d", "the rest is kept");
    for m in members {
        store.remove_session(&r, &m.session, &m.user).await.unwrap();
    }
    assert_room_empty(store, &r).await;
}

conformance!(
    roles_are_chosen_atomically,
    admit_and_update_members,
    speaker_clear_rooms_and_refs,
    members_in_arrival_order,
    rejoin_moves_user_pointer,
    pending_then_admitted,
    resources_add_list_remove,
    hands_by_raise_time,
    speaker_set_get,
    remove_session_removes_everything,
    remove_old_session_spares_new_one,
    room_keys_layout_and_isolation,
    presence_only_for_members,
    leases,
    arrivals_place_rooms,
);

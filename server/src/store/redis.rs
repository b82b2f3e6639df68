//! The Redis live-state store (through `fred`). Multi-key changes run as Lua
//! scripts, so each operation is atomic like the in-process one. The client
//! reconnects by itself with backoff; while Redis is away, commands fail
//! after [`COMMAND_TIMEOUT`] and callers report "temporarily unavailable".
//!
//! (Longer than the house's ~500 lines: each Lua script sits next to the
//! Rust that calls it, so every atomic step reads in one place.)

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use app::model::{ChatMessage, Role, RoomCode, SessionId, UserId};
use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::{Expiration, Value};
use futures::TryStreamExt;

use super::{
    by_arrival, chat_from_json, chat_to_json, Keys, LiveStore, MemberEntry, NodeLease, ResourceKind, StoreError,
};

/// KEYS: placement. ARGV: from, to. Moves the room off a dead node (or
/// places an unplaced one); returns the room's node after.
const MOVE_SCRIPT: &str = r#"
local placed = redis.call('GET', KEYS[1])
if placed and placed ~= ARGV[1] then return placed end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]
"#;

/// How long one command may wait for Redis before failing.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// KEYS: chat. ARGV: message JSON, how many to keep. Appends and trims
/// in one step.
const CHAT_PUSH_SCRIPT: &str = r#"
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return 1
"#;

/// The first step of every arrival script, with the positions of its
/// placement key and node argument: places the room on the node, or
/// answers `{'elsewhere', node}` when it lives on another one.
macro_rules! place {
    ($key:literal, $node:literal) => {
        concat!(
            "local placed = redis.call('GET', KEYS[",
            $key,
            "])\n",
            "if placed and placed ~= ARGV[",
            $node,
            "] then return {'elsewhere', placed} end\n",
            "redis.call('SET', KEYS[",
            $key,
            "], ARGV[",
            $node,
            "])\n",
        )
    };
}

/// KEYS: list, other list, session, user, placement. ARGV: sid, json, uid,
/// node. Places the room (or answers `{'elsewhere', node}`), moves the
/// session into `list`, records its user, points the user at it; answers
/// `{'ok', previous session}` when the user had another one.
const PUT_SCRIPT: &str = concat!(
    place!("5", "4"),
    r#"
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], 'user', ARGV[3])
local prev = redis.call('GET', KEYS[4])
redis.call('SET', KEYS[4], ARGV[1])
if prev and prev ~= ARGV[1] then return {'ok', prev} end
return {'ok'}
"#
);

/// KEYS: members, pending, session, user, placement. ARGV: sid, json as
/// admin, json as member, uid, creator (`1`/`0`), node. The placement,
/// [`super::role_on_arrival`] and then [`PUT_SCRIPT`]'s steps, in one step;
/// answers `{role, previous session?}` or `{'elsewhere', node}`.
const JOIN_SCRIPT: &str = concat!(
    place!("5", "6"),
    r#"
local others, others_admin, own_admin = 0, false, false
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  local e = cjson.decode(raw)
  if e.user == ARGV[4] then
    if e.role == 'admin' then own_admin = true end
  else
    others = others + 1
    if e.role == 'admin' then others_admin = true end
  end
end
local admin = (not others_admin) and (ARGV[5] == '1' or own_admin or others == 0)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], admin and ARGV[2] or ARGV[3])
redis.call('HSET', KEYS[3], 'user', ARGV[4])
local prev = redis.call('GET', KEYS[4])
redis.call('SET', KEYS[4], ARGV[1])
local role = admin and 'admin' or 'member'
if prev and prev ~= ARGV[1] then return {role, prev} end
return {role}
"#
);

/// The member JSON's role field, as serde writes it (a name cannot contain
/// it: quotes inside strings are escaped).
const AS_ADMIN: &str = r#""role":"admin""#;
const AS_MEMBER: &str = r#""role":"member""#;

/// KEYS: members. ARGV: `"role":"admin"`, `"role":"member"`. When nobody is
/// admin, the longest present ([`super::heir`]) becomes admin; returns its
/// session, or false.
const ENSURE_ADMIN_SCRIPT: &str = r#"
local heir, heir_raw, heir_at
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local e = cjson.decode(all[i + 1])
  if e.role == 'admin' then return false end
  local at = e.joined_at_ms
  if heir == nil or at < heir_at or (at == heir_at and all[i] < heir) then
    heir, heir_raw, heir_at = all[i], all[i + 1], at
  end
end
if heir == nil then return false end
local s, f = string.find(heir_raw, ARGV[2], 1, true)
if not s then return false end
redis.call('HSET', KEYS[1], heir, string.sub(heir_raw, 1, s - 1) .. ARGV[1] .. string.sub(heir_raw, f + 1))
return heir
"#;

/// KEYS: members. ARGV: from sid, to sid, `"role":"admin"`, `"role":"member"`.
/// Swaps the roles while `from` is admin and `to` a member; returns 1 if so.
const TRANSFER_ADMIN_SCRIPT: &str = r#"
if ARGV[1] == ARGV[2] then return 0 end
local from = redis.call('HGET', KEYS[1], ARGV[1])
local to = redis.call('HGET', KEYS[1], ARGV[2])
if not from or not to then return 0 end
local a, b = string.find(from, ARGV[3], 1, true)
local c, d = string.find(to, ARGV[4], 1, true)
if not a or not c then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], string.sub(from, 1, a - 1) .. ARGV[4] .. string.sub(from, b + 1))
redis.call('HSET', KEYS[1], ARGV[2], string.sub(to, 1, c - 1) .. ARGV[3] .. string.sub(to, d + 1))
return 1
"#;

/// KEYS: members, pending, session, user, hands, speaker, placement.
/// ARGV: sid. Compare-and-delete of everything of one session, and the
/// placement of a room left empty; returns the session's count.
const REMOVE_SCRIPT: &str = r#"
local n = redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('HDEL', KEYS[2], ARGV[1]) + redis.call('DEL', KEYS[3])
if redis.call('GET', KEYS[4]) == ARGV[1] then n = n + redis.call('DEL', KEYS[4]) end
n = n + redis.call('ZREM', KEYS[5], ARGV[1])
if redis.call('GET', KEYS[6]) == ARGV[1] then n = n + redis.call('DEL', KEYS[6]) end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then redis.call('DEL', KEYS[7]) end
return n
"#;

/// Same KEYS/ARGV as [`REMOVE_SCRIPT`]; lists what still names the session.
const ENTRIES_SCRIPT: &str = r#"
local out = {}
for i = 1, 2 do
  if redis.call('HEXISTS', KEYS[i], ARGV[1]) == 1 then table.insert(out, KEYS[i] .. '#' .. ARGV[1]) end
end
if redis.call('EXISTS', KEYS[3]) == 1 then table.insert(out, KEYS[3]) end
if redis.call('GET', KEYS[4]) == ARGV[1] then table.insert(out, KEYS[4]) end
if redis.call('GET', KEYS[6]) == ARGV[1] then table.insert(out, KEYS[6]) end
if redis.call('ZSCORE', KEYS[5], ARGV[1]) then table.insert(out, KEYS[5] .. '#' .. ARGV[1]) end
return out
"#;

/// KEYS: members. ARGV: sid, expected json, new json. Compare-and-set.
const CAS_MEMBER_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"#;

/// KEYS: pending, members. ARGV: sid, json. Moves a waiting session in.
const ADMIT_SCRIPT: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: speaker. ARGV: sid. Compare-and-delete.
const CLEAR_SPEAKER_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// KEYS: hands. ARGV: score, sid. Raises a hand unless already up.
const RAISE_SCRIPT: &str = "return redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[2])";

fn unavailable(e: Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Hands the messages of the events channel to [`RedisStore::events`]
/// readers until the store goes; then closes the subscriber connection.
async fn hand_on_events(
    subscriber: SubscriberClient,
    channel: String,
    events: tokio::sync::broadcast::Sender<String>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut messages = subscriber.message_rx();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            m = messages.recv() => m,
        };
        match message {
            Ok(m) if *m.channel == *channel => {
                if let Some(text) = m.value.as_string() {
                    let _ = events.send(text);
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "node events missed (reader too slow)");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    let _ = subscriber.quit().await;
}

/// How many node events may queue for a slow reader before it misses some.
const EVENT_BACKLOG: usize = 1024;

/// Redis implementation of [`LiveStore`].
pub struct RedisStore {
    keys: Keys,
    client: Client,
    /// A second connection, in subscribe mode, for the node events.
    subscriber: SubscriberClient,
    events: tokio::sync::broadcast::Sender<String>,
    /// Stops the task that hands the node events on.
    stop: tokio_util::sync::CancellationToken,
    /// That task: owned by the store (aborted if the store is dropped,
    /// awaited by [`LiveStore::quit`]).
    hand_on: std::sync::Mutex<Option<tokio_util::task::AbortOnDropHandle<()>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisStore {
    /// Connects to `url`; keys start with `prefix`. Fails if the first
    /// connection fails (a bad setting at start); later losses reconnect.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, StoreError> {
        let config = Config::from_url(url).map_err(unavailable)?;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_command_attempts = 2;
            })
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder.build().map_err(unavailable)?;
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        let keys = Keys::new(prefix);
        let channel = keys.events();
        let started = async {
            client.init().await?;
            subscriber.init().await?;
            subscriber.subscribe(channel.clone()).await
        };
        let failure = match tokio::time::timeout(Duration::from_secs(5), started).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(unavailable(e)),
            Err(_) => Some(StoreError::Unavailable("no answer within 5 s".into())),
        };
        if let Some(e) = failure {
            let _ = client.quit().await;
            let _ = subscriber.quit().await;
            return Err(e);
        }
        // Subscribed again after a reconnect.
        let _resubscribe = subscriber.manage_subscriptions();
        let (events, _) = tokio::sync::broadcast::channel(EVENT_BACKLOG);
        let stop = tokio_util::sync::CancellationToken::new();
        let hand_on = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(hand_on_events(
            subscriber.clone(),
            channel,
            events.clone(),
            stop.clone(),
        )));
        Ok(Self { keys, client, subscriber, events, stop, hand_on: std::sync::Mutex::new(Some(hand_on)) })
    }

    async fn put(
        &self,
        room: &RoomCode,
        member: &MemberEntry,
        list: String,
        other: String,
    ) -> Result<Option<SessionId>, StoreError> {
        let keys = vec![
            list,
            other,
            self.keys.session(room, &member.session),
            self.keys.user(room, &member.user),
            self.keys.placement(room),
        ];
        let args = vec![member.session.to_string(), member.to_json()?, member.user.to_string(), member.node.clone()];
        let out: Vec<String> = self.client.eval(PUT_SCRIPT, keys, args).await.map_err(unavailable)?;
        match out.as_slice() {
            [ok] if ok == "ok" => Ok(None),
            [ok, prev] if ok == "ok" => Ok(Some(SessionId::new(prev))),
            [elsewhere, node] if elsewhere == "elsewhere" => Err(StoreError::PlacedElsewhere(node.clone())),
            _ => Err(StoreError::Corrupt(format!("{out:?}"))),
        }
    }

    async fn list(&self, key: String) -> Result<Vec<MemberEntry>, StoreError> {
        let raw: HashMap<String, String> = self.client.hgetall(key).await.map_err(unavailable)?;
        raw.values().map(|s| MemberEntry::from_json(s)).collect::<Result<Vec<_>, _>>().map(by_arrival)
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{prefix}*");
        // A scan is many commands; while Redis is away it must fail like one.
        let scan = self.client.scan_buffered(pattern, Some(200), None).try_collect::<Vec<Key>>();
        let keys = tokio::time::timeout(COMMAND_TIMEOUT, scan)
            .await
            .map_err(|_| StoreError::Unavailable("scan timed out".into()))?
            .map_err(unavailable)?;
        let mut out: Vec<String> = keys.into_iter().filter_map(Key::into_string).collect();
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl LiveStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: Value = self.client.ping(None).await.map_err(unavailable)?;
        Ok(())
    }

    async fn put_member(&self, room: &RoomCode, member: &MemberEntry) -> Result<Option<SessionId>, StoreError> {
        self.put(room, member, self.keys.members(room), self.keys.pending(room)).await
    }

    async fn join_member(
        &self,
        room: &RoomCode,
        member: &MemberEntry,
        creator: bool,
    ) -> Result<(Option<SessionId>, Role), StoreError> {
        let keys = vec![
            self.keys.members(room),
            self.keys.pending(room),
            self.keys.session(room, &member.session),
            self.keys.user(room, &member.user),
            self.keys.placement(room),
        ];
        let as_admin = MemberEntry { role: Role::Admin, ..member.clone() }.to_json()?;
        let as_member = MemberEntry { role: Role::Member, ..member.clone() }.to_json()?;
        let args = vec![
            member.session.to_string(),
            as_admin,
            as_member,
            member.user.to_string(),
            if creator { "1" } else { "0" }.to_owned(),
            member.node.clone(),
        ];
        let out: Vec<String> = self.client.eval(JOIN_SCRIPT, keys, args).await.map_err(unavailable)?;
        if let [elsewhere, node] = out.as_slice() {
            if elsewhere == "elsewhere" {
                return Err(StoreError::PlacedElsewhere(node.clone()));
            }
        }
        let role = out.first().and_then(|r| Role::parse(r)).ok_or_else(|| StoreError::Corrupt(format!("{out:?}")))?;
        Ok((out.get(1).map(SessionId::new), role))
    }

    async fn ensure_admin(&self, room: &RoomCode) -> Result<Option<SessionId>, StoreError> {
        let args = vec![AS_ADMIN.to_owned(), AS_MEMBER.to_owned()];
        let heir: Option<String> =
            self.client.eval(ENSURE_ADMIN_SCRIPT, vec![self.keys.members(room)], args).await.map_err(unavailable)?;
        Ok(heir.map(SessionId::new))
    }

    async fn transfer_admin(&self, room: &RoomCode, from: &SessionId, to: &SessionId) -> Result<bool, StoreError> {
        let args = vec![from.to_string(), to.to_string(), AS_ADMIN.to_owned(), AS_MEMBER.to_owned()];
        let n: u32 =
            self.client.eval(TRANSFER_ADMIN_SCRIPT, vec![self.keys.members(room)], args).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn put_pending(&self, room: &RoomCode, member: &MemberEntry) -> Result<Option<SessionId>, StoreError> {
        let pending = self.keys.pending(room);
        self.put(room, member, pending.clone(), pending).await
    }

    async fn member_raw(&self, room: &RoomCode, session: &SessionId) -> Result<Option<String>, StoreError> {
        self.client.hget(self.keys.members(room), session.as_str()).await.map_err(unavailable)
    }

    async fn cas_member(
        &self,
        room: &RoomCode,
        session: &SessionId,
        expected: &str,
        new: &MemberEntry,
    ) -> Result<bool, StoreError> {
        let args = vec![session.to_string(), expected.to_owned(), new.to_json()?];
        let n: u32 =
            self.client.eval(CAS_MEMBER_SCRIPT, vec![self.keys.members(room)], args).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn admit(&self, room: &RoomCode, entry: &MemberEntry) -> Result<bool, StoreError> {
        let keys = vec![self.keys.pending(room), self.keys.members(room)];
        let n: u32 = self
            .client
            .eval(ADMIT_SCRIPT, keys, vec![entry.session.to_string(), entry.to_json()?])
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn clear_speaker(&self, room: &RoomCode, session: &SessionId) -> Result<bool, StoreError> {
        let n: u32 = self
            .client
            .eval(CLEAR_SPEAKER_SCRIPT, vec![self.keys.speaker(room)], vec![session.to_string()])
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn members(&self, room: &RoomCode) -> Result<Vec<MemberEntry>, StoreError> {
        self.list(self.keys.members(room)).await
    }

    async fn pending(&self, room: &RoomCode) -> Result<Vec<MemberEntry>, StoreError> {
        self.list(self.keys.pending(room)).await
    }

    async fn current_session(&self, room: &RoomCode, user: &UserId) -> Result<Option<SessionId>, StoreError> {
        let v: Option<String> = self.client.get(self.keys.user(room, user)).await.map_err(unavailable)?;
        Ok(v.map(SessionId::new))
    }

    async fn add_resource(
        &self,
        room: &RoomCode,
        session: &SessionId,
        kind: ResourceKind,
        id: &str,
    ) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .hset(self.keys.session(room, session), vec![(kind.field(id), "1".to_owned())])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remove_resource(
        &self,
        room: &RoomCode,
        session: &SessionId,
        kind: ResourceKind,
        id: &str,
    ) -> Result<bool, StoreError> {
        let n: u32 = self.client.hdel(self.keys.session(room, session), kind.field(id)).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn resources(&self, room: &RoomCode, session: &SessionId) -> Result<Vec<(ResourceKind, String)>, StoreError> {
        let raw: HashMap<String, String> =
            self.client.hgetall(self.keys.session(room, session)).await.map_err(unavailable)?;
        let mut out: Vec<(ResourceKind, String)> = raw.keys().filter_map(|f| ResourceKind::parse_field(f)).collect();
        out.sort();
        Ok(out)
    }

    async fn raise_hand(&self, room: &RoomCode, session: &SessionId, at_ms: i64) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .eval(RAISE_SCRIPT, vec![self.keys.hands(room)], vec![at_ms.to_string(), session.to_string()])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn lower_hand(&self, room: &RoomCode, session: &SessionId) -> Result<bool, StoreError> {
        let n: u32 = self.client.zrem(self.keys.hands(room), session.to_string()).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn hands(&self, room: &RoomCode) -> Result<Vec<SessionId>, StoreError> {
        let v: Vec<String> =
            self.client.zrange(self.keys.hands(room), 0, -1, None, false, None, false).await.map_err(unavailable)?;
        Ok(v.into_iter().map(SessionId::new).collect())
    }

    async fn set_speaker(&self, room: &RoomCode, session: &SessionId) -> Result<(), StoreError> {
        let _: Value = self
            .client
            .set(self.keys.speaker(room), session.to_string(), None, None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn speaker(&self, room: &RoomCode) -> Result<Option<SessionId>, StoreError> {
        let v: Option<String> = self.client.get(self.keys.speaker(room)).await.map_err(unavailable)?;
        Ok(v.map(SessionId::new))
    }

    async fn remove_session(&self, room: &RoomCode, session: &SessionId, user: &UserId) -> Result<u32, StoreError> {
        let mut keys = self.keys.session_scope(room, session, user).to_vec();
        keys.push(self.keys.placement(room));
        self.client.eval(REMOVE_SCRIPT, keys, vec![session.to_string()]).await.map_err(unavailable)
    }

    async fn push_chat(&self, room: &RoomCode, message: &ChatMessage, keep: usize) -> Result<(), StoreError> {
        let json = chat_to_json(message)?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let _: Value = self
            .client
            .eval(CHAT_PUSH_SCRIPT, vec![self.keys.chat(room)], vec![json, keep.to_string()])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn chat(&self, room: &RoomCode) -> Result<Vec<ChatMessage>, StoreError> {
        let raw: Vec<String> = self.client.lrange(self.keys.chat(room), 0, -1).await.map_err(unavailable)?;
        chat_from_json(&raw)
    }

    async fn drop_chat(&self, room: &RoomCode) -> Result<bool, StoreError> {
        let n: u32 = self.client.del(self.keys.chat(room)).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn room_keys(&self, room: &RoomCode) -> Result<Vec<String>, StoreError> {
        self.scan(&self.keys.room_prefix(room)).await
    }

    async fn rooms(&self) -> Result<Vec<RoomCode>, StoreError> {
        let mut rooms: Vec<RoomCode> =
            self.scan(&self.keys.rooms_prefix()).await?.iter().filter_map(|k| self.keys.room_of(k)).collect();
        rooms.sort();
        rooms.dedup();
        Ok(rooms)
    }

    fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn session_entries(
        &self,
        room: &RoomCode,
        session: &SessionId,
        user: &UserId,
    ) -> Result<Vec<String>, StoreError> {
        self.client
            .eval(ENTRIES_SCRIPT, self.keys.session_scope(room, session, user).to_vec(), vec![session.to_string()])
            .await
            .map_err(unavailable)
    }

    async fn renew_lease(&self, node: &str, lease: &NodeLease, ttl: Duration) -> Result<(), StoreError> {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let _: Value = self
            .client
            .set(self.keys.lease(node), lease.to_json()?, Some(Expiration::PX(ms)), None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn drop_lease(&self, node: &str) -> Result<(), StoreError> {
        let _: u32 = self.client.del(self.keys.lease(node)).await.map_err(unavailable)?;
        Ok(())
    }

    async fn live_nodes(&self) -> Result<BTreeMap<String, NodeLease>, StoreError> {
        let prefix = self.keys.lease_prefix();
        let keys = self.scan(&prefix).await?;
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        // A lease that expired between the scan and the read reads as nil.
        let values: Vec<Option<String>> = self.client.mget(keys.clone()).await.map_err(unavailable)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| Some((k[prefix.len()..].to_owned(), NodeLease::from_json(&v?))))
            .collect())
    }

    async fn room_node(&self, room: &RoomCode) -> Result<Option<String>, StoreError> {
        self.client.get(self.keys.placement(room)).await.map_err(unavailable)
    }

    async fn move_room(&self, room: &RoomCode, from: &str, to: &str) -> Result<String, StoreError> {
        let args = vec![from.to_owned(), to.to_owned()];
        self.client.eval(MOVE_SCRIPT, vec![self.keys.placement(room)], args).await.map_err(unavailable)
    }

    async fn send_event(&self, payload: String) -> Result<(), StoreError> {
        self.client.publish::<i64, _, _>(self.keys.events(), payload).await.map_err(unavailable)?;
        Ok(())
    }

    async fn quit(&self) {
        self.stop.cancel();
        let hand_on = self.hand_on.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = hand_on {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, task).await;
        }
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
    }

    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.events.subscribe())
    }
}

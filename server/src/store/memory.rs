//! The in-process live-state store: the same key space as Redis, in a map
//! behind one mutex (every operation is one short critical section, so each
//! is atomic like its Redis script). Empty hashes and sets disappear, as
//! they do in Redis, so key counts mean the same on both.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use app::model::{ChatMessage, Role, RoomCode, SessionId, UserId};
use async_trait::async_trait;

use super::{
    by_arrival, chat_from_json, chat_to_json, heir, role_on_arrival, Keys, LiveStore, MemberEntry, NodeLease,
    ResourceKind, StoreError,
};

#[derive(Debug, Clone)]
enum Val {
    Str(String, Option<Instant>),
    Hash(BTreeMap<String, String>),
    ZSet(BTreeMap<String, i64>),
    List(std::collections::VecDeque<String>),
}

/// In-process implementation of [`LiveStore`].
#[derive(Debug)]
pub struct MemoryStore {
    keys: Keys,
    map: Mutex<BTreeMap<String, Val>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new("cleanroom")
    }
}

type Map = BTreeMap<String, Val>;

fn hash_mut<'a>(m: &'a mut Map, key: &str) -> &'a mut BTreeMap<String, String> {
    let slot = m.entry(key.to_owned()).or_insert_with(|| Val::Hash(BTreeMap::new()));
    if !matches!(slot, Val::Hash(_)) {
        *slot = Val::Hash(BTreeMap::new());
    }
    match slot {
        Val::Hash(h) => h,
        _ => unreachable!("just made a hash"),
    }
}

fn hash<'a>(m: &'a Map, key: &str) -> Option<&'a BTreeMap<String, String>> {
    match m.get(key) {
        Some(Val::Hash(h)) => Some(h),
        _ => None,
    }
}

fn hdel(m: &mut Map, key: &str, field: &str) -> bool {
    let Some(Val::Hash(h)) = m.get_mut(key) else { return false };
    let removed = h.remove(field).is_some();
    if h.is_empty() {
        m.remove(key);
    }
    removed
}

fn get_str(m: &Map, key: &str) -> Option<String> {
    match m.get(key) {
        Some(Val::Str(s, exp)) if exp.is_none_or(|t| t > Instant::now()) => Some(s.clone()),
        _ => None,
    }
}

fn zrem(m: &mut Map, key: &str, member: &str) -> bool {
    let Some(Val::ZSet(z)) = m.get_mut(key) else { return false };
    let removed = z.remove(member).is_some();
    if z.is_empty() {
        m.remove(key);
    }
    removed
}

impl MemoryStore {
    /// A store whose keys start with `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { keys: Keys::new(prefix), map: Mutex::new(BTreeMap::new()) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Map) -> R) -> R {
        // A panic while holding the lock cannot leave a half-written entry
        // (each closure writes at most a few whole values), so poison is moot.
        let mut guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn put(&self, room: &RoomCode, member: &MemberEntry, list_key: String) -> Result<Option<SessionId>, StoreError> {
        let json = member.to_json()?;
        self.with(|m| {
            self.place(m, room, &member.node)?;
            Ok(self.record(m, room, member, &list_key, json))
        })
    }

    /// Places the room on `node` unless it lives on another node (then
    /// fails, changing nothing): the first half of every arrival.
    fn place(&self, m: &mut Map, room: &RoomCode, node: &str) -> Result<(), StoreError> {
        let key = self.keys.placement(room);
        match get_str(m, &key) {
            Some(placed) if placed != node => Err(StoreError::PlacedElsewhere(placed)),
            _ => {
                m.insert(key, Val::Str(node.to_owned(), None));
                Ok(())
            }
        }
    }

    /// Files `member` (as `json`) under `list_key` and as its user's current
    /// session, inside one `with`; returns the user's previous session.
    fn record(
        &self,
        m: &mut Map,
        room: &RoomCode,
        member: &MemberEntry,
        list_key: &str,
        json: String,
    ) -> Option<SessionId> {
        let session_key = self.keys.session(room, &member.session);
        let user_key = self.keys.user(room, &member.user);
        hash_mut(m, list_key).insert(member.session.to_string(), json);
        hash_mut(m, &session_key).insert("user".into(), member.user.to_string());
        let previous = get_str(m, &user_key);
        m.insert(user_key, Val::Str(member.session.to_string(), None));
        previous.filter(|p| p != member.session.as_str()).map(SessionId::new)
    }

    fn list(&self, key: String) -> Result<Vec<MemberEntry>, StoreError> {
        let raw: Vec<String> = self.with(|m| hash(m, &key).map(|h| h.values().cloned().collect()).unwrap_or_default());
        raw.iter().map(|s| MemberEntry::from_json(s)).collect::<Result<Vec<_>, _>>().map(by_arrival)
    }
}

#[async_trait]
impl LiveStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_member(&self, room: &RoomCode, member: &MemberEntry) -> Result<Option<SessionId>, StoreError> {
        let pending = self.keys.pending(room);
        self.with(|m| hdel(m, &pending, member.session.as_str()));
        self.put(room, member, self.keys.members(room))
    }

    async fn join_member(
        &self,
        room: &RoomCode,
        member: &MemberEntry,
        creator: bool,
    ) -> Result<(Option<SessionId>, Role), StoreError> {
        let (members, pending) = (self.keys.members(room), self.keys.pending(room));
        self.with(|m| {
            let present = hash(m, &members)
                .map(|h| h.values().map(|raw| MemberEntry::from_json(raw)).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            let role = role_on_arrival(&present, &member.user, creator);
            let json = MemberEntry { role, ..member.clone() }.to_json()?;
            self.place(m, room, &member.node)?;
            hdel(m, &pending, member.session.as_str());
            Ok((self.record(m, room, member, &members, json), role))
        })
    }

    async fn ensure_admin(&self, room: &RoomCode) -> Result<Option<SessionId>, StoreError> {
        let key = self.keys.members(room);
        self.with(|m| {
            let Some(h) = hash(m, &key) else { return Ok(None) };
            let present = h.values().map(|raw| MemberEntry::from_json(raw)).collect::<Result<Vec<_>, _>>()?;
            let Some(heir) = heir(&present) else { return Ok(None) };
            let promoted = MemberEntry { role: Role::Admin, ..heir.clone() };
            hash_mut(m, &key).insert(promoted.session.to_string(), promoted.to_json()?);
            Ok(Some(promoted.session))
        })
    }

    async fn transfer_admin(&self, room: &RoomCode, from: &SessionId, to: &SessionId) -> Result<bool, StoreError> {
        let key = self.keys.members(room);
        self.with(|m| {
            let entry = |s: &SessionId| {
                hash(m, &key).and_then(|h| h.get(s.as_str())).map(|raw| MemberEntry::from_json(raw)).transpose()
            };
            let (Some(a), Some(b)) = (entry(from)?, entry(to)?) else { return Ok(false) };
            if from == to || a.role != Role::Admin || b.role != Role::Member {
                return Ok(false);
            }
            let (a, b) = (MemberEntry { role: Role::Member, ..a }, MemberEntry { role: Role::Admin, ..b });
            let (a_json, b_json) = (a.to_json()?, b.to_json()?);
            let h = hash_mut(m, &key);
            h.insert(from.to_string(), a_json);
            h.insert(to.to_string(), b_json);
            Ok(true)
        })
    }

    async fn put_pending(&self, room: &RoomCode, member: &MemberEntry) -> Result<Option<SessionId>, StoreError> {
        self.put(room, member, self.keys.pending(room))
    }

    async fn member_raw(&self, room: &RoomCode, session: &SessionId) -> Result<Option<String>, StoreError> {
        let key = self.keys.members(room);
        Ok(self.with(|m| hash(m, &key).and_then(|h| h.get(session.as_str()).cloned())))
    }

    async fn cas_member(
        &self,
        room: &RoomCode,
        session: &SessionId,
        expected: &str,
        new: &MemberEntry,
    ) -> Result<bool, StoreError> {
        let key = self.keys.members(room);
        let json = new.to_json()?;
        Ok(self.with(|m| match m.get_mut(&key) {
            Some(Val::Hash(h)) if h.get(session.as_str()).map(String::as_str) == Some(expected) => {
                h.insert(session.to_string(), json);
                true
            }
            _ => false,
        }))
    }

    async fn admit(&self, room: &RoomCode, entry: &MemberEntry) -> Result<bool, StoreError> {
        let (pending, members) = (self.keys.pending(room), self.keys.members(room));
        let json = entry.to_json()?;
        Ok(self.with(|m| {
            if !hdel(m, &pending, entry.session.as_str()) {
                return false;
            }
            hash_mut(m, &members).insert(entry.session.to_string(), json);
            true
        }))
    }

    async fn clear_speaker(&self, room: &RoomCode, session: &SessionId) -> Result<bool, StoreError> {
        let key = self.keys.speaker(room);
        Ok(self.with(|m| {
            let named = get_str(m, &key).as_deref() == Some(session.as_str());
            if named {
                m.remove(&key);
            }
            named
        }))
    }

    async fn members(&self, room: &RoomCode) -> Result<Vec<MemberEntry>, StoreError> {
        self.list(self.keys.members(room))
    }

    async fn pending(&self, room: &RoomCode) -> Result<Vec<MemberEntry>, StoreError> {
        self.list(self.keys.pending(room))
    }

    async fn current_session(&self, room: &RoomCode, user: &UserId) -> Result<Option<SessionId>, StoreError> {
        let key = self.keys.user(room, user);
        Ok(self.with(|m| get_str(m, &key)).map(SessionId::new))
    }

    async fn add_resource(
        &self,
        room: &RoomCode,
        session: &SessionId,
        kind: ResourceKind,
        id: &str,
    ) -> Result<(), StoreError> {
        let key = self.keys.session(room, session);
        self.with(|m| hash_mut(m, &key).insert(kind.field(id), "1".into()));
        Ok(())
    }

    async fn remove_resource(
        &self,
        room: &RoomCode,
        session: &SessionId,
        kind: ResourceKind,
        id: &str,
    ) -> Result<bool, StoreError> {
        let key = self.keys.session(room, session);
        Ok(self.with(|m| hdel(m, &key, &kind.field(id))))
    }

    async fn resources(&self, room: &RoomCode, session: &SessionId) -> Result<Vec<(ResourceKind, String)>, StoreError> {
        let key = self.keys.session(room, session);
        let mut out: Vec<(ResourceKind, String)> = self.with(|m| {
            hash(m, &key).map(|h| h.keys().filter_map(|f| ResourceKind::parse_field(f)).collect()).unwrap_or_default()
        });
        out.sort();
        Ok(out)
    }

    async fn raise_hand(&self, room: &RoomCode, session: &SessionId, at_ms: i64) -> Result<(), StoreError> {
        let key = self.keys.hands(room);
        self.with(|m| {
            let slot = m.entry(key).or_insert_with(|| Val::ZSet(BTreeMap::new()));
            if let Val::ZSet(z) = slot {
                z.entry(session.to_string()).or_insert(at_ms);
            }
        });
        Ok(())
    }

    async fn lower_hand(&self, room: &RoomCode, session: &SessionId) -> Result<bool, StoreError> {
        let key = self.keys.hands(room);
        Ok(self.with(|m| zrem(m, &key, session.as_str())))
    }

    async fn hands(&self, room: &RoomCode) -> Result<Vec<SessionId>, StoreError> {
        let key = self.keys.hands(room);
        Ok(self.with(|m| match m.get(&key) {
            Some(Val::ZSet(z)) => {
                let mut v: Vec<(&String, &i64)> = z.iter().collect();
                v.sort_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)));
                v.into_iter().map(|(s, _)| SessionId::new(s.clone())).collect()
            }
            _ => Vec::new(),
        }))
    }

    async fn set_speaker(&self, room: &RoomCode, session: &SessionId) -> Result<(), StoreError> {
        let key = self.keys.speaker(room);
        self.with(|m| m.insert(key, Val::Str(session.to_string(), None)));
        Ok(())
    }

    async fn speaker(&self, room: &RoomCode) -> Result<Option<SessionId>, StoreError> {
        let key = self.keys.speaker(room);
        Ok(self.with(|m| get_str(m, &key)).map(SessionId::new))
    }

    async fn remove_session(&self, room: &RoomCode, session: &SessionId, user: &UserId) -> Result<u32, StoreError> {
        let sid = session.as_str();
        let [members, pending, session_key, user_key, hands, speaker] = self.keys.session_scope(room, session, user);
        Ok(self.with(|m| {
            let mut n = 0;
            n += u32::from(hdel(m, &members, sid));
            n += u32::from(hdel(m, &pending, sid));
            n += u32::from(m.remove(&session_key).is_some());
            if get_str(m, &user_key).as_deref() == Some(sid) {
                n += u32::from(m.remove(&user_key).is_some());
            }
            n += u32::from(zrem(m, &hands, sid));
            if get_str(m, &speaker).as_deref() == Some(sid) {
                n += u32::from(m.remove(&speaker).is_some());
            }
            if hash(m, &members).is_none() && hash(m, &pending).is_none() {
                m.remove(&self.keys.placement(room));
            }
            n
        }))
    }

    async fn push_chat(&self, room: &RoomCode, message: &ChatMessage, keep: usize) -> Result<(), StoreError> {
        let json = chat_to_json(message)?;
        let key = self.keys.chat(room);
        self.with(|m| {
            let slot = m.entry(key).or_insert_with(|| Val::List(Default::default()));
            if !matches!(slot, Val::List(_)) {
                *slot = Val::List(Default::default());
            }
            if let Val::List(list) = slot {
                list.push_back(json);
                let excess = list.len().saturating_sub(keep);
                list.drain(..excess);
            }
        });
        Ok(())
    }

    async fn chat(&self, room: &RoomCode) -> Result<Vec<ChatMessage>, StoreError> {
        let key = self.keys.chat(room);
        let raw: Vec<String> = self.with(|m| match m.get(&key) {
            Some(Val::List(list)) => list.iter().cloned().collect(),
            _ => Vec::new(),
        });
        chat_from_json(&raw)
    }

    async fn drop_chat(&self, room: &RoomCode) -> Result<bool, StoreError> {
        let key = self.keys.chat(room);
        Ok(self.with(|m| m.remove(&key).is_some()))
    }

    async fn room_keys(&self, room: &RoomCode) -> Result<Vec<String>, StoreError> {
        let prefix = self.keys.room_prefix(room);
        Ok(self.with(|m| {
            let now = Instant::now();
            m.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(_, v)| !matches!(v, Val::Str(_, Some(exp)) if *exp <= now))
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }

    async fn rooms(&self) -> Result<Vec<RoomCode>, StoreError> {
        let prefix = self.keys.rooms_prefix();
        let mut rooms: Vec<RoomCode> = self.with(|m| {
            m.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, _)| self.keys.room_of(k))
                .collect()
        });
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
        let sid = session.as_str();
        let [members, pending, session_key, user_key, hands, speaker] = self.keys.session_scope(room, session, user);
        Ok(self.with(|m| {
            let mut out = Vec::new();
            for key in [&members, &pending] {
                if hash(m, key).is_some_and(|h| h.contains_key(sid)) {
                    out.push(format!("{key}#{sid}"));
                }
            }
            if m.contains_key(&session_key) {
                out.push(session_key.clone());
            }
            for key in [&user_key, &speaker] {
                if get_str(m, key).as_deref() == Some(sid) {
                    out.push(key.clone());
                }
            }
            if matches!(m.get(&hands), Some(Val::ZSet(z)) if z.contains_key(sid)) {
                out.push(format!("{hands}#{sid}"));
            }
            out
        }))
    }

    async fn renew_lease(&self, node: &str, lease: &NodeLease, ttl: Duration) -> Result<(), StoreError> {
        let key = self.keys.lease(node);
        let json = lease.to_json()?;
        self.with(|m| m.insert(key, Val::Str(json, Some(Instant::now() + ttl))));
        Ok(())
    }

    async fn drop_lease(&self, node: &str) -> Result<(), StoreError> {
        let key = self.keys.lease(node);
        self.with(|m| m.remove(&key));
        Ok(())
    }

    async fn live_nodes(&self) -> Result<BTreeMap<String, NodeLease>, StoreError> {
        let prefix = self.keys.lease_prefix();
        Ok(self.with(|m| {
            m.retain(|_, v| !matches!(v, Val::Str(_, Some(exp)) if *exp <= Instant::now()));
            m.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, v)| match v {
                    Val::Str(s, _) => Some((k[prefix.len()..].to_owned(), NodeLease::from_json(s))),
                    _ => None,
                })
                .collect()
        }))
    }

    async fn room_node(&self, room: &RoomCode) -> Result<Option<String>, StoreError> {
        let key = self.keys.placement(room);
        Ok(self.with(|m| get_str(m, &key)))
    }

    async fn move_room(&self, room: &RoomCode, from: &str, to: &str) -> Result<String, StoreError> {
        let key = self.keys.placement(room);
        Ok(self.with(|m| match get_str(m, &key) {
            Some(placed) if placed != from => placed,
            _ => {
                m.insert(key, Val::Str(to.to_owned(), None));
                to.to_owned()
            }
        }))
    }
}

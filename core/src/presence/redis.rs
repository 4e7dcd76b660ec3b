//! Presence records in Redis, for every node of a cluster on one Redis (`broker=redis`).
//!
//! AnyCable's Redis presence needs Redis 7.4 (per-field expiry of hashes); this store needs nothing past Redis
//! 6.2, so Debian's Redis 7.0 serves it. Instead of field TTLs, liveness is one sorted set of session deadlines
//! (milliseconds of the Redis clock), and expiry is a script that takes the late sessions out of it and unlinks
//! their records. Keys, `ferrocable:` first:
//!
//! - `presence-members:<stream>`: hash, id -> info (JSON text, empty when none): the members; its length is the
//!   total.
//! - `presence-count:<stream>`: hash, id -> sessions present under that id.
//! - `presence-sids:<stream>`: hash, sid -> id: which id each session is present as.
//! - `presence-session:<sid>`: set of the streams a session is present in.
//! - `presence-deadlines`: sorted set, sid -> the moment its records expire unless touched.
//!
//! Every operation is one Lua script, so two nodes adding, removing or expiring at the same time never both
//! report a member joining or leaving. Like the broker's other keys: a single Redis server or a primary with
//! replicas, not Redis Cluster (a script builds key names from stream names).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;

use super::{Added, Member, PresenceError, PresenceInfo, PresenceStore};
use crate::broker::BrokerError;
use crate::broker::redis::{KEY_PREFIX, RedisBroker};

const DEADLINES: &str = "ferrocable:presence-deadlines";

/// The Redis clock in milliseconds, as every script starts.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: members, count, sids, session, deadlines. ARGV: sid, id, info, ttl ms, stream.
/// Returns {1, ''} when the id joined, {0, ''} when it was present, {-1, current id} on a mismatch.
static ADD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{NOW}{}",
        r"
local current = redis.call('HGET', KEYS[3], ARGV[1])
if current and current ~= ARGV[2] then
  return {-1, current}
end
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
if current then
  return {0, ''}
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[5])
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
  return {1, ''}
end
return {0, ''}
"
    ))
});

/// The unlinking of one session's record, shared by removal and expiry: `members`, `count`, `sids` are the
/// stream's keys. Returns the id when it was its last session.
const UNLINK: &str = r"
local function unlink(members, count, sids, sid)
  local id = redis.call('HGET', sids, sid)
  if not id then
    return false
  end
  redis.call('HDEL', sids, sid)
  if redis.call('HINCRBY', count, id, -1) <= 0 then
    redis.call('HDEL', count, id)
    redis.call('HDEL', members, id)
    return id
  end
  return false
end
";

/// KEYS: members, count, sids, session, deadlines. ARGV: sid, stream. Returns the id that left, or nil.
static REMOVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{UNLINK}{}",
        r"
redis.call('SREM', KEYS[4], ARGV[2])
if redis.call('SCARD', KEYS[4]) == 0 then
  redis.call('ZREM', KEYS[5], ARGV[1])
end
return unlink(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
"
    ))
});

/// KEYS: deadlines. ARGV: ttl ms, sids…. Pushes the deadline of sessions still in the set.
static TOUCH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{NOW}{}",
        r"
local deadline = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
end
return 0
"
    ))
});

/// KEYS: deadlines. ARGV: key prefix, limit. Unlinks every record of the late sessions; returns stream, id, …
/// for each member that left.
static EXPIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{NOW}{UNLINK}{}",
        r"
local prefix = ARGV[1]
local left = {}
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  local session = prefix .. 'presence-session:' .. sid
  for _, stream in ipairs(redis.call('SMEMBERS', session)) do
    local id = unlink(prefix .. 'presence-members:' .. stream, prefix .. 'presence-count:' .. stream,
      prefix .. 'presence-sids:' .. stream, sid)
    if id then
      left[#left + 1] = stream
      left[#left + 1] = id
    end
  end
  redis.call('DEL', session)
  redis.call('ZREM', KEYS[1], sid)
end
return left
"
    ))
});

fn key(kind: &str, name: &str) -> String {
    format!("{KEY_PREFIX}{kind}:{name}")
}

/// The keys of one stream and session, in the order ADD and REMOVE take them.
fn keys(script: &'static redis::Script, stream: &str, sid: &str) -> redis::ScriptInvocation<'static> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(key("presence-members", stream))
        .key(key("presence-count", stream))
        .key(key("presence-sids", stream))
        .key(key("presence-session", sid))
        .key(DEADLINES);
    invocation
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl PresenceStore for RedisBroker {
    async fn add(&self, stream: &str, sid: &str, member: &Member, ttl: Duration) -> Result<Added, PresenceError> {
        let mut conn = self.connection().await?;
        let mut invocation = keys(&ADD, stream, sid);
        invocation.arg(sid).arg(&member.id).arg(member.info.as_deref().unwrap_or("")).arg(millis(ttl)).arg(stream);
        let reply: redis::RedisResult<(i64, Option<String>)> = invocation.invoke_async(&mut conn).await;
        match reply {
            Ok((1, _)) => Ok(Added::Joined),
            Ok((-1, current)) => Err(PresenceError::IdMismatch { current: current.unwrap_or_default() }),
            Ok(_) => Ok(Added::Present),
            Err(error) => Err(self.failed(error).await.into()),
        }
    }

    async fn remove(&self, stream: &str, sid: &str) -> Result<Option<String>, BrokerError> {
        let mut conn = self.connection().await?;
        let mut invocation = keys(&REMOVE, stream, sid);
        invocation.arg(sid).arg(stream);
        match invocation.invoke_async(&mut conn).await {
            Ok(left) => Ok(left),
            Err(error) => Err(self.failed(error).await),
        }
    }

    async fn info(&self, stream: &str, records: bool) -> Result<PresenceInfo, BrokerError> {
        let mut conn = self.connection().await?;
        let members = key("presence-members", stream);
        if !records {
            return match redis::cmd("HLEN").arg(members).query_async::<usize>(&mut conn).await {
                Ok(total) => Ok(PresenceInfo { total, records: None }),
                Err(error) => Err(self.failed(error).await),
            };
        }
        match redis::cmd("HGETALL").arg(members).query_async::<Vec<(String, String)>>(&mut conn).await {
            Ok(pairs) => Ok(PresenceInfo {
                total: pairs.len(),
                records: Some(
                    pairs
                        .into_iter()
                        .map(|(id, info)| Member { id, info: (!info.is_empty()).then_some(info) })
                        .collect(),
                ),
            }),
            Err(error) => Err(self.failed(error).await),
        }
    }

    async fn touch(&self, sids: &[Arc<str>], ttl: Duration) -> Result<(), BrokerError> {
        if sids.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        let mut invocation = TOUCH.prepare_invoke();
        invocation.key(DEADLINES).arg(millis(ttl));
        for sid in sids {
            invocation.arg(&**sid);
        }
        match invocation.invoke_async::<i64>(&mut conn).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.failed(error).await),
        }
    }

    async fn expire(&self, limit: usize) -> Result<Vec<(String, String)>, BrokerError> {
        let mut conn = self.connection().await?;
        let mut invocation = EXPIRE.prepare_invoke();
        invocation.key(DEADLINES).arg(KEY_PREFIX).arg(limit);
        match invocation.invoke_async::<Vec<String>>(&mut conn).await {
            Ok(flat) => {
                let mut left = Vec::with_capacity(flat.len() / 2);
                let mut items = flat.into_iter();
                while let (Some(stream), Some(id)) = (items.next(), items.next()) {
                    left.push((stream, id));
                }
                Ok(left)
            }
            Err(error) => Err(self.failed(error).await),
        }
    }
}

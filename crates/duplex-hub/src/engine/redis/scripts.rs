//! The Lua scripts of the Redis engine: each a step that must be atomic
//! (publish, presence, the feed's lease). Redis runs a script as one command;
//! redis-rs sends `EVALSHA` and loads the script again after a Redis restart.

use redis::Script;

/// Removes expired presence entries of a channel, publishing `l` for each.
/// Expects `now` (ms) and KEYS[1] hash, KEYS[2] sorted set, KEYS[3] channel.
const EXPIRE_PRESENCE: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  local client = redis.call('HGET', KEYS[1], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if client then redis.call('PUBLISH', KEYS[3], 'l ' .. client) end
end
";

/// Lua's view of Redis's clock, in ms.
const NOW: &str = r"
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
";

pub(super) fn publish_script() -> Script {
    Script::new(&format!(
        r"{NOW}
-- KEYS: offset, history, channel. ARGV: history size, history ttl (ms), data.
local offset = redis.call('INCR', KEYS[1])
local ms = string.format('%d', now)
if tonumber(ARGV[1]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], '0-' .. offset, 't', ms, 'd', ARGV[3])
  if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
end
redis.call('PUBLISH', KEYS[3], 'p ' .. offset .. ' ' .. ms .. ' ' .. ARGV[3])
return {{offset, ms}}
"
    ))
}

pub(super) fn join_script() -> Script {
    Script::new(&format!(
        r"{NOW}
-- KEYS: hash, sorted set, channel. ARGV: client id, client JSON, ttl (ms).
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 3 * tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], 3 * tonumber(ARGV[3]))
redis.call('PUBLISH', KEYS[3], 'j ' .. ARGV[2])
return 1
"
    ))
}

pub(super) fn leave_script() -> Script {
    Script::new(
        r"
-- KEYS: hash, sorted set, channel. ARGV: client id, client JSON.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('PUBLISH', KEYS[3], 'l ' .. ARGV[2])
end
return 1
",
    )
}

pub(super) fn presence_script() -> Script {
    Script::new(&format!(
        r"{NOW}{EXPIRE_PRESENCE}
return redis.call('HVALS', KEYS[1])
"
    ))
}

pub(super) fn refresh_script() -> Script {
    Script::new(&format!(
        r"{NOW}
-- KEYS: hash, sorted set, channel. ARGV: ttl (ms), 'touch' or 'add', then
-- client ids ('touch') or client id and JSON pairs ('add').
local ttl = tonumber(ARGV[1])
if ARGV[2] == 'add' then
  for i = 3, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], now + ttl, ARGV[i])
  end
else
  for i = 3, #ARGV do
    redis.call('ZADD', KEYS[2], 'XX', now + ttl, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], 3 * ttl)
redis.call('PEXPIRE', KEYS[2], 3 * ttl)
{EXPIRE_PRESENCE}
return 1
"
    ))
}

pub(super) fn lease_script() -> Script {
    Script::new(
        r"
-- KEYS: lease. ARGV: holder, ttl (ms).
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
",
    )
}

pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) join: Script,
    pub(super) leave: Script,
    pub(super) presence: Script,
    pub(super) refresh: Script,
    pub(super) lease: Script,
    pub(super) doc_append: Script,
    pub(super) doc_compact: Script,
}

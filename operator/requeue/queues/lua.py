"""requeue's own Lua. BullMQ's state changes always go through BullMQ's scripts
(:mod:`requeue.queues.scripts`); these only read BullMQ keys, bounded per call,
and write nothing but requeue's own keys.
"""

from __future__ import annotations

#: Read-only: one page of the failed set after a (score, id) cursor, name-prefiltered.
#:
#: KEYS[1] failed zset. ARGV[1] job key prefix, ARGV[2] min score (inclusive),
#: ARGV[3] max score (exclusive), ARGV[4] cursor score ("" = start), ARGV[5] cursor id,
#: ARGV[6] page size (members scanned), ARGV[7] "1" to return each candidate's data,
#: "0" to check it is JSON here and return only the verdict (far less to transfer and
#: parse when no filter needs the data), ARGV[8..] anchored Lua patterns over names
#: (none = every name). Returns one JSON text (one bulk string parses far faster
#: than thousands): [scanned, cursor score, cursor id, done, then per candidate:
#: id, score, name (false if the hash or name is missing), failedReason, data (false
#: when not asked for), flags]. ``flags`` is three characters: opts say lifo "1"/"0",
#: priority > 0 "1"/"0", data is JSON "1"/"0" ("?" when the data was returned).
#: Ties on the score are ordered by member like the zset itself,
#: and a cursor member that left the set meanwhile is stepped over by (score, id).
SELECT_PAGE = r"""
local rcall = redis.call
local key, prefix = KEYS[1], ARGV[1]
local maxv = tonumber(ARGV[3])
local last_score, last_id = ARGV[4], ARGV[5]
local count = tonumber(ARGV[6])
local want_data = ARGV[7] == "1"
local items
local exhausted = false
if last_id == "" then
  items = rcall("ZRANGEBYSCORE", key, ARGV[2], "(" .. ARGV[3], "WITHSCORES", "LIMIT", 0, count)
  exhausted = #items < 2 * count
else
  local rank = rcall("ZRANK", key, last_id)
  local sc = rank and rcall("ZSCORE", key, last_id)
  if rank and tonumber(sc) == tonumber(last_score) then
    items = rcall("ZRANGE", key, rank + 1, rank + count, "WITHSCORES")
    exhausted = #items < 2 * count
  else
    items = {}
    local ls = tonumber(last_score)
    local offset = 0
    while true do
      local chunk = rcall("ZRANGEBYSCORE", key, last_score, "(" .. ARGV[3], "WITHSCORES",
                          "LIMIT", offset, count)
      if #chunk < 2 * count then exhausted = true end
      for i = 1, #chunk, 2 do
        if tonumber(chunk[i + 1]) > ls or chunk[i] > last_id then
          items[#items + 1] = chunk[i]
          items[#items + 1] = chunk[i + 1]
        end
      end
      if #items > 0 or exhausted then break end
      offset = offset + count
    end
  end
end
local npat = #ARGV - 7
local out = {0, last_score, last_id, 0}
local scanned = 0
local decode = cjson.decode
for i = 1, #items, 2 do
  local id, score = items[i], items[i + 1]
  if tonumber(score) >= maxv then
    exhausted = true
    break
  end
  scanned = scanned + 1
  out[2], out[3] = score, id
  local jkey = prefix .. id
  local name = rcall("HGET", jkey, "name")
  if not name or name == "" then
    out[#out + 1] = id; out[#out + 1] = score; out[#out + 1] = false
    out[#out + 1] = false; out[#out + 1] = false; out[#out + 1] = "000"
  else
    local match = npat == 0
    for p = 8, #ARGV do
      if string.find(name, ARGV[p]) then
        match = true
        break
      end
    end
    if match then
      local f = rcall("HMGET", jkey, "failedReason", "data", "opts", "priority")
      local lifo, prio, valid = "0", "0", "?"
      if f[3] and string.find(f[3], '"lifo":true', 1, true) then lifo = "1" end
      if f[4] and (tonumber(f[4]) or 0) > 0 then prio = "1" end
      local data = f[2]
      if not want_data then
        valid = (data and pcall(decode, data)) and "1" or "0"
        data = false
      end
      out[#out + 1] = id; out[#out + 1] = score; out[#out + 1] = name
      out[#out + 1] = f[1]; out[#out + 1] = data; out[#out + 1] = lifo .. prio .. valid
    end
  end
end
out[1] = scanned
if exhausted then out[4] = 1 end
return cjson.encode(out)
"""

#: Read-only: the head of the next replay batch, in one round trip, right after WATCH.
#:
#: KEYS[1] progress hash, KEYS[2] lease key, KEYS[3] BullMQ meta hash, KEYS[4] snapshot
#: list, KEYS[5] lifo set, KEYS[6] failed zset. ARGV[1] our lease value, ARGV[2] batch
#: size, ARGV[3] job key prefix, ARGV[4] "1" to check whether BullMQ's ``moveJobsToWait``
#: would move exactly this batch (the first members of the failed set are exactly these
#: ids, in this order, and every job hash exists).
#: Returns JSON: [lease ok 1/0, cursor, matched, paused 1/0, head ok 1/0, head's last
#: score, copied_upto, ids..., then one "1"/"0" lifo flag per id].
BATCH_HEAD = r"""
local rcall = redis.call
local lease_ok = rcall("GET", KEYS[2]) == ARGV[1] and 1 or 0
local p = rcall("HMGET", KEYS[1], "cursor", "matched", "lifo_count", "copied_upto")
local cursor = tonumber(p[1]) or 0
local n = tonumber(ARGV[2])
local ids = rcall("LRANGE", KEYS[4], cursor, cursor + n - 1)
local paused = rcall("HEXISTS", KEYS[3], "paused")
local out = {lease_ok, cursor, tonumber(p[2]) or 0, paused, 0, "0", tonumber(p[4]) or 0}
if ARGV[4] == "1" and #ids > 0 then
  local head = rcall("ZRANGE", KEYS[6], 0, #ids - 1, "WITHSCORES")
  local ok = #head == 2 * #ids
  if ok then
    for i = 1, #ids do
      if head[2 * i - 1] ~= ids[i] or rcall("EXISTS", ARGV[3] .. ids[i]) == 0 then
        ok = false
        break
      end
    end
  end
  if ok then
    out[5] = 1
    out[6] = head[#head]
  end
end
for i = 1, #ids do out[#out + 1] = ids[i] end
local lifo = (tonumber(p[3]) or 0) > 0
for i = 1, #ids do
  out[#out + 1] = (lifo and rcall("SISMEMBER", KEYS[5], ids[i]) == 1) and "1" or "0"
end
return cjson.encode(out)
"""

#: Writes requeue's progress hash only; reads BullMQ's failed set and job hashes.
#:
#: Sent in the same MULTI as the batch's BullMQ scripts, right before them, so
#: what it predicts is exactly what they do: reprocessJob answers -1 when the hash
#: is gone, -3 when the id is not in the failed set, 1 otherwise (and removeJob
#: for a copied job likewise). Counters and cursor therefore commit atomically
#: with the moves: a crash loses or repeats nothing.
#:
#: KEYS[1] progress hash, KEYS[2] failed zset, KEYS[3] replayed-ids list.
#: ARGV[1] job key prefix, ARGV[2] new replay cursor, ARGV[3] extra skipped
#: (ids of the batch not sent to BullMQ), ARGV[4] "failed" (reprocessJob: moved when
#: the hash exists and the id is in the failed set) or "exists" (removeJob of a job
#: already copied: moved when the hash exists), ARGV[5..] ids sent.
#: Returns {moved, skipped, missing}.
TALLY_BATCH = r"""
local rcall = redis.call
local moved, skipped, missing = 0, tonumber(ARGV[3]), 0
local ids = {}
local need_failed = ARGV[4] == "failed"
for i = 5, #ARGV do
  local id = ARGV[i]
  if rcall("EXISTS", ARGV[1] .. id) == 0 then
    missing = missing + 1
  elseif not need_failed or rcall("ZSCORE", KEYS[2], id) then
    moved = moved + 1
    ids[#ids + 1] = id
  else
    skipped = skipped + 1
  end
end
rcall("HSET", KEYS[1], "cursor", ARGV[2])
if moved > 0 then
  rcall("HINCRBY", KEYS[1], "replayed", moved)
  for i = 1, #ids, 1000 do
    rcall("RPUSH", KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
  end
end
if skipped > 0 then rcall("HINCRBY", KEYS[1], "skipped", skipped) end
if missing > 0 then rcall("HINCRBY", KEYS[1], "missing", missing) end
return {moved, skipped, missing}
"""

#: The per-queue lease: take it if free, renew it if ours, else name the holder.
#:
#: KEYS[1] lease key. ARGV[1] our value ("<replay id> <owner>"), ARGV[2] ttl ms.
#: Returns "" when we hold it now, else the current holder's value.
ACQUIRE_LEASE = r"""
local cur = redis.call("GET", KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return ""
end
return cur
"""

#: Delete the lease only if we hold it. KEYS[1] lease key, ARGV[1] our value. Returns 1/0.
RELEASE_LEASE = r"""
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"""

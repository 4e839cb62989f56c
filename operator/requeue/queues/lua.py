"""requeue's own Lua. BullMQ's state changes always go through BullMQ's scripts
(:mod:`requeue.queues.scripts`); these only read BullMQ keys, bounded per call,
and write nothing but requeue's own keys (one exception, documented at
:data:`FAST_TALLY` and :data:`BULK_TALLY`: the attempt counters that ``reprocessJob``
would reset).

The names of requeue's own state are not typed here: a script says ``${Progress.CURSOR}``
or ``${Stage.REPLAYING}`` and :func:`render`, run when this module loads, puts in the
Lua string literal of that member of :mod:`requeue.queues.keys` (``"cursor"``,
``"replaying"``). A placeholder naming nothing fails the import, and the rendered text is
the same in every process, so each script's SHA is stable. BullMQ's own field names
(``name``, ``data``, ``opts``, ``priority``, ``failedReason``, ``atm``, ``ats``, the
meta hash's ``paused``) stay literal: BullMQ owns them, and only ``queues/`` reads them.
"""

from __future__ import annotations

import re
from enum import EnumMeta

from requeue.queues import keys as _keys

#: ``${Progress.CURSOR}``, ``${Stage.DONE}``, ``${REASONS_OTHER}``: a declared name.
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
#: What a placeholder may name: the declarations of requeue's Redis state.
_DECLARED: dict[str, object] = {
    "Progress": _keys.Progress,
    "Stage": _keys.Stage,
    "REASONS_OTHER": _keys.REASONS_OTHER,
}


class UnknownPlaceholder(LookupError):
    """A script names a field or stage :mod:`requeue.queues.keys` does not declare."""


def lua_string(value: str) -> str:
    """``value`` as a Lua string literal (bytes below 32, quotes and backslashes escaped)."""
    out = []
    for i, ch in enumerate(value):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            digit_next = i + 1 < len(value) and value[i + 1].isdigit()
            out.append(f"\\{ord(ch):03d}" if digit_next else f"\\{ord(ch)}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _resolve(name: str) -> str:
    root, _, member = name.partition(".")
    target = _DECLARED.get(root)
    value = target.__members__.get(member) if isinstance(target, EnumMeta) else target
    if isinstance(target, str) and member:
        value = None
    if not isinstance(value, str):
        raise UnknownPlaceholder(
            f"Lua placeholder ${{{name}}} names nothing in requeue.queues.keys "
            f"(known: {', '.join(sorted(_DECLARED))})"
        )
    return value


def render(template: str) -> str:
    """``template`` with every ``${...}`` replaced by the declared name's Lua string literal.

    :raises UnknownPlaceholder: a placeholder names no declared field or stage.
    """
    return PLACEHOLDER.sub(lambda m: lua_string(_resolve(m.group(1))), template)


#: Lua shared by the selection scripts: up to ``count`` members of the failed set ``key``
#: after the cursor (``last_score``, ``last_id``; ``last_id`` "" = from ``min_s``), with
#: their scores, below ``max_s`` where a range query is used (callers still stop at
#: ``maxv``). Sets ``items`` (member, score, ...) and ``exhausted``.
_AFTER_CURSOR = r"""
local items
local exhausted = false
if last_id == "" then
  items = rcall("ZRANGEBYSCORE", key, min_s, "(" .. max_s, "WITHSCORES", "LIMIT", 0, count)
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
      local chunk = rcall("ZRANGEBYSCORE", key, last_score, "(" .. max_s, "WITHSCORES",
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
"""

#: Lua shared by the selection scripts: ``over_budget()`` is true once the call has run
#: ``budget_us`` microseconds (0 = no limit; Redis's TIME, checked every 32 members), so a
#: page ends early rather than stall other clients when job hashes are cold or the machine slow.
_TIME_BUDGET = r"""
local t0
if budget_us > 0 then
  local t = rcall("TIME")
  t0 = t[1] * 1000000 + t[2]
end
local function over_budget()
  if not t0 then return false end
  local t = rcall("TIME")
  return t[1] * 1000000 + t[2] - t0 >= budget_us
end
"""

#: Read-only: one page of the failed set after a (score, id) cursor, name-prefiltered.
#: One ``HMGET`` per scanned job (name, failure reason, data, opts, priority): on Upstash
#: and the like every command is billed, and a name filter matching a third of the jobs
#: paid a second read for each match before.
#:
#: KEYS[1] failed zset. ARGV[1] job key prefix, ARGV[2] min score (inclusive),
#: ARGV[3] max score (exclusive), ARGV[4] cursor score ("" = start), ARGV[5] cursor id,
#: ARGV[6] page size (members scanned), ARGV[7] "1" to return each candidate's data,
#: "0" to check it is JSON here and return only the verdict (far less to transfer and
#: parse when no filter needs the data), ARGV[8] time budget in µs (0 = none: the page ends
#: early, not done, once it is spent), ARGV[9..] anchored Lua patterns over names (none =
#: every name). Returns one JSON text (one bulk string parses far faster
#: than thousands): [scanned, cursor score, cursor id, done, then per candidate:
#: id, score, name (false if the hash or name is missing), failedReason, data (false
#: when not asked for), flags]. ``flags`` is three characters: opts say lifo "1"/"0",
#: priority > 0 "1"/"0", data is JSON "1", not JSON "0", no data "-" ("?" when the data was
#: returned).
#: Ties on the score are ordered by member like the zset itself,
#: and a cursor member that left the set meanwhile is stepped over by (score, id).
SELECT_PAGE = render(
    r"""
local rcall = redis.call
local key, prefix = KEYS[1], ARGV[1]
local min_s, max_s = ARGV[2], ARGV[3]
local maxv = tonumber(ARGV[3])
local last_score, last_id = ARGV[4], ARGV[5]
local count = tonumber(ARGV[6])
local want_data = ARGV[7] == "1"
local budget_us = tonumber(ARGV[8]) or 0
"""
    + _AFTER_CURSOR
    + _TIME_BUDGET
    + r"""
local npat = #ARGV - 8
local out = {0, last_score, last_id, 0}
local scanned = 0
local decode = cjson.decode
for i = 1, #items, 2 do
  local id, score = items[i], items[i + 1]
  if tonumber(score) >= maxv then
    exhausted = true
    break
  end
  if scanned > 0 and scanned % 32 == 0 and over_budget() then
    exhausted = false
    break
  end
  scanned = scanned + 1
  out[2], out[3] = score, id
  -- one read per scanned job: the fields a candidate needs come with its name (a second
  -- read for the ones that match cost more commands than the few bytes it saved)
  local f = rcall("HMGET", prefix .. id, "name", "failedReason", "data", "opts", "priority")
  local name = f[1]
  if not name or name == "" then
    out[#out + 1] = id; out[#out + 1] = score; out[#out + 1] = false
    out[#out + 1] = false; out[#out + 1] = false; out[#out + 1] = "000"
  else
    local match = npat == 0
    for p = 9, #ARGV do
      if string.find(name, ARGV[p]) then
        match = true
        break
      end
    end
    if match then
      local lifo, prio, valid = "0", "0", "?"
      if f[4] and string.find(f[4], '"lifo":true', 1, true) then lifo = "1" end
      if f[5] and (tonumber(f[5]) or 0) > 0 then prio = "1" end
      local data = f[3]
      if not want_data then
        valid = "-"
        if data and data ~= "" then valid = pcall(decode, data) and "1" or "0" end
        data = false
      end
      out[#out + 1] = id; out[#out + 1] = score; out[#out + 1] = name
      out[#out + 1] = f[2]; out[#out + 1] = data; out[#out + 1] = lifo .. prio .. valid
    end
  end
end
out[1] = scanned
if exhausted then out[4] = 1 end
return cjson.encode(out)
"""
)

#: Read-only: the head of the next replay batch, in one round trip, right after WATCH.
#:
#: KEYS[1] progress hash, KEYS[2] lease key, KEYS[3] BullMQ meta hash, KEYS[4] snapshot
#: list, KEYS[5] lifo set, KEYS[6] failed zset. ARGV[1] our lease value, ARGV[2] batch
#: size, ARGV[3] job key prefix, ARGV[4] "1" to check whether BullMQ's ``moveJobsToWait``
#: would move exactly this batch (the first members of the failed set are exactly these
#: ids, in this order, and every job hash exists).
#: Returns JSON: [lease ok 1/0, cursor, matched, paused 1/0, head ok 1/0, head's last
#: score, copied_upto, ids..., then one "1"/"0" lifo flag per id].
BATCH_HEAD = render(r"""
local rcall = redis.call
local lease_ok = rcall("GET", KEYS[2]) == ARGV[1] and 1 or 0
local p = rcall("HMGET", KEYS[1], ${Progress.CURSOR}, ${Progress.MATCHED}, ${Progress.LIFO_COUNT},
                ${Progress.COPIED_UPTO})
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
""")

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
TALLY_BATCH = render(r"""
local rcall = redis.call
local moved, skipped, missing = 0, tonumber(ARGV[3]), 0
local prefix = ARGV[1]
-- Per chunk of ids, two commands instead of two per id (on Upstash each is billed): which
-- ids are still failed (one ZMSCORE), and whether all of their hashes exist (one multi-key
-- EXISTS; its count equals theirs unless one is missing, and only then is each id asked).
local live = {}
if ARGV[4] == "failed" then
  for i = 5, #ARGV, 1000 do
    local last = math.min(i + 999, #ARGV)
    local scores = rcall("ZMSCORE", KEYS[2], unpack(ARGV, i, last))
    for j = i, last do live[j] = scores[j - i + 1] ~= false end
  end
else
  for j = 5, #ARGV do live[j] = true end
end
local cand, keys = {}, {}
for j = 5, #ARGV do
  if live[j] then
    cand[#cand + 1] = j
    keys[#keys + 1] = prefix .. ARGV[j]
  end
end
local present = 0
for i = 1, #keys, 1000 do
  present = present + rcall("EXISTS", unpack(keys, i, math.min(i + 999, #keys)))
end
local exists = {}
if present == #keys then
  for _, j in ipairs(cand) do exists[j] = true end
else
  for c, j in ipairs(cand) do exists[j] = rcall("EXISTS", keys[c]) == 1 end
end
local ids = {}
for j = 5, #ARGV do
  -- reprocessJob answers -1 for a missing hash before it looks at the failed set
  local has = exists[j]
  if has == nil then has = rcall("EXISTS", prefix .. ARGV[j]) == 1 end
  if not has then
    missing = missing + 1
  elseif live[j] then
    moved = moved + 1
    ids[#ids + 1] = ARGV[j]
  else
    skipped = skipped + 1
  end
end
rcall("HSET", KEYS[1], ${Progress.CURSOR}, ARGV[2])
if moved > 0 then
  rcall("HINCRBY", KEYS[1], ${Progress.REPLAYED}, moved)
  for i = 1, #ids, 1000 do
    rcall("RPUSH", KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
  end
end
if skipped > 0 then rcall("HINCRBY", KEYS[1], ${Progress.SKIPPED}, skipped) end
if missing > 0 then rcall("HINCRBY", KEYS[1], ${Progress.MISSING}, missing) end
return {moved, skipped, missing}
""")

#: Selection of a pure time window (no filter but the window and maxJobs), entirely
#: inside Redis: one bounded page per call, committed by the call itself (a script is
#: atomic), so nothing per job crosses the network and a crash between calls loses or
#: repeats nothing. Writes requeue's keys only; reads BullMQ's failed set and job hashes.
#:
#: Per member of the window after the selection cursor (progress ``sel_score``/``sel_id``):
#: a job whose hash or name is missing, or whose data is absent or not JSON, is corrupt
#: (counted, first ids listed, never selected); any other is appended to the snapshot,
#: counted by name and by failure reason (digits folded to "0" here, capped at ARGV[8]
#: distinct keys, the rest under "\0other"; Python finishes the normalisation, which gives
#: the same groups since it treats every digit alike), and, when it needs BullMQ's
#: ``reprocessJob`` (a priority: goes to ``prioritized``; ``lifo``: pushed right), its
#: snapshot position is added to the ``slow`` zset (score = position) so the replay
#: knows where ``moveJobsToWait`` must not be used.
#:
#: KEYS[1] failed zset, [2] progress hash, [3] snapshot list, [4] names hash, [5] reasons
#: hash, [6] corrupt list, [7] lifo set, [8] slow zset. ARGV[1] job key prefix, [2] min
#: score (inclusive), [3] max score (exclusive), [4] members to scan at most, [5] maxJobs
#: (0 = none), [6] the selection's upper bound (stored), [7] corrupt ids kept, [8] reason
#: keys kept, [9] "1": data must parse as JSON (cjson), "0": only look like JSON (first and
#: last character; several times cheaper, and what a truncated or non-JSON value fails),
#: [10] time budget in µs (0 = none; the page ends early, not done, once it is spent).
#: Returns {scanned, selected, corrupt, done 1/0}; scanned is -1 when the progress is not
#: in the selecting stage (another process moved on).
SELECT_WINDOW = render(
    r"""
if redis.replicate_commands then redis.replicate_commands() end
local rcall = redis.call
local key, progress = KEYS[1], KEYS[2]
local prefix, min_s, max_s = ARGV[1], ARGV[2], ARGV[3]
local maxv = tonumber(max_s)
local count, max_jobs = tonumber(ARGV[4]), tonumber(ARGV[5])
local exact = ARGV[9] == "1"
local budget_us = tonumber(ARGV[10]) or 0
local p = rcall("HMGET", progress, ${Progress.STAGE}, ${Progress.SEL_SCORE}, ${Progress.SEL_ID},
                ${Progress.MATCHED})
if p[1] ~= ${Stage.SELECTING} then return {-1, 0, 0, 0} end
local last_score, last_id = p[2] or "", p[3] or ""
local matched = tonumber(p[4]) or 0
"""
    + _AFTER_CURSOR
    + _TIME_BUDGET
    + r"""
local decode = cjson.decode
local byte = string.byte
local function space(b) return b == 32 or (b >= 9 and b <= 13) end
local function json_ok(s)
  if exact then return (pcall(decode, s)) end
  -- trim by bytes: a Lua pattern such as "^%s*(.-)%s*$" is quadratic on a long inner run of spaces
  local i, j = 1, #s
  while i <= j and space(byte(s, i)) do i = i + 1 end
  while j > i and space(byte(s, j)) do j = j - 1 end
  if i > j then return false end
  local f, l = byte(s, i), byte(s, j)
  if f == 123 then return l == 125 end
  if f == 91 then return l == 93 end
  if f == 34 then return l == 34 and j > i end
  if f == 116 or f == 102 then return l == 101 end
  if f == 110 then return l == 108 end
  if f == 45 or (f >= 48 and f <= 57) then return l >= 48 and l <= 57 end
  return false
end
local room = max_jobs > 0 and (max_jobs - matched) or -1
local done = exhausted
local ids, nids = {}, 0
local names, reasons, folded = {}, {}, {}
local corrupt, lifo, slow = {}, {}, {}
local nprio, nlifo, scanned = 0, 0, 0
local cur_score, cur_id = last_score, last_id
for i = 1, #items, 2 do
  local id, score = items[i], items[i + 1]
  if tonumber(score) >= maxv then
    done = true
    break
  end
  if room >= 0 and nids >= room then
    done = true
    break
  end
  if scanned > 0 and scanned % 32 == 0 and over_budget() then
    done = false
    break
  end
  scanned = scanned + 1
  cur_score, cur_id = score, id
  local f = rcall("HMGET", prefix .. id, "name", "data", "priority", "opts", "failedReason")
  local name, data = f[1], f[2]
  if not name or name == "" or not data or not json_ok(data) then
    corrupt[#corrupt + 1] = id
  else
    nids = nids + 1
    ids[nids] = id
    names[name] = (names[name] or 0) + 1
    local r = f[5] or ""
    local k = folded[r]
    if not k then
      k = r
      if #k > 1000 then k = string.sub(k, 1, 1000) end
      k = string.gsub(k, "%d", "0")
      folded[r] = k
    end
    reasons[k] = (reasons[k] or 0) + 1
    local prio = (tonumber(f[3]) or 0) ~= 0
    local lf = f[4] and string.find(f[4], '"lifo":true', 1, true)
    if prio or lf then
      slow[#slow + 1] = matched + nids - 1
      slow[#slow + 1] = id
      if prio then nprio = nprio + 1 end
      if lf then
        nlifo = nlifo + 1
        lifo[#lifo + 1] = id
      end
    end
  end
end
if room >= 0 and nids >= room then done = true end
for i = 1, nids, 1000 do rcall("RPUSH", KEYS[3], unpack(ids, i, math.min(i + 999, nids))) end
for n, c in pairs(names) do rcall("HINCRBY", KEYS[4], n, c) end
local nkeys = rcall("HLEN", KEYS[5])
local cap = tonumber(ARGV[8])
for r, c in pairs(reasons) do
  if nkeys >= cap and rcall("HEXISTS", KEYS[5], r) == 0 then r = ${REASONS_OTHER} end
  if rcall("HINCRBY", KEYS[5], r, c) == c then nkeys = nkeys + 1 end
end
if #corrupt > 0 then
  rcall("RPUSH", KEYS[6], unpack(corrupt, 1, math.min(#corrupt, tonumber(ARGV[7]))))
  rcall("LTRIM", KEYS[6], 0, tonumber(ARGV[7]) - 1)
  rcall("HINCRBY", progress, ${Progress.CORRUPT}, #corrupt)
end
if #lifo > 0 then rcall("SADD", KEYS[7], unpack(lifo)) end
if #slow > 0 then rcall("ZADD", KEYS[8], unpack(slow)) end
rcall("HINCRBY", progress, ${Progress.MATCHED}, nids)
rcall("HINCRBY", progress, ${Progress.SCANNED}, scanned)
rcall("HINCRBY", progress, ${Progress.LIFO_COUNT}, nlifo)
rcall("HINCRBY", progress, ${Progress.PRIO_COUNT}, nprio)
rcall("HSET", progress, ${Progress.SEL_SCORE}, cur_score, ${Progress.SEL_ID}, cur_id,
      ${Progress.UPPER}, ARGV[6], ${Progress.SLOW_POS}, "1", ${Progress.REASONS_FOLDED}, "1")
if done then rcall("HSET", progress, ${Progress.STAGE}, ${Stage.REPLAYING}) end
return {scanned, nids, #corrupt, done and 1 or 0}
"""
)

#: Read-only: how to move the next ``n`` snapshot ids, in one round trip per step.
#:
#: BullMQ's ``moveJobsToWait`` moves the first members of the failed set; it does exactly
#: what ``reprocessJob`` does for each of them (same fields deleted, same ``waiting``
#: event, same push to the left of the same list, same marker) except for jobs with a
#: priority or ``lifo``. So the snapshot's next ids are compared with the head of the
#: failed set: the longest run where they agree is split into "fast" chunks (no slow
#: position in them, see SELECT_WINDOW) and "slow" chunks (those positions, for
#: ``reprocessJob``); when even the first id disagrees (older failures outside the
#: window, a job retried meanwhile), one slow chunk. Each fast chunk is checked again
#: atomically right before it runs (FAST_GUARD), so this plan is only a prediction.
#:
#: KEYS[1] progress, [2] lease, [3] BullMQ meta, [4] snapshot, [5] failed zset, [6] slow
#: zset. ARGV[1] our lease value, [2] jobs wanted, [3] fast chunk size, [4] slow chunk
#: size, [5] "pos" (slow zset is complete), "none" (no job needs reprocessJob), "off"
#: (no fast path). Returns JSON: [lease ok 1/0, cursor, matched, paused 1/0, copied_upto,
#: then chunks: "f", count, score of its last member | "s", count].
PLAN_MOVES = render(r"""
local rcall = redis.call
local out = {rcall("GET", KEYS[2]) == ARGV[1] and 1 or 0}
local p = rcall("HMGET", KEYS[1], ${Progress.CURSOR}, ${Progress.MATCHED}, ${Progress.COPIED_UPTO})
local cursor, matched = tonumber(p[1]) or 0, tonumber(p[2]) or 0
out[2], out[3], out[4], out[5] = cursor, matched, rcall("HEXISTS", KEYS[3], "paused"), tonumber(p[3]) or 0
local n = math.min(tonumber(ARGV[2]), matched - cursor)
if n <= 0 then return cjson.encode(out) end
local fast_n, slow_n = tonumber(ARGV[3]), tonumber(ARGV[4])
local m, head = 0, {}
if ARGV[5] ~= "off" and rcall("ZRANGE", KEYS[5], 0, 0)[1] == rcall("LINDEX", KEYS[4], cursor) then
  local ids = rcall("LRANGE", KEYS[4], cursor, cursor + n - 1)
  head = rcall("ZRANGE", KEYS[5], 0, #ids - 1)
  while m < #ids and head[m + 1] == ids[m + 1] do m = m + 1 end
end
if m == 0 then
  out[#out + 1] = "s"
  out[#out + 1] = math.min(n, slow_n)
  return cjson.encode(out)
end
local special = {}
if ARGV[5] == "pos" then
  local sp = rcall("ZRANGEBYSCORE", KEYS[6], cursor, cursor + m - 1, "WITHSCORES")
  for i = 2, #sp, 2 do special[tonumber(sp[i]) - cursor + 1] = true end
end
local i = 1
while i <= m do
  local j = i
  if special[i] then
    while j <= m and special[j] and j - i < slow_n do j = j + 1 end
    out[#out + 1] = "s"
    out[#out + 1] = j - i
  else
    while j <= m and not special[j] and j - i < fast_n do j = j + 1 end
    out[#out + 1] = "f"
    out[#out + 1] = j - i
    out[#out + 1] = rcall("ZSCORE", KEYS[5], head[j - 1])
  end
  i = j
end
return cjson.encode(out)
""")

#: Sent after WATCH (progress, lease, meta, failed) and before the MULTI of a fast chunk,
#: in the same write: checks that ``moveJobsToWait`` with ARGV[3] jobs up to score
#: ARGV[4] would move exactly the snapshot ids from ARGV[2] on, that we hold the lease
#: and that the queue's paused flag is still ARGV[5]. If not, it bumps a counter in the
#: (WATCHed) progress hash, which makes our own EXEC abort: the check and the move are
#: one atomic decision without waiting for this reply. Writes requeue's progress only.
#:
#: KEYS[1] progress, [2] lease, [3] BullMQ meta, [4] snapshot, [5] failed zset.
#: ARGV[1] lease value, [2] cursor, [3] count, [4] last score, [5] paused "1"/"0".
#: Returns 1 (go) or 0 (the EXEC that follows will be aborted).
FAST_GUARD = render(r"""
local rcall = redis.call
local c, n = tonumber(ARGV[2]), tonumber(ARGV[3])
local ok = rcall("GET", KEYS[2]) == ARGV[1]
  and tonumber(rcall("HGET", KEYS[1], ${Progress.CURSOR}) or "0") == c
  and tostring(rcall("HEXISTS", KEYS[3], "paused")) == ARGV[5]
if ok then
  local ids = rcall("LRANGE", KEYS[4], c, c + n - 1)
  local head = rcall("ZRANGE", KEYS[5], 0, n - 1, "WITHSCORES")
  ok = #ids == n and #head == 2 * n and head[2 * n] == ARGV[4]
  if ok then
    for i = 1, n do
      if head[2 * i - 1] ~= ids[i] then
        ok = false
        break
      end
    end
  end
end
if ok then return 1 end
rcall("HINCRBY", KEYS[1], ${Progress.FAST_MISS}, 1)
return 0
""")

#: Lua shared by the tallies of the ``moveJobsToWait`` chunks (FAST_TALLY, BULK_TALLY): with
#: ARGV[3] "1", delete the attempt counters of the ``n`` ``ids`` (key prefix ARGV[4]), as
#: ``reprocessJob`` does with its reset flags; then append the ids to the replayed list KEYS[3].
_RESET_AND_RECORD = r"""
if ARGV[3] == "1" then
  local prefix = ARGV[4]
  for i = 1, n do rcall("HDEL", prefix .. ids[i], "atm", "ats") end
end
for i = 1, n, 1000 do rcall("RPUSH", KEYS[3], unpack(ids, i, math.min(i + 999, n))) end
"""

#: The bookkeeping of a fast chunk, inside its MULTI next to BullMQ's ``moveJobsToWait``
#: (which FAST_GUARD proved moves exactly these ids): cursor, counters and the
#: replayed-ids list advance atomically with the move. With ARGV[3] "1" it also deletes
#: the attempt counters ``atm``/``ats`` of these jobs, which is what ``reprocessJob`` does
#: with its reset flags (``moveJobsToWait`` has none): the only write to BullMQ keys in
#: requeue's Lua, and the same one ``reprocessJob`` would make.
#:
#: KEYS[1] progress, [2] snapshot, [3] replayed list. ARGV[1] cursor, [2] count,
#: [3] reset attempts "1"/"0", [4] job key prefix. Returns the ids' count.
FAST_TALLY = render(
    r"""
local rcall = redis.call
local c = tonumber(ARGV[1])
local ids = rcall("LRANGE", KEYS[2], c, c + tonumber(ARGV[2]) - 1)
local n = #ids
"""
    + _RESET_AND_RECORD
    + r"""
rcall("HSET", KEYS[1], ${Progress.CURSOR}, c + n)
rcall("HINCRBY", KEYS[1], ${Progress.REPLAYED}, n)
rcall("HINCRBY", KEYS[1], ${Progress.BULK_MOVED}, n)
return n
"""
)

#: Mode Bulk, before each chunk (sent right after WATCH, before its MULTI): that we hold
#: the lease, that the replay is replaying with its cursor still at ARGV[2] (no other
#: process stepped it meanwhile), that the queue's paused flag is still ARGV[3], and that the oldest failed
#: job is not older than the window (``moveJobsToWait`` takes the oldest failed jobs
#: first, from score 0). If not, it bumps a counter in the WATCHed progress hash, which
#: makes our own EXEC abort, and says why. Writes requeue's progress only.
#:
#: KEYS[1] progress, [2] lease, [3] BullMQ meta, [4] failed zset. ARGV[1] lease value,
#: [2] cursor, [3] paused "1"/"0", [4] the window's lower bound (ms, inclusive).
#: Returns "" (go), "lease", "cursor", "paused" or "older <id> <score>".
BULK_GUARD = render(r"""
local rcall = redis.call
local function why()
  if rcall("GET", KEYS[2]) ~= ARGV[1] then return "lease" end
  local p = rcall("HMGET", KEYS[1], ${Progress.STAGE}, ${Progress.CURSOR})
  if p[1] ~= ${Stage.REPLAYING} or tonumber(p[2] or "0") ~= tonumber(ARGV[2]) then return "cursor" end
  if tostring(rcall("HEXISTS", KEYS[3], "paused")) ~= ARGV[3] then return "paused" end
  local head = rcall("ZRANGE", KEYS[4], 0, 0, "WITHSCORES")
  if #head > 0 and tonumber(head[2]) < tonumber(ARGV[4]) then
    return "older " .. head[1] .. " " .. head[2]
  end
  return ""
end
local veto = why()
if veto ~= "" then rcall("HINCRBY", KEYS[1], ${Progress.FAST_MISS}, 1) end
return veto
""")

#: Mode Bulk's bookkeeping, inside the chunk's MULTI right before BullMQ's
#: ``moveJobsToWait`` with the same count and time: it reads the ids that script is about
#: to move (the same range query) and records them, with cursor and counters, atomically
#: with the move. With ARGV[3] "1" it deletes their attempt counters (what ``reprocessJob``
#: does with its reset flags). When fewer jobs than asked are left (or the count is
#: reached), the rest of the count left the failed set meanwhile: counted as skipped,
#: and the stage moves on to verifying.
#:
#: KEYS[1] failed zset, [2] progress, [3] replayed list. ARGV[1] count, [2] the window's
#: upper bound (ms, inclusive), [3] reset attempts "1"/"0", [4] job key prefix, [5] now (ms).
#: Returns {moved, skipped, finished 1/0}.
BULK_TALLY = render(
    r"""
local rcall = redis.call
local want = tonumber(ARGV[1])
local ids = rcall("ZRANGEBYSCORE", KEYS[1], 0, ARGV[2], "LIMIT", 0, want)
local n = #ids
"""
    + _RESET_AND_RECORD
    + r"""
local p = rcall("HMGET", KEYS[2], ${Progress.CURSOR}, ${Progress.MATCHED})
local cursor = (tonumber(p[1]) or 0) + n
local matched = tonumber(p[2]) or 0
local skipped, finished = 0, 0
if n < want or cursor >= matched then
  finished = 1
  if cursor < matched then
    skipped = matched - cursor
    cursor = matched
  end
  rcall("HINCRBY", KEYS[2], ${Progress.SKIPPED}, skipped)
  rcall("HSET", KEYS[2], ${Progress.STAGE}, ${Stage.VERIFYING}, ${Progress.REPLAYED_MS}, ARGV[5])
end
rcall("HSET", KEYS[2], ${Progress.CURSOR}, cursor)
rcall("HINCRBY", KEYS[2], ${Progress.REPLAYED}, n)
rcall("HINCRBY", KEYS[2], ${Progress.BULK_MOVED}, n)
return {n, skipped, finished}
"""
)

#: The per-queue lease: take it if free, renew it if ours, else name the holder.
#:
#: KEYS[1] lease key. ARGV[1] our value ("<replay id> <owner> <driver token> <host>:<pid>",
#: see requeue.replay.lease), ARGV[2] ttl ms, ARGV[3] (optional) a holder's value known to
#: be dead, taken over if it still holds the lease.
#: Returns "" when we hold it now, else the current holder's value.
ACQUIRE_LEASE = render(r"""
local cur = redis.call("GET", KEYS[1])
if not cur or cur == ARGV[1] or (ARGV[3] ~= nil and cur == ARGV[3]) then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return ""
end
return cur
""")

#: Delete the lease only if we hold it. KEYS[1] lease key, ARGV[1] our value. Returns 1/0.
RELEASE_LEASE = render(r"""
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
""")

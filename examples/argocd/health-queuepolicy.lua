-- Argo CD health check for requeue.dev/QueuePolicy.
-- Argo CD runs it with the live object in `obj` and reads hs.status and hs.message.
-- Written for Lua 5.1 (gopher-lua, Argo CD's runtime); runs unchanged on Lua 5.4.
--
-- The operator keeps a condition of type Healthy: True when every watched queue
-- is within its thresholds. Gates are reported apart (condition GatesPassed): a red
-- gate is an outage the policy is handling (pausing queues), not a broken policy.
--
--   Healthy=True                       Healthy
--   Healthy=False                      Degraded     message: the condition's message (which queue,
--                                                   which threshold or gate)
--   Healthy=Unknown, or no condition   Progressing  not evaluated yet
--   status.observedGeneration behind   Progressing  the operator has not evaluated the new spec yet
--     metadata.generation

local hs = {}

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = tonumber(obj.metadata.generation)
end
local observed = tonumber(status.observedGeneration or 0)
if generation > 0 and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to evaluate generation " .. string.format("%d", generation)
  return hs
end

local healthy = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Healthy" then
    healthy = condition
  end
end

if healthy == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the first evaluation"
  return hs
end

local detail = text(healthy.message)
if detail == "" then
  detail = text(healthy.reason)
end

if healthy.status == "True" then
  hs.status = "Healthy"
  hs.message = detail
elseif healthy.status == "False" then
  hs.status = "Degraded"
  hs.message = detail
else
  hs.status = "Progressing"
  if detail == "" then
    detail = "Health not known yet"
  end
  hs.message = detail
end
return hs

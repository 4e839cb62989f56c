-- Argo CD health check for requeue.dev/DLQReplay.
-- Argo CD runs it with the live object in `obj` and reads hs.status and hs.message.
-- Written for Lua 5.1 (gopher-lua, Argo CD's runtime); runs unchanged on Lua 5.4.
--
--   phase                                        health       why
--   (no status yet)                              Progressing  the operator has not seen it yet
--   Pending, WaitingForGates, Replaying,         Progressing  it is working; message shows progress
--     Verifying
--   Succeeded                                    Healthy
--   Failed                                       Degraded     message says why
--   Suspended (or spec.suspend while unfinished) Suspended    a person paused it on purpose
--   Cancelled                                    Degraded     cancelled or deleted before it finished: not every
--                                                             selected job was replayed, so a PostSync
--                                                             hook must fail, not pass
--   any other (a newer operator)                 Progressing  never fail a sync on a phase this
--                                                             script does not know yet
--
-- As a sync hook, Argo CD maps Healthy to success, Degraded to failure, and
-- Progressing or Suspended to "still running".

local hs = {}

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function describe(phase, status)
  local msg = phase
  local progress = text(status.progress)
  if progress ~= "" then
    msg = msg .. " " .. progress
  end
  local detail = text(status.message)
  if detail ~= "" then
    msg = msg .. ": " .. detail
  end
  return msg
end

local function red_gates(status)
  local names = {}
  if status.gates ~= nil then
    for _, gate in ipairs(status.gates) do
      if gate.healthy == false then
        table.insert(names, text(gate.name))
      end
    end
  end
  return table.concat(names, ", ")
end

local status = obj.status
local phase = ""
if status ~= nil then
  phase = text(status.phase)
end

if phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(phase, status)
  return hs
end

if phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = describe(phase, status)
  return hs
end

local suspend = obj.spec ~= nil and obj.spec.suspend == true
if phase == "Suspended" or suspend then
  hs.status = "Suspended"
  hs.message = describe("Suspended", status)
  return hs
end

if phase == "WaitingForGates" then
  hs.status = "Progressing"
  hs.message = describe(phase, status)
  local red = red_gates(status)
  if red ~= "" and text(status.message) == "" then
    hs.message = hs.message .. ": waiting for " .. red
  end
  return hs
end

hs.status = "Progressing"
if phase == "Pending" or phase == "Replaying" or phase == "Verifying" then
  hs.message = describe(phase, status)
else
  hs.message = describe("Unknown phase " .. phase, status)
end
return hs

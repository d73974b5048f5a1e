-- Argo CD health of floe resources (Project, Workspace, FineTuneJob, SnowflakeDeployment).
-- One script for all four kinds: register it under resource.customizations.health.floe.dev_<Kind>.
-- Reads the status every floe kind carries: observedGeneration, phase and a Ready condition.
local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local spec = obj.spec or {}
local status = obj.status
if status == nil then
  return {status = "Progressing", message = "Waiting for the floe operator"}
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return {status = "Progressing", message = "Waiting for the floe operator to observe generation " .. tostring(generation)}
end

local phase = status.phase or ""
local ready = condition(status, "Ready")
local message = phase
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  message = ready.message
end

-- Failures first: a failed job or deployment is Degraded even if something else looks fine.
local stalled = condition(status, "Stalled")
if phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  return {status = "Degraded", message = message}
end

if phase == "Succeeded" then
  return {status = "Healthy", message = message}
end

-- Paused by a person or a queue: a suspended job (Kueue), a stopped workspace, a deployment
-- waiting for governance approval.
if (obj.kind == "FineTuneJob" and spec.suspend == true) or (obj.kind == "Workspace" and spec.stopped == true)
    or phase == "Suspended" or phase == "Stopped" or phase == "WaitingForApproval" then
  return {status = "Suspended", message = message}
end

if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = message}
end
return {status = "Progressing", message = message}

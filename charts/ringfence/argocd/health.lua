-- Argo CD health of a ringfence.dev/v1alpha1 ConfigRollout, from its status.
-- Install as resource.customizations.health.ringfence.dev_ConfigRollout in argocd-cm.
local function condition(status, type)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil then
  return { status = "Progressing", message = "Waiting for the controller to report status" }
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return {
    status = "Progressing",
    message = string.format("Waiting for the controller to observe generation %d", generation),
  }
end

local message = status.message or ""
local valid = condition(status, "Valid")
if valid ~= nil and valid.status == "False" then
  return { status = "Degraded", message = message }
end
local phase = status.phase
if phase == "Succeeded" then
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.status == "True" then
    return { status = "Healthy", message = message }
  end
  -- Rolled out, but a target changed outside the rollout since.
  return { status = "Degraded", message = (ready and ready.message) or message }
end
if phase == "Paused" then
  return { status = "Suspended", message = message }
end
if phase == "RolledBack" or phase == "Failed" then
  return { status = "Degraded", message = message }
end
if phase == "Pending" or phase == "Progressing" or phase == "RollingBack" then
  return { status = "Progressing", message = message }
end
return { status = "Unknown", message = "Unknown phase " .. tostring(phase) }

-- Argo CD health check for rollback.lawyershub.io/RollbackRequest (docs/gitops.md).
-- Succeeded: Healthy. Failed or Aborted: Degraded. Anything else, a request the operator has
-- not written yet (no status) included: Progressing, with the request's own message.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the rollback operator to take the request (no status yet)"
  return hs
end
local phase = obj.status.phase
local message = obj.status.message or ""
if message ~= "" then
  message = phase .. ": " .. message
else
  message = phase
end
hs.message = message
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Aborted" then
  hs.status = "Degraded"
else
  -- Pending, Queued, Running, AwaitingApproval (the message names the approval awaited),
  -- Monitoring.
  hs.status = "Progressing"
end
return hs

-- Argo CD health of keyward's kinds: ApiKey, ApiKeyPool and ProviderCredential
-- (keyward.dev). Argo CD runs it with `obj` set to the live object and reads the table it
-- returns. Written for Lua 5.1, which Argo CD's interpreter implements.
--
-- keyward's conditions follow kstatus: `Ready` (True, False or Unknown, with a reason)
-- computed from `observedGeneration`. Until the status speaks for the current generation,
-- the object is Progressing.
local hs = { status = "Progressing", message = "waiting for keyward to act on this generation" }

-- Ready=False reasons that mean "keyward is still working on it".
local working = { Progressing = true, Depleted = true }

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c)
  local reason = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

local status = obj.status
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if status == nil then
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return hs
end
local ready = find(status.conditions, "Ready")
if ready == nil then
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready)
  local advisory = find(status.conditions, "Advisory")
  if advisory ~= nil and advisory.status == "True" then
    hs.message = hs.message .. " (advisory " .. text(advisory) .. ")"
  end
elseif ready.status == "False" then
  if obj.kind == "ApiKey" and ready.reason == "Disabled" then
    -- Disabled on purpose (spec.disabled): the verifier refuses the key until re-enabled.
    hs.status = "Suspended"
  elseif working[ready.reason] then
    hs.status = "Progressing"
  else
    hs.status = "Degraded"
  end
  hs.message = text(ready)
else
  hs.status = "Progressing"
  hs.message = text(ready)
end
return hs

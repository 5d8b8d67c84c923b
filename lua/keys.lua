--- sluice.keys: API keys. A key is "sk_<id>_<secret>": 6 random bytes of
--- id (12 hex digits, the record's name in the store) and 32 random bytes
--- of secret, both from the OS random source. The store keeps only the
--- SHA-256 of the secret (OpenSSL's libcrypto), in "api_keys": id -> {name,
--- namespace, role, hash, created_at}; a presented key is checked by
--- hashing its secret and comparing in constant time. The time of last use
--- is kept apart ("meta" key_used\0<id>, written at most once a minute per
--- key) so that serve never rewrites a key record the CLI may be revoking.
---
--- `sluice keys add/list/revoke` write the store directly, also while a
--- serve runs (LMDB serializes the two writers); serve reads keys from the
--- store on every request, so a revoked key stops working at once.
local clock = require "sluice._clock"
local store = require "sluice._store"
local json = require "sluice._codec" -- store records: exact
local crypto = require "sluice._crypto"

local M = {}

M.ROLES = { reader = true, runner = true, admin = true }

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

-- compared against when the id is unknown, so that an unknown id costs the
-- same hashing and comparison as a known one
local DUMMY = crypto.sha256("sluice: no such key")

-- "meta" api_keys holds how many keys exist, moved in the commit that adds
-- or removes one: the check on every request is one lookup
local function count()
  return tonumber(store.raw_get("meta", "api_keys") or "0")
end

--- Whether any key exists (then the API needs one).
function M.any()
  return store.raw_get("meta", "api_keys") ~= nil
end

--- Every key record, by name, with last_used_at.
function M.list()
  local ids, vals = store.raw_scan("api_keys", "")
  local out = {}
  for i, id in ipairs(ids or {}) do
    local rec = json.decode(vals[i])
    rec.id = id
    rec.hash = nil
    rec.last_used_at = store.raw_get("meta", "key_used\0" .. id)
    out[#out + 1] = rec
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function find(name)
  local ids, vals = store.raw_scan("api_keys", "")
  for i, id in ipairs(ids or {}) do
    local rec = json.decode(vals[i])
    if rec.name == name then return id, rec end
  end
end

--- Adds a key; returns the key text (shown once, never stored) and its
--- record, or nil, message.
function M.add(name, namespace, role)
  if type(name) ~= "string" or not name:match("^[%w][%w_.@-]*$") or #name > 64 then
    return nil, ("key name %q: use 1 to 64 letters, digits and _ . @ - (starting with a letter or digit)"):format(tostring(name))
  end
  if not M.ROLES[role] then return nil, ("--role must be admin, runner or reader, got %s"):format(tostring(role)) end
  if find(name) then return nil, ("a key named %s exists already: revoke it first or choose another name"):format(name) end
  local id = hex(crypto.random(6))
  local secret = hex(crypto.random(32))
  local rec = { name = name, namespace = namespace, role = role, hash = crypto.sha256(secret),
    created_at = clock.iso(clock.now()) }
  local ok, err, code = store.raw_commit({ "api_keys", id, json.encode(rec), "meta", "api_keys", tostring(count() + 1) })
  if not ok then return nil, ("storing the key: %s"):format(err) end
  return ("sk_%s_%s"):format(id, secret), rec
end

--- Removes the key named name. Returns true, or nil, message.
function M.revoke(name)
  local id = find(name)
  if not id then return nil, ("no key named %s"):format(tostring(name)) end
  local left = count() - 1
  local ok, err, code = store.raw_commit({ "api_keys", id, false, "meta", "key_used\0" .. id, false,
    "meta", "api_keys", left > 0 and tostring(left) or false })
  if not ok then return nil, ("revoking the key: %s"):format(err) end
  return true
end

--- The record of a presented key, or nil.
function M.verify(key)
  local id, secret = key:match("^sk_(%x+)_(%x+)$")
  local raw = id and #id == 12 and store.raw_get("api_keys", id)
  local rec = raw and json.decode(raw)
  local ok = crypto.equal(crypto.sha256(secret or key), rec and rec.hash or DUMMY)
  if not (ok and rec) then return nil end
  rec.id = id
  return rec
end

local flushed = {} -- id -> when last_used was last written (us)

--- Notes that a key was used (written at most once a minute).
function M.touch(rec)
  local now = clock.now()
  if (flushed[rec.id] or 0) > now - 60000000 then return end
  flushed[rec.id] = now
  local sched = require "sluice.sched"
  sched.spawn({}, store.raw_commit, function() end, { "meta", "key_used\0" .. rec.id, clock.iso(now) })
end

return M

--- sluice.keys: API keys. A key is "sk_<id>_<secret>": 6 random bytes of
--- id (12 hex digits, the record's name in the store) and 32 random bytes
--- of secret, both from the OS random source. The store keeps only the
--- SHA-256 of the secret (OpenSSL's libcrypto), in the key's record (by id:
--- {name, namespace, role, hash, created_at}, sluice._store); a presented
--- key is checked by hashing its secret and comparing in constant time. The
--- time of last use is a separate mark (written at most once a minute per
--- key) so that serve never rewrites a key record the CLI may be revoking.
---
--- `sluice keys add/list/revoke` write the store directly, also while a
--- serve runs (LMDB serializes the two writers); serve reads keys from the
--- store on every request, so a revoked key stops working at once.
local clock = require "sluice._clock"
local store = require "sluice._store"
local crypto = require "sluice._crypto"

local M = {}

M.ROLES = { reader = true, runner = true, admin = true }

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

-- compared against when the id is unknown, so that an unknown id costs the
-- same hashing and comparison as a known one
local DUMMY = crypto.sha256("sluice: no such key")

-- a read of the store that failed: raised (never "no key", which would
-- open the API)
local function must(v, err)
  if err then error(("reading API keys: %s"):format(err), 0) end
  return v
end

--- Whether any key exists (then the API needs one): one lookup.
function M.any()
  return must(store.key_count()) > 0
end

local function all() return must(store.keys()) end
local function get(id) return must(store.key(id)) end

--- Every key record (id and last_used_at, no hash), by name.
function M.list()
  local out = all()
  for _, rec in ipairs(out) do rec.hash = nil end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function find(name)
  for _, rec in ipairs(all()) do
    if rec.name == name then return rec.id, rec end
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
  if get(id) then
    return nil, "the random key id exists already (1 in 2^48): run the command again"
  end
  local secret = hex(crypto.random(32))
  local rec = { name = name, namespace = namespace, role = role, hash = crypto.sha256(secret),
    created_at = clock.iso(clock.now()) }
  local ok, err = store.batch():add_key(id, rec):commit()
  if not ok then return nil, ("storing the key: %s"):format(err) end
  return ("sk_%s_%s"):format(id, secret), rec
end

--- Removes the key named name. Returns true, or nil, message.
function M.revoke(name)
  local id = find(name)
  if not id then return nil, ("no key named %s"):format(tostring(name)) end
  local ok, err = store.batch():revoke_key(id):commit()
  if not ok then return nil, ("revoking the key: %s"):format(err) end
  return true
end

--- The record of a presented key, or nil.
function M.verify(key)
  local id, secret = key:match("^sk_(%x+)_(%x+)$")
  local rec = id and #id == 12 and get(id) or nil
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
  sched.spawn({}, function() return store.batch():touch_key(rec.id, clock.iso(now)):commit() end, function() end)
end

return M

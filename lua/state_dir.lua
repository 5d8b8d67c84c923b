--- sluice.state_dir: where the files of one host of a store live: the writer
--- lock (who writes the store from this machine: serve, or a foreground run)
--- and the control socket (DESIGN §7). An LMDB store keeps them in its own
--- directory. A PostgreSQL store has none, so they live in a state directory
--- of this machine: --state-dir DIR, else $SLUICE_STATE_DIR, else
--- $XDG_RUNTIME_DIR/sluice/<key> (without it /tmp/sluice-<uid>/<key>), <key>
--- being a hash of the store's URL without its password. The default makes
--- every command of one user that names the same URL on this machine find
--- the same serve, whatever the working directory; a second host of one
--- database on the same machine passes its own --state-dir.
local uv = require "luv"

local M = {}

local function is_url(s) return require("sluice.pg_schema").is_url(s) end

--- The URL without a password (user:secret@ and password=... dropped): what
--- the default directory's key is made from, and what may be shown.
function M.public_url(url)
  return (url:gsub("^(%a[%w+.-]*://[^/@:]*):[^@/]*@", "%1@"):gsub("([?&]password=)[^&]*", "%1"))
end

local function default_for(url)
  local key = require("sluice._ids").hash(M.public_url(url))
  local runtime = os.getenv("XDG_RUNTIME_DIR")
  if runtime and runtime ~= "" then return runtime .. "/sluice/" .. key, runtime .. "/sluice" end
  local base = ("/tmp/sluice-%d"):format(uv.getuid())
  return base .. "/" .. key, base
end

--- The state directory for store target (a directory or a PostgreSQL URL)
--- and the --state-dir given (or nil): dir, or nil and why. An LMDB store's
--- is its own directory: --state-dir is refused there ($SLUICE_STATE_DIR,
--- set for a PostgreSQL store, is ignored).
function M.of(target, given)
  if not is_url(target) then
    if given then
      return nil, ("--state-dir is for a PostgreSQL store: the LMDB store %s keeps its writer lock and "
        .. "control socket in its own directory"):format(target)
    end
    return target
  end
  local dir = given or os.getenv("SLUICE_STATE_DIR")
  if dir == "" then dir = nil end
  return dir or (default_for(target))
end

-- mkdir with mode 0700 unless it exists; true or nil, why
local function mkdir(path)
  local ok, err, code = uv.fs_mkdir(path, tonumber("700", 8))
  if ok or code == "EEXIST" then return true end
  return nil, ("cannot create the state directory %s: %s"):format(path, err)
end

--- Makes sure the state directory of target exists, before a lock is taken
--- in it; creates it (mode 0700; with its parent for the default one, a
--- shared /tmp parent owned by this user and closed to others). An LMDB
--- store's directory is made by the store itself. true or nil, why.
function M.ensure(target, dir)
  if not is_url(target) or uv.fs_stat(dir) then return true end
  local default, base = default_for(target)
  if dir == default then
    local ok, err = mkdir(base)
    if not ok then return nil, err end
    -- /tmp is everybody's: the directory must be this user's and no one else's
    local st = uv.fs_lstat(base)
    if not st or st.type ~= "directory" or st.uid ~= uv.getuid() or st.mode & tonumber("077", 8) ~= 0 then
      return nil, ("%s is not a directory of this user closed to others: pass --state-dir DIR "
        .. "(or SLUICE_STATE_DIR) for the writer lock and control socket"):format(base)
    end
  end
  return mkdir(dir)
end

return M

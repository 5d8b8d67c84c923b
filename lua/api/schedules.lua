--- sluice.api.schedules: schedules over HTTP (filled in below).
local M = {}
function M.load_stored() end
return M

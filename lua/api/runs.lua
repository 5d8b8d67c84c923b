--- sluice.api.runs: runs over HTTP (filled in below).
return {}

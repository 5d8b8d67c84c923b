-- wrk script: POST /runs/three with a small input
wrk.method, wrk.body = "POST", '{"n": 1}'
wrk.headers["Content-Type"] = "application/json"

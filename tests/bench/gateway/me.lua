-- wrk -s me.lua: GET /v1/users/me with the bearer token in $TOKEN
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

-- wrk -s check.lua: POST /v1/permissions:check for the caller ($USER_ID) with the token in $TOKEN
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"user_id":"%s","permission":"users:read"}', os.getenv("USER_ID"))

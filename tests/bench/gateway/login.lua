-- wrk -s login.lua: POST /v1/auth/login with $EMAIL / $PASSWORD
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}', os.getenv("EMAIL"), os.getenv("PASSWORD"))

-- wrk -s login.lua: POST /v1/auth/login with $EMAIL / $PASSWORD; prints the count of each status
-- (fast refusals would otherwise pass for throughput).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}', os.getenv("EMAIL"), os.getenv("PASSWORD"))

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do
      total[s] = (total[s] or 0) + n
    end
  end
  local parts = {}
  for s, n in pairs(total) do
    table.insert(parts, string.format("%d x%d", s, n))
  end
  table.sort(parts)
  io.write("  statuses: " .. table.concat(parts, ", ") .. "\n")
end

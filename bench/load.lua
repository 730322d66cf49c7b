-- wrk script for every scenario; the harness sets BENCH_SCENARIO and BENCH_PATHS
-- (space-separated request paths). done() prints one JSON line the harness parses.

local scenario = os.getenv("BENCH_SCENARIO") or "get"
local paths = {}
for path in string.gmatch(os.getenv("BENCH_PATHS") or "/", "%S+") do
   paths[#paths + 1] = path
end
local reads = {}
for path in string.gmatch(os.getenv("BENCH_READ_PATHS") or "", "%S+") do
   reads[#reads + 1] = path
end

local json = { ["Content-Type"] = "application/json" }
local minimal = { ["Content-Type"] = "application/json", ["Prefer"] = "return=minimal" }
local message = '{"author_type": "customer", "content": "Hello, I need help with my order."}'
local counter = 0

function init(args)
   -- Threads start at different offsets so they do not all hit the same session.
   counter = math.random(1, 1000)
end

local function next_path()
   counter = counter + 1
   return paths[(counter % #paths) + 1]
end

function request()
   if scenario == "post_session" then
      return wrk.format("POST", "/sessions", json, "{}")
   elseif scenario == "post_message" then
      return wrk.format("POST", next_path(), json, message)
   elseif scenario == "post_message_minimal" then
      return wrk.format("POST", next_path(), minimal, message)
   elseif scenario == "mixed" then
      -- 70 % reads (pages and sessions), 30 % writes (minimal message posts).
      if math.random() < 0.3 then
         return wrk.format("POST", next_path(), minimal, message)
      end
      return wrk.format("GET", reads[math.random(1, #reads)])
   else
      return wrk.format("GET", next_path())
   end
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors_connect": %d, "errors_read": %d, "errors_write": %d, ' ..
      '"errors_status": %d, "errors_timeout": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end

-- wrk script of the flooding customer (bench/flood.py): the same message posted to
-- BENCH_FLOOD_PATH with the customer's token BENCH_FLOOD_TOKEN, as fast as the server
-- answers. done() prints one JSON line with the count of each status.

wrk.method = "POST"
wrk.path = os.getenv("BENCH_FLOOD_PATH")
wrk.body = '{"author_type": "customer", "content": "Is anyone there? Is anyone there?"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Prefer"] = "return=minimal"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_FLOOD_TOKEN")

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(counts) do
      parts[#parts + 1] = string.format('"%d": %d', status, count)
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_FLOOD {"requests": %d, "duration_us": %d, "statuses": {%s}, ' ..
      '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_timeout": %d, ' ..
      '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, table.concat(parts, ", "),
      errors.connect, errors.read, errors.write, errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end

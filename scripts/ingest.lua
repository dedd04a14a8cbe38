-- Durable ingest over HTTP: every request POSTs one deposit of 1 USDC to /v1/events with a
-- unique Idempotency-Key, spread over 100 accounts (`ingest-0` ... `ingest-99`).
--
--   PMARGIN_KEY=<admin key> wrk -t1 -c100 -d30s -s scripts/ingest.lua http://127.0.0.1:8080
--
-- Each response is an acknowledgement: the deposit is in the committed (fsynced) event log.
-- At the end it prints the acknowledged count and any non-2xx answers.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  key = os.getenv("PMARGIN_KEY") or args[1]
  if key == nil then
    error("set PMARGIN_KEY to an admin API key")
  end
  -- Unique across runs against the same data directory and across threads.
  prefix = string.format("ingest-%d-%d-%d", os.time(), math.floor(os.clock() * 1e6), id)
  counter = 0
  acked = 0
  errors = 0
  headers = {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
  }
end

function request()
  counter = counter + 1
  headers["Idempotency-Key"] = prefix .. "-" .. counter
  local body = '{"type":"deposit","account":"ingest-' .. (counter % 100) ..
      '","asset":"USDC","amount":1}'
  return wrk.format("POST", "/v1/events", headers, body)
end

function response(status, hdrs, body)
  if status == 200 then
    acked = acked + 1
  else
    errors = errors + 1
    if errors <= 3 then
      io.stderr:write("status " .. status .. ": " .. body .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local a, e = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("acked")
    e = e + t:get("errors")
  end
  local secs = summary.duration / 1e6
  io.write(string.format("acknowledged events: %d (%.0f events/s), non-2xx: %d, socket errors: %d\n",
    a, a / secs, e,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("latency p50 %.2f ms, p99 %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end

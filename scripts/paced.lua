-- Paced reads: every connection waits PACE_MS (default 10) between its requests, so 100
-- connections are 100 clients each reading about 100 times a second (an open load of about
-- 10,000 requests/s) instead of as fast as the server answers. The latency of each request is
-- then its service time plus whatever queueing the offered load causes, not the queue that a
-- saturating closed loop builds by construction (Little's law: latency = clients / throughput).
--
--   PMARGIN_KEY=<key> PACE_MS=10 wrk -t1 -c100 -d30s --latency -s scripts/paced.lua URL/v1/accounts/ID

function init(args)
  local key = os.getenv("PMARGIN_KEY")
  if key == nil then
    error("set PMARGIN_KEY to an API key")
  end
  wrk.headers["Authorization"] = "Bearer " .. key
  pace = tonumber(os.getenv("PACE_MS") or "10")
end

function delay()
  return pace
end

-- Paced reads: every connection waits PACE_MS on average (default 10) between an answer and
-- its next request, so 100 connections are 100 clients each reading about 1000 / PACE_MS times
-- a second, not as fast as the server answers. The latency of each request is then its service
-- time plus whatever queueing the offered load causes, not the queue that a zero-think-time
-- closed loop builds by construction (Little's law: latency = clients / throughput).
--
--   PMARGIN_KEY=<key> PACE_MS=10 wrk -t1 -c100 -d30s --latency -s scripts/paced.lua URL/v1/accounts/ID

function init(args)
  local key = os.getenv("PMARGIN_KEY")
  if key == nil then
    error("set PMARGIN_KEY to an API key")
  end
  wrk.headers["Authorization"] = "Bearer " .. key
  pace = tonumber(os.getenv("PACE_MS") or "10")
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

-- Uniform on [0, 2 x PACE_MS]: the mean is the pace, and the connections do not fall into
-- step (wrk's timers tick in whole milliseconds, so a fixed delay would send all 100 requests
-- in the same millisecond, a burst no population of independent clients makes).
function delay()
  return math.random(0, 2 * pace)
end

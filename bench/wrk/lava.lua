-- wrk script: every request is a unique, correctly signed event. Body i is the template joined with i % 997 and i;
-- its signature is the i-th 64-hex-digit record of the signatures file. Thread t sends i = offset + t, + threads, ...
-- Arguments (after --): mode (lava | github) sigs-file template-file threads offset
local threads = {}

-- Paced mode (BENCH_RATE set, requests/s over all threads): requests leave on a Poisson schedule at that rate (each
-- thread keeps its own share: exponential gaps of mean threads / rate) and whichever connection is free takes the next
-- departure, so the offered rate does not fall as latency grows. A schedule that fell behind (every connection busy,
-- or wrk itself held up) is caught up at once, as senders with their own clocks would: the offered total stays rate ×
-- duration unless the connections run out. wrk measures a request's latency from when it is written, so the wait is
-- not counted. Defined only when set: wrk schedules a timer per request for any script that has a delay function.
local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate and rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk, bench_timespec *ts);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local next_at = nil
  function delay()
    local now = now_ms()
    if next_at == nil then next_at = now end
    local wait = next_at - now
    next_at = next_at + -math.log(1 - math.random()) * 1000 * step / rate
    if wait <= 0 then return 0 end
    return math.floor(wait + 0.5)
  end
end

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  local f = assert(io.open(args[2], "rb"))
  sigs = f:read("*a")
  f:close()
  total = math.floor(#sigs / 64)
  local t = assert(io.open(args[3], "rb"))
  parts = {}
  for line in t:lines() do table.insert(parts, line) end
  t:close()
  step = tonumber(args[4])
  i = tonumber(args[5]) + tid
  wrapped = 0
  math.randomseed(os.time() * 16 + tid)
  -- The request line and fixed headers, built once: wrk.format walks a header table with pairs() and
  -- string.format for every request, which LuaJIT cannot compile and which made wrk the bottleneck.
  local host = wrk.headers["Host"] or (wrk.host .. ":" .. wrk.port)
  head = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nContent-Type: application/json\r\n"
  if mode == "github" then
    head = head .. "X-GitHub-Event: ping\r\nX-Hub-Signature-256: sha256="
  else
    head = head .. "X-Webhook-Signature: "
  end
  -- os.clock() is the CPU time of the whole wrk process: what loading took is left out of the run's figure.
  init_cpu = os.clock()
end

function request()
  if i >= total then
    -- Out of unique events: start again (counted, so the runner can report the duplicates).
    i = i % total
    wrapped = wrapped + 1
  end
  local n = i
  i = i + step
  local b = parts[1] .. (n % 997) .. parts[2] .. n .. parts[3]
  local sig = string.sub(sigs, n * 64 + 1, n * 64 + 64)
  if mode == "github" then
    return head .. sig .. "\r\nX-GitHub-Delivery: " .. n .. "\r\nContent-Length: " .. #b .. "\r\n\r\n" .. b
  end
  return head .. sig .. "\r\nContent-Length: " .. #b .. "\r\n\r\n" .. b
end

function done(summary, latency, requests)
  local e = summary.errors
  -- wrk's own CPU seconds during the run (all its threads): tells whether the generator was the bottleneck.
  local start = 0
  for _, t in ipairs(threads) do start = math.max(start, t:get("init_cpu") or 0) end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"cpu_s":%.3f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, os.clock() - start))
end

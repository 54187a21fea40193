-- wrk script: every request is a unique, correctly signed event. Body i is the template joined with i % 997 and i;
-- its signature is the i-th 64-hex-digit record of the signatures file. Thread t sends i = offset + t, + threads, ...
-- Arguments (after --): mode (lava | github) sigs-file template-file threads offset
local threads = {}

-- Paced mode (BENCH_PACE_MS set): each connection waits a random 0 to 2 × BENCH_PACE_MS ms before each request, so
-- the offered rate is about connections / pace and latency is measured below saturation. wrk measures a request's
-- latency from when it is written, so the wait is not counted. Defined only when set: wrk schedules a timer per
-- request for any script that has a delay function.
local pace = tonumber(os.getenv("BENCH_PACE_MS") or "")
if pace and pace > 0 then
  function delay()
    return math.floor(math.random() * 2 * pace + 0.5)
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
    return wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["X-Hub-Signature-256"] = "sha256=" .. sig,
      ["X-GitHub-Event"] = "ping",
      ["X-GitHub-Delivery"] = tostring(n),
    }, b)
  end
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json", ["X-Webhook-Signature"] = sig }, b)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

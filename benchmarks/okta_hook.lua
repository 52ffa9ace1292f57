-- wrk script: POST Okta event hook deliveries, every event with a uuid of its own.
-- wrk ... -s okta_hook.lua URL -- RUNTAG EVENTS SECRET GROUP_ID ACK_DIR
-- Event uuid: RUNTAG-TTTT-JJJJ-4000-CCCCCCCCCCCC (thread, event index, request counter);
-- the delivery's eventId: RUNTAG-TTTT-ffff-4000-CCCCCCCCCCCC. Each thread writes the eventId
-- of every delivery answered 200 to ACK_DIR/acked-TTTT.txt, for the durability check.
-- Latencies are printed in microseconds as one line: BENCH <key>=<value> ...

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  runtag, events, secret, group, ackdir = args[1], tonumber(args[2]), args[3], args[4], args[5]
  counter = 0
  acked = io.open(string.format("%s/acked-%04x.txt", ackdir, tid), "w")
  acked:setvbuf("line")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = secret
end

local function event(uuid, published)
  return '{"uuid":"' .. uuid .. '","published":"' .. published .. '",'
    .. '"eventType":"group.user_membership.remove","outcome":{"result":"SUCCESS"},'
    .. '"target":[{"id":"00u' .. uuid:gsub("-", ""):sub(1, 17) .. '","type":"User",'
    .. '"alternateId":"u-' .. uuid .. '@acme.example","displayName":"Bench User"},'
    .. '{"id":"' .. group .. '","type":"UserGroup","displayName":"eng-oncall"}]}'
end

function request()
  counter = counter + 1
  local published = os.date("!%Y-%m-%dT%H:%M:%S.000Z")
  local parts = {}
  for j = 0, events - 1 do
    parts[#parts + 1] = event(
      string.format("%s-%04x-%04x-4000-%012x", runtag, tid, j, counter), published)
  end
  local body = '{"eventType":"com.okta.event_hook","eventTypeVersion":"1.0",'
    .. '"eventId":"' .. string.format("%s-%04x-ffff-4000-%012x", runtag, tid, counter) .. '",'
    .. '"data":{"events":[' .. table.concat(parts, ",") .. ']}}'
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  if status == 200 then
    local id = body:match('"eventId":"([^"]+)"')
    if id then acked:write(id, "\n") end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d "
    .. "connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end

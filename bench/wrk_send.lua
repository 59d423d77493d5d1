-- POST /v1/vn/send with realistic, mixed bodies, and print figures as one JSON line.
--   60% short GSM-7 (1 part), 20% long GSM-7 (3 parts), 20% UCS-2 (2 parts).
-- Env: SEND_KEY, SEND_FROM (required); SEND_DLR (optional urlDlr);
--      SEND_LIMIT (optional): stop each thread after that many answers (LIMIT / threads each).
local key = os.getenv("SEND_KEY")
local from = os.getenv("SEND_FROM")
local dlr = os.getenv("SEND_DLR") or ""
local limit = tonumber(os.getenv("SEND_LIMIT") or "0")

local short = "Votre code de confirmation est 482913. Il expire dans 10 minutes."
local long = string.rep("Bonjour, votre colis n12345 sera livre demain entre 9h et 12h. ", 6)
long = string.sub(long, 1, 450)                     -- 450 GSM-7 chars = 3 parts
local ucs2 = "Привет! Ваш заказ №4821 готов к выдаче. Спасибо, что выбрали нас 🙂 " ..
             "Ответьте СТОП, чтобы отписаться."    -- > 70 UCS-2 units = 2 parts

local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function escape(s) return (s:gsub('\\', '\\\\'):gsub('"', '\\"')) end

function init(args)
  n, ok, bad, answered = 0, 0, 0, 0
  per_thread = 0
  if limit > 0 then per_thread = math.ceil(limit / tonumber(os.getenv("SEND_THREADS") or "1")) end
end

function request()
  n = n + 1
  local r = n % 10
  local text
  if r < 6 then text = short elseif r < 8 then text = long else text = ucs2 end
  local to = string.format("06%08d", (id * 1000003 + n) % 100000000)
  local extra = ""
  if dlr ~= "" then extra = ',"urlDlr":"' .. dlr .. '"' end
  local body = '{"apiKey":"' .. key .. '","to":"' .. to .. '","from":"' .. from ..
               '","message":"' .. escape(text) .. '"' .. extra .. '}'
  return wrk.format("POST", "/v1/vn/send", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status == 200 and string.find(body, '"success":true', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 3 then io.stderr:write("bad answer " .. status .. ": " .. string.sub(body, 1, 200) .. "\n") end
  end
  if per_thread > 0 and answered >= per_thread then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local ok_total, bad_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    bad_total = bad_total + (t:get("bad") or 0)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests": %d, "accepted": %d, "refused": %d, "duration_s": %.3f, "rps": %.1f, ' ..
    '"accepted_per_s": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, "max_ms": %.3f, ' ..
    '"socket_errors": %d}\n',
    summary.requests, ok_total, bad_total, secs, summary.requests / secs, ok_total / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, e.connect + e.read + e.write + e.timeout))
end

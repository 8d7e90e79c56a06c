-- wrk script for bench/hub.sh: durable HTTP publishes to the plexus hub.
--
--   wrk -t1 -c64 -d11s -s bench/peers/hub-publish.lua http://127.0.0.1:PORT \
--       -- CHANNEL TAIL_CHANNEL SECONDS
--
-- POSTs a small JSON body to /api/channels/CHANNEL/messages for SECONDS, then to
-- /api/channels/TAIL_CHANNEL/messages until wrk stops (SECONDS <= 0: CHANNEL only).
-- wrk stops abruptly: requests in flight at that moment get no response, yet the
-- server may still commit them. Switching to the tail channel a little before the
-- end keeps every CHANNEL request answered, so the number of messages stored in
-- CHANNEL must equal the number of 201s counted for it here. The tail requests
-- are the same work, so wrk's rate and latency cover all of them.
--
-- Each thread counts responses per status and, for 201s, per channel (the 201
-- body names the channel). done() prints one line for the script:
--   HUBWRK key=value ...
-- sent_main/sent_tail count request() calls; wrk makes one extra call on thread 0
-- before the run (to check for pipelining), so sent_main is one above the requests
-- actually sent. The check uses main201, not sent_main.

local have_ffi, ffi = pcall(require, "ffi")
local now = os.time -- 1 s resolution: the fallback without LuaJIT's ffi
if have_ffi then
    ffi.cdef([[
        typedef struct { long tv_sec; long tv_nsec; } hubwrk_timespec;
        int clock_gettime(int clk, hubwrk_timespec *ts);
    ]])
    local ts = ffi.new("hubwrk_timespec")
    now = function()
        ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
        return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
    end
end

local threads = {}

function setup(thread)
    threads[#threads + 1] = thread
end

function init(args)
    channel = args[1] or "bench"
    tail = args[2] or (channel .. "-tail")
    local secs = tonumber(args[3] or "0") or 0
    local headers = { ["Content-Type"] = "application/json" }
    local body = '{"text":"hub bench","n":42}'
    req_main = wrk.format("POST", "/api/channels/" .. channel .. "/messages", headers, body)
    req_tail = wrk.format("POST", "/api/channels/" .. tail .. "/messages", headers, body)
    deadline = secs > 0 and now() + secs or nil
    main_mark = '"channel":"' .. channel .. '"'
    sent_main, sent_tail, main201, tail201 = 0, 0, 0, 0
    statuses = {}
end

function request()
    if deadline == nil or now() < deadline then
        sent_main = sent_main + 1
        return req_main
    end
    sent_tail = sent_tail + 1
    return req_tail
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if status == 201 then
        if string.find(body, main_mark, 1, true) then
            main201 = main201 + 1
        else
            tail201 = tail201 + 1
        end
    end
end

function done(summary, latency, requests)
    local sum = { sent_main = 0, sent_tail = 0, main201 = 0, tail201 = 0 }
    local st = {}
    for _, t in ipairs(threads) do
        for k in pairs(sum) do
            sum[k] = sum[k] + (t:get(k) or 0)
        end
        for code, n in pairs(t:get("statuses") or {}) do
            st[code] = (st[code] or 0) + n
        end
    end
    local codes, parts, other = {}, {}, 0
    for code in pairs(st) do
        codes[#codes + 1] = code
    end
    table.sort(codes)
    for _, code in ipairs(codes) do
        parts[#parts + 1] = code .. ":" .. st[code]
        if code ~= 201 then
            other = other + st[code]
        end
    end
    local e = summary.errors
    io.write(string.format(
        "HUBWRK channel=%s main201=%d tail201=%d sent_main=%d sent_tail=%d non201=%d statuses=%s "
            .. "requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d "
            .. "err_connect=%d err_read=%d err_write=%d err_timeout=%d clock=%s\n",
        threads[1] and threads[1]:get("channel") or "?", sum.main201, sum.tail201, sum.sent_main,
        sum.sent_tail, other, #parts > 0 and table.concat(parts, ",") or "none", summary.requests,
        summary.duration, latency:percentile(50), latency:percentile(99), latency.max, e.connect,
        e.read, e.write, e.timeout, have_ffi and "ffi" or "os.time"))
end

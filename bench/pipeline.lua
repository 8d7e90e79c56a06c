-- wrk script: HTTP/1.1 pipelining, as in TechEmpower's plaintext test. Every
-- write carries DEPTH copies of the request (wrk counts each response).
--   wrk -s bench/pipeline.lua URL -- 16
-- The depth comes from the script argument, else $PIPELINE, else 16.
local depth = 16

init = function(args)
    depth = tonumber(args[1]) or tonumber(os.getenv("PIPELINE") or "") or 16
    local r = {}
    for i = 1, depth do
        r[i] = wrk.format()
    end
    req = table.concat(r)
end

request = function()
    return req
end

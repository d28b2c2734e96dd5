-- Closed-loop load on `banditroute serve` for experiments/bench_service.py.
--
--   wrk -s load.lua URL -- route <bodies file> <decision id file>
--   wrk -s load.lua URL -- feedback <bodies file>
--
-- Each request sends the next line of the bodies file as its JSON body, wrapping
-- around at the end. On /route, the decision id of each response goes to the id file.
-- On /feedback, answers are counted as accepted or duplicate. At the end one JSON
-- line reports the requests, the duration, the failures and the latency at 1,000
-- evenly spaced quantiles, so that runs against several server processes can be
-- merged.

local threads = {}
local mode
local bodies = {}
local sent = 0
local id_file

-- Globals, so that done() can read them from each thread with thread:get.
accepted = 0
duplicates = 0

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    mode = args[1]
    for line in io.lines(args[2]) do
        bodies[#bodies + 1] = line
    end
    if mode == "route" then
        id_file = io.open(args[3], "w")
        id_file:setvbuf("line")
    end
end

function request()
    sent = sent + 1
    local body = bodies[(sent - 1) % #bodies + 1]
    local headers = { ["Content-Type"] = "application/json" }
    return wrk.format("POST", "/" .. mode, headers, body)
end

function response(status, headers, body)
    if status ~= 200 then
        return
    end
    if mode == "route" then
        id_file:write(body:match('"decision_id":"([^"]+)"'), "\n")
    elseif body:find('"duplicate":false', 1, true) then
        accepted = accepted + 1
    else
        duplicates = duplicates + 1
    end
end

function done(summary, latency, requests)
    local accepted_total, duplicate_total = 0, 0
    for _, thread in ipairs(threads) do
        accepted_total = accepted_total + (thread:get("accepted") or 0)
        duplicate_total = duplicate_total + (thread:get("duplicates") or 0)
    end

    local quantiles = {}
    for i = 1, 1000 do
        quantiles[i] = latency:percentile((i - 0.5) / 10)
    end

    local errors = summary.errors
    io.write(string.format(
        '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
            .. '"accepted": %d, "duplicates": %d, "latency_us": [%s]}\n',
        summary.requests,
        summary.duration,
        errors.status,
        errors.connect + errors.read + errors.write + errors.timeout,
        accepted_total,
        duplicate_total,
        table.concat(quantiles, ",")
    ))
end

-- wrk script for bench/run_http.sh: HTTP/1.1 pipelining, 16 `GET /` requests per
-- write (after wrk's own scripts/pipeline.lua). The 16 requests are formatted once,
-- in init, and request() hands the same string back for every write.
--
-- Usage: wrk -s bench/wrk/pipeline.lua URL   (the requests go to URL's path)

local depth = 16
local batch

init = function(args)
    local requests = {}
    for i = 1, depth do
        requests[i] = wrk.format("GET", "/")
    end
    batch = table.concat(requests)
end

request = function()
    return batch
end

-- wrk records one latency per write here: from the write of the 16 requests to the
-- last of their responses. Its report then "corrects" the histogram for coordinated
-- omission with an interval per request (duration / (requests / connections)) while
-- the samples are per batch of 16, and sums the result from the lowest recorded sample
-- up, missing the synthetic samples it put below it: its pipelined percentiles come
-- out wrong (often a p99 of 0). done() undoes that correction (it added the count of
-- each bucket n to the buckets n - k*interval above interval, so the recorded count of
-- bucket m is D[m] - D[m + interval]) and prints the percentiles of the batch round
-- trips as recorded, in a line bench/run_http.sh parses:
--   batch-latency samples=N p50_us=X p90_us=Y p99_us=Z max_us=W
-- WRK_CONNECTIONS must be wrk's -c (default 50).
done = function(summary, latency, requests)
    local connections = tonumber(os.getenv("WRK_CONNECTIONS") or "50")
    local per_conn = math.floor(summary.requests / connections)
    local interval = nil
    if per_conn > 0 then
        interval = math.floor(summary.duration / per_conn)
    end
    -- latency(i): the i-th non-empty bucket from the lowest recorded sample up (µs)
    -- and its count; #latency: how many there are.
    local counts, values = {}, {}
    for i = 1, #latency do
        local v, c = latency(i)
        counts[v] = c
        values[i] = v
    end
    local total = 0
    local recorded = {}
    for i, v in ipairs(values) do
        local c = counts[v]
        if interval and v > interval then
            c = c - (counts[v + interval] or 0)
        end
        recorded[i] = c
        total = total + c
    end
    local function percentile(p)
        local rank = math.max(1, math.ceil(p / 100 * total))
        local seen = 0
        for i, v in ipairs(values) do
            seen = seen + recorded[i]
            if seen >= rank then
                return v
            end
        end
        return latency.max
    end
    io.write(string.format("batch-latency samples=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
        total, percentile(50), percentile(90), percentile(99), latency.max))
end

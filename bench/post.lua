-- wrk script: POST a body read from a file; print one JSON summary line.
-- usage: wrk ... -s post.lua URL -- BODY_FILE [INFERENCE_HEADER_LEN]
-- With INFERENCE_HEADER_LEN the body is a binary tensor extension request
-- (JSON header + raw tensor bytes): Content-Type application/octet-stream and
-- Inference-Header-Content-Length are set. Non-2xx answers count as status errors.
function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  if args[2] and args[2] ~= "" then
    wrk.headers["Content-Type"] = "application/octet-stream"
    wrk.headers["Inference-Header-Content-Length"] = args[2]
  else
    wrk.headers["Content-Type"] = "application/json"
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99)))
end

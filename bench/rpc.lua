-- wrk script: one RPC call repeated.  Environment:
--   BENCH_PATH  /jsonrpc or /
--   BENCH_BODY  the request body (built by bench/run.sh)
--   BENCH_BODIES_FILE  optional: a file with one body per line; requests cycle
--                      through them (each connection starts at its own offset)
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/jsonrpc"
wrk.headers["Content-Type"] = (wrk.path == "/jsonrpc") and "application/json" or "text/xml"
local body = os.getenv("BENCH_BODY")
local bodies = nil
local file = os.getenv("BENCH_BODIES_FILE")
if file and file ~= "" then
  bodies = {}
  for line in io.lines(file) do bodies[#bodies + 1] = line end
end
local counter = 0
local errors = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  i = (id or 1) * 7919
end

function request()
  if bodies then
    i = i + 1
    return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, b)
  if status ~= 200 or string.find(b, "Failure", 1, true) or string.find(b, '"error":{', 1, true) then
    errors = errors + 1
    if errors < 3 then io.stderr:write("bad reply: " .. status .. " " .. string.sub(b, 1, 300) .. "\n") end
  end
end

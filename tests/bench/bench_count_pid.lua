-- wrk script for bench_engine.py (balance): count responses per X-Pid header
-- and per status. Prints one line at the end:  XPID_COUNTS {"<pid>": n, ...}
-- Each wrk thread has its own Lua state; done() sums the threads' tables.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  by_pid = {}
end

function response(status, headers, body)
  local pid = headers["X-Pid"] or headers["x-pid"] or "missing"
  if status ~= 200 then pid = "status-" .. status end
  by_pid[pid] = (by_pid[pid] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("by_pid")
    if counts then
      for pid, n in pairs(counts) do total[pid] = (total[pid] or 0) + n end
    end
  end
  local parts = {}
  for pid, n in pairs(total) do
    table.insert(parts, string.format('"%s": %d', pid, n))
  end
  io.write("XPID_COUNTS {" .. table.concat(parts, ", ") .. "}\n")
end

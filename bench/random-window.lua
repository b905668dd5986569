-- bench/random-window.lua: wrk script for uncached /search cost.
-- Every request asks for a window of WINDOW_DAYS days starting at a random
-- second within DAYS days of 2021-01-01 (the synth-feed range), so nearly
-- every request misses planbox's answer cache and reads SQLite.
-- Environment: DAYS (730), WINDOW_DAYS (7).
local days = tonumber(os.getenv("DAYS") or "730")
local window = tonumber(os.getenv("WINDOW_DAYS") or "7") * 86400
local origin = 1609459200 -- 2021-01-01T00:00:00Z
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(seed * 7919 + os.time())
end

function request()
  local span = days * 86400 - window
  local s = origin + math.random(0, span)
  local q = "/search?starts_at=" .. os.date("!%Y-%m-%dT%H:%M:%S", s)
    .. "&ends_at=" .. os.date("!%Y-%m-%dT%H:%M:%S", s + window)
  return wrk.format("GET", q)
end

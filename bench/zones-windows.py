# Times 150 distinct one-week /search windows (uncached: each window once, so
# every answer is read from the store) against a planbox at argv[1]; prints
# median and p90 ms and the mean answer size. argv[2]: extra query (e.g.
# "&provider=a", or "" for none); argv[3]: seed. See docs/PERFORMANCE.md,
# "Several providers".
import random, statistics, sys, time, urllib.request

base, extra, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
times, sizes = [], []
for _ in range(150):
    day = rng.randrange(0, 700)
    start = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(1609459200 + day * 86400))
    end = time.strftime("%Y-%m-%dT23:59:59Z", time.gmtime(1609459200 + (day + 6) * 86400))
    url = f"{base}/search?starts_at={start}&ends_at={end}{extra}"
    t = time.perf_counter()
    body = urllib.request.urlopen(url).read()
    times.append((time.perf_counter() - t) * 1000)
    sizes.append(len(body))
times.sort()
print(f"median {statistics.median(times):.2f} ms  p90 {times[int(len(times) * 0.9)]:.2f} ms  "
      f"mean body {statistics.mean(sizes) / 1024:.0f} KiB")

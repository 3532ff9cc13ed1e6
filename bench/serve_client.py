#!/usr/bin/env python3
"""serve_client.py — throughput of a running `tandem serve` against `tandem
generate`'s: submits N native jobs of one image each (seeds 0..N-1, CLIENTS at
a time), waits for all, and reports images/s, the median latency from
request to the first progress event, and per-request latency. One JSON line.

usage: serve_client.py URL N CLIENTS STEPS WIDTH HEIGHT [PROMPT]"""
import json
import statistics
import sys
import threading
import time
import urllib.request


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def first_event(url):
    """Seconds until the first event that reports a step, reading the SSE stream."""
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                if ev.get("step", 0) > 0 or ev.get("state") in ("done", "failed", "cancelled"):
                    return time.monotonic() - t0
    return float("nan")


def main():
    if len(sys.argv) < 7:
        print(__doc__)
        return 2
    base, n, clients, steps, w, h = sys.argv[1], *map(int, sys.argv[2:7])
    prompt = sys.argv[7] if len(sys.argv) > 7 else "a photograph of an astronaut riding a horse"
    lat, first, lock, nxt = [], [], threading.Lock(), [0]

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n:
                return
            t0 = time.monotonic()
            j = post(base + "/v1/jobs", {"prompt": prompt, "seed": i, "steps": steps,
                                         "width": w, "height": h})
            fe = first_event(base + "/v1/jobs/%s/events" % j["id"])
            while True:
                with urllib.request.urlopen(base + "/v1/jobs/" + j["id"], timeout=600) as r:
                    st = json.loads(r.read())
                if st["state"] not in ("queued", "running"):
                    break
                time.sleep(0.005)
            if st["state"] != "done":
                raise SystemExit("job %s: %s %s" % (j["id"], st["state"], st.get("error", "")))
            with lock:
                lat.append(time.monotonic() - t0)
                first.append(fe)

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.monotonic() - t0
    print(json.dumps({"bench": "serve", "images": n, "clients": clients, "steps": steps,
                      "size": [w, h], "seconds": round(wall, 3),
                      "images_per_s": round(n / wall, 4),
                      "latency_p50_s": round(statistics.median(lat), 4),
                      "first_event_p50_s": round(statistics.median(first), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

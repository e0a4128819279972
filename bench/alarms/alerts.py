#!/usr/bin/env python3
"""bench/alarms helper: a webhook receiver and a paced EVE alert writer.

  alerts.py receive PORT OUT        record "recv_ns sid" per alarm.created POST
  alerts.py write EVE N RATE OUT FIRST
                                    append N alerts (sids FIRST, FIRST+1, ...)
                                    at RATE/s, record "write_ns sid" for each
  alerts.py latency WRITES RECVS    print p50/p99/max of recv - write, in ms

Standard library only. Loopback only: the receiver binds 127.0.0.1.
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SID_BASE = 9_100_000


def receive(port, out):
    f = open(out, "a", buffering=1)

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(min(n, 1 << 20))
            now = time.time_ns()
            self.send_response(200)
            self.end_headers()
            try:
                v = json.loads(body)
            except ValueError:
                return
            if v.get("type") != "alarm.created":
                return
            for e in v.get("alarm", {}).get("evidence", []):
                if "sid" in e:
                    f.write(f"{now} {e['sid']}\n")
                    break

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()


def write(eve, n, rate, out, first):
    n, rate, first = int(n), float(rate), int(first)
    log = open(out, "a", buffering=1)
    with open(eve, "a", buffering=1) as f:
        start = time.monotonic()
        for i in range(n):
            due = start + i / rate
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            sid = SID_BASE + first + i
            ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime())
            ev = {
                "timestamp": ts,
                "event_type": "alert",
                "src_ip": f"198.18.{((first + i) >> 8) & 255}.{(first + i) & 255}",
                "src_port": 40000 + i % 20000,
                "dest_ip": "10.20.30.40",
                "dest_port": 443,
                "proto": "TCP",
                "alert": {
                    "action": "allowed",
                    "gid": 1,
                    "signature_id": sid,
                    "rev": 1,
                    "signature": f"bench signature {i}",
                    "category": "Misc activity",
                    "severity": 2,
                },
            }
            f.write(json.dumps(ev) + "\n")
            log.write(f"{time.time_ns()} {sid}\n")


def latency(writes, recvs):
    w = {}
    for line in open(writes):
        t, sid = line.split()
        w[int(sid)] = int(t)
    lat = []
    for line in open(recvs):
        t, sid = line.split()
        if int(sid) in w:
            lat.append((int(t) - w.pop(int(sid))) / 1e6)
    lat.sort()
    if not lat:
        print("received 0 missing", len(w))
        return
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"received {len(lat)} missing {len(w)} p50 {q(0.5):.1f} p99 {q(0.99):.1f} max {lat[-1]:.1f}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"receive": receive, "write": write, "latency": latency}[cmd](*args)

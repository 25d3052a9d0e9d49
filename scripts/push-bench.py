#!/usr/bin/env python3
"""Push latency at N open streams.

Starts the demo topology (release build), opens STREAMS Server-Sent-Event
streams (`GET /feeds/user:uK/stream`, one user each), reads them for SECONDS,
then prints the topology's own push figures from /status: events sent and
the latency from an epoch written on every worker to its event handed to the
connection (p50, p99), and how many events the clients read.

    scripts/push-bench.py 100 60
    scripts/push-bench.py 1000 60
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 7079


def status():
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/status") as answer:
        return json.load(answer)


async def read_stream(user, counts):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(f"GET /feeds/{user}/stream?limit=20 HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"event: "):
            counts[line[7:].strip().decode()] = counts.get(line[7:].strip().decode(), 0) + 1


async def run(streams, seconds):
    counts = {}
    tasks = [asyncio.create_task(read_stream(f"user:u{k}", counts)) for k in range(streams)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    return counts


def main():
    streams = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="push-bench-")
    os.makedirs(os.path.join(work, "target"))
    demo = subprocess.Popen(
        [os.path.join(ROOT, "target/release/feedstorm"), "run",
         os.path.join(ROOT, "topologies/demo.toml"), "--listen", f"127.0.0.1:{PORT}"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if status()["caught_up"]:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("the demo did not catch up")
            time.sleep(0.2)
        counts = asyncio.run(run(streams, seconds))
        push = status()["push"]
        print(json.dumps({"streams": streams, "seconds": seconds, "client_events": counts,
                          "push": push}, indent=2))
    finally:
        demo.terminate()
        demo.wait()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A small WebSocket client for the local stack's live status (README,
"Live status"): connects to ws://127.0.0.1:3002, as end user --user or as
a service, sends each --send message in order, and prints every frame it
receives, one JSON document a line, until --for seconds have passed.

    python3 scripts/ws.py --user 42 --for 5 \
        --send '{"action": "subscribe", "user_ids": [7]}'

`--sleep S` between two --send waits S seconds there; `--cursor-file F`
writes the last cursor received to F, and `--resume-file F` adds it as
`since` to every subscribe sent. `--ready-file F` creates F once the first
snapshot or delta has arrived, so a script can wait for it before it
makes the change it wants to see pushed.
"""

import argparse
import json
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:3002")
    parser.add_argument("--user", help="end user id (header X-Local-User); omit for a service caller")
    parser.add_argument("--send", action="append", default=[], help="a JSON message to send; repeatable")
    parser.add_argument("--sleep", action="append", type=float, default=[], help="seconds to wait after each --send")
    parser.add_argument("--for", dest="duration", type=float, default=3.0, help="seconds to listen after sending")
    parser.add_argument("--cursor-file", help="write the last cursor received here")
    parser.add_argument("--resume-file", help="resume every subscribe from the cursor in this file")
    parser.add_argument("--ready-file", help="create this file once the first snapshot or delta is in")
    args = parser.parse_args()

    headers = {"X-Local-User": args.user} if args.user else {}
    since = None
    if args.resume_file:
        with open(args.resume_file, encoding="utf-8") as f:
            since = f.read().strip() or None

    cursor = None
    try:
        with connect(args.url, additional_headers=headers, open_timeout=5, max_size=2**20) as ws:
            def drain(until: float) -> None:
                nonlocal cursor
                while True:
                    left = until - time.monotonic()
                    if left <= 0:
                        return
                    try:
                        frame = ws.recv(timeout=left)
                    except TimeoutError:
                        return
                    print(frame, flush=True)
                    try:
                        body = json.loads(frame)
                        cursor = body.get("cursor") or cursor
                        if args.ready_file and body.get("type") in ("snapshot", "delta"):
                            with open(args.ready_file, "a", encoding="utf-8"):
                                pass
                    except (ValueError, AttributeError):
                        pass

            for i, message in enumerate(args.send):
                if since is not None:
                    body = json.loads(message)
                    if body.get("action") == "subscribe":
                        body["since"] = since
                        message = json.dumps(body)
                ws.send(message)
                pause = args.sleep[i] if i < len(args.sleep) else 0.3
                drain(time.monotonic() + pause)
            drain(time.monotonic() + args.duration)
    except ConnectionClosed as closed:
        print(f"closed: {closed}", file=sys.stderr)
    except OSError as error:
        print(f"cannot connect to {args.url}: {error}", file=sys.stderr)
        return 1
    if args.cursor_file and cursor:
        with open(args.cursor_file, "w", encoding="utf-8") as f:
            f.write(cursor + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

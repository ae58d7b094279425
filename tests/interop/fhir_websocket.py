#!/usr/bin/env python3
"""A WebSocket client Galen shares no code with binds to a FHIR Subscription's websocket channel.

The client is the Python `websockets` package (13.1, its synchronous client). It follows the
Subscriptions R5 Backport IG (STU 1.1) websocket flow: connect to the `websocket-url` that
`Subscription/{id}/$get-ws-binding-token` answered, send the text `bind-with-token <token>`, then
read the notification Bundles the server sends as text frames.

Modes (crates/galen/tests/fhir_subscription.rs runs them against a running `galen serve`):

  listen   bind with --token and print every message received, one JSON object per line
           (`{"message": <the parsed Bundle>}`), flushed at once so the test can act on the
           handshake; exit 0 once the handshake, at least --events event notifications and at
           least --heartbeats heartbeats have arrived, 1 when --timeout passes first or the server
           closes the connection
  refused  bind with --token and expect to be refused: a text frame holding an OperationOutcome,
           then a close with code 1008; prints `{"refused": bool, "code": N, "reason": "...",
           "outcome": {...}}` and exits 0 when refused that way, 1 otherwise

The token is never printed. Exit status 2 when the server could not be reached, 3 when the
`websockets` package is missing.
"""

import argparse
import json
import sys
import time

try:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(
        f"missing Python package ({error}); run: pip install -r tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)


def emit(value):
    """Prints one JSON line and flushes it."""
    print(json.dumps(value), flush=True)


def notification_type(bundle):
    """The `type` parameter of a notification Bundle's status (first entry), or None."""
    try:
        parameters = bundle["entry"][0]["resource"]["parameter"]
    except (KeyError, IndexError, TypeError):
        return None
    for parameter in parameters:
        if parameter.get("name") == "type":
            return parameter.get("valueCode")
    return None


def open_socket(url):
    try:
        return connect(url, open_timeout=10, close_timeout=5)
    except OSError as error:
        print(f"cannot connect to {url}: {error}", file=sys.stderr)
        sys.exit(2)


def listen(args):
    deadline = time.monotonic() + args.timeout
    counts = {"handshake": 0, "event-notification": 0, "heartbeat": 0}
    with open_socket(args.url) as socket:
        socket.send(f"bind-with-token {args.token}")
        while True:
            done = (
                counts["handshake"] >= 1
                and counts["event-notification"] >= args.events
                and counts["heartbeat"] >= args.heartbeats
            )
            if done:
                return 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"timed out; received {counts}", file=sys.stderr)
                return 1
            try:
                text = socket.recv(timeout=remaining)
            except TimeoutError:
                continue
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                reason = closed.rcvd.reason if closed.rcvd else ""
                print(f"closed by the server ({code}: {reason}); received {counts}", file=sys.stderr)
                return 1
            message = json.loads(text)
            kind = notification_type(message)
            if kind in counts:
                counts[kind] += 1
            emit({"message": message})


def refused(args):
    report = {"refused": False, "code": None, "reason": "", "outcome": None}
    with open_socket(args.url) as socket:
        socket.send(f"bind-with-token {args.token}")
        try:
            while True:
                text = socket.recv(timeout=args.timeout)
                message = json.loads(text)
                if message.get("resourceType") == "OperationOutcome":
                    report["outcome"] = message
                else:
                    report["unexpected"] = notification_type(message) or message.get("resourceType")
        except TimeoutError:
            report["reason"] = "no answer"
        except ConnectionClosed as closed:
            if closed.rcvd:
                report["code"] = closed.rcvd.code
                report["reason"] = closed.rcvd.reason
    report["refused"] = (
        report["code"] == 1008 and report["outcome"] is not None and "unexpected" not in report
    )
    emit(report)
    return 0 if report["refused"] else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["listen", "refused"])
    parser.add_argument("--url", required=True, help="the websocket-url Galen answered")
    parser.add_argument("--token", required=True, help="the binding token")
    parser.add_argument("--events", type=int, default=1)
    parser.add_argument("--heartbeats", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    sys.exit(listen(args) if args.mode == "listen" else refused(args))


if __name__ == "__main__":
    main()

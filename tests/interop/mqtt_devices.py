#!/usr/bin/env python3
"""Devices for Galen's MQTT listener, played by a client Galen shares no code with: Eclipse Paho.

Every exchange goes through paho-mqtt's own MQTT 5 and MQTT 3.1.1 clients (callback API version
2); what Galen answered is read from Paho's callbacks (CONNACK, PUBACK, SUBACK and DISCONNECT
reason codes, the reason string property) and, where Paho hides the raw byte (the MQTT 3.1.1
CONNACK return code, PUBREC), from Paho's own packet log.

Modes (crates/galen/tests/mqtt_interop.rs drives them against a running `galen serve`):

  checks      for MQTT 5 and then MQTT 3.1.1, with devices A and B: a QoS 1 measurement is
              acknowledged (v5: reason Success); a wrong password and no credentials are refused
              at CONNACK (v5 0x86 / 0x87, v3.1.1 return codes 4 / 5); A publishing on B's topic is
              refused (v5 PUBACK 0x87, v3.1.1 the connection is closed); a payload that is not
              JSON is refused (v5 PUBACK 0x99 with a reason string); an item with an unknown code
              is refused (v5 PUBACK 0x83 alone, 0x00 with a reason string next to a good item) and
              reported on A's rejections topic; subscribing to B's topics is refused (SUBACK
              failure); QoS 2 goes through PUBREC and PUBCOMP; a JSON array of 50 items is one
              message; a second connection with the same client id takes over (v5: the first one
              gets DISCONNECT 0x8E). The last line is `EXPECTED <json>`: every measurement Galen
              should now hold, by serial, for the caller to compare with what it stored.
  durability  --count QoS 1 measurements, each with its own time, paced; the time of every one
              Galen acknowledged is appended to --acked as soon as its PUBACK arrives (the caller
              kills the server meanwhile). Ends when all are acknowledged or the connection is
              gone; exit status 0 either way.
  publish     one message (--payload-file) on one topic at QoS 1 over MQTT 5; prints
              `PUBACK <reason code> <reason string>` and exits 0 only if the reason code is
              --expect-reason.

Exit status: 0 when every check passed, 1 when one failed, 2 when the server could not be
reached, 3 when paho-mqtt is missing.
"""

import argparse
import json
import queue
import sys
import threading
import time
from datetime import datetime, timezone

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(
        f"missing Python package ({error}); run: pip install -r tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

TIMEOUT_SECONDS = 10
PREFIX = "galen/v1/devices/"

# MQTT 5 reason codes (MQTT 5.0, section 2.4).
SUCCESS = 0x00
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SESSION_TAKEN_OVER = 0x8E
PAYLOAD_FORMAT_INVALID = 0x99
# MQTT 3.1.1 CONNACK return codes (section 3.2.2.3).
V3_BAD_USER_NAME_OR_PASSWORD = 4
V3_NOT_AUTHORIZED = 5


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def topic(serial, suffix="measurements"):
    return f"{PREFIX}{serial}/{suffix}"


def rfc3339(millis):
    moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Connection:
    """One Paho client and everything it heard, behind events a check can wait on."""

    def __init__(self, address, version, client_id, serial=None, secret=None):
        host, port = address.rsplit(":", 1)
        self.host, self.port, self.version = host, int(port), version
        protocol = MQTTProtocolVersion.MQTTv5 if version == 5 else MQTTProtocolVersion.MQTTv311
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            # A refused or closed connection is the answer under test: never retry behind our back.
            reconnect_on_failure=False,
            **({} if version == 5 else {"clean_session": True}),
        )
        if serial is not None:
            self.client.username_pw_set(serial, secret)
        self.lock = threading.Condition()
        self.connack = None
        self.disconnect_reason = None
        self.disconnected = False
        self.acks = {}  # mid -> (reason code, properties)
        self.subacks = {}  # mid -> [reason codes]
        self.messages = queue.Queue()
        self.log = []
        self.on_ack = None
        client = self.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = lambda _client, _userdata, message: self.messages.put(message)
        client.on_log = self._on_log

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties):
        with self.lock:
            self.connack = reason_code
            self.lock.notify_all()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties):
        with self.lock:
            self.disconnected = True
            self.disconnect_reason = reason_code
            self.lock.notify_all()

    def _on_publish(self, _client, _userdata, mid, reason_code, properties):
        with self.lock:
            self.acks[mid] = (reason_code, properties)
            self.lock.notify_all()
        if self.on_ack is not None:
            self.on_ack(mid, reason_code)

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties):
        with self.lock:
            self.subacks[mid] = list(reason_codes)
            self.lock.notify_all()

    def _on_log(self, _client, _userdata, _level, text):
        with self.lock:
            self.log.append(text)

    def wait_for(self, done, timeout=TIMEOUT_SECONDS):
        deadline = time.monotonic() + timeout
        with self.lock:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
        return True

    def connect(self):
        """Connects and waits for CONNACK (or the connection's end); returns the reason code."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as error:
            print(f"cannot reach the MQTT listener at {self.host}:{self.port}: {error}")
            sys.exit(2)
        self.client.loop_start()
        self.wait_for(lambda: self.connack is not None or self.disconnected)
        return self.connack

    def connected(self):
        return reason_value(self.connack) == SUCCESS and not self.disconnected

    def publish(self, topic_name, payload, qos=1):
        """Publishes and waits for the end of the exchange; returns (reason code, properties)
        or None when the connection ended (or nothing came) first."""
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.client.publish(topic_name, payload, qos=qos)
        if qos == 0:
            return None
        self.wait_for(lambda: info.mid in self.acks or self.disconnected)
        with self.lock:
            return self.acks.get(info.mid)

    def subscribe(self, topic_filter):
        """Subscribes at QoS 0; returns the SUBACK reason codes."""
        _, mid = self.client.subscribe(topic_filter, qos=0)
        self.wait_for(lambda: mid in self.subacks or self.disconnected)
        with self.lock:
            return self.subacks.get(mid)

    def wait_disconnected(self, timeout=TIMEOUT_SECONDS):
        return self.wait_for(lambda: self.disconnected, timeout)

    def logged(self, fragment):
        with self.lock:
            return [line for line in self.log if fragment in line]

    def close(self):
        if not self.disconnected:
            self.client.disconnect()
            self.wait_for(lambda: self.disconnected, 2)
        self.client.loop_stop()


class Readings:
    """Measurements with times that never repeat (a repeated time would be a duplicate), and the
    ones Galen is expected to keep."""

    def __init__(self):
        # A few minutes in the past: well inside what Galen accepts, never in its future.
        self.next_millis = int(time.time() * 1000) - 10 * 60 * 1000
        self.count = 0
        self.expected = {}

    def make(self, code="heart_rate", unit="/min"):
        self.next_millis += 1
        self.count += 1
        value = 40 + self.count % 140
        return {
            "code": code,
            "value": value,
            "unit": unit,
            "time": rfc3339(self.next_millis),
            "id": f"paho-{self.count}",
        }, self.next_millis

    def stored(self, serial, code="heart_rate", unit="/min"):
        """A reading Galen must keep, under `serial`."""
        item, millis = self.make(code, unit)
        self.expected.setdefault(serial, []).append(
            {"code": item["code"], "time_ms": millis, "value": item["value"]}
        )
        return item

    def refused(self, code):
        item, _ = self.make(code)
        return item


def reason_value(reason):
    if reason is None:
        return None
    return int(reason.value) if hasattr(reason, "value") else int(reason)


def describe(answer):
    if answer is None:
        return "no acknowledgement"
    reason, properties = answer
    text = getattr(properties, "ReasonString", None) if properties is not None else None
    return f"reason 0x{reason_value(reason):02X} ({reason}), reason string {text!r}"


class Checks:
    def __init__(self, args):
        self.args = args
        self.readings = Readings()
        self.failures = []
        self.passed = 0
        self.open = []

    def run(self, name, function):
        try:
            function()
            self.passed += 1
            print(f"ok   {name}", flush=True)
        except CheckFailed as failure:
            self.failures.append(name)
            print(f"FAIL {name}: {failure}", flush=True)
        finally:
            for connection in self.open:
                connection.close()
            self.open.clear()

    def connection(self, version, label, serial=None, secret=None, client_id=None):
        connection = Connection(
            self.args.mqtt, version, client_id or f"paho-v{version}-{label}", serial, secret
        )
        self.open.append(connection)
        return connection

    def device(self, version, label, which="a", client_id=None):
        serial = getattr(self.args, f"serial_{which}")
        secret = getattr(self.args, f"secret_{which}")
        connection = self.connection(version, label, serial, secret, client_id)
        reason = connection.connect()
        check(connection.connected(), f"device {which.upper()} not connected: CONNACK {reason}")
        return connection

    def all(self, version):
        a, b = self.args.serial_a, self.args.serial_b
        v = f"MQTT {'5' if version == 5 else '3.1.1'}:"
        readings = self.readings

        def qos1():
            connection = self.device(version, "qos1")
            answer = connection.publish(topic(a), readings.stored(a))
            check(answer is not None, "no PUBACK")
            check(reason_value(answer[0]) == SUCCESS, f"PUBACK {describe(answer)}")
            # B's own data goes through too (and A's connection did not take it).
            other = self.device(version, "qos1-b", "b")
            answer = other.publish(topic(b), readings.stored(b))
            check(answer is not None and reason_value(answer[0]) == SUCCESS,
                  f"B: {describe(answer)}")

        def wrong_password():
            connection = self.connection(version, "wrong-password", a, self.args.secret_a + "x")
            reason = connection.connect()
            check(reason is not None, "no CONNACK")
            if version == 5:
                check(reason_value(reason) == BAD_USER_NAME_OR_PASSWORD, f"CONNACK {reason}")
            else:
                raw = connection.logged(f"Received CONNACK (0, {V3_BAD_USER_NAME_OR_PASSWORD})")
                check(raw, f"CONNACK return code not 4: {connection.logged('CONNACK')}")
            check(connection.wait_disconnected(), "connection left open after a refused CONNECT")

        def no_credentials():
            connection = self.connection(version, "anonymous")
            reason = connection.connect()
            check(reason is not None, "no CONNACK")
            if version == 5:
                check(reason_value(reason) == NOT_AUTHORIZED, f"CONNACK {reason}")
            else:
                raw = connection.logged(f"Received CONNACK (0, {V3_NOT_AUTHORIZED})")
                check(raw, f"CONNACK return code not 5: {connection.logged('CONNACK')}")
            check(connection.wait_disconnected(), "connection left open after a refused CONNECT")

        def other_devices_topic():
            connection = self.device(version, "cross")
            # The item even names B, as a spoofing device would.
            item = readings.refused("heart_rate")
            item["device"] = b
            answer = connection.publish(topic(b), item)
            if version == 5:
                check(answer is not None, "no PUBACK")
                check(reason_value(answer[0]) == NOT_AUTHORIZED, f"PUBACK {describe(answer)}")
                # The connection stays usable.
                answer = connection.publish(topic(a), readings.stored(a))
                check(answer is not None and reason_value(answer[0]) == SUCCESS,
                      f"after the refusal: {describe(answer)}")
            else:
                check(answer is None,
                      f"MQTT 3.1.1 cannot refuse a PUBLISH, yet got {describe(answer)}")
                check(connection.wait_disconnected(), "the connection was not closed")

        def malformed():
            connection = self.device(version, "malformed")
            answer = connection.publish(topic(a), b'{"code": "heart_rate", "value": 7')
            check(answer is not None, "no PUBACK")
            if version == 5:
                check(reason_value(answer[0]) == PAYLOAD_FORMAT_INVALID,
                      f"PUBACK {describe(answer)}")
                reason_string = getattr(answer[1], "ReasonString", None)
                check(reason_string, "no reason string")
            else:
                check(reason_value(answer[0]) == SUCCESS, f"PUBACK {describe(answer)}")
            check(connection.connected(), "connection closed after a malformed payload")

        def rejections_report():
            connection = self.device(version, "reports")
            granted = connection.subscribe(topic(a, "rejections"))
            check(granted is not None and len(granted) == 1 and not granted[0].is_failure,
                  f"SUBACK {granted}")
            # One good item and one with a code Galen does not know.
            items = [readings.stored(a), readings.refused("heart_rhythm_x")]
            answer = connection.publish(topic(a), items)
            check(answer is not None, "no PUBACK")
            check(reason_value(answer[0]) == SUCCESS, f"PUBACK {describe(answer)}")
            if version == 5:
                reason_string = getattr(answer[1], "ReasonString", None)
                check(reason_string and "unknown_code" in reason_string,
                      f"reason string {reason_string!r}")
            report = self.report(connection)
            check(report["topic"] == topic(a), f"report topic {report}")
            refused = report["refused"]
            check(len(refused) == 1 and refused[0]["index"] == 1
                  and refused[0]["reason"] == "unknown_code", f"report {report}")
            # Every item refused: 0x83 in MQTT 5, and a report either way.
            answer = connection.publish(topic(a), readings.refused("heart_rhythm_y"))
            check(answer is not None, "no PUBACK")
            if version == 5:
                check(reason_value(answer[0]) == IMPLEMENTATION_SPECIFIC_ERROR,
                      f"PUBACK {describe(answer)}")
            else:
                check(reason_value(answer[0]) == SUCCESS, f"PUBACK {describe(answer)}")
            report = self.report(connection)
            check(report["refused"][0]["reason"] == "unknown_code", f"report {report}")
            # A malformed payload is reported too.
            connection.publish(topic(a), b"not json at all")
            report = self.report(connection)
            check(report["refused"][0]["reason"] == "malformed", f"report {report}")

        def others_subscription():
            connection = self.device(version, "spy")
            granted = connection.subscribe(topic(b, "rejections"))
            check(granted is not None and len(granted) == 1 and granted[0].is_failure,
                  f"SUBACK {granted}")
            if version == 5:
                check(reason_value(granted[0]) == NOT_AUTHORIZED, f"SUBACK {granted}")
            granted = connection.subscribe(f"{PREFIX}+/rejections")
            check(granted is not None and granted[0].is_failure, f"wildcard: SUBACK {granted}")
            check(connection.connected(), "connection closed after a refused SUBSCRIBE")

        def qos2():
            connection = self.device(version, "qos2")
            answer = connection.publish(topic(a), readings.stored(a), qos=2)
            check(answer is not None, "no PUBCOMP")
            check(reason_value(answer[0]) == SUCCESS, f"PUBCOMP {describe(answer)}")
            check(connection.logged("Received PUBREC"), "no PUBREC")
            check(connection.logged("Sending PUBREL"), "no PUBREL sent")
            check(connection.logged("Received PUBCOMP"), "no PUBCOMP")

        def batch():
            connection = self.device(version, "batch")
            items = [readings.stored(a) for _ in range(50)]
            answer = connection.publish(topic(a), items)
            check(answer is not None, "no PUBACK")
            check(reason_value(answer[0]) == SUCCESS, f"PUBACK {describe(answer)}")
            if version == 5:
                check(getattr(answer[1], "ReasonString", None) is None,
                      f"a clean batch has a reason string: {describe(answer)}")

        def takeover():
            client_id = f"paho-v{version}-takeover"
            first = self.device(version, "takeover-1", client_id=client_id)
            second = self.device(version, "takeover-2", client_id=client_id)
            check(first.wait_disconnected(), "the first connection was not closed")
            if version == 5:
                check(reason_value(first.disconnect_reason) == SESSION_TAKEN_OVER,
                      f"DISCONNECT {first.disconnect_reason}")
                check(first.logged("Received DISCONNECT"), "no DISCONNECT packet")
            answer = second.publish(topic(a), readings.stored(a))
            check(answer is not None and reason_value(answer[0]) == SUCCESS,
                  f"the second connection: {describe(answer)}")
            check(second.connected(), "the second connection was closed too")

        for name, function in [
            ("QoS 1 measurement acknowledged", qos1),
            ("wrong password refused", wrong_password),
            ("no credentials refused", no_credentials),
            ("publishing on another device's topic refused", other_devices_topic),
            ("malformed payload refused", malformed),
            ("refused items reported on the rejections topic", rejections_report),
            ("subscribing to another device's topic refused", others_subscription),
            ("QoS 2 completes", qos2),
            ("a batch of 50 in one message", batch),
            ("session takeover", takeover),
        ]:
            self.run(f"{v} {name}", function)

    def report(self, connection):
        try:
            message = connection.messages.get(timeout=TIMEOUT_SECONDS)
        except queue.Empty:
            raise CheckFailed("no report on the rejections topic") from None
        check(message.topic == topic(self.args.serial_a, "rejections"),
              f"report on {message.topic}")
        check(message.qos == 0, f"report at QoS {message.qos}")
        try:
            return json.loads(message.payload)
        except ValueError:
            raise CheckFailed(f"report is not JSON: {message.payload!r}") from None


def run_checks(args):
    checks = Checks(args)
    for version in (5, 4):
        checks.all(version)
    print(f"{checks.passed} passed, {len(checks.failures)} failed", flush=True)
    print("EXPECTED " + json.dumps(checks.readings.expected), flush=True)
    return 1 if checks.failures else 0


def run_durability(args):
    readings = Readings()
    connection = Connection(args.mqtt, 5, "paho-durability", args.serial, args.secret)
    reason = connection.connect()
    if not connection.connected():
        print(f"not connected: CONNACK {reason}")
        return 1
    sent = {}  # mid -> time in ms
    early = {}  # mid -> reason code, for a PUBACK that beat the bookkeeping below
    acked = []
    # Never held across a Paho call: Paho calls on_ack with its own locks held.
    lock = threading.Lock()
    with open(args.acked, "a", encoding="utf-8") as record:

        def acknowledged(millis, reason_code):
            if reason_value(reason_code) == SUCCESS:
                acked.append(millis)
                record.write(f"{millis}\n")
                record.flush()

        def on_ack(mid, reason_code):
            # Runs on Paho's network thread as each PUBACK arrives.
            with lock:
                if mid in sent:
                    acknowledged(sent[mid], reason_code)
                else:
                    early[mid] = reason_code

        connection.on_ack = on_ack
        for _ in range(args.count):
            if connection.disconnected:
                break
            item, millis = readings.make()
            info = connection.client.publish(topic(args.serial), json.dumps(item), qos=1)
            with lock:
                sent[info.mid] = millis
                if info.mid in early:
                    acknowledged(millis, early.pop(info.mid))
            time.sleep(args.interval_ms / 1000)
        connection.wait_for(lambda: len(connection.acks) >= len(sent) or connection.disconnected, 30)
    print(f"sent {len(sent)}, acknowledged {len(acked)}, disconnected {connection.disconnected}")
    connection.close()
    return 0


def run_publish(args):
    connection = Connection(args.mqtt, 5, "paho-publish", args.serial, args.secret)
    reason = connection.connect()
    if not connection.connected():
        print(f"not connected: CONNACK {reason}")
        return 1
    with open(args.payload_file, "rb") as file:
        payload = file.read()
    answer = connection.publish(args.topic, payload)
    connection.close()
    if answer is None:
        print("PUBACK none")
        return 1
    reason_code, properties = answer
    reason_string = getattr(properties, "ReasonString", "") if properties is not None else ""
    print(f"PUBACK {reason_value(reason_code)} {reason_string}")
    return 0 if reason_value(reason_code) == args.expect_reason else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    checks = modes.add_parser("checks")
    checks.add_argument("--mqtt", required=True, help="HOST:PORT of Galen's MQTT listener")
    for which in ("a", "b"):
        checks.add_argument(f"--serial-{which}", required=True)
        checks.add_argument(f"--secret-{which}", required=True)
    durability = modes.add_parser("durability")
    publish = modes.add_parser("publish")
    for mode in (durability, publish):
        mode.add_argument("--mqtt", required=True)
        mode.add_argument("--serial", required=True)
        mode.add_argument("--secret", required=True)
    durability.add_argument("--count", type=int, default=300)
    durability.add_argument("--interval-ms", type=float, default=5)
    durability.add_argument("--acked", required=True, help="file to append acknowledged times to")
    publish.add_argument("--topic", required=True)
    publish.add_argument("--payload-file", required=True)
    publish.add_argument("--expect-reason", type=lambda text: int(text, 0), default=0)
    args = parser.parse_args()
    run = {"checks": run_checks, "durability": run_durability, "publish": run_publish}[args.mode]
    sys.exit(run(args))


if __name__ == "__main__":
    main()

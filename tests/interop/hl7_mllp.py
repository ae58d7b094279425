#!/usr/bin/env python3
"""An independent HL7 v2 peer for Galen's MLLP listener.

Nothing here comes from Galen: messages are built as text and parsed back with python-hl7
(`hl7`), sent with `hl7.client.MLLPClient`, and every acknowledgement is read with `hl7.parse`
and validated strictly against the HL7 v2 standard by hl7apy (message structure, cardinality,
data types and lengths of the version named in the ACK's MSH-12).

Modes (the Rust test crates/galen/tests/hl7_interop.rs drives them):

  checks  acknowledgement semantics: AA for a clean IHE PCD-01 ORU^R01 with MSA-2 = its control
          id; AE with ERR (ERR-2 OBX^n^6, ERR-3 103, ERR-4 E) for a wrong unit; a repeated control
          id answered with the same bytes; AR with ERR-3 200 for an ADT^A01; CA in enhanced mode
          (MSH-15 AL); MSH-12 of the ACK copying the original's version.
  load    N reports over one connection, one at a time, each with its own OBX-14 time; prints
          `AA <control id> <time>` for each accepted one as soon as it is acknowledged (the caller
          may kill the server at any point) and writes them, with the ACK bytes, to --record.
  resend  sends the last --last messages of a --record file again (after a restart, say) and
          requires the very same ACK bytes.

The last line of stdout is `RESULT <json>`; the exit status is 0 only if every check passed.
"""

import argparse
import json
import socket
import sys
import time

try:
    import hl7
    import hl7.client
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(
        f"missing Python package ({error}); run: pip install -r tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
TIMEOUT_SECONDS = 30

# IEEE 11073 MDC codes and units as an IHE PCD-01 device writes them, with the Galen vital each
# one stands for.
METRICS = {
    "spo2": ("150456^MDC_PULS_OXIM_SAT_O2^MDC", "262688^MDC_DIM_PERCENT^MDC"),
    "heart_rate": ("149530^MDC_PULS_OXIM_PULS_RATE^MDC", "264864^MDC_DIM_BEAT_PER_MIN^MDC"),
    "systolic_bp": ("150021^MDC_PRESS_BLD_NONINV_SYS^MDC", "266016^MDC_DIM_MMHG^MDC"),
    "diastolic_bp": ("150022^MDC_PRESS_BLD_NONINV_DIA^MDC", "266016^MDC_DIM_MMHG^MDC"),
    "respiratory_rate": ("151562^MDC_RESP_RATE^MDC", "264928^MDC_DIM_RESP_PER_MIN^MDC"),
    "temperature": ("150364^MDC_TEMP_BODY^MDC", "268192^MDC_DIM_DEGC^MDC"),
}
MMHG = "266016^MDC_DIM_MMHG^MDC"


class CheckFailed(Exception):
    pass


def dtm(micros):
    """HL7 DTM in UTC with an explicit offset, to the second (the tests use whole seconds)."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(micros // 1_000_000)) + "+0000"


class Peer:
    def __init__(self, args):
        host, _, port = args.mllp.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.device = args.device
        self.mrn = args.mrn
        self.authority = args.authority
        self.failures = []
        self.passed = 0
        self.validate_sent = True

    # -- building -------------------------------------------------------------------------------

    def oru(self, control, observations, accept_ack="", version="2.6", message_time=None):
        """An IHE PCD-01 ORU^R01: MSH, PID, PV1, OBR, the MDS containment row, then one OBX per
        `(code text, unit text, value, time in µs)`. Built as text, parsed by python-hl7, and the
        control id set through its accessor API, so the bytes sent are python-hl7's."""
        first_time = min((obs[3] for obs in observations), default=message_time or 0)
        stamp = dtm(message_time if message_time is not None else first_time)
        lines = [
            f"MSH|^~\\&|PEER^{self.device}^EUI-64|ICU|GALEN|HOSP|{stamp}||ORU^R01^ORU_R01|"
            f"TO-BE-SET|P|{version}|||{accept_ack}|{'NE' if accept_ack else ''}||UNICODE UTF-8|||"
            "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
            f"PID|||{self.mrn}^^^{self.authority}^MR||Interop^Peer",
            "PV1||I|ICU^^BED-1",
            f"OBR|1|{control}^PEER^{self.device}^EUI-64||182777000^monitoring of patient^SCT|||"
            f"{stamp}",
            "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||"
            f"{self.device}^EUI-64",
        ]
        for index, (code, unit, value, micros) in enumerate(observations, start=2):
            lines.append(
                f"OBX|{index}|NM|{code}|1.1.1.{index - 1}|{value}|{unit}|||||F|||{dtm(micros)}||||"
                f"{self.device}^EUI-64"
            )
        message = hl7.parse("\r".join(lines))
        message.assign_field(control, "MSH", 1, 10)
        self.expect(str(message["MSH.F10"]) == control, "python-hl7 set MSH-10")
        self.expect(
            len(message.segments("OBX")) == len(observations) + 1, "python-hl7 read every OBX"
        )
        if self.validate_sent:
            self.validate_own(message, control)
        return message

    def validate_own(self, message, what):
        """The peer's own messages must be valid HL7 too, or the test proves little."""
        try:
            parse_message(
                str(message),
                validation_level=VALIDATION_LEVEL.STRICT,
                find_groups=True,
                force_validation=True,
            )
            self.passed += 1
        except Exception as error:  # noqa: BLE001
            self.expect(False, f"{what}: the peer's own message is not valid HL7: {error}")

    def adt(self, control):
        text = (
            f"MSH|^~\\&|ADT|HOSP|GALEN|HOSP|{dtm(int(time.time()) * 1_000_000)}||ADT^A01^ADT_A01|"
            f"{control}|P|2.6\rEVN||{dtm(int(time.time()) * 1_000_000)}\r"
            f"PID|||{self.mrn}^^^{self.authority}^MR||Doe^Jane\rPV1||I|ICU^^BED-1"
        )
        return hl7.parse(text)

    # -- sending --------------------------------------------------------------------------------

    def connect(self):
        client = hl7.client.MLLPClient(self.host, self.port)
        client.socket.settimeout(TIMEOUT_SECONDS)
        client.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def exchange(self, client, message):
        """Sends one message, returns the ACK frame's content as bytes (framing checked)."""
        received = client.send_message(message)
        # MLLPClient reads once; an ACK may arrive in more than one piece.
        while not received.endswith(END_BLOCK):
            more = client.socket.recv(4096)
            if not more:
                raise ConnectionError("the connection closed inside an ACK")
            received += more
        if not received.startswith(START_BLOCK) or received.count(START_BLOCK) != 1:
            raise CheckFailed(f"not exactly one MLLP frame: {received!r}")
        return received[len(START_BLOCK) : -len(END_BLOCK)]

    # -- checking -------------------------------------------------------------------------------

    def expect(self, condition, what):
        if condition:
            self.passed += 1
        else:
            self.failures.append(what)
            print(f"FAIL: {what}", flush=True)
        return condition

    def read_ack(self, raw, original, expected_code, what):
        """Parses and validates one ACK; returns it (python-hl7) or None."""
        text = raw.decode("utf-8")
        try:
            ack = hl7.parse(text)
        except Exception as error:  # noqa: BLE001 - any parser failure is a finding
            self.expect(False, f"{what}: python-hl7 cannot parse the ACK ({error}): {text!r}")
            return None
        try:
            strict = parse_message(
                text,
                validation_level=VALIDATION_LEVEL.STRICT,
                find_groups=True,
                force_validation=True,
            )
            self.expect(strict.name == "ACK", f"{what}: hl7apy reads an ACK, not {strict.name}")
        except Exception as error:  # noqa: BLE001 - any validation failure is a finding
            self.expect(
                False,
                f"{what}: hl7apy strict validation failed: {type(error).__name__}: {error}: "
                f"{text!r}",
            )
        code = str(ack["MSA.F1"])
        self.expect(code == expected_code, f"{what}: MSA-1 {code!r}, expected {expected_code}")
        control = str(original["MSH.F10"])
        self.expect(
            str(ack["MSA.F2"]) == control,
            f"{what}: MSA-2 {str(ack['MSA.F2'])!r} is not the control id {control!r}",
        )
        self.expect(str(ack["MSH.F9.R1.C1"]) == "ACK", f"{what}: MSH-9.1 is ACK")
        self.expect(
            str(ack["MSH.F9.R1.C2"]) == str(original["MSH.F9.R1.C2"]),
            f"{what}: MSH-9.2 repeats the trigger event",
        )
        self.expect(
            str(ack["MSH.F12"]) == str(original["MSH.F12"]),
            f"{what}: MSH-12 {str(ack['MSH.F12'])!r} copies the original's version",
        )
        self.expect(
            str(ack["MSH.F5"]) == str(original["MSH.F3.R1.C1"]),
            f"{what}: MSH-5 answers the sending application",
        )
        self.expect(str(ack["MSH.F10"]) != "", f"{what}: the ACK has its own control id")
        self.expect(
            self.mrn not in text, f"{what}: the ACK carries no patient identifier: {text!r}"
        )
        return ack

    def errs(self, ack):
        try:
            return list(ack.segments("ERR"))
        except KeyError:
            return []

    # -- modes ----------------------------------------------------------------------------------

    def checks(self, start):
        second = 1_000_000
        stored = []

        def observed(vital, value, micros, unit=None):
            code, default_unit = METRICS[vital]
            return (code, unit or default_unit, value, micros)

        clean_obs = [
            ("spo2", 97, start + 1 * second),
            ("heart_rate", 72, start + 2 * second),
            ("systolic_bp", 118, start + 3 * second),
        ]
        clean = self.oru(
            "IOP-CLEAN-1", [observed(v, value, t) for v, value, t in clean_obs]
        )
        wrong_unit = self.oru(
            "IOP-UNIT-1", [observed("spo2", 96, start + 4 * second, unit=MMHG)]
        )
        enhanced_obs = [("respiratory_rate", 16, start + 5 * second), ("temperature", 36.9, start + 6 * second)]
        enhanced = self.oru(
            "IOP-ENH-1",
            [observed(v, value, t) for v, value, t in enhanced_obs],
            accept_ack="AL",
        )
        older_obs = [("diastolic_bp", 76, start + 7 * second)]
        older = self.oru(
            "IOP-V251-1", [observed(v, value, t) for v, value, t in older_obs], version="2.5.1"
        )
        adt = self.adt("IOP-ADT-1")
        self.validate_own(adt, "IOP-ADT-1")

        with self.connect() as client:
            # 1. A clean report: AA, MSA-2 = control id, no ERR.
            clean_ack_bytes = self.exchange(client, clean)
            ack = self.read_ack(clean_ack_bytes, clean, "AA", "clean report")
            if ack is not None:
                self.expect(self.errs(ack) == [], f"clean report: no ERR in {clean_ack_bytes!r}")
            stored += clean_obs
            # 2. A wrong unit (SpO2 in mmHg): AE with ERR at OBX 2 field 6, code 103, error.
            unit_ack_bytes = self.exchange(client, wrong_unit)
            ack = self.read_ack(unit_ack_bytes, wrong_unit, "AE", "wrong unit")
            if ack is not None:
                errs = self.errs(ack)
                if self.expect(len(errs) == 1, f"wrong unit: one ERR in {unit_ack_bytes!r}"):
                    location = "^".join(str(ack[f"ERR.F2.R1.C{n}"]) for n in (1, 2, 3))
                    self.expect(location == "OBX^2^6", f"wrong unit: ERR-2 {location!r}")
                    code = str(ack["ERR.F3.R1.C1"])
                    self.expect(code == "103", f"wrong unit: ERR-3.1 {code!r}")
                    system = str(ack["ERR.F3.R1.C3"])
                    self.expect(system == "HL70357", f"wrong unit: ERR-3.3 {system!r}")
                    severity = str(ack["ERR.F4"])
                    self.expect(severity == "E", f"wrong unit: ERR-4 {severity!r}")
            # 3. AR with ERR-3 200 for a message type Galen does not take.
            adt_ack_bytes = self.exchange(client, adt)
            ack = self.read_ack(adt_ack_bytes, adt, "AR", "ADT^A01")
            if ack is not None:
                codes = [
                    str(ack.extract_field("ERR", number, 3, 1, 1))
                    for number in range(1, len(self.errs(ack)) + 1)
                ]
                self.expect(codes == ["200"], f"ADT^A01: ERR-3 codes {codes}")
            # 4. Enhanced mode: MSH-15 AL asks for commit acknowledgements.
            enhanced_ack_bytes = self.exchange(client, enhanced)
            ack = self.read_ack(enhanced_ack_bytes, enhanced, "CA", "enhanced mode")
            stored += enhanced_obs
            # 5. Version 2.5.1: the ACK speaks it too (and validates against 2.5.1).
            older_ack_bytes = self.exchange(client, older)
            self.read_ack(older_ack_bytes, older, "AA", "version 2.5.1")
            stored += older_obs
            # 5b. Over Galen's 1 MiB limit: AR addressed by the message's own MSH, ERR 207, and
            # the connection stays usable (the next exchange above reuses it).
            big = self.oru("IOP-BIG-1", [observed("heart_rate", 70, start + 8 * second)])
            big_text = str(big) + "\rNTE|1||" + "x" * (1100 * 1024)
            big_ack_bytes = self.exchange(client, big_text)
            ack = self.read_ack(big_ack_bytes, big, "AR", "oversize message")
            if ack is not None:
                code = str(ack["ERR.F3.R1.C1"])
                self.expect(code == "207", f"oversize message: ERR-3.1 {code!r}")
            # The listener still answers on this connection.
            again_obs = [("heart_rate", 71, start + 9 * second)]
            again = self.oru("IOP-AFTER-BIG-1", [observed(v, value, t) for v, value, t in again_obs])
            self.read_ack(self.exchange(client, again), again, "AA", "after the oversize message")
            stored += again_obs

        # 6. Repeats, on a new connection as a sender that missed the ACK would: same bytes.
        with self.connect() as client:
            for message, first, what in [
                (clean, clean_ack_bytes, "repeated clean report"),
                (wrong_unit, unit_ack_bytes, "repeated wrong unit"),
                (enhanced, enhanced_ack_bytes, "repeated enhanced report"),
            ]:
                again = self.exchange(client, message)
                self.expect(
                    again == first, f"{what}: the ACK differs: {first!r} then {again!r}"
                )

        return {
            "stored": [
                {"code": vital, "value": value, "time_micros": micros}
                for vital, value, micros in stored
            ],
            "dead_letters": ["wrong_unit", "malformed", "too_large"],
        }

    def load(self, start, count, record_path, run):
        second = 1_000_000
        records = []
        sent = 0
        try:
            with self.connect() as client:
                for index in range(count):
                    micros = start + index * second
                    control = f"IOP-LOAD-{run}-{index}"
                    message = self.oru(
                        control,
                        [
                            (*METRICS["heart_rate"], 60 + index % 50, micros),
                            (*METRICS["spo2"], 90 + index % 10, micros),
                        ],
                    )
                    sent += 1
                    raw = self.exchange(client, message)
                    ack = self.read_ack(raw, message, "AA", f"load message {index}")
                    if ack is not None and str(ack["MSA.F1"]) == "AA":
                        records.append(
                            {
                                "control": control,
                                "time_micros": micros,
                                "message": str(message),
                                "ack": raw.decode("utf-8"),
                            }
                        )
                        print(f"AA {control} {micros}", flush=True)
        except (ConnectionError, OSError) as error:
            # Expected when the server is killed mid-run: what was acknowledged is recorded.
            print(f"connection lost after {len(records)} acknowledged: {error}", flush=True)
        with open(record_path, "w", encoding="utf-8") as record:
            json.dump(records, record)
        return {"sent": sent, "acknowledged": len(records)}

    def resend(self, record_path, last):
        with open(record_path, encoding="utf-8") as record:
            records = json.load(record)
        chosen = records[-last:] if last > 0 else records
        with self.connect() as client:
            for entry in chosen:
                message = hl7.parse(entry["message"])
                again = self.exchange(client, message).decode("utf-8")
                self.expect(
                    again == entry["ack"],
                    f"resent {entry['control']}: the ACK differs: {entry['ack']!r} then {again!r}",
                )
        return {"resent": len(chosen)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mllp", required=True, help="HOST:PORT of Galen's MLLP listener")
    parser.add_argument("--device", required=True, help="EUI-64 of the sending monitor")
    parser.add_argument("--mrn", required=True, help="PID-3.1 of the assigned patient")
    parser.add_argument("--authority", default="HOSP", help="PID-3.4")
    parser.add_argument(
        "--start-micros", type=int, required=True, help="time of the first observation (µs)"
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    modes.add_parser("checks")
    load = modes.add_parser("load")
    load.add_argument("--count", type=int, default=200)
    load.add_argument("--record", required=True)
    load.add_argument("--run", default="1", help="distinguishes control ids between runs")
    resend = modes.add_parser("resend")
    resend.add_argument("--record", required=True)
    resend.add_argument("--last", type=int, default=5)
    args = parser.parse_args()

    peer = Peer(args)
    try:
        if args.mode == "checks":
            result = peer.checks(args.start_micros)
        elif args.mode == "load":
            result = peer.load(args.start_micros, args.count, args.record, args.run)
        else:
            result = peer.resend(args.record, args.last)
    except CheckFailed as error:
        peer.expect(False, str(error))
        result = {}
    result["passed"] = peer.passed
    result["failures"] = peer.failures
    print("RESULT " + json.dumps(result), flush=True)
    return 1 if peer.failures else 0


if __name__ == "__main__":
    sys.exit(main())

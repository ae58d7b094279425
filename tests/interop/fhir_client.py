#!/usr/bin/env python3
"""A FHIR client Galen shares no code with searches and reads through Galen's FHIR R4 API.

The client is SMART on FHIR's Python `fhirclient` (4.4.0, R4 4.0.1 models). Every request goes
through the library: `FHIRClient.prepare()` reads the CapabilityStatement, `<Resource>.read()`
reads by id, `<Resource>.where(struct).perform_iter()` searches and follows the Bundles' `next`
links with the library's own paging, and HTTP errors come back as the library's exceptions
(`FHIRUnauthorizedException`, `FHIRNotFoundException`). Every answer is parsed by the library's
R4 models in strict mode, so an element they do not know or a wrong JSON type fails the run.

The API token is handed to the library as the access token of a restored SMART session
(`FHIRClient(state=...)` with an `oauth2` server state), which signs each request with
`Authorization: Bearer`. The token is never printed: the report is scrubbed of it.

Checks (crates/galen/tests/fhir_client.rs runs them against a running `galen serve`):

  capability   `prepare()` without a token: the CapabilityStatement is public, FHIR 4.0.1, JSON,
               and lists Patient, Device and Observation with read and search-type; Observation
               can be searched by patient, code and date
  unauthorized a read without the token raises FHIRUnauthorizedException with an
               OperationOutcome
  reads        the SMART launch context's Patient, Patient and Device by id (the Device is the
               patient's, with the expected serial number)
  identifier   Patient?identifier=SYSTEM|VALUE finds exactly that patient
  range        Observation?patient&code=http://loinc.org|8867-4&date=geFROM&date=ltTO&_count=N,
               every page through perform_iter(): pages of at most N, no id twice, oldest first,
               each a heart rate of the patient's device inside [FROM, TO), fullUrl = base/id
  newest       Observation?patient&_sort=-date&_count=N through every page: newest first
  read         the second Observation of the range search read by its id equals the entry
  not found    reading --missing-observation and a Patient that does not exist raise
               FHIRNotFoundException with an OperationOutcome (not-found)

Prints one JSON object on stdout: `{"passed": N, "failures": [...], ...}` with the ids found.
Exit status: 0 when every check passed, 1 when one failed, 2 when the server could not be
reached, 3 when fhirclient is missing.
"""

import argparse
import json
import sys
from datetime import datetime

try:
    import requests
    from fhirclient import client as smart
    from fhirclient.models.device import Device
    from fhirclient.models.fhirsearch import FHIRSearch
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRNotFoundException, FHIRUnauthorizedException
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(
        f"missing Python package ({error}); run: pip install -r tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

if not hasattr(FHIRSearch, "perform_iter"):
    # Paging through `next` links came with fhirclient 4.2; the pin is 4.4.0.
    print(
        "fhirclient has no perform_iter (paging); "
        "run: pip install -r tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

APP_ID = "galen-interop"
LOINC = "http://loinc.org"
HEART_RATE = "8867-4"


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def instant(text):
    """An RFC 3339 dateTime as an aware datetime (Python 3.11 reads `Z` itself)."""
    return datetime.fromisoformat(text)


def reference_id(reference, resource_type):
    """The id of a relative reference `Type/id`, or None."""
    if reference is None or reference.reference is None:
        return None
    kind, _, rest = reference.reference.partition("/")
    return rest if kind == resource_type and rest else None


def outcome_codes(error):
    """The issue codes of the OperationOutcome a library exception carries."""
    try:
        body = error.response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    return [issue.get("code") for issue in body.get("issue", [])]


class Run:
    def __init__(self, args):
        self.args = args
        self.passed = 0
        self.failures = []
        self.report = {}

    def step(self, name, function):
        """Runs one check; any exception, the library's included, is a failure of that check."""
        try:
            function()
        except CheckFailed as error:
            self.failures.append(f"{name}: {error}")
        except requests.ConnectionError as error:
            raise SystemExit(self.unreachable(error)) from error
        except Exception as error:  # noqa: BLE001 - every library error is a finding
            detail = f"{name}: {type(error).__name__}: {error}"
            response = getattr(error, "response", None)
            if response is not None:
                detail += f" ({response.status_code} {response.url}: {response.text[:300]})"
            self.failures.append(detail)
        else:
            self.passed += 1

    def unreachable(self, error):
        self.failures.append(f"the server could not be reached: {type(error).__name__}")
        self.emit()
        return 2

    def emit(self):
        result = dict(self.report)
        result["passed"] = self.passed
        result["failures"] = self.failures
        text = json.dumps(result, sort_keys=True)
        # Never print the API token, whatever an error message carried.
        print(text.replace(self.args.token, "[token]"), flush=True)

    # --- the clients ----------------------------------------------------------------------

    def open_client(self):
        """A client as an app starts it: only the base URL, no credentials."""
        return smart.FHIRClient(settings={"app_id": APP_ID, "api_base": self.args.base})

    def authorized_client(self):
        """A SMART session restored from saved state with an access token (Galen's API token)
        and the patient in context."""
        # The state as the library saves it: a base URI ending in `/` (FHIRServer adds it when
        # given a URL, but takes a restored state as it is).
        base = self.args.base if self.args.base.endswith("/") else self.args.base + "/"
        state = {
            "app_id": APP_ID,
            "patient_id": self.args.patient,
            "server": {
                "base_uri": base,
                "auth_type": "oauth2",
                "auth": {"app_id": APP_ID, "access_token": self.args.token},
            },
        }
        return smart.FHIRClient(state=state)

    # --- checks ---------------------------------------------------------------------------

    def capability(self):
        client = self.open_client()
        check(client.prepare(), "the client is not ready after reading the CapabilityStatement")
        statement = client.server.capabilityStatement
        check(statement is not None, "no CapabilityStatement")
        check(statement.fhirVersion == "4.0.1", f"fhirVersion {statement.fhirVersion!r}")
        check(
            any("json" in media for media in statement.format or []),
            f"formats {statement.format!r}",
        )
        check(statement.rest and statement.rest[0].mode == "server", "no server rest entry")
        resources = {resource.type: resource for resource in statement.rest[0].resource or []}
        self.report["capability"] = {
            "fhirVersion": statement.fhirVersion,
            "resources": sorted(resources),
        }
        for kind in ("Patient", "Device", "Observation"):
            check(kind in resources, f"{kind} is not in the CapabilityStatement")
            interactions = {item.code for item in resources[kind].interaction or []}
            check(
                {"read", "search-type"} <= interactions,
                f"{kind} interactions {sorted(interactions)}",
            )
        parameters = {parameter.name for parameter in resources["Observation"].searchParam or []}
        for name in ("patient", "code", "date"):
            check(name in parameters, f"Observation cannot be searched by {name}")

    def unauthorized(self):
        client = self.open_client()
        try:
            Patient.read(self.args.patient, client.server)
        except FHIRUnauthorizedException as error:
            codes = outcome_codes(error)
            check(codes, f"the 401 carries no OperationOutcome: {error.response.text[:200]}")
            self.report["unauthorized"] = {"exception": type(error).__name__, "issues": codes}
            return
        raise CheckFailed("a read without the token was answered")

    def reads(self, client):
        check(client.ready, "the restored session is not ready")
        context = client.patient
        check(context is not None, "the launch context's Patient could not be read")
        check(context.id == self.args.patient, f"launch context Patient {context.id!r}")
        patient = Patient.read(self.args.patient, client.server)
        check(patient.id == self.args.patient, f"read Patient {patient.id!r}")
        device = Device.read(self.args.device, client.server)
        check(device.id == self.args.device, f"read Device {device.id!r}")
        check(
            device.serialNumber == self.args.serial,
            f"Device.serialNumber {device.serialNumber!r}, expected {self.args.serial!r}",
        )
        owner = reference_id(device.patient, "Patient")
        check(owner == self.args.patient, f"Device.patient is {owner!r}")
        self.report["patient"] = {
            "id": patient.id,
            "family": patient.name[0].family if patient.name else None,
            "identifiers": [f"{item.system}|{item.value}" for item in patient.identifier or []],
        }
        self.report["device"] = {
            "id": device.id,
            "serial": device.serialNumber,
            "patient": owner,
        }

    def identifier(self, client):
        search = Patient.where(struct={"identifier": self.args.identifier})
        found = [patient.id for patient in search.perform_resources_iter(client.server)]
        self.report["identifier_search"] = found
        check(found == [self.args.patient], f"identifier search found {found}")

    def pages(self, client, struct, count):
        """Every page of a search through the library's paging: (bundles, entries)."""
        bundles = list(Observation.where(struct=struct).perform_iter(client.server))
        entries = [entry for bundle in bundles for entry in bundle.entry or []]
        for number, bundle in enumerate(bundles, 1):
            check(bundle.type == "searchset", f"page {number} is a {bundle.type!r} Bundle")
            size = len(bundle.entry or [])
            check(size <= count, f"page {number} holds {size} > {count} entries")
        ids = [entry.resource.id for entry in entries]
        check(len(set(ids)) == len(ids), f"an Observation was returned twice: {ids}")
        for entry in entries:
            check(
                isinstance(entry.resource, Observation),
                f"entry {entry.fullUrl} is not an Observation",
            )
            expected = f"{self.args.base.rstrip('/')}/Observation/{entry.resource.id}"
            check(entry.fullUrl == expected, f"fullUrl {entry.fullUrl!r}, expected {expected!r}")
        return bundles, entries

    def observation_of_patient(self, observation):
        subject = reference_id(observation.subject, "Patient")
        device = reference_id(observation.device, "Device")
        check(subject == self.args.patient, f"{observation.id}: subject {subject!r}")
        check(device == self.args.device, f"{observation.id}: device {device!r}")

    def heart_rate_range(self, client):
        low, high = instant(self.args.date_from), instant(self.args.date_to)
        struct = {
            "patient": self.args.patient,
            "code": f"{LOINC}|{HEART_RATE}",
            # Two `date` parameters (an AND): R4 prefixes in the value, since the library's
            # `$gte`/`$lt` operators write the DSTU1 syntax (`>=`).
            "date": {"$and": [f"ge{self.args.date_from}", f"lt{self.args.date_to}"]},
            "_count": str(self.args.count),
        }
        bundles, entries = self.pages(client, struct, self.args.count)
        observations = [entry.resource for entry in entries]
        times = []
        for observation in observations:
            self.observation_of_patient(observation)
            codes = [(coding.system, coding.code) for coding in observation.code.coding or []]
            check((LOINC, HEART_RATE) in codes, f"{observation.id}: codes {codes}")
            check(observation.valueQuantity is not None, f"{observation.id}: no valueQuantity")
            when = observation.effectiveDateTime.datetime
            check(low <= when < high, f"{observation.id}: {when.isoformat()} is out of range")
            times.append(when)
        check(times == sorted(times), "the range search is not oldest first")
        self.range_entries = observations
        self.report["range"] = {
            "ids": [observation.id for observation in observations],
            "values": [observation.valueQuantity.value for observation in observations],
            "page_sizes": [len(bundle.entry or []) for bundle in bundles],
            "totals": [bundle.total for bundle in bundles],
        }
        check(len(bundles) > 1, "the range search fit on one page: paging was not exercised")

    def newest_first(self, client):
        struct = {
            "patient": self.args.patient,
            "_sort": "-date",
            "_count": str(self.args.count_newest),
        }
        bundles, entries = self.pages(client, struct, self.args.count_newest)
        times = []
        for entry in entries:
            self.observation_of_patient(entry.resource)
            times.append(entry.resource.effectiveDateTime.datetime)
        check(times == sorted(times, reverse=True), "_sort=-date is not newest first")
        self.report["newest_first"] = {
            "ids": [entry.resource.id for entry in entries],
            "page_sizes": [len(bundle.entry or []) for bundle in bundles],
        }

    def read_one(self, client):
        check(len(self.range_entries) >= 2, "the range search found fewer than two")
        found = self.range_entries[1]
        read = Observation.read(found.id, client.server)
        check(read.id == found.id, f"read {read.id!r} for {found.id!r}")
        check(
            read.as_json() == found.as_json(),
            f"Observation/{found.id} read differs from its search entry",
        )
        self.report["read"] = {
            "id": read.id,
            "value": read.valueQuantity.value,
            "unit": read.valueQuantity.code,
            "effective": read.effectiveDateTime.as_json(),
        }

    def not_found(self, client):
        missing = {}
        for kind, rem_id in (
            (Observation, self.args.missing_observation),
            (Patient, self.args.missing_patient),
        ):
            try:
                kind.read(rem_id, client.server)
            except FHIRNotFoundException as error:
                codes = outcome_codes(error)
                check(
                    codes and "not-found" in codes,
                    f"{kind.resource_type}/{rem_id}: 404 with issues {codes}",
                )
                missing[f"{kind.resource_type}/{rem_id}"] = type(error).__name__
                continue
            raise CheckFailed(f"{kind.resource_type}/{rem_id} was read")
        self.report["not_found"] = missing

    def run(self):
        self.step("capability", self.capability)
        self.step("unauthorized", self.unauthorized)
        client = self.authorized_client()
        self.range_entries = []
        self.step("reads", lambda: self.reads(client))
        self.step("identifier", lambda: self.identifier(client))
        self.step("range", lambda: self.heart_rate_range(client))
        self.step("newest", lambda: self.newest_first(client))
        self.step("read", lambda: self.read_one(client))
        self.step("not found", lambda: self.not_found(client))
        self.emit()
        return 1 if self.failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="FHIR base URL, http://HOST:PORT/fhir")
    parser.add_argument("--token", required=True, help="Galen's API token (never printed)")
    parser.add_argument("--patient", required=True, help="id of the patient")
    parser.add_argument("--device", required=True, help="id of the patient's device")
    parser.add_argument("--serial", required=True, help="the device's serial number")
    parser.add_argument("--identifier", required=True, help="the patient's SYSTEM|VALUE")
    parser.add_argument("--date-from", required=True, help="range start (ge), RFC 3339")
    parser.add_argument("--date-to", required=True, help="range end (lt), RFC 3339")
    parser.add_argument("--count", type=int, default=2, help="_count of the range search")
    parser.add_argument("--count-newest", type=int, default=4, help="_count of _sort=-date")
    parser.add_argument("--missing-observation", required=True, help="an id Galen does not hold")
    parser.add_argument("--missing-patient", required=True, help="a Patient id that is unused")
    args = parser.parse_args()
    sys.exit(Run(args).run())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An independent FHIR R4 (4.0.1) validator for the resources Galen writes.

Nothing here comes from Galen. Every input line is one FHIR JSON resource (NDJSON); each is
parsed by the `fhir.resources` models for FHIR 4.0.1 (`construct_fhir_element(resourceType, obj)`:
element names, cardinalities, required elements, primitive formats, choice types; unknown
elements are refused), and then checked against invariants those models do not enforce, taken
from the R4 specification text:

  ext-1   an extension has either nested extensions or a value[x], not both
  obs-6   dataAbsentReason only when there is no value[x]
  vs-1    a vital-signs effectiveDateTime is at least day-precise
  vs-2    a vital-signs Observation without component and hasMember has a value or a
          dataAbsentReason
  vs-3    each vital-signs component has a value or a dataAbsentReason
  profile an Observation claiming an R4 vital-signs profile has a subject, the profile's LOINC
          code and a UCUM quantity in one of the profile's units (bp: 8480-6 and 8462-4
          components in mm[Hg])
  bdl-1   total only in a searchset or history Bundle
  bdl-2   entry.search only in a searchset Bundle
  bdl-7   fullUrl unique within a Bundle (no versioned resources here)
  ppc-1   a Consent has a policy or a policyRule
  ppc-2   a Consent of scope patient-privacy has a patient
  ppc-3   a Consent of scope research has a patient

Nested resources (Bundle entries) are checked the same way.

Usage: fhir_validate.py [FILE]   (FILE is NDJSON; `-` or nothing reads stdin)

Prints one `line N: <resourceType>: <problem>` to stderr per failing line and a summary line
`validated N resources, M failed` to stdout. Exit status: 0 all valid, 1 some invalid (or no
resources at all), 2 unreadable input, 3 missing Python packages.
"""

import json
import re
import sys

try:
    import fhir.resources
    from fhir.resources import construct_fhir_element
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(
        f"missing Python package ({error}); run: pip install -r tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

if getattr(fhir.resources, "__fhir_version__", None) != "4.0.1":
    print(
        f"fhir.resources {fhir.resources.__version__} models FHIR "
        f"{getattr(fhir.resources, '__fhir_version__', '?')}, not R4 4.0.1; "
        "run: pip install -r tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PROFILE_BASE = "http://hl7.org/fhir/StructureDefinition/"
# R4 vital-signs profiles: the required LOINC code and the allowed UCUM units.
PROFILES = {
    "heartrate": ("8867-4", {"/min"}),
    "oxygensat": ("2708-6", {"%"}),
    "resprate": ("9279-1", {"/min"}),
    "bodytemp": ("8310-5", {"Cel", "[degF]"}),
    "bodyweight": ("29463-7", {"kg", "g", "[lb_av]"}),
    "bodyheight": ("8302-2", {"cm", "[in_i]"}),
}
DAY_PRECISION = re.compile(r"^\d{4}-\d{2}-\d{2}")


def value_keys(element):
    return [key for key in element if key.startswith("value") and len(key) > 5]


def codes_of(concept, system):
    return {
        coding.get("code")
        for coding in (concept or {}).get("coding", [])
        if coding.get("system") == system
    }


def check_extensions(element, path, problems):
    """ext-1, everywhere in the tree."""
    if isinstance(element, dict):
        for key, child in element.items():
            if key in ("extension", "modifierExtension") and isinstance(child, list):
                for index, extension in enumerate(child):
                    if isinstance(extension, dict) and extension.get("extension") and value_keys(extension):
                        problems.append(f"ext-1: {path}.{key}[{index}] has both extensions and a value")
            check_extensions(child, f"{path}.{key}", problems)
    elif isinstance(element, list):
        for index, child in enumerate(element):
            check_extensions(child, f"{path}[{index}]", problems)


def check_quantity(quantity, path, units, problems):
    if not isinstance(quantity, dict):
        problems.append(f"{path}: a vital sign needs valueQuantity")
        return
    if quantity.get("system") != UCUM:
        problems.append(f"{path}.system must be {UCUM}")
    if units is not None and quantity.get("code") not in units:
        problems.append(f"{path}.code {quantity.get('code')!r} is not one of {sorted(units)}")
    if "value" not in quantity:
        problems.append(f"{path}.value is required")


def check_observation(observation, path, problems):
    if value_keys(observation) and "dataAbsentReason" in observation:
        problems.append(f"obs-6: {path} has both a value and a dataAbsentReason")
    components = observation.get("component", [])
    for index, component in enumerate(components):
        if value_keys(component) and "dataAbsentReason" in component:
            problems.append(f"obs-6: {path}.component[{index}] has both a value and a dataAbsentReason")
    vital_sign = any(
        "vital-signs" in codes_of(category, CATEGORY) for category in observation.get("category", [])
    )
    if vital_sign:
        effective = observation.get("effectiveDateTime")
        if effective is not None and not DAY_PRECISION.match(effective):
            problems.append(f"vs-1: {path}.effectiveDateTime {effective!r} is not day-precise")
        if not components and not observation.get("hasMember"):
            if not value_keys(observation) and "dataAbsentReason" not in observation:
                problems.append(f"vs-2: {path} has no value, component, member or dataAbsentReason")
        for index, component in enumerate(components):
            if not value_keys(component) and "dataAbsentReason" not in component:
                problems.append(f"vs-3: {path}.component[{index}] has no value or dataAbsentReason")
            elif "valueQuantity" in component:
                check_quantity(component["valueQuantity"], f"{path}.component[{index}].valueQuantity", None, problems)
        if "valueQuantity" in observation:
            check_quantity(observation["valueQuantity"], f"{path}.valueQuantity", None, problems)
    for profile in (observation.get("meta") or {}).get("profile", []):
        if not profile.startswith(PROFILE_BASE):
            continue
        name = profile[len(PROFILE_BASE):]
        if name not in PROFILES and name not in ("vitalsigns", "bp"):
            continue
        if not vital_sign:
            problems.append(f"{path} claims {name} but has no vital-signs category")
        if "subject" not in observation:
            problems.append(f"{path} claims {name} but has no subject")
        loinc = codes_of(observation.get("code"), LOINC)
        if name in PROFILES:
            code, units = PROFILES[name]
            if code not in loinc:
                problems.append(f"{path} claims {name} but code lacks LOINC {code}")
            if "dataAbsentReason" not in observation:
                check_quantity(observation.get("valueQuantity"), f"{path}.valueQuantity", units, problems)
        elif name == "bp":
            if "85354-9" not in loinc:
                problems.append(f"{path} claims bp but code lacks LOINC 85354-9")
            for required in ("8480-6", "8462-4"):
                matching = [c for c in components if required in codes_of(c.get("code"), LOINC)]
                if len(matching) != 1:
                    problems.append(f"{path} claims bp but has {len(matching)} {required} components")
                for component in matching:
                    if "dataAbsentReason" not in component:
                        check_quantity(
                            component.get("valueQuantity"),
                            f"{path}.component({required}).valueQuantity",
                            {"mm[Hg]"},
                            problems,
                        )


def check_bundle(bundle, path, problems):
    kind = bundle.get("type")
    if "total" in bundle and kind not in ("searchset", "history"):
        problems.append(f"bdl-1: {path}.total in a {kind} bundle")
    seen = set()
    for index, entry in enumerate(bundle.get("entry", [])):
        if "search" in entry and kind != "searchset":
            problems.append(f"bdl-2: {path}.entry[{index}].search in a {kind} bundle")
        full_url = entry.get("fullUrl")
        if full_url is not None:
            if full_url in seen:
                problems.append(f"bdl-7: {path}.entry[{index}].fullUrl {full_url!r} repeats")
            seen.add(full_url)
        resource = entry.get("resource")
        if isinstance(resource, dict):
            check_invariants(resource, f"{path}.entry[{index}].resource", problems)


CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"


def check_consent(consent, path, problems):
    if "policy" not in consent and "policyRule" not in consent:
        problems.append(f"ppc-1: {path} has neither policy nor policyRule")
    scopes = codes_of(consent.get("scope"), CONSENT_SCOPE)
    for code, invariant in (("patient-privacy", "ppc-2"), ("research", "ppc-3")):
        if code in scopes and "patient" not in consent:
            problems.append(f"{invariant}: {path} of scope {code} has no patient")


def check_invariants(resource, path, problems):
    kind = resource.get("resourceType")
    if kind == "Observation":
        check_observation(resource, path, problems)
    elif kind == "Bundle":
        check_bundle(resource, path, problems)
    elif kind == "Consent":
        check_consent(resource, path, problems)


def validate(resource):
    """Returns the problems of one resource (empty when valid)."""
    if not isinstance(resource, dict):
        return ["not a JSON object"]
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return ["no resourceType"]
    try:
        construct_fhir_element(kind, resource)
    except Exception as error:  # pydantic.ValidationError, LookupError for unknown types
        return [" ".join(str(error).split())]
    problems = []
    check_extensions(resource, kind, problems)
    check_invariants(resource, kind, problems)
    return problems


def main(argv):
    if len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    name = argv[1] if len(argv) == 2 else "-"
    try:
        stream = sys.stdin if name == "-" else open(name, encoding="utf-8")
        lines = stream.read().splitlines()
    except OSError as error:
        print(f"cannot read {name}: {error}", file=sys.stderr)
        return 2
    count = 0
    failed = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        count += 1
        try:
            resource = json.loads(line)
        except json.JSONDecodeError as error:
            problems = [f"not JSON: {error}"]
            kind = "?"
        else:
            problems = validate(resource)
            kind = resource.get("resourceType", "?") if isinstance(resource, dict) else "?"
        if problems:
            failed += 1
            for problem in problems:
                print(f"line {number}: {kind}: {problem}", file=sys.stderr)
    print(f"validated {count} resources, {failed} failed")
    if count == 0:
        print("no resources in the input", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

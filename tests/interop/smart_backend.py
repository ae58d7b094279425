#!/usr/bin/env python3
"""A SMART Backend Services client Galen shares no code with: PyJWT and cryptography.

Two steps (crates/galen/tests/smart_backend.rs runs them against a running `galen serve`):

  keygen KEYFILE       makes its own RSA 2048 key, writes it (PEM, mode 0600) to KEYFILE and
                       prints the public JWK set ({"keys": [{kty RSA, kid, alg RS384, n, e}]})
                       that the administrator registers for the client
  run BASE CLIENT_ID KEYFILE
                       as hl7.org/fhir/smart-app-launch/backend-services.html describes: reads
                       BASE/fhir/.well-known/smart-configuration (token_endpoint, RS384 among the
                       signing algorithms, private_key_jwt among the auth methods), signs a client
                       assertion with PyJWT (RS384, kid; iss = sub = client id, aud = the token
                       endpoint, exp in 5 minutes, a random jti), posts it with
                       grant_type=client_credentials and scope=system/Patient.rs, reads
                       BASE/fhir/Patient with the access token, then sends the same assertion
                       again (a replay) and a token request for a scope beyond the client's

Prints one JSON object on stdout: `{"failures": [...], "scope": ..., "patients": [ids], ...}`.
The access token and the private key are never printed. Exit status: 0 when every check passed,
1 when one failed, 3 when PyJWT or cryptography is missing.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

try:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(f"missing package: {error}", file=sys.stderr)
    sys.exit(3)

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KID = "python-peer-rs384"


def b64url_uint(value):
    """A JWK integer: big-endian bytes, base64url without padding (RFC 7518 section 2)."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return jwt.utils.base64url_encode(raw).decode("ascii")


def keygen(path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    numbers = key.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": KID,
                "alg": "RS384",
                "use": "sig",
                "n": b64url_uint(numbers.n),
                "e": b64url_uint(numbers.e),
            }
        ]
    }
    print(json.dumps(jwks))


def http(method, url, body=None, headers=None):
    """(status, parsed JSON or None) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


def run(base, client_id, key_path):
    failures = []
    report = {"failures": failures}

    def check(condition, message):
        if not condition:
            failures.append(message)
        return condition

    status, configuration = http("GET", f"{base}/fhir/.well-known/smart-configuration")
    if not check(status == 200 and configuration, f"smart-configuration answered {status}"):
        return report
    token_endpoint = configuration.get("token_endpoint")
    report["token_endpoint"] = token_endpoint
    check(
        "RS384" in configuration.get("token_endpoint_auth_signing_alg_values_supported", []),
        "RS384 is not among the signing algorithms",
    )
    check(
        "private_key_jwt" in configuration.get("token_endpoint_auth_methods_supported", []),
        "private_key_jwt is not among the auth methods",
    )
    check(
        "client_credentials" in configuration.get("grant_types_supported", []),
        "client_credentials is not among the grant types",
    )
    with open(key_path, "rb") as file:
        key = serialization.load_pem_private_key(file.read(), password=None)
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": client_id,
            "sub": client_id,
            "aud": token_endpoint,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        },
        key,
        algorithm="RS384",
        headers={"kid": KID, "typ": "JWT"},
    )

    def token_request(scope, signed):
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "scope": scope,
                "client_assertion_type": JWT_BEARER,
                "client_assertion": signed,
            }
        ).encode("ascii")
        return http(
            "POST",
            token_endpoint,
            form,
            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )

    status, answer = token_request("system/Patient.rs", assertion)
    if not check(status == 200 and answer and "access_token" in answer, f"token request answered {status}: {answer}"):
        return report
    report["scope"] = answer.get("scope")
    report["token_type"] = answer.get("token_type")
    report["expires_in"] = answer.get("expires_in")
    access_token = answer["access_token"]
    claims = jwt.decode(access_token, options={"verify_signature": False})
    report["access_token_claims"] = {
        name: claims.get(name) for name in ("iss", "aud", "sub", "client_id", "scope")
    }
    report["access_token_alg"] = jwt.get_unverified_header(access_token).get("alg")

    status, bundle = http(
        "GET",
        f"{base}/fhir/Patient",
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/fhir+json"},
    )
    check(status == 200 and bundle, f"Patient search answered {status}")
    report["patients"] = sorted(
        entry["resource"]["id"] for entry in (bundle or {}).get("entry", [])
    )
    status, _ = http(
        "GET",
        f"{base}/fhir/Observation",
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/fhir+json"},
    )
    report["observation_status"] = status

    status, answer = token_request("system/Patient.rs", assertion)
    report["replay"] = [status, (answer or {}).get("error")]
    fresh = jwt.encode(
        {
            "iss": client_id,
            "sub": client_id,
            "aud": token_endpoint,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        },
        key,
        algorithm="RS384",
        headers={"kid": KID},
    )
    status, answer = token_request("system/Observation.rs", fresh)
    report["beyond_allowance"] = [status, (answer or {}).get("error")]
    return report


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "keygen":
        keygen(sys.argv[2])
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        report = run(sys.argv[2].rstrip("/"), sys.argv[3], sys.argv[4])
        print(json.dumps(report))
        return 0 if not report["failures"] else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

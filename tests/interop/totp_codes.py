#!/usr/bin/env python3
"""An independent TOTP (RFC 6238) generator for Galen's second factor: PyOTP.

Reads the `otpauth://` URI Galen answered at enrolment, parses it with PyOTP (which checks the
Key Uri Format: label, issuer, secret, algorithm, digits, period), and prints one JSON line with
the account, the issuer, and the codes of the current and the next 30-second step. Used by
crates/galen/tests/second_factor.rs; exits 3 when PyOTP is missing.
"""

import argparse
import json
import sys
import time

try:
    import pyotp
except ImportError:
    print("PyOTP is missing: pip install -r tests/interop/requirements.txt", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri", required=True, help="the otpauth:// URI of the enrolment")
    args = parser.parse_args()
    otp = pyotp.parse_uri(args.uri)
    if not isinstance(otp, pyotp.TOTP):
        print(f"not a TOTP URI: {args.uri!r}", file=sys.stderr)
        return 1
    now = time.time()
    print(
        json.dumps(
            {
                "name": otp.name,
                "issuer": otp.issuer,
                "digits": otp.digits,
                "interval": otp.interval,
                "algorithm": otp.digest().name,
                "now": otp.at(now),
                "next": otp.at(now + otp.interval),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

//! Time-based one-time passwords, the second factor of accounts: TOTP (RFC 6238) over HOTP
//! (RFC 4226) with the parameters every authenticator app implements by default.
//!
//! - HMAC-SHA-1, 6 digits, 30-second time steps counted from the Unix epoch (RFC 6238 §4);
//! - a code is accepted in the current step and one step either side (RFC 6238 §5.2 recommends
//!   at most one step of network delay and clock drift);
//! - secrets are 20 random bytes (RFC 4226 §4 asks for at least 128 bits and recommends 160),
//!   shown once as RFC 4648 base32 in an `otpauth://` URI (the Key Uri Format of Google
//!   Authenticator, which other apps follow) for a QR code or manual entry;
//! - a code is used once: the store keeps the last accepted step and takes only later ones
//!   (RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of the same OTP").
//!
//! Codes are compared in constant time. Nothing here logs, and no secret leaves except in the
//! one enrolment answer.

use galen_model::Timestamp;
use hmac::{Hmac, Mac};

/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Seconds of a time step (RFC 6238's X).
pub const STEP_SECONDS: i64 = 30;
/// Bytes of a new secret.
pub const SECRET_BYTES: usize = 20;
/// Steps accepted before and after the current one.
pub const SKEW_STEPS: u64 = 1;
/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "Galen";

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1 of the 8-byte big-endian `counter` under `secret`,
/// dynamically truncated to 31 bits, modulo 10^`digits` (`digits` 6 to 9).
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC accepts keys of any length (RFC 2104 §2), so this cannot fail.
    let mut mac =
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0F);
    let binary = (u32::from(digest[offset]) & 0x7F) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    binary % 10u32.pow(digits.clamp(6, 9))
}

/// The TOTP time step of `time` (RFC 6238 §4.2: T = floor((unix time - T0) / X), T0 = 0).
pub fn step_of(time: Timestamp) -> u64 {
    u64::try_from(time.micros().div_euclid(1_000_000 * STEP_SECONDS)).unwrap_or(0)
}

/// The 6-digit code of `secret` in time step `step`, zero-padded as apps show it.
pub fn code_at(secret: &[u8], step: u64) -> String {
    format!(
        "{:0width$}",
        hotp(secret, step, DIGITS),
        width = DIGITS as usize
    )
}

/// The step within [`SKEW_STEPS`] of `now` whose code `code` is, if any. The code must be
/// exactly six ASCII digits (spaces, which apps show in the middle, are ignored). Every candidate
/// step is computed and compared in constant time, so the answer's timing does not tell which
/// step matched. Whether the step was used before is the caller's (the store's) question.
pub fn matching_step(secret: &[u8], code: &str, now: Timestamp) -> Option<u64> {
    let code: String = code.chars().filter(|character| *character != ' ').collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let current = step_of(now);
    let mut found = None;
    for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
        if crate::auth::same_secret(&code, &code_at(secret, step)) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// A new random secret, `None` when the system has no randomness.
pub fn new_secret() -> Option<[u8; SECRET_BYTES]> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).ok()?;
    Some(secret)
}

/// RFC 4648 §6 base32 (upper case, no padding, as the Key Uri Format asks).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut text = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(ALPHABET[((buffer >> bits) & 0x1F) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        text.push(char::from(
            ALPHABET[((buffer << (5 - bits)) & 0x1F) as usize],
        ));
    }
    text
}

/// The `otpauth://totp/` URI of an account's secret (Key Uri Format): label `Galen:{account}`,
/// the secret in base32, and the parameters spelled out so no app has to guess them.
pub fn otpauth_uri(account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        issuer = ISSUER,
        account = percent_encode(account),
        secret = base32(secret),
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed of RFC 4226 appendix D and RFC 6238 appendix B (SHA-1): "12345678901234567890".
    const SEED: &[u8] = b"12345678901234567890";

    fn at_unix_seconds(seconds: i64) -> Timestamp {
        Timestamp::from_micros(seconds * 1_000_000)
    }

    #[test]
    fn rfc_4226_appendix_d_hotp_values() {
        let expected = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (counter, value) in expected.into_iter().enumerate() {
            assert_eq!(hotp(SEED, counter as u64, 6), value, "count {counter}");
        }
    }

    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        // (Unix time, step T in hex, 8-digit TOTP) from the RFC's table, SHA-1 rows.
        let vectors = [
            (59, 0x1, "94287082"),
            (1_111_111_109, 0x23523EC, "07081804"),
            (1_111_111_111, 0x23523ED, "14050471"),
            (1_234_567_890, 0x273EF07, "89005924"),
            (2_000_000_000, 0x3F940AA, "69279037"),
            (20_000_000_000, 0x27BC86AA, "65353130"),
        ];
        for (time, step, totp) in vectors {
            assert_eq!(step_of(at_unix_seconds(time)), step, "T at {time}");
            assert_eq!(
                format!("{:08}", hotp(SEED, step, 8)),
                totp,
                "TOTP at {time}"
            );
            // Galen's six digits are the last six of the eight.
            assert_eq!(code_at(SEED, step), totp[2..], "6 digits at {time}");
        }
    }

    #[test]
    fn a_code_matches_its_step_and_one_either_side() {
        let now = at_unix_seconds(1_111_111_111);
        let step = step_of(now);
        assert_eq!(matching_step(SEED, &code_at(SEED, step), now), Some(step));
        assert_eq!(
            matching_step(SEED, &code_at(SEED, step - 1), now),
            Some(step - 1)
        );
        assert_eq!(
            matching_step(SEED, &code_at(SEED, step + 1), now),
            Some(step + 1)
        );
        assert_eq!(matching_step(SEED, &code_at(SEED, step - 2), now), None);
        assert_eq!(matching_step(SEED, &code_at(SEED, step + 2), now), None);
        let spaced = format!(
            "{} {}",
            &code_at(SEED, step)[..3],
            &code_at(SEED, step)[3..]
        );
        assert_eq!(
            matching_step(SEED, &spaced, now),
            Some(step),
            "as apps show it"
        );
        for malformed in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert_eq!(matching_step(SEED, malformed, now), None, "{malformed:?}");
        }
        assert_eq!(
            matching_step(b"another secret of 20b", &code_at(SEED, step), now),
            None
        );
    }

    #[test]
    fn base32_and_the_otpauth_uri() {
        // RFC 4648 §10 test vectors.
        for (input, output) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), output, "{input:?}");
        }
        assert_eq!(base32(SEED), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            otpauth_uri("ada admin", SEED),
            "otpauth://totp/Galen:ada%20admin?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Galen&algorithm=SHA1&digits=6&period=30"
        );
        let secret = new_secret().expect("randomness");
        assert_eq!(base32(&secret).len(), 32);
        assert_ne!(new_secret(), Some(secret), "random");
    }
}

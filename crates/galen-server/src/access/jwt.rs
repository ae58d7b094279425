//! The cryptography behind `jsonwebtoken`: a [`CryptoProvider`] backed by `ring` (already
//! rustls's provider), with exactly the algorithms Galen uses.
//!
//! - **ES384** (ECDSA P-384, SHA-384; RFC 7518 section 3.4): Galen signs its access tokens with it,
//!   and verifies them and the client assertions of P-384 keys.
//! - **RS384** (RSASSA-PKCS1-v1_5, SHA-384; RFC 7518 section 3.3): verifies client assertions of
//!   RSA keys of 2048 to 8192 bits.
//!
//! Nothing else is implemented, so no other algorithm can verify, whatever a token's header says:
//! not `none` (which `jsonwebtoken` does not parse at all), not HS256/384/512 (a public key used
//! as an HMAC secret is the classic algorithm-confusion attack), not RS256 or PS*. Callers also pin
//! the algorithm per key in the `Validation`; this is the second lock.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{
    ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    RSA_PKCS1_2048_8192_SHA384, RsaPublicKeyComponents, UnparsedPublicKey,
};
use sha2::Digest;

/// ES384 signing with a PKCS#8 P-384 key.
struct Es384Signer(EcdsaKeyPair);

impl Signer<Vec<u8>> for Es384Signer {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, SignatureError> {
        let random = ring::rand::SystemRandom::new();
        self.0
            .sign(&random, message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| SignatureError::new())
    }
}

impl JwtSigner for Es384Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES384
    }
}

/// ES384 verification with an uncompressed P-384 point (`0x04 || x || y`).
struct Es384Verifier(Vec<u8>);

impl Verifier<Vec<u8>> for Es384Verifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), SignatureError> {
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &self.0)
            .verify(message, signature)
            .map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for Es384Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES384
    }
}

/// RS384 verification with a public key as modulus and exponent, or as PKCS#1 DER.
struct Rs384Verifier(DecodingKeyKind);

impl Verifier<Vec<u8>> for Rs384Verifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), SignatureError> {
        let verified =
            match &self.0 {
                DecodingKeyKind::RsaModulusExponent { n, e } => RsaPublicKeyComponents { n, e }
                    .verify(&RSA_PKCS1_2048_8192_SHA384, message, signature),
                DecodingKeyKind::SecretOrDer(der) => {
                    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA384, der)
                        .verify(message, signature)
                }
            };
        verified.map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for Rs384Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS384
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    match (algorithm, key.family()) {
        (Algorithm::ES384, AlgorithmFamily::Ec) => {
            let random = ring::rand::SystemRandom::new();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, key.as_bytes(), &random)
                    .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
            Ok(Box::new(Es384Signer(pair)))
        }
        (Algorithm::ES384, _) => Err(ErrorKind::InvalidKeyFormat.into()),
        _ => Err(ErrorKind::UnsupportedAlgorithm.into()),
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    match (algorithm, key.family()) {
        (Algorithm::ES384, AlgorithmFamily::Ec) => {
            Ok(Box::new(Es384Verifier(key.try_get_as_bytes()?.to_vec())))
        }
        (Algorithm::RS384, AlgorithmFamily::Rsa) => Ok(Box::new(Rs384Verifier(key.kind().clone()))),
        (Algorithm::ES384 | Algorithm::RS384, _) => Err(ErrorKind::InvalidKeyFormat.into()),
        _ => Err(ErrorKind::UnsupportedAlgorithm.into()),
    }
}

fn unsupported_components(_: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

fn unsupported_ec_components(_: &[u8], _: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

fn unsupported_ed_components(_: &[u8], _: &EllipticCurve) -> Result<Vec<u8>> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

fn digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    match hash {
        ThumbprintHash::SHA256 => Ok(sha2::Sha256::digest(data).to_vec()),
        ThumbprintHash::SHA384 => Ok(sha2::Sha384::digest(data).to_vec()),
        ThumbprintHash::SHA512 => Ok(sha2::Sha512::digest(data).to_vec()),
        _ => Err(ErrorKind::UnsupportedAlgorithm.into()),
    }
}

/// The provider. Key utilities Galen does not use answer an error instead of panicking.
static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: unsupported_components,
        rsa_pub_components_from_public_key: unsupported_components,
        ec_pub_components_from_private_key: unsupported_ec_components,
        ed_pub_components_from_private_key: unsupported_ed_components,
        compute_digest: digest,
    },
};

/// Makes [`RING_PROVIDER`] the process's `jsonwebtoken` provider (once; later calls do nothing).
/// Returns `false` if another provider was installed first (nothing in Galen does that): then
/// Galen refuses every JWT rather than trust an unknown set of algorithms.
pub(crate) fn install() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| match RING_PROVIDER.install_default() {
        Ok(()) => true,
        Err(existing) => std::ptr::eq(existing, &RING_PROVIDER),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_es384_and_rs384_exist() {
        assert!(install());
        let key = DecodingKey::from_secret(b"a public key misused as an HMAC secret");
        for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            assert!(new_verifier(&algorithm, &key).is_err(), "{algorithm:?}");
        }
        let rsa = DecodingKey::from_rsa_raw_components(&[1; 256], &[1, 0, 1]);
        for algorithm in [Algorithm::RS256, Algorithm::PS384, Algorithm::ES384] {
            assert!(new_verifier(&algorithm, &rsa).is_err(), "{algorithm:?}");
        }
        assert!(new_verifier(&Algorithm::RS384, &rsa).is_ok());
        assert!(
            new_verifier(&Algorithm::RS384, &key).is_err(),
            "an HMAC key never verifies RS384"
        );
        assert!(new_signer(&Algorithm::HS256, &EncodingKey::from_secret(b"x")).is_err());
    }
}

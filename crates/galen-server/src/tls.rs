//! TLS for the device listeners (MQTT on 8883, MLLP): certificates from PEM files, optional
//! client certificates, and the device identity a client certificate carries.
//!
//! `PEM files -> DeviceTls (rustls ServerConfig) -> handshake per accepted connection (bounded
//! by a timeout) -> the same MQTT or MLLP code as over plain TCP`.
//!
//! Client certificates are optional even when a device CA is configured: a device without one
//! still authenticates with its password over the encrypted connection. A certificate that is
//! presented must chain to the device CA, or the handshake fails. The MQTT listener then treats
//! the certificate's subject common name (or, without one, its first DNS subject alternative
//! name) as the serial of the device that connected: see [`DeviceTls`]. The MLLP listener binds
//! the connection to that serial: every message must come from that device. HL7 v2 has no
//! credentials of its own, so `galen serve` builds the MLLP acceptor with
//! [`DeviceTls::requiring_client_certificates`].
//!
//! Crypto: rustls with the `ring` provider, installed as the process default the first time an
//! acceptor is built (an already installed provider is kept).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why TLS could not be set up. Every message names the file concerned; the cause, where there is
/// one, is the error's source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} {}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not the PEM expected.
    #[error("the {what} {} is not usable PEM: {reason}", path.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the material (for example a key that does not match the certificate).
    #[error("the {what} {} was refused", path.display())]
    Refused {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// The client CA bundle cannot verify client certificates.
    #[error("the device CA {} cannot verify clients: {reason}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Client certificates are required, but no device CA is configured to verify them.
    #[error("client certificates are required but no device CA is configured (--device-ca)")]
    NoDeviceCa,
}

/// Where the TLS material of the device listeners is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM, leaf first).
    pub certificate: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// CA certificates (PEM) that sign device certificates. `None`: no client certificates are
    /// asked for.
    pub device_ca: Option<PathBuf>,
}

/// A TLS acceptor for device connections, with its handshake timeout; cheap to clone.
#[derive(Clone)]
pub struct DeviceTls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl fmt::Debug for DeviceTls {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DeviceTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl DeviceTls {
    /// Reads the PEM files and builds the acceptor (TLS 1.2 and 1.3). With a device CA, clients
    /// are asked for a certificate but may connect without one.
    pub fn from_files(files: &TlsFiles) -> Result<DeviceTls, TlsError> {
        DeviceTls::build(files, false)
    }

    /// Like [`DeviceTls::from_files`], but a client must present a certificate from the device
    /// CA, or the handshake fails: for listeners whose protocol has no credentials of its own
    /// (MLLP). Refused without a device CA in `files`.
    pub fn requiring_client_certificates(files: &TlsFiles) -> Result<DeviceTls, TlsError> {
        if files.device_ca.is_none() {
            return Err(TlsError::NoDeviceCa);
        }
        DeviceTls::build(files, true)
    }

    fn build(files: &TlsFiles, certificate_required: bool) -> Result<DeviceTls, TlsError> {
        let provider = crypto_provider();
        let chain = read_certificates(&files.certificate, "certificate")?;
        let key = read_private_key(&files.private_key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Refused {
                what: "certificate",
                path: files.certificate.clone(),
                source,
            })?;
        let builder = match &files.device_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for certificate in read_certificates(path, "device CA")? {
                    roots.add(certificate).map_err(|source| TlsError::Refused {
                        what: "device CA",
                        path: path.clone(),
                        source,
                    })?;
                }
                // Unless a certificate is required, unauthenticated clients are allowed so that
                // password authentication keeps working over TLS; a presented certificate must
                // still verify.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = if certificate_required {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier.build().map_err(|error| TlsError::ClientCa {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Refused {
                what: "certificate and key",
                path: files.certificate.clone(),
                source,
            })?;
        Ok(DeviceTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: Duration::from_secs(10),
        })
    }

    /// The time a new connection has to complete the handshake [default: 10 s].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> DeviceTls {
        self.handshake_timeout = timeout;
        self
    }

    /// Runs the server handshake on `stream` within the handshake timeout.
    pub(crate) async fn accept<S>(&self, stream: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })?
    }
}

/// The device serial a verified client certificate names, if the client presented one.
pub(crate) fn peer_serial<S>(stream: &TlsStream<S>) -> Option<String> {
    let (_, connection) = stream.get_ref();
    let leaf = connection.peer_certificates()?.first()?;
    certificate_identity(leaf.as_ref())
}

/// The process's crypto provider: the one installed, else ring, installed now.
fn crypto_provider() -> Arc<CryptoProvider> {
    if let Some(installed) = CryptoProvider::get_default() {
        return installed.clone();
    }
    // Losing a race with another installer is fine: use whichever won.
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path, what)?;
    let pem_error = |reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error("no CERTIFICATE section".into()));
    }
    Ok(certificates)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// The identity in a DER certificate: the subject's common name, else the first DNS subject
/// alternative name. `None` when the certificate has neither or cannot be read.
///
/// Only called on certificates the verifier accepted (signed by the device CA), but still read
/// defensively: every length is checked, nothing panics.
pub(crate) fn certificate_identity(der: &[u8]) -> Option<String> {
    let mut certificate = Der::new(der).sequence()?;
    let mut tbs = certificate.sequence()?;
    // version [0] EXPLICIT (optional), serialNumber, signature, issuer, validity, subject.
    if tbs.peek_tag() == Some(0xA0) {
        tbs.element(0xA0)?;
    }
    for tag in [0x02, 0x30, 0x30, 0x30] {
        tbs.element(tag)?;
    }
    let subject = tbs.element(0x30)?;
    if let Some(name) = common_name(subject) {
        return Some(name);
    }
    // subjectPublicKeyInfo, then optional [1] [2] unique ids, then [3] extensions.
    tbs.element(0x30)?;
    while let Some(tag) = tbs.peek_tag() {
        let content = tbs.element(tag)?;
        if tag == 0xA3 {
            return first_dns_name(content);
        }
    }
    None
}

/// The first common name (OID 2.5.4.3) in a DER Name's content.
fn common_name(name: &[u8]) -> Option<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let mut relative_names = Der::new(name);
    while !relative_names.is_empty() {
        let mut set = Der::new(relative_names.element(0x31)?);
        while !set.is_empty() {
            let mut attribute = set.sequence()?;
            if attribute.element(0x06)? != COMMON_NAME {
                continue;
            }
            let tag = attribute.peek_tag()?;
            let value = attribute.element(tag)?;
            // UTF8String, PrintableString, IA5String; other string types are not serials.
            return match tag {
                0x0C | 0x13 | 0x16 => std::str::from_utf8(value).ok().map(str::to_owned),
                _ => None,
            };
        }
    }
    None
}

/// The first dNSName of the subjectAltName extension (OID 2.5.29.17), from the content of the
/// `[3]` extensions field.
fn first_dns_name(extensions: &[u8]) -> Option<String> {
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
    let mut list = Der::new(extensions).sequence()?;
    while !list.is_empty() {
        let mut extension = list.sequence()?;
        if extension.element(0x06)? != SUBJECT_ALT_NAME {
            continue;
        }
        if extension.peek_tag() == Some(0x01) {
            extension.element(0x01)?;
        }
        let value = extension.element(0x04)?;
        let mut names = Der::new(value).sequence()?;
        while let Some(tag) = names.peek_tag() {
            let content = names.element(tag)?;
            // dNSName is [2] IMPLICIT IA5String.
            if tag == 0x82 {
                return std::str::from_utf8(content).ok().map(str::to_owned);
            }
        }
        return None;
    }
    None
}

/// A cursor over DER: single-byte tags, definite lengths (what X.509 certificates use).
struct Der<'d> {
    rest: &'d [u8],
}

impl<'d> Der<'d> {
    fn new(bytes: &'d [u8]) -> Der<'d> {
        Der { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The content of the next element, which must have `tag`.
    fn element(&mut self, tag: u8) -> Option<&'d [u8]> {
        let (&found, rest) = self.rest.split_first()?;
        if found != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (digits, after) = rest.split_at(count);
            rest = after;
            digits
                .iter()
                .fold(0usize, |length, digit| (length << 8) | usize::from(*digit))
        };
        if rest.len() < length {
            return None;
        }
        let (content, after) = rest.split_at(length);
        self.rest = after;
        Some(content)
    }

    /// The next element as a SEQUENCE, to read inside.
    fn sequence(&mut self) -> Option<Der<'d>> {
        self.element(0x30).map(Der::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: Option<&str>, names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        if let Some(common_name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
        }
        params
            .self_signed(&key)
            .expect("certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn identity_is_the_common_name_else_the_first_dns_name() {
        assert_eq!(
            certificate_identity(&certificate(Some("SN-1"), &["sn-1.devices.example"])),
            Some("SN-1".into())
        );
        assert_eq!(
            certificate_identity(&certificate(None, &["10.0.0.7", "sn-2.devices.example"])),
            Some("sn-2.devices.example".into()),
            "an IP address is not a DNS name"
        );
        assert_eq!(certificate_identity(&certificate(None, &[])), None);
    }

    #[test]
    fn der_reader_refuses_truncated_input() {
        assert_eq!(certificate_identity(&[]), None);
        assert_eq!(certificate_identity(&[0x30, 0x82, 0xFF]), None);
        assert_eq!(certificate_identity(&[0x30, 0x05, 0x30, 0x10]), None);
        let mut der = Der::new(&[0x04, 0x02, 0xAA]);
        assert_eq!(der.element(0x04), None, "content shorter than its length");
    }
}

/// Trust for Galen's outbound HTTPS (alarm webhooks, FHIR rest-hook subscriptions): the
/// platform's CA certificates plus, optionally, the hospital's own CA. Cheap to clone.
#[derive(Clone)]
pub struct OutboundTls {
    config: Arc<rustls::ClientConfig>,
    roots: usize,
}

impl fmt::Debug for OutboundTls {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OutboundTls")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl Default for OutboundTls {
    /// The platform's CA certificates only.
    fn default() -> OutboundTls {
        OutboundTls::from_roots(Vec::new())
    }
}

impl OutboundTls {
    /// The platform's CA certificates plus those in the PEM files `extra_ca`.
    pub fn with_ca_files(extra_ca: &[PathBuf]) -> Result<OutboundTls, TlsError> {
        let mut extra = Vec::new();
        for path in extra_ca {
            extra.extend(read_certificates(path, "outbound CA")?);
        }
        Ok(OutboundTls::from_roots(extra))
    }

    fn from_roots(extra: Vec<CertificateDer<'static>>) -> OutboundTls {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::warn!(
                errors = native.errors.len(),
                "some of the platform's CA certificates could not be read"
            );
        }
        let (_, unusable) = roots.add_parsable_certificates(native.certs);
        let (_, refused) = roots.add_parsable_certificates(extra);
        if unusable + refused > 0 {
            tracing::warn!(
                unusable = unusable + refused,
                "CA certificates that rustls cannot use were skipped"
            );
        }
        let count = roots.len();
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map(|builder| {
                builder
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth()
            })
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            });
        OutboundTls {
            config: Arc::new(config),
            roots: count,
        }
    }

    /// An HTTP client speaking `http://` and `https://` (TLS 1.2 or 1.3, verified against these
    /// roots). Clones share one connection pool.
    pub(crate) fn client(&self) -> OutboundClient {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.config).clone())
            .https_or_http()
            .enable_http1()
            .build();
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector)
    }
}

/// An outbound request's error with its causes (`client error (Connect): invalid peer
/// certificate: UnknownIssuer`): hyper's own message names only the stage that failed.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The client of outbound deliveries.
pub(crate) type OutboundClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

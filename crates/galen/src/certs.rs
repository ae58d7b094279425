//! `galen certs`: a development PKI for Galen's TLS listeners, made with rcgen.
//!
//! `--out DIR` receives a CA (`ca.pem`, `ca-key.pem`), a server certificate for `--hosts`
//! (`server.pem`, `server-key.pem`) and one client certificate per device serial in `--devices`
//! (`devices/SERIAL.pem`, `devices/SERIAL-key.pem`; the subject CN is the serial, which is how
//! the MQTT listener knows the device). Keys are ECDSA P-256, written owner-only (0600) and never
//! printed; directories created here are owner-only too.
//!
//! Running it again on the same directory keeps the CA and the server certificate and issues
//! certificates for further devices from the same CA. Nothing is overwritten: an existing
//! device certificate, or new `--hosts` for an existing server certificate, is an error naming
//! the file to remove. Every certificate is verified against `ca.pem` with rustls before
//! anything is written.
//!
//! For development and tests only: a real deployment takes its server certificate from the
//! hospital's PKI and keeps the device CA's key offline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

/// The CA's subject: fixed, so that a later run can sign with the stored key under the same
/// issuer name (rcgen without its X.509 parser cannot read it back from `ca.pem`).
const CA_COMMON_NAME: &str = "Galen development CA";
const CA_ORGANIZATION: &str = "Galen (development only)";
/// The CA is valid for ten years; leaf certificates for `--days`.
const CA_DAYS: i64 = 3650;
/// Default server names: the loopback host in every spelling.
const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Flags of `galen certs`.
#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// Directory to write into (created owner-only if missing; an existing CA there is reused).
    #[arg(long)]
    out: PathBuf,
    /// Host names and IP addresses of the server certificate, comma-separated [default:
    /// localhost,127.0.0.1,::1].
    #[arg(long, value_delimiter = ',')]
    hosts: Option<Vec<String>>,
    /// Device serials to issue client certificates for (subject CN = serial), comma-separated.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// Days the server and device certificates are valid (browsers accept at most 398).
    #[arg(long, default_value_t = 397)]
    days: u32,
}

/// A certificate and its key, in PEM, before they are written.
struct Issued {
    certificate: String,
    key: String,
}

pub(crate) fn run(args: CertsArgs) -> Result<()> {
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    let hosts: Vec<String> = match &args.hosts {
        Some(hosts) => hosts
            .iter()
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .collect(),
        None => DEFAULT_HOSTS
            .iter()
            .map(|host| (*host).to_owned())
            .collect(),
    };
    if hosts.is_empty() {
        bail!("--hosts needs at least one host name or IP address");
    }
    for serial in &args.devices {
        check_serial(serial)?;
    }
    let out = &args.out;
    let devices_dir = out.join("devices");
    let paths = Paths::new(out);

    // Everything that could refuse is checked before the first file is written.
    let server_exists = paths.server.exists() || paths.server_key.exists();
    if server_exists && args.hosts.is_some() {
        bail!(
            "{} already exists; remove it and {} to issue a server certificate for other hosts",
            paths.server.display(),
            paths.server_key.display()
        );
    }
    for serial in &args.devices {
        for path in device_paths(&devices_dir, serial) {
            if path.exists() {
                bail!(
                    "{} already exists; remove it to issue the device {serial:?} a new certificate",
                    path.display()
                );
            }
        }
    }
    let now = OffsetDateTime::now_utc();
    let (ca, ca_pem, ca_is_new) = load_or_create_ca(&paths, now)?;
    let verifier = Verifier::new(&ca_pem)?;
    let server = if server_exists {
        None
    } else {
        let issued = issue_server(&ca, &hosts, now, args.days)?;
        verifier
            .server(&issued.certificate, &hosts[0])
            .context("the new server certificate does not verify against ca.pem")?;
        Some(issued)
    };
    let mut devices = Vec::new();
    for serial in &args.devices {
        let issued = issue_device(&ca, serial, now, args.days)?;
        verifier.client(&issued.certificate).with_context(|| {
            format!(
                "the certificate of {serial:?} does not verify against {}: was ca-key.pem \
                 replaced?",
                paths.ca.display()
            )
        })?;
        devices.push((serial, issued));
    }

    create_private_dir(out)?;
    if ca_is_new {
        write_file(&paths.ca, &ca_pem, false)?;
        write_file(&paths.ca_key, &ca.key().serialize_pem(), true)?;
        println!(
            "galen certs: CA {} (key {})",
            paths.ca.display(),
            paths.ca_key.display()
        );
    } else {
        println!("galen certs: reusing the CA in {}", paths.ca.display());
    }
    match server {
        Some(server) => {
            write_file(&paths.server, &server.certificate, false)?;
            write_file(&paths.server_key, &server.key, true)?;
            println!(
                "galen certs: server certificate {} for {} (key {})",
                paths.server.display(),
                hosts.join(", "),
                paths.server_key.display()
            );
        }
        None => println!(
            "galen certs: keeping the server certificate {}",
            paths.server.display()
        ),
    }
    if !devices.is_empty() {
        create_private_dir(&devices_dir)?;
    }
    for (serial, issued) in devices {
        let [certificate, key] = device_paths(&devices_dir, serial);
        write_file(&certificate, &issued.certificate, false)?;
        write_file(&key, &issued.key, true)?;
        println!(
            "galen certs: device {serial} {} (key {})",
            certificate.display(),
            key.display()
        );
    }
    println!(
        "galen certs: serve with --tls-cert {} --tls-key {} --device-ca {}",
        paths.server.display(),
        paths.server_key.display(),
        paths.ca.display()
    );
    Ok(())
}

/// Where the CA and server files go.
struct Paths {
    ca: PathBuf,
    ca_key: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
}

impl Paths {
    fn new(out: &Path) -> Paths {
        Paths {
            ca: out.join("ca.pem"),
            ca_key: out.join("ca-key.pem"),
            server: out.join("server.pem"),
            server_key: out.join("server-key.pem"),
        }
    }
}

fn device_paths(directory: &Path, serial: &str) -> [PathBuf; 2] {
    [
        directory.join(format!("{serial}.pem")),
        directory.join(format!("{serial}-key.pem")),
    ]
}

/// A serial becomes a file name and a subject CN: letters, digits, `.`, `_`, `-` and `:`, not
/// starting with a dot, at most 64 characters (the X.509 upper bound of a common name).
fn check_serial(serial: &str) -> Result<()> {
    let allowed = |character: char| {
        character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-' | ':')
    };
    if serial.is_empty()
        || serial.len() > 64
        || serial.starts_with('.')
        || !serial.chars().all(allowed)
    {
        bail!(
            "device serial {serial:?}: use 1 to 64 letters, digits, '.', '_', '-' or ':' (not \
             starting with '.')"
        );
    }
    Ok(())
}

/// The CA's parameters; the same every run, so that a stored key signs under the same name.
fn ca_params(now: OffsetDateTime) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, CA_ORGANIZATION);
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(CA_DAYS);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// The CA: the stored one, or a new one (not written yet). Returns its issuer, its certificate
/// in PEM and whether it is new.
fn load_or_create_ca(
    paths: &Paths,
    now: OffsetDateTime,
) -> Result<(Issuer<'static, KeyPair>, String, bool)> {
    match (paths.ca.exists(), paths.ca_key.exists()) {
        (true, true) => {
            let pem = std::fs::read_to_string(&paths.ca)
                .with_context(|| format!("reading {}", paths.ca.display()))?;
            let key_pem = std::fs::read_to_string(&paths.ca_key)
                .with_context(|| format!("reading {}", paths.ca_key.display()))?;
            let key = KeyPair::from_pem(&key_pem).with_context(|| {
                format!("{} is not a usable private key", paths.ca_key.display())
            })?;
            Ok((Issuer::new(ca_params(now)?, key), pem, false))
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let params = ca_params(now)?;
            let pem = params.self_signed(&key)?.pem();
            Ok((Issuer::new(params, key), pem, true))
        }
        (true, false) | (false, true) => bail!(
            "{} and {} go together: one is missing; remove the other to start a new CA",
            paths.ca.display(),
            paths.ca_key.display()
        ),
    }
}

fn leaf_params(
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
    now: OffsetDateTime,
    days: u32,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn issue_server(
    ca: &Issuer<'static, KeyPair>,
    hosts: &[String],
    now: OffsetDateTime,
    days: u32,
) -> Result<Issued> {
    let params = leaf_params(
        hosts.to_vec(),
        &hosts[0],
        ExtendedKeyUsagePurpose::ServerAuth,
        now,
        days,
    )
    .context("--hosts: not host names or IP addresses")?;
    sign(params, ca)
}

fn issue_device(
    ca: &Issuer<'static, KeyPair>,
    serial: &str,
    now: OffsetDateTime,
    days: u32,
) -> Result<Issued> {
    let params = leaf_params(
        Vec::new(),
        serial,
        ExtendedKeyUsagePurpose::ClientAuth,
        now,
        days,
    )?;
    sign(params, ca)
}

fn sign(params: CertificateParams, ca: &Issuer<'static, KeyPair>) -> Result<Issued> {
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, ca)?;
    Ok(Issued {
        certificate: certificate.pem(),
        key: key.serialize_pem(),
    })
}

/// 16 random bytes, positive (RFC 5280 asks for at most 20 octets, non-negative).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("no randomness for a serial number: {error}"))?;
    bytes[0] &= 0x7F;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Checks issued certificates against the CA certificate, as Galen's listeners and their clients
/// will (rustls/webpki).
struct Verifier {
    client: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    server: Arc<rustls::client::WebPkiServerVerifier>,
}

impl Verifier {
    fn new(ca_pem: &str) -> Result<Verifier> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(certificate.context("ca.pem is not PEM")?)
                .context("ca.pem is not a usable CA certificate")?;
        }
        let roots = Arc::new(roots);
        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .context("ca.pem cannot verify client certificates")?;
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .context("ca.pem cannot verify server certificates")?;
        Ok(Verifier { client, server })
    }

    fn client(&self, certificate_pem: &str) -> Result<()> {
        let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes())?;
        self.client
            .verify_client_cert(&certificate, &[], UnixTime::now())?;
        Ok(())
    }

    fn server(&self, certificate_pem: &str, host: &str) -> Result<()> {
        use rustls::client::danger::ServerCertVerifier;
        let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes())?;
        let name = ServerName::try_from(host.to_owned())?;
        self.server
            .verify_server_cert(&certificate, &[], &name, &[], UnixTime::now())?;
        Ok(())
    }
}

/// Creates `path` (and parents) owner-only (0700) if it does not exist.
fn create_private_dir(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Writes a new file (never over an existing one): keys owner-only (0600), certificates 0644.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(out: &Path, hosts: Option<&[&str]>, devices: &[&str]) -> CertsArgs {
        CertsArgs {
            out: out.to_owned(),
            hosts: hosts.map(|hosts| hosts.iter().map(|host| (*host).to_owned()).collect()),
            devices: devices.iter().map(|serial| (*serial).to_owned()).collect(),
            days: 30,
        }
    }

    #[test]
    fn a_ca_server_and_devices_with_private_keys() {
        let directory = tempfile::tempdir().expect("temp dir");
        let out = directory.path().join("pki");
        run(args(
            &out,
            Some(&["galen.example", "10.1.2.3"]),
            &["SN-1", "SN-2"],
        ))
        .expect("certs");
        for name in [
            "ca.pem",
            "ca-key.pem",
            "server.pem",
            "server-key.pem",
            "devices/SN-1.pem",
            "devices/SN-1-key.pem",
            "devices/SN-2.pem",
            "devices/SN-2-key.pem",
        ] {
            let text = std::fs::read_to_string(out.join(name)).expect(name);
            let expected = if name.ends_with("-key.pem") {
                "-----BEGIN PRIVATE KEY-----"
            } else {
                "-----BEGIN CERTIFICATE-----"
            };
            assert!(text.starts_with(expected), "{name}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(out.join(name))
                    .expect("metadata")
                    .permissions()
                    .mode()
                    & 0o777;
                let wanted = if name.ends_with("-key.pem") {
                    0o600
                } else {
                    0o644
                };
                assert_eq!(mode, wanted, "{name}");
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).expect("dir").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "the directory is owner-only");
        }
        // The device certificate names its serial; the server one verifies for every host.
        let ca = std::fs::read_to_string(out.join("ca.pem")).expect("ca");
        let verifier = Verifier::new(&ca).expect("verifier");
        let device = std::fs::read_to_string(out.join("devices/SN-1.pem")).expect("device");
        verifier.client(&device).expect("device verifies");
        let der = CertificateDer::from_pem_slice(device.as_bytes()).expect("der");
        assert!(
            der.windows(4).any(|window| window == b"SN-1"),
            "the serial is in the certificate"
        );
        let server = std::fs::read_to_string(out.join("server.pem")).expect("server");
        for host in ["galen.example", "10.1.2.3"] {
            verifier.server(&server, host).expect(host);
        }
        assert!(verifier.server(&server, "other.example").is_err());
    }

    #[test]
    fn a_second_run_reuses_the_ca_and_never_overwrites() {
        let directory = tempfile::tempdir().expect("temp dir");
        let out = directory.path();
        run(args(out, None, &["SN-1"])).expect("first run");
        let ca = std::fs::read_to_string(out.join("ca.pem")).expect("ca");
        let server = std::fs::read_to_string(out.join("server.pem")).expect("server");
        run(args(out, None, &["SN-3"])).expect("more devices");
        assert_eq!(std::fs::read_to_string(out.join("ca.pem")).expect("ca"), ca);
        assert_eq!(
            std::fs::read_to_string(out.join("server.pem")).expect("server"),
            server
        );
        let later = std::fs::read_to_string(out.join("devices/SN-3.pem")).expect("device");
        Verifier::new(&ca)
            .expect("verifier")
            .client(&later)
            .expect("issued by the same CA");
        let error = format!("{:#}", run(args(out, None, &["SN-1"])).expect_err("exists"));
        assert!(
            error.contains("SN-1.pem") && error.contains("already exists"),
            "{error}"
        );
        let error = format!(
            "{:#}",
            run(args(out, Some(&["galen.example"]), &[])).expect_err("server exists")
        );
        assert!(error.contains("server.pem"), "{error}");
    }

    #[test]
    fn a_foreign_ca_key_is_detected_before_anything_is_written() {
        let directory = tempfile::tempdir().expect("temp dir");
        let out = directory.path();
        run(args(out, None, &[])).expect("first run");
        std::fs::remove_file(out.join("ca-key.pem")).expect("remove");
        std::fs::write(
            out.join("ca-key.pem"),
            KeyPair::generate().expect("key").serialize_pem(),
        )
        .expect("replace");
        let error = format!(
            "{:#}",
            run(args(out, None, &["SN-9"])).expect_err("wrong key")
        );
        assert!(error.contains("does not verify"), "{error}");
        assert!(!out.join("devices/SN-9.pem").exists());
    }

    #[test]
    fn serials_that_are_not_file_names_are_refused() {
        for serial in ["", "../etc", "a/b", ".hidden", "x y", &"S".repeat(65)] {
            assert!(check_serial(serial).is_err(), "{serial:?}");
        }
        for serial in ["0012345678ABCDEF", "TLS-MOSQ-0001", "sn_1.2:3"] {
            check_serial(serial).expect(serial);
        }
        let directory = tempfile::tempdir().expect("temp dir");
        let error = format!(
            "{:#}",
            run(args(directory.path(), None, &["ok", "../x"])).expect_err("bad serial")
        );
        assert!(error.contains("../x"), "{error}");
        assert!(!directory.path().join("ca.pem").exists(), "nothing written");
    }
}

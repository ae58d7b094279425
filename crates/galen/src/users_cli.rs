//! `galen users`: creates and lists accounts in a data directory. First-run setup is
//! `galen users add --role administrator`: Galen ships with no account and no default password.
//!
//! Passwords are read from standard input (one line), never from a flag, so they stay out of
//! shell history and process lists. A running server picks up accounts added here on SIGHUP.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use galen_model::{Clock, PatientId, Recipient, SystemClock};
use galen_server::access::Role;
use galen_server::access::accounts::hash_password;
use galen_store::{AccessStore, MeasurementStore, NewUser, RegistryStore};

/// Flags of `galen users`.
#[derive(Debug, Args)]
pub(crate) struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
    #[command(flatten)]
    key: crate::keys_cli::DataKeyArgs,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create an account; its password is read from standard input (one line).
    Add {
        /// Data directory of the server.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Login name.
        #[arg(long)]
        name: String,
        /// administrator, clinician, nurse, integration-engineer, auditor, researcher, patient or
        /// device.
        #[arg(long)]
        role: String,
        /// A ward the account works on (repeat; required for clinicians and nurses).
        #[arg(long = "ward")]
        wards: Vec<String>,
        /// The patient of a patient account (its registry id).
        #[arg(long)]
        patient: Option<i64>,
        /// The organisation the account acts for (`Organization/{id}`, `RelatedPerson/{id}` or
        /// `system|value`): what it exports or subscribes to is disclosed to it, under the
        /// patients' consents.
        #[arg(long)]
        organization: Option<String>,
    },
    /// List the accounts (never their password hashes).
    List {
        /// Data directory of the server.
        #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

/// Runs `galen users`.
pub(crate) async fn run(args: UsersArgs) -> Result<()> {
    let key = args.key.load()?;
    match args.command {
        UsersCommand::Add {
            data_dir,
            name,
            role,
            wards,
            patient,
            organization,
        } => add(data_dir, key, name, role, wards, patient, organization).await,
        UsersCommand::List { data_dir } => list(data_dir, key).await,
    }
}

async fn add(
    data_dir: PathBuf,
    key: Option<galen_store::crypto::MasterKey>,
    name: String,
    role: String,
    wards: Vec<String>,
    patient: Option<i64>,
    organization: Option<String>,
) -> Result<()> {
    let Some(parsed) = Role::parse(&role) else {
        let codes: Vec<&str> = Role::ACCOUNT_ROLES.iter().map(|role| role.code()).collect();
        bail!("--role must be one of {}", codes.join(", "));
    };
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        bail!("--name must be a printable name");
    }
    if wards
        .iter()
        .any(|ward| ward.trim().is_empty() || ward.chars().any(char::is_control))
    {
        bail!("--ward must be a printable ward name");
    }
    if parsed.ward_bound() && wards.is_empty() {
        bail!("a {role} account needs at least one --ward");
    }
    if (parsed == Role::Patient) != patient.is_some() {
        bail!("--patient is required for a patient account and only for one");
    }
    let organization = organization
        .map(|text| {
            if matches!(parsed, Role::Patient | Role::Device) {
                bail!("patient and device accounts act for no organisation (--organization)");
            }
            Recipient::parse(&text).map_err(|_| {
                anyhow::anyhow!(
                    "--organization must be Organization/{{id}}, RelatedPerson/{{id}} or system|value"
                )
            })
        })
        .transpose()?;
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    let password_hash = hash_password(password).map_err(|error| anyhow::anyhow!("{error}"))?;
    let store = crate::open_store_with(data_dir, key).await?;
    if let Some(id) = patient
        && store.patient(PatientId(id)).await?.is_none()
    {
        store.close().await?;
        bail!("patient {id} is not registered");
    }
    let now = SystemClock.now();
    // The account change is audited like one made over the API, in the same transaction.
    let record = galen_store::AuditRecord {
        time: now,
        actor: "galen users add".to_owned(),
        role: "service".to_owned(),
        action: galen_store::AuditAction::ConfigChange,
        resource: "/api/v1/users".to_owned(),
        patient: None,
        outcome: galen_store::AuditOutcome::Success,
        source: "command line".to_owned(),
        detail: format!("account {} ({role}) created on the server", name.trim()),
    };
    let created = store
        .create_user(
            NewUser {
                name: name.trim().to_owned(),
                password_hash,
                role,
                wards,
                patient: patient.map(PatientId),
                organization,
                created: now,
            },
            vec![record],
        )
        .await;
    store.close().await?;
    let user = created.context("creating the account")?;
    println!(
        "account {} created: {} ({}); a running server loads it on SIGHUP",
        user.id, user.details.name, user.details.role
    );
    Ok(())
}

async fn list(data_dir: PathBuf, key: Option<galen_store::crypto::MasterKey>) -> Result<()> {
    let store = crate::open_store_with(data_dir, key).await?;
    let users = store.users().await;
    store.close().await?;
    for user in users? {
        println!(
            "{}\t{}\t{}\t{}{}",
            user.id,
            user.details.name,
            user.details.role,
            user.details.wards.join(","),
            if user.disabled { "\tdisabled" } else { "" }
        );
    }
    Ok(())
}

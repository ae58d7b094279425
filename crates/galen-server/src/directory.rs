//! The registry cache: devices by serial, assignments by device, patients by id, and the hashes
//! of the devices' active secrets.
//!
//! Ingest resolves every item's device and patient here without touching the store. The cache is
//! reloaded whole after every registry change made through this process (the registry is small:
//! thousands of rows, reloaded in milliseconds). A second node would need change notification;
//! that arrives with the scale-out work.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use galen_model::{Assignment, Device, DeviceId, Patient, PatientId, Timestamp};
use galen_store::{DocumentOwner, Store};

/// A read-only view of the registry at one moment.
#[derive(Debug, Default)]
pub struct DirectorySnapshot {
    devices_by_serial: HashMap<String, Device>,
    devices: HashMap<DeviceId, Device>,
    assignments: HashMap<DeviceId, Vec<Assignment>>,
    patients: HashMap<PatientId, Patient>,
    /// Hashes of the active (unrevoked) secrets of each device.
    credentials: HashMap<DeviceId, Vec<[u8; 32]>>,
    /// The FHIR resource last posted for a record, as JSON.
    documents: HashMap<DocumentOwner, Arc<str>>,
}

impl DirectorySnapshot {
    /// The device with this serial.
    pub fn device_by_serial(&self, serial: &str) -> Option<&Device> {
        self.devices_by_serial.get(serial)
    }

    /// The device with this id.
    pub fn device(&self, id: DeviceId) -> Option<&Device> {
        self.devices.get(&id)
    }

    /// Whether `secret` is an active credential of `device`. Compares hashes in constant time.
    pub fn device_secret_valid(&self, device: DeviceId, secret: &[u8]) -> bool {
        use sha2::Digest;
        let presented: [u8; 32] = sha2::Sha256::digest(secret).into();
        self.credentials.get(&device).is_some_and(|hashes| {
            hashes.iter().fold(false, |found, hash| {
                let difference = hash
                    .iter()
                    .zip(&presented)
                    .fold(0u8, |difference, (left, right)| difference | (left ^ right));
                found | (difference == 0)
            })
        })
    }

    /// The patient whose identifier (MRN) is `value`. When `system` is given and several
    /// patients share the value, only the one of that system; `None` when it is ambiguous.
    pub fn patient_by_identifier(&self, value: &str, system: &str) -> Option<&Patient> {
        let mut found = self
            .patients
            .values()
            .filter(|patient| patient.details.identifier.value == value);
        let first = found.next()?;
        let rest: Vec<&Patient> = found.collect();
        if rest.is_empty() {
            return Some(first);
        }
        let mut by_system = std::iter::once(first)
            .chain(rest)
            .filter(|patient| !system.is_empty() && patient.details.identifier.system == system);
        let only = by_system.next()?;
        by_system.next().is_none().then_some(only)
    }

    /// The patient with this id.
    pub fn patient(&self, id: PatientId) -> Option<&Patient> {
        self.patients.get(&id)
    }

    /// Every patient, sorted by ward, bed and id.
    pub fn patients(&self) -> Vec<&Patient> {
        let mut patients: Vec<&Patient> = self.patients.values().collect();
        patients.sort_by(|left, right| {
            (&left.details.ward, &left.details.bed, left.id).cmp(&(
                &right.details.ward,
                &right.details.bed,
                right.id,
            ))
        });
        patients
    }

    /// The FHIR resource a client last posted for `owner`, as JSON.
    pub fn document(&self, owner: DocumentOwner) -> Option<Arc<str>> {
        self.documents.get(&owner).cloned()
    }

    /// Every device, by id.
    pub fn devices(&self) -> Vec<&Device> {
        let mut devices: Vec<&Device> = self.devices.values().collect();
        devices.sort_by_key(|device| device.id);
        devices
    }

    /// The patient `device` was assigned to at `time`.
    pub fn patient_at(&self, device: DeviceId, time: Timestamp) -> Option<PatientId> {
        self.assignments
            .get(&device)?
            .iter()
            .find(|assignment| assignment.covers(time))
            .map(|assignment| assignment.details.patient)
    }

    /// Assignments of `patient` that overlap `[from, to)`.
    pub fn assignments_of(
        &self,
        patient: PatientId,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<Assignment> {
        let mut found: Vec<Assignment> = self
            .assignments
            .values()
            .flatten()
            .filter(|assignment| {
                assignment.details.patient == patient && assignment.overlaps(from, Some(to))
            })
            .copied()
            .collect();
        found.sort_by_key(|assignment| assignment.details.start);
        found
    }
}

/// Shared, reloadable registry cache.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    snapshot: Arc<RwLock<DirectorySnapshot>>,
    /// Serialises reloads: without it, a reload that read the store before a change could
    /// install its older snapshot after a reload that saw the change.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl Directory {
    /// Loads the registry from `store`.
    pub async fn load(store: &dyn Store) -> galen_store::Result<Directory> {
        let directory = Directory::default();
        directory.reload(store).await?;
        Ok(directory)
    }

    /// Replaces the cache with the store's current registry.
    pub async fn reload(&self, store: &dyn Store) -> galen_store::Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let devices = store.devices().await?;
        let patients = store.patients(None).await?;
        let assignments = store.assignments().await?;
        let credentials = store.device_credentials().await?;
        let documents = store.registry_documents().await?;
        let mut snapshot = DirectorySnapshot::default();
        for device in devices {
            snapshot
                .devices_by_serial
                .insert(device.details.serial.clone(), device.clone());
            snapshot.devices.insert(device.id, device);
        }
        for credential in credentials {
            if credential.revoked.is_none() {
                snapshot
                    .credentials
                    .entry(credential.device)
                    .or_default()
                    .push(credential.secret_sha256);
            }
        }
        for patient in patients {
            snapshot.patients.insert(patient.id, patient);
        }
        for document in documents {
            snapshot
                .documents
                .insert(document.owner, Arc::from(document.body));
        }
        for assignment in assignments {
            snapshot
                .assignments
                .entry(assignment.details.device)
                .or_default()
                .push(assignment);
        }
        *self
            .snapshot
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = snapshot;
        Ok(())
    }

    /// A read guard on the current snapshot. Hold it briefly and never across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, DirectorySnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

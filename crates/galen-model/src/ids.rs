//! Opaque internal identifiers. They are what logs and metrics may mention: they carry no PHI.

use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}{}", $prefix, self.0)
            }
        }
    };
}

id_type!(
    /// Internal id of a patient (not the MRN: the MRN is PHI and never leaves the API).
    PatientId,
    "patient/"
);
id_type!(
    /// Internal id of a registered device.
    DeviceId,
    "device/"
);
id_type!(
    /// Internal id of one assignment of a device to a patient.
    AssignmentId,
    "assignment/"
);
id_type!(
    /// Internal id of a recorded consent.
    ConsentId,
    "consent/"
);

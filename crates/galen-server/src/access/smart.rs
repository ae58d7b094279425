//! SMART App Launch scopes (v2 with the v1 forms) and what each `/fhir` interaction needs.
//!
//! Grammar (SMART App Launch 2.x, "Scopes and Launch Context", section on FHIR resource scopes):
//! `(patient|user|system) "/" (ResourceType|"*") "." permissions`, where the v2 permissions are
//! some of `c` (create), `r` (read, vread), `u` (update), `d` (delete), `s` (search), each at most
//! once and in that order. The v1 forms map as the specification says: `.read` = `.rs`,
//! `.write` = `.cud`, `.*` = `.cruds`. Finer-grained v2 scopes with a query (`?category=...`) are
//! refused, not widened.
//!
//! A scope only narrows: a principal that carries scopes (a machine client's access token) needs
//! its role's permission, its ward scope **and** a granted scope for the resource type and
//! interaction of the request. The context (`user` or `system`) does not widen either: both act
//! with the client's role and wards.

use std::collections::BTreeSet;
use std::fmt;

use axum::http::Method;

/// Who a scope is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Context {
    /// `patient/`: the patient in context (needs a launch; backend services have none).
    Patient,
    /// `user/`: whatever the user may see.
    User,
    /// `system/`: a backend service without a user.
    System,
}

impl Context {
    fn code(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// The v2 permissions as bits: `c r u d s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permissions(u8);

impl Permissions {
    /// Create.
    pub const CREATE: Permissions = Permissions(1);
    /// Read (and vread).
    pub const READ: Permissions = Permissions(2);
    /// Update.
    pub const UPDATE: Permissions = Permissions(4);
    /// Delete.
    pub const DELETE: Permissions = Permissions(8);
    /// Search.
    pub const SEARCH: Permissions = Permissions(16);
    const LETTERS: [(char, Permissions); 5] = [
        ('c', Permissions::CREATE),
        ('r', Permissions::READ),
        ('u', Permissions::UPDATE),
        ('d', Permissions::DELETE),
        ('s', Permissions::SEARCH),
    ];

    /// Both.
    pub const fn and(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    fn intersect(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Each single permission in `self`.
    fn each(self) -> impl Iterator<Item = Permissions> {
        Permissions::LETTERS
            .into_iter()
            .map(|(_, permission)| permission)
            .filter(move |permission| self.contains(*permission))
    }

    /// v2 letters: `c` `r` `u` `d` `s`, each at most once, in that order.
    fn parse_v2(text: &str) -> Option<Permissions> {
        let mut next = 0;
        let mut bits = 0;
        for character in text.chars() {
            let position = Permissions::LETTERS[next..]
                .iter()
                .position(|(letter, _)| *letter == character)?;
            bits |= Permissions::LETTERS[next + position].1.0;
            next += position + 1;
        }
        (bits != 0).then_some(Permissions(bits))
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (letter, permission) in Permissions::LETTERS {
            if self.contains(permission) {
                write!(formatter, "{letter}")?;
            }
        }
        Ok(())
    }
}

/// One SMART scope for FHIR resources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SmartScope {
    /// Whose data.
    pub context: Context,
    /// The resource type, or `None` for `*`.
    pub resource: Option<String>,
    /// What may be done.
    pub permissions: Permissions,
}

/// Why a scope does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not `context/type.permissions`.
    #[error("scope {0:?} is not a SMART resource scope (e.g. system/Observation.rs, user/*.cruds)")]
    Syntax(String),
    /// A v2 scope with a query (finer-grained access), which Galen does not enforce.
    #[error("scope {0:?}: scopes with a query are not supported; ask for the whole resource type")]
    Query(String),
}

impl SmartScope {
    /// Parses one scope (v2 permissions, or the v1 `read`, `write`, `*`).
    pub fn parse(text: &str) -> Result<SmartScope, ScopeError> {
        let syntax = || ScopeError::Syntax(text.chars().take(100).collect());
        if text.contains('?') {
            return Err(ScopeError::Query(text.chars().take(100).collect()));
        }
        let (context, rest) = text.split_once('/').ok_or_else(syntax)?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return Err(syntax()),
        };
        let (resource, permissions) = rest.rsplit_once('.').ok_or_else(syntax)?;
        let resource = match resource {
            "*" => None,
            name if is_resource_type(name) => Some(name.to_owned()),
            _ => return Err(syntax()),
        };
        let permissions = match permissions {
            // SMART 2.x, "Scopes for requesting FHIR Resources": v1 `read` is v2 `rs`, `write`
            // is `cud`, `*` is `cruds`.
            "read" => Permissions::READ.and(Permissions::SEARCH),
            "write" => Permissions::CREATE
                .and(Permissions::UPDATE)
                .and(Permissions::DELETE),
            "*" => Permissions::parse_v2("cruds").ok_or_else(syntax)?,
            letters => Permissions::parse_v2(letters).ok_or_else(syntax)?,
        };
        Ok(SmartScope {
            context,
            resource,
            permissions,
        })
    }

    /// What both allow, if anything: the same context, the narrower resource, the common
    /// permissions.
    pub fn intersect(&self, other: &SmartScope) -> Option<SmartScope> {
        if self.context != other.context {
            return None;
        }
        let resource = match (&self.resource, &other.resource) {
            (None, other) => other.clone(),
            (mine, None) => mine.clone(),
            (Some(mine), Some(theirs)) if mine == theirs => Some(mine.clone()),
            _ => return None,
        };
        let permissions = self.permissions.intersect(other.permissions);
        (!permissions.is_empty()).then_some(SmartScope {
            context: self.context,
            resource,
            permissions,
        })
    }

    /// Whether the scope grants `permission` on `resource_type`.
    pub fn grants(&self, resource_type: &str, permission: Permissions) -> bool {
        self.resource
            .as_deref()
            .is_none_or(|resource| resource == resource_type)
            && self.permissions.contains(permission)
    }
}

impl fmt::Display for SmartScope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{}.{}",
            self.context.code(),
            self.resource.as_deref().unwrap_or("*"),
            self.permissions
        )
    }
}

/// A FHIR resource type name: a capital letter, then letters and digits.
fn is_resource_type(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_uppercase())
        && characters.all(|character| character.is_ascii_alphanumeric())
        && name.len() <= 64
}

/// The scopes an access token grants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(pub BTreeSet<SmartScope>);

impl ScopeSet {
    /// Whether some scope grants each permission of `needed` on `resource_type` (permissions
    /// may come from different scopes: `system/Patient.r` and `system/Patient.s` grant `rs`).
    pub fn allows(&self, resource_type: &str, needed: Permissions) -> bool {
        needed.each().all(|permission| {
            self.0
                .iter()
                .any(|scope| scope.grants(resource_type, permission))
        })
    }

    /// The scopes as the space-separated `scope` of RFC 6749 section 3.3.
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Why a request to `/fhir` may not be made with these scopes, or `None`.
    /// `route` is the matched route template, `path` and `query` the request's.
    pub fn refusal(&self, method: &Method, route: &str, path: &str, query: &str) -> Option<String> {
        let needs = match needs(method, route, path, query) {
            Needs::Nothing => return None,
            Needs::Unknown => {
                return Some(
                    "this access token is for Galen's FHIR resources only (its audience)"
                        .to_owned(),
                );
            }
            Needs::AnyExport => {
                let exported = crate::fhir::EXPORT_TYPES.iter().any(|resource| {
                    self.allows(resource, Permissions::READ.and(Permissions::SEARCH))
                });
                if exported {
                    return None;
                }
                return Some(
                    "the access token's scopes grant no exported type (read and search)".to_owned(),
                );
            }
            Needs::All(needs) => needs,
        };
        let missing: Vec<String> = needs
            .iter()
            .filter(|(resource, permissions)| !self.allows(resource, *permissions))
            .map(|(resource, permissions)| format!("{resource}.{permissions}"))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "the access token's scopes do not grant {}",
                missing.join(", ")
            )
        })
    }
}

/// What a `/fhir` interaction needs of the scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Needs {
    /// Nothing here: a Bundle's entries are checked one by one, an unknown path is a 404.
    Nothing,
    /// Each of these.
    All(Vec<(String, Permissions)>),
    /// Read and search of at least one exported type (an export job's status).
    AnyExport,
    /// A route the table does not know: refused (fail closed).
    Unknown,
}

/// The resource type and permission each `/fhir` route and method needs (SMART 2.x: `c` create,
/// `r` read/vread, `u` update/patch, `d` delete, `s` search; Bulk Data `$export` reads and
/// searches every exported type, and an export file (`{Type}.ndjson`) needs read of its type).
fn needs(method: &Method, route: &str, path: &str, query: &str) -> Needs {
    let reading = matches!(*method, Method::GET | Method::HEAD);
    let Some(rest) = route.strip_prefix("/fhir") else {
        return Needs::Unknown;
    };
    let one = |resource: &str, permission: Permissions| {
        Needs::All(vec![(resource.to_owned(), permission)])
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] | ["{*rest}"] => Needs::Nothing,
        ["$export"] | ["Patient", "$export"] | ["Group", "{id}", "$export"] if reading => {
            let read_search = Permissions::READ.and(Permissions::SEARCH);
            let named: Vec<String> = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
                .unwrap_or_default()
                .into_iter()
                .filter(|(name, _)| name == "_type")
                .flat_map(|(_, value)| {
                    value
                        .split(',')
                        .map(|name| name.trim().to_owned())
                        .collect::<Vec<_>>()
                })
                .collect();
            let types: Vec<String> = if named.is_empty() {
                crate::fhir::EXPORT_TYPES
                    .iter()
                    .map(|name| (*name).to_owned())
                    .collect()
            } else {
                named
            };
            Needs::All(
                types
                    .into_iter()
                    .map(|resource| (resource, read_search))
                    .collect(),
            )
        }
        ["$export-status", "{job}"] => Needs::AnyExport,
        ["$export-file", "{job}", "{file}"] => {
            let file = path.rsplit('/').next().unwrap_or("");
            one(
                file.strip_suffix(".ndjson").unwrap_or(file),
                Permissions::READ,
            )
        }
        ["Subscription", "{id}", "$status" | "$get-ws-binding-token"] => {
            one("Subscription", Permissions::READ)
        }
        [resource] if is_resource_type(resource) => match *method {
            Method::GET | Method::HEAD => one(resource, Permissions::SEARCH),
            Method::POST => one(resource, Permissions::CREATE),
            _ => Needs::Unknown,
        },
        [resource, "{id}"] if is_resource_type(resource) => match *method {
            Method::GET | Method::HEAD => one(resource, Permissions::READ),
            Method::PUT | Method::PATCH => one(resource, Permissions::UPDATE),
            Method::DELETE => one(resource, Permissions::DELETE),
            _ => Needs::Unknown,
        },
        _ => Needs::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> SmartScope {
        SmartScope::parse(text).expect(text)
    }

    fn set(texts: &[&str]) -> ScopeSet {
        ScopeSet(texts.iter().map(|text| scope(text)).collect())
    }

    #[test]
    fn v2_and_v1_forms_parse_to_the_same_permissions() {
        assert_eq!(
            scope("patient/Observation.rs").to_string(),
            "patient/Observation.rs"
        );
        assert_eq!(scope("user/*.cruds").to_string(), "user/*.cruds");
        assert_eq!(scope("system/*.rs").to_string(), "system/*.rs");
        assert_eq!(scope("system/Patient.read"), scope("system/Patient.rs"));
        assert_eq!(scope("user/Device.write"), scope("user/Device.cud"));
        assert_eq!(scope("user/*.*"), scope("user/*.cruds"));
        assert_eq!(scope("system/Flag.c").permissions, Permissions::CREATE);
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for text in [
            "system/Patient.sr",
            "system/Patient.rr",
            "system/Patient.x",
            "system/Patient.",
            "system/patient.rs",
            "device/Patient.rs",
            "Patient.rs",
            "system/Patient",
            "launch",
            "openid",
            "",
            "system/Pat-ient.rs",
        ] {
            assert!(
                matches!(SmartScope::parse(text), Err(ScopeError::Syntax(_))),
                "{text}"
            );
        }
        assert!(matches!(
            SmartScope::parse("patient/Observation.rs?category=vital-signs"),
            Err(ScopeError::Query(_))
        ));
    }

    #[test]
    fn intersections_narrow() {
        let asked = scope("system/*.cruds");
        let allowed = scope("system/Patient.rs");
        assert_eq!(asked.intersect(&allowed), Some(allowed.clone()));
        assert_eq!(allowed.intersect(&asked), Some(allowed.clone()));
        assert_eq!(scope("system/Observation.rs").intersect(&allowed), None);
        assert_eq!(scope("user/Patient.rs").intersect(&allowed), None);
        assert_eq!(scope("system/Patient.cud").intersect(&allowed), None);
        assert_eq!(
            scope("system/Patient.read").intersect(&scope("system/*.rus")),
            Some(scope("system/Patient.rs"))
        );
    }

    #[test]
    fn interactions_need_their_scopes() {
        let scopes = set(&["system/Patient.rs"]);
        let check = |method: Method, route: &str, query: &str| {
            scopes.refusal(&method, route, route, query).is_none()
        };
        assert!(check(Method::GET, "/fhir/Patient", "name=x"));
        assert!(check(Method::GET, "/fhir/Patient/{id}", ""));
        assert!(!check(Method::POST, "/fhir/Patient", ""));
        assert!(!check(Method::PUT, "/fhir/Patient/{id}", ""));
        assert!(!check(Method::GET, "/fhir/Observation", ""));
        assert!(!check(Method::GET, "/fhir/Observation/{id}", ""));
        assert!(
            check(Method::POST, "/fhir", ""),
            "entries are checked one by one"
        );
        assert!(!check(Method::GET, "/api/v1/patients", ""), "FHIR only");
        assert!(!check(Method::GET, "/fhir/$export", ""), "every type");
        assert!(check(Method::GET, "/fhir/$export", "_type=Patient"));
        assert!(!check(
            Method::GET,
            "/fhir/$export",
            "_type=Patient,Observation"
        ));
        assert!(check(Method::GET, "/fhir/$export-status/{job}", ""));
        assert!(!check(Method::GET, "/fhir/Subscription/{id}/$status", ""));
        assert!(!check(Method::OPTIONS, "/fhir/Patient", ""));
        let file = |path: &str| {
            scopes
                .refusal(&Method::GET, "/fhir/$export-file/{job}/{file}", path, "")
                .is_none()
        };
        assert!(file("/fhir/$export-file/abc/Patient.ndjson"));
        assert!(!file("/fhir/$export-file/abc/Flag.ndjson"));

        let split = set(&["system/Observation.r", "system/Observation.s"]);
        assert!(split.allows("Observation", Permissions::READ.and(Permissions::SEARCH)));
        assert!(!split.allows("Observation", Permissions::CREATE));
        let none = ScopeSet::default();
        assert!(
            none.refusal(&Method::GET, "/fhir/$export-status/{job}", "", "")
                .is_some()
        );
    }
}

//! `CapabilityStatement`: what Galen's FHIR endpoint supports, for `GET [base]/metadata`.
//!
//! The server says which interactions it wires for which resource types; the search parameters of
//! each type come from [`crate::search`], the same tables the query parser enforces, so the
//! statement cannot advertise a parameter that the parser refuses, or the reverse.

use galen_model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::audit_event::AuditEvent;
use crate::codes;
use crate::datatypes::Extra;
use crate::device_metric::DeviceMetric;
use crate::location::Location;
use crate::resource::{Device, FhirResource, Flag, Observation, Patient, ResourceType};
use crate::search::{self, SearchParameterSpec};

/// A RESTful interaction (R4 `TypeRestfulInteraction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `GET [type]/[id]`.
    Read,
    /// `GET [type]/[id]/_history/[vid]`.
    Vread,
    /// `PUT [type]/[id]`.
    Update,
    /// `PATCH [type]/[id]`.
    Patch,
    /// `DELETE [type]/[id]`.
    Delete,
    /// `GET [type]/[id]/_history`.
    HistoryInstance,
    /// `GET [type]/_history`.
    HistoryType,
    /// `POST [type]`.
    Create,
    /// `GET [type]?...`.
    SearchType,
}

impl Interaction {
    /// The code.
    pub const fn code(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::Create => "create",
            Interaction::SearchType => "search-type",
        }
    }
}

/// `CapabilityStatement`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityStatement {
    /// Always `CapabilityStatement`.
    pub resource_type: ResourceType<CapabilityStatement>,
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `draft`, `active`, `retired` or `unknown`.
    pub status: String,
    /// When the statement was issued (FHIR dateTime).
    pub date: String,
    /// Who publishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// `instance`, `capability` or `requirements`.
    pub kind: String,
    /// The software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<CapabilitySoftware>,
    /// The running installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation: Option<CapabilityImplementation>,
    /// `4.0.1`.
    pub fhir_version: String,
    /// Supported formats.
    pub format: Vec<String>,
    /// The REST endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rest: Vec<CapabilityRest>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl FhirResource for CapabilityStatement {
    const TYPE: &'static str = "CapabilityStatement";

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// `CapabilityStatement.software`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitySoftware {
    /// Name.
    pub name: String,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CapabilityStatement.implementation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityImplementation {
    /// What this installation is.
    pub description: String,
    /// Base URL of the FHIR endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CapabilityStatement.rest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityRest {
    /// `server`.
    pub mode: String,
    /// Resource types served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<CapabilityResource>,
    /// System-level interactions (`batch`, `transaction`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interaction: Vec<CapabilityInteraction>,
    /// System-level operations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operation: Vec<CapabilityOperation>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CapabilityStatement.rest.operation` and `rest.resource.operation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityOperation {
    /// The name used to invoke it (without `$`).
    pub name: String,
    /// The canonical URL of its OperationDefinition.
    pub definition: String,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The Subscriptions R5 Backport IG's R4 Subscription profile and `$status` operation.
const BACKPORT_SUBSCRIPTION_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";
const BACKPORT_STATUS_OPERATION: &str = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status";
/// The Subscriptions R5 Backport IG's `$get-ws-binding-token` operation (websocket channel).
const BACKPORT_WS_TOKEN_OPERATION: &str = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token";

/// The Bulk Data Access IG's export operations.
const BULK_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export";
const BULK_PATIENT_EXPORT: &str =
    "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export";
const BULK_GROUP_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export";

/// `CapabilityStatement.rest.resource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityResource {
    /// The resource type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Profiles of this type the server produces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_profile: Vec<String>,
    /// Supported interactions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interaction: Vec<CapabilityInteraction>,
    /// Supported search parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search_param: Vec<CapabilitySearchParam>,
    /// Operations on this type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operation: Vec<CapabilityOperation>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CapabilityStatement.rest.resource.interaction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityInteraction {
    /// The interaction code.
    pub code: String,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CapabilityStatement.rest.resource.searchParam`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitySearchParam {
    /// The parameter name.
    pub name: String,
    /// Its definition (for parameters that are not in the base specification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// `number`, `date`, `string`, `token`, `reference`, ...
    #[serde(rename = "type")]
    pub param_type: String,
    /// How Galen interprets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Builds Galen's CapabilityStatement from what the server actually wires.
#[derive(Debug, Clone)]
pub struct CapabilityStatementBuilder {
    software_name: String,
    software_version: String,
    date: Timestamp,
    base_url: Option<String>,
    resources: Vec<CapabilityResource>,
    operations: Vec<CapabilityOperation>,
    system_interactions: Vec<CapabilityInteraction>,
    security: Option<serde_json::Value>,
}

impl CapabilityStatementBuilder {
    /// A statement for `software_name` `software_version`, dated `date` (e.g. the start of the
    /// process: the statement changes only with the software).
    pub fn new(
        software_name: &str,
        software_version: &str,
        date: Timestamp,
    ) -> CapabilityStatementBuilder {
        CapabilityStatementBuilder {
            software_name: software_name.to_owned(),
            software_version: software_version.to_owned(),
            date,
            base_url: None,
            resources: Vec::new(),
            operations: Vec::new(),
            system_interactions: Vec::new(),
            security: None,
        }
    }

    /// The endpoint's base URL (`implementation.url`).
    pub fn base_url(mut self, url: &str) -> CapabilityStatementBuilder {
        self.base_url = Some(url.to_owned());
        self
    }

    /// Declares a resource type with its interactions, search parameters and produced profiles.
    pub fn resource(
        mut self,
        resource_type: &str,
        interactions: &[Interaction],
        search_params: &[SearchParameterSpec],
        supported_profiles: &[&str],
    ) -> CapabilityStatementBuilder {
        let searchable = interactions.contains(&Interaction::SearchType);
        self.resources.push(CapabilityResource {
            resource_type: resource_type.to_owned(),
            supported_profile: supported_profiles
                .iter()
                .map(|profile| (*profile).to_owned())
                .collect(),
            interaction: interactions
                .iter()
                .map(|interaction| CapabilityInteraction {
                    code: interaction.code().to_owned(),
                    extra: Extra::new(),
                })
                .collect(),
            search_param: search_params
                .iter()
                .filter(|_| searchable)
                .map(|spec| CapabilitySearchParam {
                    name: spec.name.to_owned(),
                    definition: spec.definition.map(str::to_owned),
                    param_type: spec.kind.code().to_owned(),
                    documentation: Some(spec.documentation.to_owned()),
                    extra: Extra::new(),
                })
                .collect(),
            operation: Vec::new(),
            extra: Extra::new(),
        });
        self
    }

    /// Declares Bulk Data `$export` at the system level, on `Patient` and on `Group` (a
    /// `Group` entry with no interactions is added for it); each operation's `documentation`
    /// names the resource `types` an export contains (the values `_type` accepts).
    pub fn bulk_export(mut self, types: &[&str]) -> CapabilityStatementBuilder {
        let documentation = format!(
            "Exports these resource types, which are also the values _type accepts: {}.",
            types.join(", ")
        );
        let operation = |name: &str, definition: &str| CapabilityOperation {
            name: name.to_owned(),
            definition: definition.to_owned(),
            extra: [(
                "documentation".to_owned(),
                serde_json::Value::String(documentation.clone()),
            )]
            .into_iter()
            .collect(),
        };
        self.operations.push(operation("export", BULK_EXPORT));
        if let Some(patient) = self
            .resources
            .iter_mut()
            .find(|resource| resource.resource_type == Patient::TYPE)
        {
            patient
                .operation
                .push(operation("patient-export", BULK_PATIENT_EXPORT));
        }
        self.resources.push(CapabilityResource {
            resource_type: "Group".to_owned(),
            operation: vec![operation("group-export", BULK_GROUP_EXPORT)],
            ..CapabilityResource::default()
        });
        self
    }

    /// Declares `Patient` with the search parameters of [`search::PatientQuery`].
    pub fn patient(self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        self.resource(Patient::TYPE, interactions, search::PATIENT_PARAMETERS, &[])
    }

    /// Declares `Device` with the search parameters of [`search::DeviceQuery`].
    pub fn device(self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        self.resource(Device::TYPE, interactions, search::DEVICE_PARAMETERS, &[])
    }

    /// Declares `Observation` with the search parameters of [`search::ObservationQuery`] (which
    /// [`search::ScoreQuery`] shares) and the vital-signs profiles Galen's vital-sign Observations
    /// conform to (early-warning scores claim no profile).
    pub fn observation(self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        let mut profiles: Vec<&str> =
            vec![codes::VITAL_SIGNS_PROFILE, codes::BLOOD_PRESSURE_PROFILE];
        for vital in galen_model::VitalSign::ALL {
            if let Some(profile) = codes::vital_profile(vital)
                && !profiles.contains(&profile)
            {
                profiles.push(profile);
            }
        }
        self.resource(
            Observation::TYPE,
            interactions,
            search::OBSERVATION_PARAMETERS,
            &profiles,
        )
    }

    /// Declares `Flag` (Galen's alarms) with the search parameters of [`search::FlagQuery`].
    pub fn flag(self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        self.resource(Flag::TYPE, interactions, search::FLAG_PARAMETERS, &[])
    }

    /// Declares `Location` (Galen's wards and beds) with the search parameters of
    /// [`search::LocationQuery`].
    pub fn location(self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        self.resource(
            Location::TYPE,
            interactions,
            search::LOCATION_PARAMETERS,
            &[],
        )
    }

    /// Declares `DeviceMetric` (what each device measures) with the search parameters of
    /// [`search::DeviceMetricQuery`].
    pub fn device_metric(self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        self.resource(
            DeviceMetric::TYPE,
            interactions,
            search::DEVICE_METRIC_PARAMETERS,
            &[],
        )
    }

    /// Declares `AuditEvent` (the audit trail, read-only) with the search parameters of
    /// [`search::AuditEventQuery`].
    pub fn audit_event(self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        self.resource(
            AuditEvent::TYPE,
            interactions,
            search::AUDIT_EVENT_PARAMETERS,
            &[],
        )
    }

    /// Declares `Consent` (patients' consents) with the search parameters of
    /// [`search::ConsentQuery`].
    pub fn consent(self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        self.resource(
            crate::consent::Consent::TYPE,
            interactions,
            search::CONSENT_PARAMETERS,
            &[],
        )
    }

    /// Declares the system-level `batch` and `transaction` interactions (`POST [base]` with a
    /// Bundle of that type).
    pub fn batch_and_transaction(mut self) -> CapabilityStatementBuilder {
        for code in ["batch", "transaction"] {
            self.system_interactions.push(CapabilityInteraction {
                code: code.to_owned(),
                extra: Extra::new(),
            });
        }
        self
    }

    /// Declares `Subscription` (R5 Backport IG, topic-based) with its `$status` and
    /// `$get-ws-binding-token` (websocket channel) operations.
    pub fn subscription(mut self, interactions: &[Interaction]) -> CapabilityStatementBuilder {
        self = self.resource(
            "Subscription",
            interactions,
            &[],
            &[BACKPORT_SUBSCRIPTION_PROFILE],
        );
        if let Some(subscription) = self
            .resources
            .iter_mut()
            .find(|resource| resource.resource_type == "Subscription")
        {
            subscription.operation.push(CapabilityOperation {
                name: "status".to_owned(),
                definition: BACKPORT_STATUS_OPERATION.to_owned(),
                extra: Extra::new(),
            });
            subscription.operation.push(CapabilityOperation {
                name: "get-ws-binding-token".to_owned(),
                definition: BACKPORT_WS_TOKEN_OPERATION.to_owned(),
                extra: Extra::new(),
            });
        }
        self
    }

    /// Declares SMART on FHIR: `rest.security` with the `SMART-on-FHIR` service code and a
    /// description naming the discovery document (`smart_configuration`, the URL of
    /// `.well-known/smart-configuration`, which SMART App Launch 2.x makes the normative place).
    /// The v1 `oauth-uris` extension is left out on purpose: app-launch clients read it as an
    /// authorization endpoint for a user (fhirclient then waits for one), and Galen offers the
    /// client-credentials grant only.
    pub fn smart_security(mut self, smart_configuration: &str) -> CapabilityStatementBuilder {
        self.security = Some(serde_json::json!({
            "service": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                }],
            }],
            "description": format!(
                "OAuth2 client credentials (SMART Backend Services) with SMART v2 scopes; \
                 discovery: {smart_configuration}"
            ),
        }));
        self
    }

    /// The statement.
    pub fn build(self) -> CapabilityStatement {
        let mut rest_extra = Extra::new();
        if let Some(security) = self.security {
            rest_extra.insert("security".to_owned(), security);
        }
        CapabilityStatement {
            resource_type: ResourceType::new(),
            id: None,
            status: "active".to_owned(),
            date: self.date.to_rfc3339(),
            publisher: Some("Galen".to_owned()),
            kind: "instance".to_owned(),
            software: Some(CapabilitySoftware {
                name: self.software_name,
                version: Some(self.software_version),
                extra: Extra::new(),
            }),
            implementation: Some(CapabilityImplementation {
                description: "Galen IoMT platform FHIR R4 endpoint".to_owned(),
                url: self.base_url,
                extra: Extra::new(),
            }),
            fhir_version: "4.0.1".to_owned(),
            format: vec!["json".to_owned(), "application/fhir+json".to_owned()],
            rest: vec![CapabilityRest {
                mode: "server".to_owned(),
                resource: self.resources,
                interaction: self.system_interactions,
                operation: self.operations,
                extra: rest_extra,
            }],
            extra: Extra::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statement_lists_what_was_declared() {
        let statement = CapabilityStatementBuilder::new(
            "galen",
            "0.1.0",
            Timestamp::from_seconds(1_795_421_700),
        )
        .base_url("https://galen.example/fhir")
        .patient(&[
            Interaction::Read,
            Interaction::SearchType,
            Interaction::Create,
        ])
        .device(&[Interaction::Read])
        .observation(&[Interaction::Read, Interaction::SearchType])
        .flag(&[Interaction::Read, Interaction::SearchType])
        .location(&[Interaction::Read, Interaction::SearchType])
        .device_metric(&[Interaction::Read, Interaction::SearchType])
        .build();
        let json = serde_json::to_value(&statement).expect("serialises");
        assert_eq!(json["resourceType"], "CapabilityStatement");
        assert_eq!(json["fhirVersion"], "4.0.1");
        assert_eq!(json["date"], "2026-11-23T08:15:00.000Z");
        assert_eq!(json["implementation"]["url"], "https://galen.example/fhir");
        let resources = json["rest"][0]["resource"].as_array().expect("resources");
        let types: Vec<&str> = resources
            .iter()
            .filter_map(|resource| resource["type"].as_str())
            .collect();
        assert_eq!(
            types,
            [
                "Patient",
                "Device",
                "Observation",
                "Flag",
                "Location",
                "DeviceMetric"
            ]
        );
        assert_eq!(
            resources[0]["interaction"],
            json!([{ "code": "read" }, { "code": "search-type" }, { "code": "create" }])
        );
        let patient_params: Vec<&str> = resources[0]["searchParam"]
            .as_array()
            .expect("patient params")
            .iter()
            .filter_map(|param| param["name"].as_str())
            .collect();
        for name in ["_id", "identifier", "birthdate", "gender", "ward"] {
            assert!(
                patient_params.contains(&name),
                "{name} in {patient_params:?}"
            );
        }
        assert!(
            resources[1].get("searchParam").is_none(),
            "no search parameters without search-type"
        );
        let profiles = resources[2]["supportedProfile"]
            .as_array()
            .expect("profiles");
        assert!(profiles.contains(&json!("http://hl7.org/fhir/StructureDefinition/bp")));
        assert!(profiles.contains(&json!("http://hl7.org/fhir/StructureDefinition/oxygensat")));
        let ward = resources[0]["searchParam"]
            .as_array()
            .and_then(|params| params.iter().find(|param| param["name"] == "ward"))
            .expect("ward");
        assert_eq!(ward["definition"], codes::WARD_SEARCH_PARAMETER);
        let flag_params: Vec<(&str, Option<&str>)> = resources[3]["searchParam"]
            .as_array()
            .expect("flag params")
            .iter()
            .filter_map(|param| Some((param["name"].as_str()?, param["definition"].as_str())))
            .collect();
        assert_eq!(
            flag_params,
            [
                ("_id", None),
                ("patient", None),
                ("subject", None),
                ("date", None),
                ("status", Some(codes::FLAG_STATUS_SEARCH_PARAMETER)),
                ("state", Some(codes::FLAG_STATE_SEARCH_PARAMETER)),
                ("priority", Some(codes::FLAG_PRIORITY_SEARCH_PARAMETER)),
            ]
        );
        let names = |resource: &serde_json::Value| -> Vec<String> {
            resource["searchParam"]
                .as_array()
                .expect("params")
                .iter()
                .filter_map(|param| param["name"].as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(names(&resources[4]), ["_id", "name", "partof", "status"]);
        assert_eq!(names(&resources[5]), ["_id", "source", "type"]);
        for resource in &resources[4..] {
            assert_eq!(
                resource["interaction"],
                json!([{ "code": "read" }, { "code": "search-type" }])
            );
            assert!(
                resource["searchParam"]
                    .as_array()
                    .expect("params")
                    .iter()
                    .all(|param| param.get("definition").is_none()),
                "all are R4 parameters"
            );
        }
    }

    #[test]
    fn exported_types_and_subscription_operations_are_declared() {
        let statement =
            CapabilityStatementBuilder::new("galen", "0.1.0", Timestamp::from_seconds(0))
                .patient(&[Interaction::Read])
                .subscription(&[Interaction::Read, Interaction::Create])
                .bulk_export(&["Patient", "Device", "Observation", "Flag"])
                .build();
        let json = serde_json::to_value(&statement).expect("serialises");
        let export = &json["rest"][0]["operation"][0];
        assert_eq!(export["name"], "export");
        assert!(
            export["documentation"]
                .as_str()
                .is_some_and(|text| text.contains("Observation, Flag")),
            "{export}"
        );
        let resources = json["rest"][0]["resource"].as_array().expect("resources");
        let operations = |kind: &str| -> Vec<String> {
            resources
                .iter()
                .find(|resource| resource["type"] == kind)
                .and_then(|resource| resource["operation"].as_array())
                .into_iter()
                .flatten()
                .filter_map(|operation| operation["name"].as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(operations("Patient"), ["patient-export"]);
        assert_eq!(operations("Group"), ["group-export"]);
        assert_eq!(
            operations("Subscription"),
            ["status", "get-ws-binding-token"]
        );
    }

    #[test]
    fn audit_event_is_declared_with_its_search_parameters() {
        let statement =
            CapabilityStatementBuilder::new("galen", "0.1.0", Timestamp::from_seconds(0))
                .audit_event(&[Interaction::Read, Interaction::SearchType])
                .build();
        let json = serde_json::to_value(&statement).expect("serialises");
        let audit = &json["rest"][0]["resource"][0];
        assert_eq!(audit["type"], "AuditEvent");
        assert_eq!(
            audit["interaction"],
            json!([{ "code": "read" }, { "code": "search-type" }])
        );
        let names: Vec<&str> = audit["searchParam"]
            .as_array()
            .expect("params")
            .iter()
            .filter_map(|param| param["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "_id", "date", "patient", "agent", "action", "outcome", "subtype"
            ]
        );
    }

    #[test]
    fn smart_is_declared_in_rest_security() {
        let plain =
            CapabilityStatementBuilder::new("galen", "0.1.0", Timestamp::from_seconds(0)).build();
        let json = serde_json::to_value(&plain).expect("serialises");
        assert!(json["rest"][0].get("security").is_none());
        let statement =
            CapabilityStatementBuilder::new("galen", "0.1.0", Timestamp::from_seconds(0))
                .smart_security("https://galen.example.org/fhir/.well-known/smart-configuration")
                .build();
        let json = serde_json::to_value(&statement).expect("serialises");
        let security = &json["rest"][0]["security"];
        assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
        assert!(
            security["description"]
                .as_str()
                .is_some_and(|text| text.ends_with("/fhir/.well-known/smart-configuration"))
        );
        assert!(security.get("extension").is_none(), "no oauth-uris");
    }
}

//! Searches of wards and beds (`Location`) and of what devices measure (`DeviceMetric`).
//!
//! Both are read-only views derived from the registry (and, for DeviceMetric, from which vital
//! signs a device has stored values of), so every filter is a test on a [`LocationKey`] or a
//! [`DeviceMetricKey`]. Results come in the keys' order; `_sort` is refused rather than ignored.
//!
//! **Location** takes R4's `name` (the ward's name or the bed's label, as a string: prefix,
//! case-insensitive; `:exact`, `:contains`), `partof` (the ward, `Location/{id}` or `{id}`) and
//! `status` (every Galen location is `active`: `suspended` and `inactive` match nothing).
//!
//! **DeviceMetric** takes R4's `source` (the device, `Device/{id}` or `{id}`) and `type`, a token
//! compared with exactly the codings Galen serves in `DeviceMetric.type`
//! ([`crate::device_metric::metric_type`]): the MDC code, the LOINC codes, or for the battery
//! charge Galen's measurement code; a code of another system matches nothing.

use std::collections::BTreeSet;

use galen_model::{DeviceId, VitalSign};

use super::{
    Criteria, Paging, SearchParamType, SearchParameterSpec, StringParam, TokenParam, TokenSystem,
    paging, restrict, spec, walk,
};
use crate::codes;
use crate::device_metric::{DeviceMetricKey, metric_type, parse_device_metric_id};
use crate::error::{Error, Result};
use crate::location::LocationKey;

/// Search parameters of Location.
pub const LOCATION_PARAMETERS: &[SearchParameterSpec] = &[
    spec(
        "_id",
        SearchParamType::Token,
        "a Location id: ward.{slug}.{hash} or bed.{ward slug}.{bed slug}.{hash}",
    ),
    spec(
        "name",
        SearchParamType::String,
        "start of the ward's name or of the bed's label (:exact, :contains)",
    ),
    spec(
        "partof",
        SearchParamType::Reference,
        "the ward (Location/{id}) whose beds are wanted",
    ),
    spec(
        "status",
        SearchParamType::Token,
        "active (every ward and bed Galen serves is active; suspended and inactive match nothing)",
    ),
];

/// Search parameters of DeviceMetric.
pub const DEVICE_METRIC_PARAMETERS: &[SearchParameterSpec] = &[
    spec(
        "_id",
        SearchParamType::Token,
        "a DeviceMetric id {device}.{code}, e.g. 7.hr",
    ),
    spec(
        "source",
        SearchParamType::Reference,
        "the measuring device (Device/{id} or {id})",
    ),
    spec(
        "type",
        SearchParamType::Token,
        "the IEEE 11073 MDC or LOINC code of what is measured (system|code or code); the battery charge in https://galen.invalid/fhir/CodeSystem/measurement",
    ),
];

/// Location status codes (`Location.status`).
const LOCATION_STATUSES: [&str; 3] = ["active", "suspended", "inactive"];

/// Refuses `_sort` on a type whose results have one fixed order.
fn no_sort(sort: Option<&str>, order: &str) -> Result<()> {
    match sort {
        None => Ok(()),
        Some(_) => Err(Error::search_unsupported(
            "_sort",
            format!("_sort is not supported here: results come {order}"),
        )),
    }
}

/// A parsed Location search.
///
/// Sets are `None` when the parameter was not given and may be empty (nothing can match).
#[derive(Debug, Clone, PartialEq)]
pub struct LocationQuery {
    /// `_id`.
    pub ids: Option<BTreeSet<String>>,
    /// `name`.
    pub name: Criteria<StringParam>,
    /// `partof`: ids of the wards whose beds are wanted.
    pub part_of: Option<BTreeSet<String>>,
    /// `status`: the statuses wanted.
    pub statuses: Option<BTreeSet<&'static str>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

impl LocationQuery {
    /// Parses the query pairs of a Location search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<LocationQuery> {
        let mut query = LocationQuery {
            ids: None,
            name: Criteria::default(),
            part_of: None,
            statuses: None,
            paging: Paging::default(),
        };
        let common = walk(params, LOCATION_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => {
                    let group = occurrence.ids(|id| Some(id.to_owned()))?;
                    restrict(&mut query.ids, group);
                }
                "name" => query.name.push(occurrence.strings()?),
                "partof" => {
                    let group = occurrence.reference_ids("Location")?.into_iter().collect();
                    restrict(&mut query.part_of, group);
                }
                "status" => {
                    let mut group = BTreeSet::new();
                    for token in occurrence.tokens()? {
                        let system_ok = match &token.system {
                            TokenSystem::Any => true,
                            TokenSystem::Exact(system) => system == codes::LOCATION_STATUS,
                            TokenSystem::None => false,
                        };
                        let statuses: Vec<&'static str> = match token.code.as_deref() {
                            _ if !system_ok => Vec::new(),
                            None => LOCATION_STATUSES.to_vec(),
                            Some(code) => LOCATION_STATUSES
                                .into_iter()
                                .filter(|status| *status == code)
                                .collect(),
                        };
                        if statuses.is_empty() {
                            return Err(occurrence.value_error(format!(
                                "status must be a code of {}: active, suspended or inactive",
                                codes::LOCATION_STATUS
                            )));
                        }
                        group.extend(statuses);
                    }
                    restrict(&mut query.statuses, group);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        no_sort(
            common.sort.as_deref(),
            "by ward name, each ward followed by its beds",
        )?;
        query.paging = paging(&common);
        Ok(query)
    }

    /// Whether nothing can match.
    pub fn matches_nothing(&self) -> bool {
        self.ids.as_ref().is_some_and(BTreeSet::is_empty)
            || self.part_of.as_ref().is_some_and(BTreeSet::is_empty)
            || self
                .statuses
                .as_ref()
                .is_some_and(|statuses| !statuses.contains("active"))
    }

    /// Whether a ward or bed matches every filter.
    pub fn matches(&self, key: &LocationKey) -> bool {
        !self.matches_nothing()
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&key.id()))
            && self.name.matches(|name| name.matches(key.name()))
            && self
                .part_of
                .as_ref()
                .is_none_or(|wards| key.parent().is_some_and(|ward| wards.contains(&ward.id())))
    }
}

/// A parsed DeviceMetric search.
///
/// Sets are `None` when the parameter was not given and may be empty (nothing can match).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceMetricQuery {
    /// `_id`.
    pub ids: Option<BTreeSet<DeviceMetricKey>>,
    /// `source`.
    pub devices: Option<BTreeSet<DeviceId>>,
    /// `type`: the vital signs wanted.
    pub vitals: Option<BTreeSet<VitalSign>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

/// The vital signs whose `DeviceMetric.type` has a coding the token matches.
fn vitals_of_token(token: &TokenParam) -> BTreeSet<VitalSign> {
    VitalSign::ALL
        .into_iter()
        .filter(|vital| {
            metric_type(*vital).coding.iter().any(|coding| {
                coding
                    .code
                    .as_deref()
                    .is_some_and(|code| token.matches(coding.system.as_deref(), code))
            })
        })
        .collect()
}

impl DeviceMetricQuery {
    /// Parses the query pairs of a DeviceMetric search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<DeviceMetricQuery> {
        let mut query = DeviceMetricQuery {
            ids: None,
            devices: None,
            vitals: None,
            paging: Paging::default(),
        };
        let common = walk(params, DEVICE_METRIC_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => {
                    let group = occurrence.ids(|id| parse_device_metric_id(id).ok())?;
                    restrict(&mut query.ids, group);
                }
                "source" => {
                    let group = occurrence
                        .references("Device")?
                        .into_iter()
                        .map(DeviceId)
                        .collect();
                    restrict(&mut query.devices, group);
                }
                "type" => {
                    let group = occurrence
                        .tokens()?
                        .iter()
                        .flat_map(vitals_of_token)
                        .collect();
                    restrict(&mut query.vitals, group);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        no_sort(
            common.sort.as_deref(),
            "by device id, then in Galen's vital-sign order",
        )?;
        query.paging = paging(&common);
        Ok(query)
    }

    /// The devices whose metrics can match (`None`: any device). `source` and `_id` both narrow
    /// it.
    pub fn devices_in_scope(&self) -> Option<BTreeSet<DeviceId>> {
        let from_ids = self
            .ids
            .as_ref()
            .map(|ids| ids.iter().map(|key| key.device).collect::<BTreeSet<_>>());
        match (&self.devices, from_ids) {
            (Some(devices), Some(from_ids)) => {
                Some(devices.intersection(&from_ids).copied().collect())
            }
            (Some(devices), None) => Some(devices.clone()),
            (None, from_ids) => from_ids,
        }
    }

    /// Whether nothing can match.
    pub fn matches_nothing(&self) -> bool {
        self.ids.as_ref().is_some_and(BTreeSet::is_empty)
            || self.devices.as_ref().is_some_and(BTreeSet::is_empty)
            || self.vitals.as_ref().is_some_and(BTreeSet::is_empty)
    }

    /// Whether the metric with this key matches every filter.
    pub fn matches(&self, key: &DeviceMetricKey) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(key))
            && self
                .devices
                .as_ref()
                .is_none_or(|devices| devices.contains(&key.device))
            && self
                .vitals
                .as_ref()
                .is_none_or(|vitals| vitals.contains(&key.vital))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::IssueType;

    fn location_query(params: &[(&str, &str)]) -> LocationQuery {
        LocationQuery::parse(params).unwrap_or_else(|error| panic!("{params:?}: {error}"))
    }

    fn metric_query(params: &[(&str, &str)]) -> DeviceMetricQuery {
        DeviceMetricQuery::parse(params).unwrap_or_else(|error| panic!("{params:?}: {error}"))
    }

    fn refused_parameter(result: Result<impl std::fmt::Debug>) -> (String, IssueType) {
        match result {
            Err(Error::Search {
                parameter, issue, ..
            }) => (parameter, issue),
            other => panic!("expected a search error, got {other:?}"),
        }
    }

    #[test]
    fn location_name_partof_status_and_id_filter() {
        let ward = LocationKey::ward("ICU North");
        let bed = LocationKey::bed("ICU North", "4");
        let other_bed = LocationKey::bed("Ward 7", "4");

        let by_name = location_query(&[("name", "icu")]);
        assert!(by_name.matches(&ward) && !by_name.matches(&bed));
        let exact = location_query(&[("name:exact", "icu north")]);
        assert!(!exact.matches(&ward), ":exact is case-sensitive");
        let contains = location_query(&[("name:contains", "NORTH")]);
        assert!(contains.matches(&ward));
        let bed_four = location_query(&[("name", "4")]);
        assert!(bed_four.matches(&bed) && bed_four.matches(&other_bed));

        for partof in [ward.id(), format!("Location/{}", ward.id())] {
            let beds = location_query(&[("partof", partof.as_str())]);
            assert!(beds.matches(&bed), "{partof}");
            assert!(
                !beds.matches(&ward) && !beds.matches(&other_bed),
                "{partof}"
            );
        }
        let typed = location_query(&[("partof:Location", &ward.id())]);
        assert!(typed.matches(&bed));

        let by_id = location_query(&[("_id", &format!("{},{}", bed.id(), other_bed.id()))]);
        assert!(by_id.matches(&bed) && by_id.matches(&other_bed) && !by_id.matches(&ward));
        assert!(!location_query(&[("_id", "ward.nowhere.0")]).matches(&ward));

        let active = location_query(&[("status", "active"), ("_count", "2")]);
        assert!(active.matches(&ward) && active.matches(&bed));
        assert_eq!(active.paging.count, 2);
        for status in [
            "inactive",
            "suspended,inactive",
            "http://hl7.org/fhir/location-status|suspended",
        ] {
            let query = location_query(&[("status", status)]);
            assert!(query.matches_nothing() && !query.matches(&ward), "{status}");
        }
        let any = location_query(&[("status", "http://hl7.org/fhir/location-status|")]);
        assert!(any.matches(&ward));
        let none = location_query(&[("status", "active"), ("status", "inactive")]);
        assert!(none.matches_nothing(), "AND of two statuses");
        let cursor = location_query(&[("_cursor", "w49")]);
        assert_eq!(cursor.paging.cursor.as_deref(), Some("w49"));
    }

    #[test]
    fn location_searches_refuse_what_galen_does_not_support() {
        for (params, parameter, issue) in [
            (
                &[("address", "Leeds")][..],
                "address",
                IssueType::NotSupported,
            ),
            (&[("type", "ICU")][..], "type", IssueType::NotSupported),
            (&[("_sort", "name")][..], "_sort", IssueType::NotSupported),
            (
                &[("name:missing", "true")][..],
                "name:missing",
                IssueType::NotSupported,
            ),
            (&[("status", "open")][..], "status", IssueType::Value),
            (
                &[("status", "http://example.org|active")][..],
                "status",
                IssueType::Value,
            ),
            (&[("partof", "Patient/1")][..], "partof", IssueType::Value),
            (
                &[("partof", "ward with spaces")][..],
                "partof",
                IssueType::Value,
            ),
            (&[("_id", "a b")][..], "_id", IssueType::Value),
            (&[("_count", "many")][..], "_count", IssueType::Value),
        ] {
            assert_eq!(
                refused_parameter(LocationQuery::parse(params)),
                (parameter.to_owned(), issue),
                "{params:?}"
            );
        }
    }

    #[test]
    fn device_metric_source_type_and_id_filter() {
        let key = |device, vital| DeviceMetricKey {
            device: DeviceId(device),
            vital,
        };
        let heart_rate = key(7, VitalSign::HeartRate);
        let spo2 = key(7, VitalSign::Spo2);
        let other = key(8, VitalSign::HeartRate);

        let by_source = metric_query(&[("source", "Device/7")]);
        assert!(by_source.matches(&heart_rate) && !by_source.matches(&other));
        assert_eq!(
            by_source.devices_in_scope(),
            Some(BTreeSet::from([DeviceId(7)]))
        );
        assert!(metric_query(&[("source", "7")]).matches(&spo2));
        assert!(metric_query(&[("source", "serial-x")]).matches_nothing());

        for token in [
            "urn:iso:std:iso:11073:10101|150456",
            "150456",
            "http://loinc.org|2708-6",
            "59408-5",
        ] {
            let query = metric_query(&[("type", token)]);
            assert_eq!(
                query.vitals,
                Some(BTreeSet::from([VitalSign::Spo2])),
                "{token}"
            );
        }
        let battery = metric_query(&[(
            "type",
            "https://galen.invalid/fhir/CodeSystem/measurement|battery",
        )]);
        assert_eq!(
            battery.vitals,
            Some(BTreeSet::from([VitalSign::BatteryCharge]))
        );
        let pressures = metric_query(&[("type", "150021,http://loinc.org|8462-4")]);
        assert_eq!(
            pressures.vitals,
            Some(BTreeSet::from([
                VitalSign::SystolicBp,
                VitalSign::DiastolicBp
            ]))
        );
        let loinc = metric_query(&[("type", "http://loinc.org|")]);
        assert_eq!(
            loinc.vitals.as_ref().map(BTreeSet::len),
            Some(9),
            "every vital sign but the battery has LOINC"
        );
        for nothing in [
            "http://loinc.org|150456",
            "urn:iso:std:iso:11073:10101|8867-4",
            "85354-9",
            "http://example.org|hr",
        ] {
            assert!(
                metric_query(&[("type", nothing)]).matches_nothing(),
                "{nothing}"
            );
        }

        let by_id = metric_query(&[("_id", "7.hr,8.hr,7.bp,9.nope")]);
        assert_eq!(by_id.ids, Some(BTreeSet::from([heart_rate, other])));
        assert!(by_id.matches(&heart_rate) && !by_id.matches(&spo2));
        let both = metric_query(&[("_id", "7.hr,8.hr"), ("source", "8")]);
        assert_eq!(both.devices_in_scope(), Some(BTreeSet::from([DeviceId(8)])));
        assert!(both.matches(&other) && !both.matches(&heart_rate));
        assert_eq!(metric_query(&[]).devices_in_scope(), None);
    }

    #[test]
    fn device_metric_searches_refuse_what_galen_does_not_support() {
        for (params, parameter, issue) in [
            (
                &[("category", "measurement")][..],
                "category",
                IssueType::NotSupported,
            ),
            (
                &[("parent", "Device/1")][..],
                "parent",
                IssueType::NotSupported,
            ),
            (&[("_sort", "_id")][..], "_sort", IssueType::NotSupported),
            (
                &[("type:text", "heart")][..],
                "type:text",
                IssueType::NotSupported,
            ),
            (&[("source", "Patient/1")][..], "source", IssueType::Value),
            (
                &[("source", "http://x.org/fhir/Device/1")][..],
                "source",
                IssueType::Value,
            ),
            (&[("type", "a|b|c")][..], "type", IssueType::Value),
            (&[("_id", "7 hr")][..], "_id", IssueType::Value),
        ] {
            assert_eq!(
                refused_parameter(DeviceMetricQuery::parse(params)),
                (parameter.to_owned(), issue),
                "{params:?}"
            );
        }
    }
}

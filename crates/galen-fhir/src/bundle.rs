//! Searchset Bundles: one page of search results with its total and paging links.
//!
//! The server runs the search, keeps whatever it needs to resume (a position in the store, a
//! keyset), and hands this builder an opaque cursor for the next page. The `next` link repeats the
//! request's parameters with `_cursor` set to that cursor; the `self` link repeats them as
//! received. Links are absolute (`{base}/{type}?...`), percent-encoded so that any cursor or value
//! is safe in a URL. `entry.fullUrl` is `{base}/{type}/{id}`.

use crate::datatypes::Extra;
use crate::resource::{Bundle, BundleEntry, BundleEntrySearch, BundleLink, Resource, ResourceType};
use crate::search::CURSOR_PARAMETER;

/// Builds a `searchset` Bundle.
#[derive(Debug, Clone)]
pub struct SearchsetBuilder {
    base: String,
    resource_type: String,
    params: Vec<(String, String)>,
    total: Option<u64>,
    next_cursor: Option<String>,
    entries: Vec<BundleEntry>,
}

impl SearchsetBuilder {
    /// A page of a search of `resource_type` at `base` (e.g. `https://host/fhir`), requested with
    /// the decoded query pairs `params`.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(
        base: &str,
        resource_type: &str,
        params: &[(K, V)],
    ) -> SearchsetBuilder {
        SearchsetBuilder {
            base: base.trim_end_matches('/').to_owned(),
            resource_type: resource_type.to_owned(),
            params: params
                .iter()
                .map(|(name, value)| (name.as_ref().to_owned(), value.as_ref().to_owned()))
                .collect(),
            total: None,
            next_cursor: None,
            entries: Vec::new(),
        }
    }

    /// The number of matches over all pages.
    pub fn total(mut self, total: u64) -> SearchsetBuilder {
        self.total = Some(total);
        self
    }

    /// The cursor of the next page; without one there is no `next` link (this is the last page).
    pub fn next_cursor(mut self, cursor: Option<&str>) -> SearchsetBuilder {
        self.next_cursor = cursor.map(str::to_owned);
        self
    }

    /// Adds a match.
    pub fn entry(self, resource: impl Into<Resource>) -> SearchsetBuilder {
        self.entry_with_mode(resource.into(), "match")
    }

    /// Adds a resource included because a match refers to it (`_include`).
    pub fn include(self, resource: impl Into<Resource>) -> SearchsetBuilder {
        self.entry_with_mode(resource.into(), "include")
    }

    fn entry_with_mode(mut self, resource: Resource, mode: &str) -> SearchsetBuilder {
        let full_url = resource
            .id()
            .map(|id| format!("{}/{}/{id}", self.base, resource.resource_type()));
        self.entries.push(BundleEntry {
            full_url,
            resource: Some(resource),
            search: Some(BundleEntrySearch {
                mode: Some(mode.to_owned()),
                extra: Extra::new(),
            }),
            extra: Extra::new(),
        });
        self
    }

    /// The Bundle.
    pub fn build(self) -> Bundle {
        let mut link = vec![BundleLink {
            relation: "self".to_owned(),
            url: self.url(
                self.params
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            ),
            extra: Extra::new(),
        }];
        if let Some(cursor) = &self.next_cursor {
            let params = self
                .params
                .iter()
                .filter(|(name, _)| name != CURSOR_PARAMETER)
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .chain(std::iter::once((CURSOR_PARAMETER, cursor.as_str())));
            link.push(BundleLink {
                relation: "next".to_owned(),
                url: self.url(params),
                extra: Extra::new(),
            });
        }
        Bundle {
            resource_type: ResourceType::new(),
            id: None,
            meta: None,
            bundle_type: "searchset".to_owned(),
            total: self.total,
            link,
            entry: self.entries,
            extra: Extra::new(),
        }
    }

    fn url<'a>(&self, params: impl Iterator<Item = (&'a str, &'a str)>) -> String {
        let mut url = format!("{}/{}", self.base, self.resource_type);
        for (index, (name, value)) in params.enumerate() {
            url.push(if index == 0 { '?' } else { '&' });
            percent_encode(name, &mut url);
            url.push('=');
            percent_encode(value, &mut url);
        }
        url
    }
}

/// Appends `text` percent-encoded: everything but RFC 3986 unreserved characters is escaped.
fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resource::{Observation, Patient};

    fn patient(id: &str) -> Patient {
        Patient {
            id: Some(id.to_owned()),
            ..Patient::default()
        }
    }

    #[test]
    fn searchset_has_total_links_and_full_urls() {
        let params = [
            ("patient", "Patient/12"),
            ("date", "ge2026-11-23T08:00:00+01:00"),
            ("code", "http://loinc.org|8867-4"),
            ("_count", "2"),
        ];
        let bundle = SearchsetBuilder::new("https://galen.example/fhir/", "Observation", &params)
            .total(5)
            .next_cursor(Some("opaque/cursor=1&x"))
            .entry(Observation {
                id: Some("7.hr.1795421700000000".to_owned()),
                ..Observation::default()
            })
            .include(patient("12"))
            .build();
        let json = serde_json::to_value(&bundle).expect("serialises");
        assert_eq!(json["resourceType"], "Bundle");
        assert_eq!(json["type"], "searchset");
        assert_eq!(json["total"], 5);
        assert_eq!(
            json["link"],
            json!([
                {
                    "relation": "self",
                    "url": "https://galen.example/fhir/Observation?patient=Patient%2F12&date=ge2026-11-23T08%3A00%3A00%2B01%3A00&code=http%3A%2F%2Floinc.org%7C8867-4&_count=2"
                },
                {
                    "relation": "next",
                    "url": "https://galen.example/fhir/Observation?patient=Patient%2F12&date=ge2026-11-23T08%3A00%3A00%2B01%3A00&code=http%3A%2F%2Floinc.org%7C8867-4&_count=2&_cursor=opaque%2Fcursor%3D1%26x"
                }
            ])
        );
        assert_eq!(
            json["entry"][0]["fullUrl"],
            "https://galen.example/fhir/Observation/7.hr.1795421700000000"
        );
        assert_eq!(json["entry"][0]["search"]["mode"], "match");
        assert_eq!(json["entry"][0]["resource"]["resourceType"], "Observation");
        assert_eq!(
            json["entry"][1]["fullUrl"],
            "https://galen.example/fhir/Patient/12"
        );
        assert_eq!(json["entry"][1]["search"]["mode"], "include");
    }

    #[test]
    fn next_link_replaces_the_current_cursor() {
        let params = [("_cursor", "page-2"), ("gender", "female")];
        let bundle = SearchsetBuilder::new("http://h/fhir", "Patient", &params)
            .next_cursor(Some("page-3"))
            .build();
        assert_eq!(
            bundle.link[0].url,
            "http://h/fhir/Patient?_cursor=page-2&gender=female"
        );
        assert_eq!(
            bundle.link[1].url,
            "http://h/fhir/Patient?gender=female&_cursor=page-3"
        );
        let last = SearchsetBuilder::new("http://h/fhir", "Patient", &params).build();
        assert_eq!(last.link.len(), 1, "no next link on the last page");
        assert_eq!(last.total, None);
        let empty: [(&str, &str); 0] = [];
        let plain = SearchsetBuilder::new("http://h/fhir", "Patient", &empty)
            .total(0)
            .build();
        assert_eq!(plain.link[0].url, "http://h/fhir/Patient");
        assert!(plain.entry.is_empty());
        assert_eq!(
            serde_json::to_value(&plain).expect("serialises")["total"],
            0
        );
    }

    #[test]
    fn encodes_non_ascii_and_reserved_bytes() {
        let mut out = String::new();
        percent_encode("a b+ü~", &mut out);
        assert_eq!(out, "a%20b%2B%C3%BC~");
    }
}

//! Consent end to end, in process: FHIR Consent recorded, read, searched and withdrawn within the
//! recorder's scope; bulk exports by an organisation's account and by a researcher carrying only
//! the patients their consents allow, with every decision in the audit trail; a subscription of an
//! organisation that stops delivering a patient's events once the patient denies sharing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use galen_model::{ManualClock, Timestamp};
use galen_server::{App, ServerConfig};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const SERVICE: &str = "service-token-for-the-consent-test";
const PASSWORD: &str = "correct horse battery staple";
const NOW: &str = "2026-11-24T08:00:00Z";
const SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
const IRCP: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ACME: &str = "Organization/acme-lab";

struct Fixture {
    app: App,
    _clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// An answer: status, headers and the body as JSON (or `Null`) and as text.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
    text: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store");
        let clock = Arc::new(ManualClock::new(
            Timestamp::parse_rfc3339(NOW).expect("time"),
        ));
        let app = App::new(
            Arc::new(store),
            clock.clone(),
            ServerConfig {
                api_token: Some(SERVICE.to_owned()),
                export_dir: Some(dir.path().join("exports")),
                ..ServerConfig::default()
            },
        )
        .await
        .expect("app starts");
        Fixture {
            app,
            _clock: clock,
            _dir: dir,
        }
    }

    async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if body.is_some() {
            let media = if path.starts_with("/fhir") {
                "application/fhir+json"
            } else {
                "application/json"
            };
            request = request.header(header::CONTENT_TYPE, media);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .expect("request");
        let response = self.app.router().oneshot(request).await.expect("router");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(token, method, path, &[], body).await
    }

    async fn service(&self, method: Method, path: &str, body: Value) -> Value {
        let answer = self.call(SERVICE, method, path, Some(body)).await;
        assert!(
            answer.status.is_success(),
            "{path}: {} {}",
            answer.status,
            answer.text
        );
        answer.json
    }

    /// An account and a personal API token for it.
    async fn account(&self, name: &str, role: &str, extra: Value) -> String {
        let mut body = json!({ "name": name, "password": PASSWORD, "role": role });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let user = self.service(Method::POST, "/api/v1/users", body).await;
        let token = self
            .service(
                Method::POST,
                &format!("/api/v1/users/{}/tokens", user["id"]),
                json!({ "label": "test" }),
            )
            .await;
        token["token"].as_str().expect("secret").to_owned()
    }

    /// A patient on `ward` with a monitor `serial` assigned since an hour ago, and one heart rate
    /// a minute ago; the patient's id.
    async fn admit(&self, mrn: &str, ward: &str, serial: &str) -> i64 {
        let patient = self
            .service(
                Method::POST,
                "/api/v1/patients",
                json!({ "identifier": { "system": "urn:mrn", "value": mrn }, "name": { "family": "Consent" },
                        "birth_date": "1950-01-01", "sex": "other", "ward": ward, "bed": "1" }),
            )
            .await["id"]
            .as_i64()
            .expect("id");
        let device = self
            .service(Method::POST, "/api/v1/devices", json!({ "serial": serial }))
            .await["id"]
            .as_i64()
            .expect("id");
        self.service(
            Method::POST,
            "/api/v1/assignments",
            json!({ "device": device, "patient": patient, "start": "2026-11-24T07:00:00Z" }),
        )
        .await;
        self.measure(serial, "2026-11-24T07:59:00Z", 80.0).await;
        patient
    }

    async fn measure(&self, serial: &str, time: &str, value: f64) {
        self.service(
            Method::POST,
            "/api/v1/measurements",
            json!([{ "device": serial, "code": "hr", "value": value, "unit": "/min", "time": time }]),
        )
        .await;
    }

    /// Records `consent` as `token`; the answer.
    async fn record(&self, token: &str, consent: Value) -> Answer {
        self.call(token, Method::POST, "/fhir/Consent", Some(consent))
            .await
    }

    /// The audit records of `action` (oldest first), read by an auditor.
    async fn audit(&self, auditor: &str, action: &str) -> Vec<Value> {
        let answer = self
            .call(
                auditor,
                Method::GET,
                &format!("/api/v1/audit?action={action}&limit=1000"),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json["items"].as_array().expect("items").clone()
    }

    /// Runs an export at `path` as `token` to its end: the status path and the manifest.
    async fn export(&self, token: &str, path: &str) -> (String, Value) {
        let kick_off = self
            .send(
                token,
                Method::GET,
                path,
                &[("prefer", "respond-async")],
                None,
            )
            .await;
        assert_eq!(kick_off.status, StatusCode::ACCEPTED, "{}", kick_off.text);
        let location = kick_off.headers[header::CONTENT_LOCATION]
            .to_str()
            .expect("ascii");
        let status = location[location.find("/fhir/").expect("a /fhir/ URL")..].to_owned();
        for _ in 0..300 {
            let answer = self.call(token, Method::GET, &status, None).await;
            match answer.status {
                StatusCode::ACCEPTED => tokio::time::sleep(Duration::from_millis(20)).await,
                StatusCode::OK => return (status, answer.json),
                other => panic!("{status}: {other} {}", answer.text),
            }
        }
        panic!("the export did not finish");
    }

    /// The NDJSON lines of one file of a manifest (`output` or `error`), by type.
    async fn file(&self, token: &str, manifest: &Value, list: &str, kind: &str) -> Vec<Value> {
        let Some(entry) = manifest[list]
            .as_array()
            .expect("list")
            .iter()
            .find(|entry| entry["type"] == kind)
        else {
            return Vec::new();
        };
        let url = entry["url"].as_str().expect("url");
        let path = &url[url.find("/fhir/").expect("a /fhir/ URL")..];
        let answer = self.call(token, Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        answer
            .text
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON line"))
            .collect()
    }
}

/// A Consent of `patient`: `scope` research or patient-privacy, `kind` permit or deny, naming
/// `recipients` (references or `system|value` identifiers).
fn consent(patient: i64, scope: &str, kind: &str, recipients: &[&str]) -> Value {
    let actors: Vec<Value> = recipients
        .iter()
        .map(|recipient| {
            let reference = match recipient.split_once('|') {
                Some((system, value)) => json!({ "identifier": { "system": system, "value": value } }),
                None => json!({ "reference": recipient }),
            };
            json!({ "role": { "coding": [{ "system": IRCP, "code": "IRCP" }] }, "reference": reference })
        })
        .collect();
    let mut provision = json!({ "type": kind });
    if !actors.is_empty() {
        provision["actor"] = Value::Array(actors);
    }
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": { "coding": [{ "system": SCOPE, "code": scope }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
        "patient": { "reference": format!("Patient/{patient}") },
        "dateTime": "2026-11-23T10:00:00Z",
        "provision": provision,
    })
}

/// Whether any resource of `resources` mentions `Patient/{patient}` as a reference.
fn mentions(resources: &[Value], patient: i64) -> bool {
    let reference = format!("\"Patient/{patient}\"");
    resources
        .iter()
        .any(|resource| resource.to_string().contains(&reference))
}

fn ids(resources: &[Value]) -> Vec<String> {
    resources
        .iter()
        .filter_map(|resource| resource["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_are_recorded_read_searched_and_withdrawn_within_scope() {
    let fixture = Fixture::new().await;
    let icu = fixture.admit("ICU-1", "ICU", "MON-ICU").await;
    let cardio = fixture.admit("CAR-1", "CARDIO", "MON-CAR").await;
    let nurse = fixture
        .account("ann", "nurse", json!({ "wards": ["ICU"] }))
        .await;
    let patient = fixture
        .account("pat", "patient", json!({ "patient": cardio }))
        .await;
    let admin = fixture.account("admin", "administrator", json!({})).await;
    let auditor = fixture.account("aud", "auditor", json!({})).await;

    // A nurse records consent for her ward's patient, not for another ward's.
    let created = fixture
        .record(&nurse, consent(icu, "patient-privacy", "deny", &[ACME]))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["id"].as_str().expect("id").to_owned();
    assert!(
        created.headers[header::LOCATION]
            .to_str()
            .expect("ascii")
            .ends_with(&format!("/fhir/Consent/{id}"))
    );
    assert_eq!(created.json["status"], "active");
    assert_eq!(
        created.json["policyRule"]["coding"][0]["code"], "OPTOUT",
        "ppc-1 filled in"
    );
    let elsewhere = fixture
        .record(&nurse, consent(cardio, "patient-privacy", "deny", &[ACME]))
        .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::FORBIDDEN,
        "{}",
        elsewhere.text
    );
    assert_eq!(elsewhere.json["resourceType"], "OperationOutcome");
    // A patient records their own consent, nobody else's; an administrator records none.
    let own = fixture
        .record(&patient, consent(cardio, "research", "permit", &[]))
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.text);
    let own_id = own.json["id"].as_str().expect("id").to_owned();
    let others = fixture
        .record(&patient, consent(icu, "research", "permit", &[]))
        .await;
    assert_eq!(others.status, StatusCode::FORBIDDEN);
    let by_admin = fixture
        .record(&admin, consent(icu, "research", "permit", &[]))
        .await;
    assert_eq!(by_admin.status, StatusCode::FORBIDDEN);
    // What Galen cannot enforce is refused, naming the element.
    let mut nested = consent(icu, "patient-privacy", "deny", &[ACME]);
    nested["provision"]["provision"] = json!([{ "type": "permit" }]);
    let refused = fixture.record(&nurse, nested).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.json["issue"][0]["expression"][0],
        "Consent.provision.provision"
    );
    let unknown = fixture
        .record(SERVICE, consent(9_999, "research", "permit", &[]))
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.json["issue"][0]["expression"][0], "Consent.patient");

    // Reads and searches stay within scope.
    let read = fixture
        .call(&nurse, Method::GET, &format!("/fhir/Consent/{id}"), None)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(
        read.json["provision"]["actor"][0]["reference"]["reference"],
        ACME
    );
    let etag = read.headers[header::ETAG]
        .to_str()
        .expect("ascii")
        .to_owned();
    let forbidden = fixture
        .call(
            &nurse,
            Method::GET,
            &format!("/fhir/Consent/{own_id}"),
            None,
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let unnamed = fixture
        .call(&nurse, Method::GET, "/fhir/Consent", None)
        .await;
    assert_eq!(unnamed.status, StatusCode::FORBIDDEN, "name the patients");
    let search = fixture
        .call(
            &nurse,
            Method::GET,
            &format!("/fhir/Consent?patient={icu}&status=active"),
            None,
        )
        .await;
    assert_eq!(search.status, StatusCode::OK, "{}", search.text);
    assert_eq!(search.json["total"], 1);
    let everything = fixture
        .call(SERVICE, Method::GET, "/fhir/Consent?scope=research", None)
        .await;
    assert_eq!(
        ids(&everything.json["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|entry| entry["resource"].clone())
            .collect::<Vec<_>>()),
        vec![own_id.clone()]
    );

    // Terms never change; the status does (withdrawal), guarded by If-Match.
    let mut changed = read.json.clone();
    changed["provision"]["type"] = json!("permit");
    let terms = fixture
        .call(
            &nurse,
            Method::PUT,
            &format!("/fhir/Consent/{id}"),
            Some(changed),
        )
        .await;
    assert_eq!(
        terms.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        terms.text
    );
    let mut withdrawn = read.json.clone();
    withdrawn["status"] = json!("inactive");
    let stale = fixture
        .send(
            &nurse,
            Method::PUT,
            &format!("/fhir/Consent/{id}"),
            &[("if-match", "W/\"0000000000000000\"")],
            Some(withdrawn.clone()),
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let updated = fixture
        .send(
            &nurse,
            Method::PUT,
            &format!("/fhir/Consent/{id}"),
            &[("if-match", etag.as_str())],
            Some(withdrawn),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.json["status"], "inactive");
    let active = fixture
        .call(
            &nurse,
            Method::GET,
            &format!("/fhir/Consent?patient={icu}&status=active"),
            None,
        )
        .await;
    assert_eq!(active.json["total"], 0);

    // Each write has its record, naming the consent and its patient; refusals are denied.
    let created_records = fixture.audit(&auditor, "create").await;
    let consent_records: Vec<&Value> = created_records
        .iter()
        .filter(|record| {
            record["resource"]
                .as_str()
                .is_some_and(|resource| resource.starts_with("Consent/"))
        })
        .collect();
    assert_eq!(consent_records.len(), 2, "{created_records:?}");
    assert_eq!(consent_records[0]["resource"], format!("Consent/{id}"));
    assert_eq!(consent_records[0]["patient"], icu);
    assert_eq!(consent_records[0]["actor"], "ann");
    let updates = fixture.audit(&auditor, "update").await;
    assert!(updates.iter().any(|record| {
        record["resource"] == format!("Consent/{id}")
            && record["outcome"] == "success"
            && record["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("inactive"))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisations_export_leaves_out_the_patients_who_deny_it() {
    let fixture = Fixture::new().await;
    let denies = fixture.admit("EX-1", "ICU", "MON-1").await;
    let denies_another = fixture.admit("EX-2", "ICU", "MON-2").await;
    let silent = fixture.admit("EX-3", "ICU", "MON-3").await;
    let withdrew = fixture.admit("EX-4", "ICU", "MON-4").await;
    let acme = fixture
        .account(
            "acme.export",
            "integration-engineer",
            json!({ "organization": ACME }),
        )
        .await;
    let internal = fixture
        .account("int", "integration-engineer", json!({}))
        .await;
    let auditor = fixture.account("aud", "auditor", json!({})).await;
    let deny = fixture
        .record(SERVICE, consent(denies, "patient-privacy", "deny", &[ACME]))
        .await;
    assert_eq!(deny.status, StatusCode::CREATED, "{}", deny.text);
    fixture
        .record(
            SERVICE,
            consent(
                denies_another,
                "patient-privacy",
                "deny",
                &["Organization/other"],
            ),
        )
        .await;
    let old_deny = fixture
        .record(SERVICE, consent(withdrew, "patient-privacy", "deny", &[]))
        .await;
    let mut withdrawal = old_deny.json.clone();
    withdrawal["status"] = json!("inactive");
    let withdrawn = fixture
        .call(
            SERVICE,
            Method::PUT,
            &format!(
                "/fhir/Consent/{}",
                old_deny.json["id"].as_str().expect("id")
            ),
            Some(withdrawal),
        )
        .await;
    assert_eq!(withdrawn.status, StatusCode::OK, "{}", withdrawn.text);

    let (status, manifest) = fixture.export(&acme, "/fhir/Patient/$export").await;
    let patients = fixture.file(&acme, &manifest, "output", "Patient").await;
    let mut exported: Vec<String> = ids(&patients);
    exported.sort();
    let mut expected: Vec<String> = [denies_another, silent, withdrew]
        .iter()
        .map(ToString::to_string)
        .collect();
    expected.sort();
    assert_eq!(
        exported, expected,
        "the patient who denies Acme is left out"
    );
    let observations = fixture
        .file(&acme, &manifest, "output", "Observation")
        .await;
    let devices = fixture.file(&acme, &manifest, "output", "Device").await;
    assert!(!observations.is_empty());
    for (kind, resources) in [("Observation", &observations), ("Device", &devices)] {
        assert!(
            !mentions(resources, denies),
            "{kind} names the withheld patient"
        );
    }
    assert!(mentions(&observations, silent));
    assert_eq!(
        devices.len(),
        3,
        "the withheld patient's monitor is not exported"
    );
    // The manifest says how many were left out and why, never who.
    let report =
        &manifest["extension"]["https://galen.invalid/fhir/StructureDefinition/export-consent"];
    assert_eq!(report["purpose"], "sharing");
    assert_eq!(report["recipient"], ACME);
    assert_eq!(report["patientsConsidered"], 4);
    assert_eq!(report["patientsWithheld"], 1);
    assert_eq!(report["withheldBy"]["consent-denies"], 1);
    let outcomes = fixture
        .file(&acme, &manifest, "error", "OperationOutcome")
        .await;
    assert_eq!(outcomes.len(), 1, "{manifest}");
    assert_eq!(outcomes[0]["issue"][0]["code"], "suppressed");
    let diagnostics = outcomes[0]["issue"][0]["diagnostics"]
        .as_str()
        .expect("text");
    assert!(diagnostics.starts_with("1 of 4 patients"), "{diagnostics}");
    assert!(!diagnostics.contains("Patient/"), "{diagnostics}");
    // The job is the organisation's alone.
    let peek = fixture.call(&internal, Method::GET, &status, None).await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);

    // One decision per patient, with the consent that decided.
    let decisions = fixture.audit(&auditor, "consent-decision").await;
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    let decision_of = |patient: i64| {
        decisions
            .iter()
            .find(|record| record["patient"] == patient)
            .unwrap_or_else(|| panic!("no decision for patient {patient}"))
    };
    let denied = decision_of(denies);
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["actor"], "acme.export");
    assert_eq!(denied["resource"], status);
    let deciding = format!(
        "decided-by=Consent/{}",
        deny.json["id"].as_str().expect("id")
    );
    assert!(
        denied["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(&deciding)
                && detail.contains("purpose=sharing recipient=Organization/acme-lab")),
        "{denied}"
    );
    for patient in [denies_another, silent, withdrew] {
        let permitted = decision_of(patient);
        assert_eq!(permitted["outcome"], "success");
        assert!(
            permitted["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("decided-by=no-consent")),
            "{permitted}"
        );
    }

    // An account acting for the hospital exports everyone and decides nothing.
    let (_, manifest) = fixture.export(&internal, "/fhir/$export").await;
    let patients = fixture
        .file(&internal, &manifest, "output", "Patient")
        .await;
    assert_eq!(patients.len(), 4);
    assert!(manifest.get("extension").is_none());
    assert_eq!(manifest["error"], json!([]));
    assert_eq!(
        fixture.audit(&auditor, "consent-decision").await.len(),
        4,
        "no decisions for internal operations"
    );

    // At the system level too, Acme's export keeps the withheld patient out of everything.
    let (_, manifest) = fixture.export(&acme, "/fhir/$export").await;
    for kind in ["Patient", "Device", "Observation", "Flag"] {
        let resources = fixture.file(&acme, &manifest, "output", kind).await;
        assert!(!mentions(&resources, denies), "{kind}");
    }
    let devices = fixture.file(&acme, &manifest, "output", "Device").await;
    assert_eq!(
        devices.len(),
        4,
        "devices stay, without their withheld patient"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_research_export_carries_only_the_patients_who_opted_in() {
    let fixture = Fixture::new().await;
    let opted_in = fixture.admit("R-1", "ICU", "MON-R1").await;
    let opted_out = fixture.admit("R-2", "ICU", "MON-R2").await;
    let silent = fixture.admit("R-3", "ICU", "MON-R3").await;
    let not_acme = fixture.admit("R-4", "ICU", "MON-R4").await;
    let researcher = fixture.account("res", "researcher", json!({})).await;
    let acme_researcher = fixture
        .account("res.acme", "researcher", json!({ "organization": ACME }))
        .await;
    let auditor = fixture.account("aud", "auditor", json!({})).await;
    for (patient, kind, recipients) in [
        (opted_in, "permit", vec![]),
        (opted_out, "deny", vec![]),
        (not_acme, "permit", vec![]),
        (not_acme, "deny", vec![ACME]),
    ] {
        let answer = fixture
            .record(SERVICE, consent(patient, "research", kind, &recipients))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    }
    // A sharing permit is no research consent.
    fixture
        .record(SERVICE, consent(silent, "patient-privacy", "permit", &[]))
        .await;

    let (_, manifest) = fixture.export(&researcher, "/fhir/Patient/$export").await;
    let patients = fixture
        .file(&researcher, &manifest, "output", "Patient")
        .await;
    let mut exported = ids(&patients);
    exported.sort();
    let mut expected = vec![opted_in.to_string(), not_acme.to_string()];
    expected.sort();
    assert_eq!(exported, expected, "research is opt-in");
    let observations = fixture
        .file(&researcher, &manifest, "output", "Observation")
        .await;
    assert!(mentions(&observations, opted_in));
    assert!(!mentions(&observations, opted_out) && !mentions(&observations, silent));
    let report =
        &manifest["extension"]["https://galen.invalid/fhir/StructureDefinition/export-consent"];
    assert_eq!(report["purpose"], "research");
    assert_eq!(report["patientsWithheld"], 2);
    assert_eq!(report["withheldBy"]["consent-denies"], 1);
    assert_eq!(report["withheldBy"]["no-consent-research-is-opt-in"], 1);

    // A researcher of Acme: the patient who refused Acme in particular is left out too.
    let (_, manifest) = fixture
        .export(&acme_researcher, "/fhir/Patient/$export")
        .await;
    let patients = fixture
        .file(&acme_researcher, &manifest, "output", "Patient")
        .await;
    assert_eq!(ids(&patients), vec![opted_in.to_string()]);

    let decisions = fixture.audit(&auditor, "consent-decision").await;
    assert_eq!(decisions.len(), 8, "four patients, two exports");
    assert!(decisions.iter().all(|record| {
        record["detail"]
            .as_str()
            .is_some_and(|detail| detail.starts_with("purpose=research"))
    }));
    // Researchers read nothing else.
    let read = fixture
        .call(
            &researcher,
            Method::GET,
            &format!("/fhir/Patient/{opted_in}"),
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::FORBIDDEN);
}

/// A rest-hook endpoint that records every notification it is sent: its address and the
/// notifications, parsed.
async fn hook_receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let captured = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let captured = captured.clone();
            async move {
                captured
                    .lock()
                    .expect("lock")
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    (address, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_stops_delivering_a_patients_events_once_they_deny_sharing() {
    // A rest-hook endpoint of Acme that records what it is sent.
    let (address, received) = hook_receiver().await;

    let fixture = Fixture::new().await;
    let patient = fixture.admit("S-1", "ICU", "MON-S1").await;
    let other = fixture.admit("S-2", "ICU", "MON-S2").await;
    let acme = fixture
        .account(
            "acme.feed",
            "integration-engineer",
            json!({ "organization": ACME }),
        )
        .await;
    let nurse = fixture
        .account("ann", "nurse", json!({ "wards": ["ICU"] }))
        .await;
    let auditor = fixture.account("aud", "auditor", json!({})).await;
    let created = fixture
        .call(
            &acme,
            Method::POST,
            "/fhir/Subscription",
            Some(json!({
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "Acme's feed",
                "criteria": "https://galen.invalid/fhir/SubscriptionTopic/vital-sign-observation",
                "channel": {
                    "type": "rest-hook",
                    "endpoint": format!("http://{address}/hook"),
                    "payload": "application/fhir+json"
                }
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let subscription = created.json["id"].as_str().expect("id").to_owned();

    // The observations' ids each notification announces, in order.
    let announced = || -> Vec<String> {
        received
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|bundle| {
                bundle["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .skip(1)
                    .filter_map(|entry| entry["fullUrl"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let wait_for = |count: usize| {
        let announced = &announced;
        async move {
            for _ in 0..500 {
                if announced().len() >= count {
                    return announced();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("expected {count} events, got {:?}", announced());
        }
    };
    fixture
        .measure("MON-S1", "2026-11-24T07:59:10Z", 81.0)
        .await;
    let before = wait_for(1).await;
    assert_eq!(before.len(), 1);

    // The patient tells the nurse: no sharing with Acme.
    let deny = fixture
        .record(&nurse, consent(patient, "patient-privacy", "deny", &[ACME]))
        .await;
    assert_eq!(deny.status, StatusCode::CREATED, "{}", deny.text);
    fixture
        .measure("MON-S1", "2026-11-24T07:59:20Z", 82.0)
        .await;
    fixture
        .measure("MON-S2", "2026-11-24T07:59:30Z", 90.0)
        .await;
    let after = wait_for(2).await;
    assert_eq!(after.len(), 2, "{after:?}");
    // The second event is the other patient's; the denying patient's new value never went out.
    let micros = |time: &str| {
        Timestamp::parse_rfc3339(time)
            .expect("time")
            .micros()
            .to_string()
    };
    assert!(
        after[0].ends_with(&micros("2026-11-24T07:59:10Z")),
        "{after:?}"
    );
    assert!(
        after[1].ends_with(&micros("2026-11-24T07:59:30Z")),
        "{after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|url| url.ends_with(&micros("2026-11-24T07:59:20Z")))
    );
    // Event numbers stay without gaps: the withheld event was never the subscription's.
    let status = fixture
        .call(
            &acme,
            Method::GET,
            &format!("/fhir/Subscription/{subscription}/$status"),
            None,
        )
        .await;
    let events = status.json["entry"][0]["resource"]["parameter"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|parameter| parameter["name"] == "events-since-subscription-start")
        .map(|parameter| parameter["valueString"].clone());
    assert_eq!(events, Some(json!("2")));

    // Every decision is audited: two permits for the patient's first value and the other
    // patient's, one withhold naming the deny.
    let decisions = fixture.audit(&auditor, "consent-decision").await;
    let resource = format!("Subscription/{subscription}");
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert!(decisions.iter().all(|record| record["resource"] == resource.as_str()
        && record["actor"] == "acme.feed"));
    let withheld: Vec<&Value> = decisions
        .iter()
        .filter(|record| record["outcome"] == "denied")
        .collect();
    assert_eq!(withheld.len(), 1);
    assert_eq!(withheld[0]["patient"], patient);
    assert!(
        withheld[0]["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(&format!(
                "decided-by=Consent/{}",
                deny.json["id"].as_str().expect("id")
            ))),
        "{}",
        withheld[0]
    );
    assert!(
        decisions
            .iter()
            .any(|record| record["patient"] == other && record["outcome"] == "success")
    );

    // Another organisation cannot bind to Acme's notifications, nor Acme to the hospital's.
    let other_org = fixture
        .account(
            "beta.feed",
            "integration-engineer",
            json!({ "organization": "Organization/beta" }),
        )
        .await;
    let internal = fixture
        .call(
            SERVICE,
            Method::POST,
            "/fhir/Subscription",
            Some(json!({
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "ward feed",
                "criteria": "https://galen.invalid/fhir/SubscriptionTopic/vital-sign-observation",
                "channel": { "type": "websocket", "payload": "application/fhir+json" }
            })),
        )
        .await;
    assert_eq!(internal.status, StatusCode::CREATED, "{}", internal.text);
    let websocket = internal.json["id"].as_str().expect("id");
    let refused = fixture
        .call(
            &acme,
            Method::GET,
            &format!("/fhir/Subscription/{websocket}/$get-ws-binding-token"),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let beta = fixture
        .call(
            &other_org,
            Method::GET,
            &format!("/fhir/Subscription/{subscription}/$get-ws-binding-token"),
            None,
        )
        .await;
    assert_eq!(beta.status, StatusCode::FORBIDDEN, "{}", beta.text);
    let allowed = fixture
        .call(
            SERVICE,
            Method::GET,
            &format!("/fhir/Subscription/{websocket}/$get-ws-binding-token"),
            None,
        )
        .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
}

/// A ward-bound clinician's subscription carries her wards' patients only: the scope she could
/// read is the scope she is notified of.
#[tokio::test]
async fn a_clinicians_subscription_carries_her_wards_patients_only() {
    let (address, received) = hook_receiver().await;

    let fixture = Fixture::new().await;
    let icu = fixture.admit("W-1", "ICU", "MON-W1").await;
    let cardio = fixture.admit("W-2", "CARDIO", "MON-W2").await;
    let doctor = fixture
        .account("dr.icu", "clinician", json!({ "wards": ["ICU"] }))
        .await;
    let created = fixture
        .call(
            &doctor,
            Method::POST,
            "/fhir/Subscription",
            Some(json!({
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "my ward's vital signs",
                "criteria": "https://galen.invalid/fhir/SubscriptionTopic/vital-sign-observation",
                "channel": {
                    "type": "rest-hook",
                    "endpoint": format!("http://{address}/hook"),
                    "payload": "application/fhir+json"
                }
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    fixture
        .measure("MON-W2", "2026-11-24T07:59:10Z", 90.0)
        .await;
    fixture
        .measure("MON-W1", "2026-11-24T07:59:20Z", 80.0)
        .await;
    let mut delivered = 0;
    for _ in 0..500 {
        delivered = received
            .lock()
            .expect("lock")
            .iter()
            .filter(|bundle| {
                bundle["entry"]
                    .as_array()
                    .is_some_and(|entries| entries.len() > 1)
            })
            .count();
        if delivered >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give a wrongly delivered event of the other ward time to arrive too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bundles = received.lock().expect("lock").clone();
    let events: Vec<&Value> = bundles
        .iter()
        .flat_map(|bundle| bundle["entry"].as_array().into_iter().flatten().skip(1))
        .collect();
    assert_eq!(delivered, 1, "{bundles:?}");
    assert_eq!(events.len(), 1, "only her ward's event: {bundles:?}");
    // Devices are numbered as admitted: MON-W1 (ICU) is device 1, MON-W2 (CARDIO) device 2.
    let text = serde_json::to_string(&bundles).expect("json");
    assert!(
        text.contains("Observation/1.hr.") && !text.contains("Observation/2.hr."),
        "her ward's observation, nothing of the other ward: {text}"
    );
    let _ = (icu, cardio);
}

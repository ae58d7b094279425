//! End to end: every acknowledged measurement survives `kill -9` of a real `galen serve` process
//! during sustained ingest, across several kill/restart cycles.
//!
//! The test talks plain HTTP/1.1 over `std::net` so it shares no code with the server.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{micros_to_rfc3339, post, request, start};
use serde_json::{Value, json};

/// Sends batches from several threads until told to stop or the server dies; returns the
/// times of every measurement the server acknowledged.
fn sustained_ingest(
    address: &str,
    next_time: &Arc<AtomicI64>,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<Vec<i64>>> {
    (0..3)
        .map(|_| {
            let (address, next_time, stop) = (address.to_owned(), next_time.clone(), stop.clone());
            thread::spawn(move || {
                let mut acknowledged = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let times: Vec<i64> = (0..200).map(|_| next_time.fetch_add(1000, Ordering::Relaxed)).collect();
                    let items: Vec<Value> = times
                        .iter()
                        .map(|time| {
                            json!({ "device": "KILL-1", "code": "heart_rate", "value": 60 + (time / 1000) % 50,
                                    "unit": "/min", "time": micros_to_rfc3339(*time), "id": format!("k{time}") })
                        })
                        .collect();
                    let body = Value::Array(items).to_string();
                    match request(&address, "POST", "/api/v1/measurements?report=problems", Some(&body)) {
                        Ok((200, answer)) => {
                            let answer: Value = serde_json::from_str(&answer).expect("json answer");
                            assert_eq!(answer["accepted"], 200, "every new measurement is accepted: {answer}");
                            acknowledged.extend(times);
                        }
                        // The server was killed mid-request: nothing acknowledged.
                        Ok(_) | Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect()
}

/// Every stored time of the device's heart rate in `[from, to)`, read in windows.
fn stored_times(address: &str, device: i64, from: i64, to: i64) -> Vec<i64> {
    let mut times = Vec::new();
    let window = 50_000 * 1000;
    let mut start = from;
    while start < to {
        let end = (start + window).min(to);
        let path = format!(
            "/api/v1/devices/{device}/vitals?code=heart_rate&from={}&to={}",
            micros_to_rfc3339(start),
            micros_to_rfc3339(end)
        );
        let (status, body) = request(address, "GET", &path, None).expect("query");
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(answer["truncated"], false);
        for point in answer["points"].as_array().expect("points") {
            let text = point["time"].as_str().expect("time");
            let parsed =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .expect("rfc3339");
            times.push((parsed.unix_timestamp_nanos() / 1000) as i64);
        }
        start = end;
    }
    times
}

#[test]
fn acknowledged_measurements_survive_kill_9() {
    let directory = tempfile::tempdir().expect("temp dir");
    let mut server = start(directory.path());
    let address = server.address.clone();
    let patient = post(
        &address,
        "/api/v1/patients",
        &json!({ "identifier": { "system": "urn:test", "value": "K-1" }, "name": { "family": "Kill", "given": "Test" },
                 "birth_date": "1970-01-01", "sex": "unknown", "ward": "K", "bed": "K-1" }),
    );
    let device = post(
        &address,
        "/api/v1/devices",
        &json!({ "serial": "KILL-1", "kind": "monitor" }),
    );
    let device_id = device["id"].as_i64().expect("device id");
    let now_micros = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    // Times run forward from 30 minutes ago, 1 ms apart: all in the accepted window.
    let first_time = now_micros - 1800 * 1_000_000;
    post(
        &address,
        "/api/v1/assignments",
        &json!({ "device": device_id, "patient": patient["id"], "start": micros_to_rfc3339(first_time - 1_000_000) }),
    );
    let next_time = Arc::new(AtomicI64::new(first_time));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));

    for cycle in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = sustained_ingest(&server.address, &next_time, &stop);
        let started = Instant::now();
        // Kill at a different moment each cycle, once a fair amount was acknowledged.
        thread::sleep(Duration::from_millis(700 + 400 * cycle));
        server.child.kill().expect("SIGKILL the server");
        server.child.wait().expect("reap");
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for writer in writers {
            let times = writer.join().expect("writer thread");
            total += times.len();
            acknowledged.lock().expect("lock").extend(times);
        }
        assert!(
            total > 0,
            "cycle {cycle}: nothing was acknowledged in {:?}",
            started.elapsed()
        );
        eprintln!(
            "cycle {cycle}: killed after {:?}, {total} acknowledged",
            started.elapsed()
        );
        let restart = Instant::now();
        server = start(directory.path());
        eprintln!("cycle {cycle}: restarted in {:?}", restart.elapsed());
        let mut expected = acknowledged.lock().expect("lock").clone();
        expected.sort_unstable();
        let stored = stored_times(
            &server.address,
            device_id,
            first_time,
            next_time.load(Ordering::Relaxed) + 1,
        );
        let missing: Vec<i64> = expected
            .iter()
            .copied()
            .filter(|time| stored.binary_search(time).is_err())
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: {} acknowledged, {} stored, first missing {missing:?}",
            expected.len(),
            stored.len()
        );
        eprintln!(
            "cycle {cycle}: verified {} stored after {:?}",
            stored.len(),
            restart.elapsed()
        );
        assert!(
            stored.windows(2).all(|pair| pair[0] < pair[1]),
            "no duplicates after replay"
        );
    }
    server.child.kill().expect("stop the server");
    let _ = server.child.wait();
}

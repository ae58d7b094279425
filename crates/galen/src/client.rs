//! A minimal HTTP/1.1 JSON client for `galen simulate` and `galen bench` (plain HTTP only).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A client bound to one server.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl HttpClient {
    /// `base` like `http://127.0.0.1:8080`.
    pub(crate) fn new(base: &str, token: Option<String>) -> Result<HttpClient> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            bail!("--target must be an http:// URL such as http://127.0.0.1:8080");
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        Ok(HttpClient {
            client,
            base,
            token,
        })
    }

    /// A request to `path` with the token, and a JSON body if given.
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request
            .body(Full::new(body.unwrap_or_default()))
            .context("building the request")
    }

    /// Sends a request; returns status and body.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let request = self.request(method, path, body)?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("requesting {}{path}", self.base))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the response")?
            .to_bytes();
        Ok((status, body))
    }

    /// Starts an asynchronous FHIR operation (`Prefer: respond-async`); returns the status, body
    /// and `Content-Location`.
    pub(crate) async fn kick_off(&self, path: &str) -> Result<(StatusCode, Bytes, Option<String>)> {
        let mut request = self.request(Method::GET, path, None)?;
        request
            .headers_mut()
            .insert("prefer", header::HeaderValue::from_static("respond-async"));
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("requesting {}{path}", self.base))?;
        let status = response.status();
        let location = response
            .headers()
            .get(header::CONTENT_LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the response")?
            .to_bytes();
        Ok((status, body, location))
    }

    /// Opens a streaming GET (Server-Sent Events); the body is read frame by frame.
    pub(crate) async fn stream(&self, path: &str) -> Result<hyper::body::Incoming> {
        let request = self.request(Method::GET, path, None)?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("requesting {}{path}", self.base))?;
        if !response.status().is_success() {
            bail!("GET {path} answered {}", response.status());
        }
        Ok(response.into_body())
    }

    /// GETs JSON, failing on a non-2xx status.
    pub(crate) async fn get_json(&self, path: &str) -> Result<Value> {
        let (status, body) = self.send(Method::GET, path, None).await?;
        if !status.is_success() {
            bail!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body).context("parsing the response")
    }

    /// POSTs JSON; returns status and parsed body (or Null).
    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Result<(StatusCode, Value)> {
        let (status, answer) = self
            .send(Method::POST, path, Some(Bytes::from(body.to_string())))
            .await?;
        Ok((
            status,
            serde_json::from_slice(&answer).unwrap_or(Value::Null),
        ))
    }
}

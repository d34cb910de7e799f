//! A small client for the control plane's HTTP API that turns Kuma's error bodies into
//! readable messages.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cpconfig::ApiServer;

/// An error answered by the API, printed with each invalid field on its own line.
#[derive(Debug)]
pub struct ApiError {
    pub title: String,
    pub detail: String,
    pub fields: Vec<(String, String)>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.title)?;
        if !self.detail.is_empty() && self.detail != self.title {
            write!(f, " ({})", self.detail)?;
        }
        for (field, reason) in &self.fields {
            if field.is_empty() {
                write!(f, "\n  * {reason}")?;
            } else {
                write!(f, "\n  * {field}: {reason}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &ApiServer, timeout: Duration) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10));
        if !server.ca_cert_file.is_empty() {
            let pem = std::fs::read(&server.ca_cert_file)
                .with_context(|| format!("reading CA certificate {}", server.ca_cert_file))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("{} is not a PEM certificate bundle", server.ca_cert_file)
            })?;
            builder = builder.tls_certs_only(certs);
        }
        if server.skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        // OpenTelemetry's environment carrier: a script running kumactl inside a trace passes
        // it on, and the control plane's spans for these requests join that trace.
        if let Ok(traceparent) = std::env::var("TRACEPARENT")
            && let Ok(value) = reqwest::header::HeaderValue::from_str(traceparent.trim())
        {
            let headers = reqwest::header::HeaderMap::from_iter([(
                reqwest::header::HeaderName::from_static("traceparent"),
                value,
            )]);
            builder = builder.default_headers(headers);
        }
        let token = match server.auth_type.as_str() {
            "" => None,
            "tokens" => Some(
                server
                    .auth_conf
                    .get("token")
                    .cloned()
                    .context("auth type 'tokens' needs --auth-conf token=<user token>")?,
            ),
            other => anyhow::bail!("unsupported auth type {other:?}: use 'tokens'"),
        };
        Ok(Client {
            http: builder.build().context("building the HTTP client")?,
            base: server.url.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "could not reach the control plane at {} ({method} {path})",
                self.base
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(parse_error(status, &text).into())
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.send(Method::GET, path, None).await?;
        resp.json()
            .await
            .with_context(|| format!("GET {path}: the response is not JSON"))
    }

    /// PUT a resource; true when it was created, false when updated.
    pub async fn put(&self, path: &str, body: &Value) -> Result<bool> {
        let resp = self.send(Method::PUT, path, Some(body)).await?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(Method::DELETE, path, None).await.map(|_| ())
    }

    pub async fn get_text(&self, path: &str) -> Result<String> {
        let resp = self.send(Method::GET, path, None).await?;
        resp.text().await.context("reading the response")
    }

    pub async fn post_text(&self, path: &str, body: &Value) -> Result<String> {
        let resp = self.send(Method::POST, path, Some(body)).await?;
        resp.text().await.context("reading the response")
    }
}

fn parse_error(status: StatusCode, text: &str) -> ApiError {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    match parsed {
        Some(v) if v.get("title").is_some() => ApiError {
            title: v["title"].as_str().unwrap_or("error").to_string(),
            detail: v["detail"].as_str().unwrap_or("").to_string(),
            fields: v["invalid_parameters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            (
                                p["field"].as_str().unwrap_or("").to_string(),
                                p["reason"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
        _ => ApiError {
            title: format!("the control plane answered {status}"),
            detail: text.trim().chars().take(500).collect(),
            fields: vec![],
        },
    }
}

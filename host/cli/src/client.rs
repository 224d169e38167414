//! The command line's HTTP client: the verbs that talk to a running `eshost run`
//! (`command`, `state`, `history`, `subscribe`, `projection ...`, `plugin list|swap`).
//!
//! Requests are the wire contract's types ([`eshost_api`]); every answer is parsed into its
//! type to check it, then printed as the server sent it, one JSON line each. An HTTP error
//! becomes an error whose text is the server's `message` (the binary prints it as
//! `eshost: <message>` and exits non-zero).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use eshost_api::{ErrorBody, Event};
use futures_util::StreamExt;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long a request may take, unless said otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// An HTTP error answer: the server's `{error, message}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    /// The status code.
    pub status: u16,
    /// The server's error kind, e.g. `rejected`.
    pub error: String,
    /// The server's message.
    pub message: String,
}

/// The server URL a config file's `listen` address means (an unspecified address such as
/// `0.0.0.0` becomes loopback). Only `listen` is read, so the plugins need not exist here.
pub fn server_from_config(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read config file {}", file.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file {}", file.display()))?;
    let listen = match table.get("listen") {
        None => eshost_core::config::DEFAULT_LISTEN.to_owned(),
        Some(toml::Value::String(listen)) => listen.clone(),
        Some(_) => bail!("config file {}: `listen` must be a string", file.display()),
    };
    let mut address: SocketAddr = listen
        .parse()
        .with_context(|| format!("config file {}: `listen` = {listen:?}", file.display()))?;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("http://{address}"))
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:7070`), sending `token` as a
    /// bearer token when given.
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Client> {
        let base = Url::parse(base).with_context(|| format!("--server {base:?} is not a URL"))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            bail!("--server must be an http:// URL, not {base}");
        }
        if base.cannot_be_a_base() {
            bail!("--server {base} cannot be a base URL");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client { http, base, token })
    }

    /// The URL of `segments` under the base (each segment percent-encoded).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked in new");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// A request with the token.
    pub fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` (timing out after 60 s) and returns the answer as a `T` and as the
    /// JSON it came as, or the server's error as an [`HttpError`].
    pub async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(T, Value)> {
        self.send_within(request, REQUEST_TIMEOUT).await
    }

    /// [`send`](Self::send), timing out after `timeout`.
    pub async fn send_within<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> anyhow::Result<(T, Value)> {
        let response = request
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let response = check(response).await?;
        let body = response.bytes().await.context("reading the answer")?;
        let value: Value =
            serde_json::from_slice(&body).context("the server's answer is not JSON")?;
        let typed = T::deserialize(&value)
            .with_context(|| format!("the server's answer does not follow the API: {value}"))?;
        Ok((typed, value))
    }

    /// Prints the answer to `request`, checked to be a `T`, as one line.
    pub async fn print<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<()> {
        self.print_within::<T>(request, REQUEST_TIMEOUT).await
    }

    /// [`print`](Self::print), timing out after `timeout` (a check reads the whole log).
    pub async fn print_within<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let (_, value) = self.send_within::<T>(request, timeout).await?;
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &value)?;
        writeln!(out)?;
        Ok(())
    }

    /// Follows `GET /subscribe` and prints each event's data as one JSON line, flushing
    /// each, until the server ends the stream or `limit` events were printed.
    pub async fn subscribe(
        &self,
        query: &eshost_api::SubscribeQuery,
        limit: Option<u64>,
    ) -> anyhow::Result<()> {
        if limit == Some(0) {
            return Ok(());
        }
        let response = self
            .request(Method::GET, self.url(&["subscribe"]))
            .query(query)
            .header("accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let response = check(response).await?;
        let mut body = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        let mut data = String::new();
        let mut printed = 0u64;
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = body.next().await {
            pending.extend_from_slice(&chunk.context("reading the event stream")?);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if data.is_empty() {
                        continue;
                    }
                    let event: Value = serde_json::from_str(&data)
                        .with_context(|| format!("an event that is not JSON: {data}"))?;
                    Event::deserialize(&event).with_context(|| {
                        format!("the server sent something else than an event: {data}")
                    })?;
                    data.clear();
                    serde_json::to_writer(&mut out, &event)?;
                    writeln!(out)?;
                    out.flush()?;
                    printed += 1;
                    if limit.is_some_and(|limit| printed >= limit) {
                        return Ok(());
                    }
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
                // `id:`, `event:`, `retry:` and comments (keep-alives) are not printed: the
                // data carries the position and type.
            }
        }
        Ok(())
    }
}

/// Turns an error status into an [`HttpError`] with the server's message.
async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    if let Ok(error) = serde_json::from_str::<ErrorBody>(&body) {
        if let Some(report) = &error.check {
            // A refused swap's report is the answer's point: printed like an answer.
            if let Ok(report) = serde_json::to_string(report) {
                println!("{report}");
            }
        }
        return Err(HttpError {
            status: status.as_u16(),
            error: error.error.to_string(),
            message: error.message,
        }
        .into());
    }
    // Not the contract's error (a proxy's page, a newer server's code): whatever it says.
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let message = field("message").unwrap_or_else(|| {
        let body = body.trim();
        if body.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {body}")
        }
    });
    Err(HttpError {
        status: status.as_u16(),
        error: field("error").unwrap_or_default(),
        message,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_under_the_base() {
        let client = Client::new("http://127.0.0.1:7070/", None).unwrap();
        assert_eq!(
            client
                .url(&["aggregates", "bank-account", "a b/c"])
                .as_str(),
            "http://127.0.0.1:7070/aggregates/bank-account/a%20b%2Fc"
        );
        assert!(Client::new("ftp://x", None).is_err());
    }

    #[test]
    fn a_config_listen_address_becomes_a_loopback_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("eshost.toml");
        std::fs::write(&file, "store = \"d\"\nlisten = \"0.0.0.0:9000\"\n").unwrap();
        assert_eq!(server_from_config(&file).unwrap(), "http://127.0.0.1:9000");
        std::fs::write(&file, "store = \"d\"\n").unwrap();
        assert_eq!(server_from_config(&file).unwrap(), "http://127.0.0.1:7070");
    }
}

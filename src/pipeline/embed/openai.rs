//! An embedder that calls an OpenAI-compatible `POST {base_url}/embeddings`
//! endpoint: OpenAI itself, Ollama (`http://localhost:11434/v1`), vLLM,
//! Hugging Face TEI, LiteLLM and the like.
//!
//! [`OpenAiEmbedder::connect`] embeds one short text before anything else,
//! so that a wrong address, key, model or dimension is an error at start-up
//! and not the first document's. Every answer is checked (one finite vector
//! per input, all of the dimension learned at start-up) and every vector is
//! scaled to unit length, because not every server normalises.
//!
//! The model's identity ([`EmbeddingModel::version`]) is the model id the server
//! answered with and the host it was reached at, `all-minilm@gpu-1:11434`:
//! two deployments may serve different builds under one name (an Ollama tag
//! re-pulled, a fine-tune behind a proxy), and a knowledge base must not mix
//! their vectors. The price is that moving a server to a new address makes a
//! new model as far as knowledge bases are concerned.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use domain::EmbeddingModel;

use super::{EmbedError, Embedder};
use crate::pipeline::tokens::{TokenCounter, WordTokens};

/// What the connection check embeds: short, so it costs the server little.
const PROBE_TEXT: &str = "NeuroStash connection check";

/// The most characters of a server's error message kept in an error.
const SERVER_MESSAGE_CHARS: usize = 200;

/// How to reach an OpenAI-compatible embedding server.
#[derive(Clone)]
pub struct OpenAiSettings {
    /// The API root that `/embeddings` is appended to, e.g.
    /// `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set; never logged or shown.
    pub api_key: Option<String>,
    pub model: String,
    /// Sent as the request's `dimensions` (models that can shorten their
    /// vectors, such as OpenAI's text-embedding-3) and checked against the
    /// answer; unset, the dimension is learned from the server.
    pub dimensions: Option<u32>,
    /// Most texts in one request.
    pub batch_size: usize,
    /// For each request, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// Retries of a request after its first attempt failed transiently.
    pub max_retries: u32,
    /// The first retry's wait; it doubles each retry (with jitter).
    pub retry_base: Duration,
    /// The longest wait between attempts, also for a server's `Retry-After`.
    pub retry_max: Duration,
    /// What [`Embedder::max_input_tokens`] answers, in the tokens of
    /// `tokenizer`. Without one, chunks are measured in [`WordTokens`],
    /// which undercounts subword vocabularies: then keep this well below
    /// the model's real limit (256 suits all-MiniLM-L6-v2, 512-token models
    /// and up).
    pub max_input_tokens: usize,
    /// The served model's own tokenizer, when its `tokenizer.json` is at
    /// hand: chunks are then measured as the model reads them.
    pub tokenizer: Option<Arc<dyn TokenCounter>>,
}

impl OpenAiSettings {
    /// Settings with the defaults for everything but the address and model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiSettings {
        OpenAiSettings {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            dimensions: None,
            batch_size: 32,
            timeout: Duration::from_secs(30),
            max_retries: 5,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            max_input_tokens: 256,
            tokenizer: None,
        }
    }
}

impl fmt::Debug for OpenAiSettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OpenAiSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("max_input_tokens", &self.max_input_tokens)
            .field("tokenizer", &self.tokenizer.as_ref().map(|tokenizer| tokenizer.name()))
            .finish()
    }
}

/// An [`Embedder`] backed by an OpenAI-compatible server.
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    endpoint: Url,
    /// `host[:port]` of the endpoint, in the model version and messages.
    host: String,
    /// Names the embedder in its errors.
    label: String,
    api_key: Option<String>,
    settings: OpenAiSettings,
    /// The model id the server answered the probe with.
    served_model: String,
    model: EmbeddingModel,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OpenAiEmbedder")
            .field("endpoint", &self.endpoint.as_str())
            .field("model", &self.model)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How one attempt at a request went wrong.
#[derive(Debug, PartialEq)]
enum AttemptError {
    /// Worth another attempt, after `retry_after` if the server asked.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The same request will fail the same way.
    Permanent(String),
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

/// The checked, unit-length vectors of one answer, in input order, and the
/// model id the server named.
#[derive(Debug)]
struct Answer {
    vectors: Vec<Vec<f32>>,
    model: Option<String>,
}

impl OpenAiEmbedder {
    /// Checks the settings and asks the server for one vector, which gives
    /// the dimension (or checks the configured one) and the served model id.
    pub async fn connect(settings: OpenAiSettings) -> Result<OpenAiEmbedder, EmbedError> {
        let endpoint = endpoint_of(&settings).map_err(|reason| EmbedError::Rejected {
            embedder: format!("{} at {}", settings.model, settings.base_url),
            reason,
        })?;
        let host = host_of(&endpoint);
        let label = format!("{} at {host}", settings.model);
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // a POST redirected becomes a GET with no body: better to say
            // where the server points than to follow it
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| EmbedError::Rejected {
                embedder: label.clone(),
                reason: format!("cannot build the http client: {}", error_chain(&error)),
            })?;
        let mut embedder = OpenAiEmbedder {
            client,
            endpoint,
            host,
            label,
            api_key: settings.api_key.clone().filter(|key| !key.is_empty()),
            model: EmbeddingModel {
                name: settings.model.clone(),
                dimensions: settings.dimensions.unwrap_or(0),
                version: String::new(),
            },
            served_model: String::new(),
            settings,
        };

        let probe = [PROBE_TEXT.to_owned()];
        let body = embedder.post_with_retries(&probe).await?;
        let answer = check_answer(&body, 1, None)
            .map_err(|reason| embedder.rejected(format!("the connection check failed: {reason}")))?;
        let dimensions = answer.vectors[0].len();
        if let Some(configured) = embedder.settings.dimensions {
            if dimensions != configured as usize {
                return Err(embedder.rejected(format!(
                    "the embedding server answers {dimensions}-dimensional vectors for model {}, \
                     but dimensions is set to {configured}",
                    embedder.settings.model
                )));
            }
        }
        let dimensions = u32::try_from(dimensions)
            .map_err(|_| embedder.rejected(format!("the embedding server answers {dimensions} dimensions")))?;
        embedder.served_model = answer.model.unwrap_or_else(|| embedder.settings.model.clone());
        embedder.model.dimensions = dimensions;
        embedder.model.version = format!("{}@{}", embedder.served_model, embedder.host);
        Ok(embedder)
    }

    fn rejected(&self, reason: String) -> EmbedError {
        EmbedError::Rejected {
            embedder: self.label.clone(),
            reason,
        }
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = self.post_with_retries(texts).await?;
        let answer = check_answer(&body, texts.len(), Some(self.model.dimensions as usize))
            .map_err(|reason| self.rejected(reason))?;
        if let Some(model) = answer.model.filter(|model| *model != self.served_model) {
            // another model behind the same address since start-up: its
            // vectors would not be comparable with the ones already stored
            return Err(self.rejected(format!(
                "the embedding server now answers with model {}, not {} as at start-up; restart to take it",
                truncate_chars(&model, 100),
                self.served_model
            )));
        }
        Ok(answer.vectors)
    }

    /// The answer's body once an attempt succeeds; transient failures are
    /// retried up to `max_retries` times.
    async fn post_with_retries(&self, texts: &[String]) -> Result<Vec<u8>, EmbedError> {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (reason, retry_after) = match self.post_once(texts).await {
                Ok(body) => return Ok(body),
                Err(AttemptError::Permanent(reason)) => return Err(self.rejected(reason)),
                Err(AttemptError::Transient { reason, retry_after }) => (reason, retry_after),
            };
            if attempts > self.settings.max_retries {
                return Err(EmbedError::Failed {
                    embedder: self.label.clone(),
                    reason: format!("gave up after {attempts} attempts, the last: {reason}"),
                });
            }
            let wait = retry_wait(
                attempts,
                self.settings.retry_base,
                self.settings.retry_max,
                retry_after,
                rand::thread_rng().gen(),
            );
            tracing::warn!(
                embedder = %self.label,
                attempt = attempts,
                texts = texts.len(),
                wait_ms = wait.as_millis() as u64,
                %reason,
                "embedding request failed, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn post_once(&self, texts: &[String]) -> Result<Vec<u8>, AttemptError> {
        let request = EmbeddingsRequest {
            model: &self.settings.model,
            input: texts,
            encoding_format: "float",
            dimensions: self.settings.dimensions,
        };
        let mut builder = self.client.post(self.endpoint.clone()).json(&request);
        if let Some(key) = &self.api_key {
            // reqwest marks the header sensitive: it stays out of Debug output
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await.map_err(|error| self.transport_failure(error))?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers());
        let location = redirect_target(response.headers());
        let body = response.bytes().await.map_err(|error| self.transport_failure(error))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let message = server_message(&body, self.api_key.as_deref());
        Err(classify_status(
            status,
            &message,
            retry_after,
            &StatusContext {
                model: &self.settings.model,
                endpoint: self.endpoint.as_str(),
                has_key: self.api_key.is_some(),
                location: location.as_deref(),
            },
        ))
    }

    fn transport_failure(&self, error: reqwest::Error) -> AttemptError {
        let reason = if error.is_timeout() {
            format!(
                "timed out: no answer from {} within {:?}",
                self.host, self.settings.timeout
            )
        } else if error.is_connect() {
            format!("cannot connect to {}: {}", self.host, error_chain(&error.without_url()))
        } else {
            format!(
                "the request to {} failed: {}",
                self.host,
                error_chain(&error.without_url())
            )
        };
        AttemptError::Transient {
            reason,
            retry_after: None,
        }
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &EmbeddingModel {
        &self.model
    }

    fn describe(&self) -> String {
        // the endpoint carries no credentials or query (checked at connect)
        format!(
            "openai-compatible embedder: model {} (served as {}, {} dimensions) at {}, batches of {}, chunks of at \
             most {} tokens counted by {}",
            self.model.name,
            self.served_model,
            self.model.dimensions,
            self.endpoint.as_str().trim_end_matches("/embeddings"),
            self.settings.batch_size,
            self.settings.max_input_tokens,
            self.tokenizer().name()
        )
    }

    fn tokenizer(&self) -> Arc<dyn TokenCounter> {
        match &self.settings.tokenizer {
            Some(tokenizer) => tokenizer.clone(),
            None => Arc::new(WordTokens),
        }
    }

    fn max_input_tokens(&self) -> usize {
        self.settings.max_input_tokens
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        // one batch after another: the processor already embeds several
        // documents at once, and a server's own queue does the rest
        for batch in texts.chunks(self.settings.batch_size) {
            vectors.extend(self.embed_batch(batch).await?);
        }
        debug_assert_eq!(vectors.len(), texts.len());
        Ok(vectors)
    }
}

/// `{base_url}/embeddings`, once the settings are checked.
fn endpoint_of(settings: &OpenAiSettings) -> Result<Url, String> {
    if settings.model.trim().is_empty() {
        return Err("invalid settings: the model is empty".to_owned());
    }
    if settings.batch_size == 0 {
        return Err("invalid settings: batch_size must be at least 1".to_owned());
    }
    if settings.max_input_tokens == 0 {
        return Err("invalid settings: max_input_tokens must be at least 1".to_owned());
    }
    if settings.dimensions == Some(0) {
        return Err("invalid settings: dimensions must be at least 1 when set".to_owned());
    }
    if settings.timeout.is_zero() {
        return Err("invalid settings: timeout must be above zero".to_owned());
    }
    let base = settings.base_url.trim().trim_end_matches('/');
    let url = Url::parse(&format!("{base}/embeddings"))
        .map_err(|error| format!("invalid settings: base_url {base:?} is not a url: {error}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "invalid settings: base_url must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none() {
        return Err("invalid settings: base_url has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("invalid settings: base_url must not have a query or fragment".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("invalid settings: base_url must not carry credentials; set api_key instead".to_owned());
    }
    Ok(url)
}

/// `host` or `host:port` when the port is not the scheme's default.
fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Parses and checks an answer to `inputs` texts: one vector per input
/// index, each finite, non-zero and of `dimensions` (or all of one size
/// when `None`), scaled to unit length.
fn check_answer(body: &[u8], inputs: usize, dimensions: Option<usize>) -> Result<Answer, String> {
    let response: EmbeddingsResponse = serde_json::from_slice(body).map_err(|error| {
        format!(
            "the embedding server's answer is not an embeddings list: {error} (it began {:?})",
            truncate_chars(&String::from_utf8_lossy(body), 80)
        )
    })?;
    if response.data.len() != inputs {
        return Err(format!(
            "the embedding server answered {} vectors for {inputs} texts",
            response.data.len()
        ));
    }
    let indexed = response.data.iter().filter(|item| item.index.is_some()).count();
    if indexed != 0 && indexed != inputs {
        return Err("the embedding server gave an index to some vectors and not to others".to_owned());
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; inputs];
    let expected = dimensions.or_else(|| response.data.first().map(|item| item.embedding.len()));
    for (position, item) in response.data.into_iter().enumerate() {
        // servers that number nothing list the vectors in input order
        let index = item.index.unwrap_or(position);
        if index >= inputs {
            return Err(format!(
                "the embedding server answered index {index} for {inputs} texts"
            ));
        }
        if slots[index].is_some() {
            return Err(format!("the embedding server answered index {index} twice"));
        }
        let length = item.embedding.len();
        if Some(length) != expected || length == 0 {
            return Err(format!(
                "the embedding server answered a {length}-dimensional vector for text {index}, expected {}",
                expected.unwrap_or_default()
            ));
        }
        slots[index] = Some(
            unit_vector(item.embedding)
                .map_err(|problem| format!("the embedding server answered a {problem} vector for text {index}"))?,
        );
    }
    let vectors = slots.into_iter().flatten().collect::<Vec<_>>();
    debug_assert_eq!(vectors.len(), inputs);
    Ok(Answer {
        vectors,
        model: response.model.filter(|model| !model.is_empty()),
    })
}

/// The vector scaled to length one; errors name what is wrong with it.
fn unit_vector(mut vector: Vec<f32>) -> Result<Vec<f32>, &'static str> {
    if vector.iter().any(|x| !x.is_finite()) {
        return Err("non-finite");
    }
    let norm = vector.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err("zero");
    }
    vector.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
    Ok(vector)
}

/// What a status error message needs to say.
struct StatusContext<'a> {
    model: &'a str,
    endpoint: &'a str,
    has_key: bool,
    location: Option<&'a str>,
}

/// Sorts a failed answer into transient (retried) and permanent, with a
/// reason a person can act on.
fn classify_status(
    status: StatusCode,
    message: &str,
    retry_after: Option<Duration>,
    context: &StatusContext<'_>,
) -> AttemptError {
    let code = status.as_u16();
    let with_message = |reason: String| {
        if message.is_empty() {
            reason
        } else {
            format!("{reason}: {message}")
        }
    };
    let transient = |reason: String| AttemptError::Transient {
        reason: with_message(reason),
        retry_after,
    };
    let permanent = |reason: String| AttemptError::Permanent(with_message(reason));
    match code {
        408 => transient("the embedding server timed out waiting for the request (408)".to_owned()),
        409 => transient("the embedding server reported a conflict (409)".to_owned()),
        429 => transient("the embedding server is rate limiting requests (429)".to_owned()),
        503 => transient("the embedding server is unavailable (503)".to_owned()),
        500..=599 => transient(format!("the embedding server failed ({code})")),
        401 if context.has_key => permanent("the embedding server refused the api key (401)".to_owned()),
        401 => permanent("the embedding server requires an api key (401); none is set".to_owned()),
        403 => permanent(format!(
            "the embedding server denied access to model {} (403)",
            context.model
        )),
        404 => permanent(format!(
            "the embedding server has no model {} or no endpoint {} (404)",
            context.model, context.endpoint
        )),
        413 => permanent("the embedding server found the request too large (413); lower batch_size".to_owned()),
        400 | 422 => permanent(format!("the embedding server refused the request ({code})")),
        300..=399 => permanent(format!(
            "the embedding server redirected ({code}) to {}; set base_url to where it points",
            context.location.unwrap_or("an unnamed place")
        )),
        _ => permanent(format!("the embedding server answered {status}")),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is left to the backoff).
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

fn redirect_target(headers: &HeaderMap) -> Option<String> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    Some(truncate_chars(location, 200))
}

/// The wait before attempt `failed + 1`: the server's `Retry-After` if it
/// sent one, else `base` doubled per failure with jitter in its upper half
/// (`jitter` in `[0, 1)`), at most `max` either way.
fn retry_wait(failed: u32, base: Duration, max: Duration, retry_after: Option<Duration>, jitter: f64) -> Duration {
    if let Some(asked) = retry_after {
        return asked.min(max);
    }
    let doublings = failed.saturating_sub(1).min(30);
    let exponential = base.saturating_mul(1u32 << doublings).min(max);
    exponential.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The server's own words from an error body: OpenAI's, vLLM's and
/// Ollama's `{"error": {"message"}}`, TEI's `{"error": "…"}`, a bare
/// `{"message"}` or `{"detail"}`, else the body's text. One line, at most
/// [`SERVER_MESSAGE_CHARS`] characters, the api key (which some servers
/// echo) replaced.
fn server_message(body: &[u8], api_key: Option<&str>) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed = serde_json::from_str::<serde_json::Value>(&text).ok();
    let picked = parsed.as_ref().and_then(|value| {
        let error = value.get("error");
        error
            .and_then(|error| error.get("message"))
            .or(error)
            .or_else(|| value.get("message"))
            .or_else(|| value.get("detail"))
            .and_then(|message| message.as_str())
    });
    let message = picked.map(str::to_owned).unwrap_or_else(|| text.into_owned());
    let redact = |text: String| match api_key {
        Some(key) if !key.is_empty() => text.replace(key, "[redacted]"),
        _ => text,
    };
    let one_line = redact(message).split_whitespace().collect::<Vec<_>>().join(" ");
    truncate_chars(&redact(one_line), SERVER_MESSAGE_CHARS)
}

fn truncate_chars(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An error and its sources on one line: reqwest's own message alone
/// ("error sending request") does not say what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !chain.contains(&cause_text) {
            chain.push_str(": ");
            chain.push_str(&cause_text);
        }
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> StatusContext<'static> {
        StatusContext {
            model: "all-MiniLM-L6-v2",
            endpoint: "http://127.0.0.1:9/v1/embeddings",
            has_key: true,
            location: None,
        }
    }

    fn norm(vector: &[f32]) -> f32 {
        vector.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    #[test]
    fn answers_are_put_in_input_order_and_normalised() {
        let body = br#"{"object":"list","model":"m","data":[
            {"object":"embedding","index":2,"embedding":[0,0,5]},
            {"object":"embedding","index":0,"embedding":[3,4,0]},
            {"object":"embedding","index":1,"embedding":[0,-2,0]}]}"#;
        let answer = check_answer(body, 3, Some(3)).expect("valid answer");
        assert_eq!(answer.model.as_deref(), Some("m"));
        assert_eq!(answer.vectors[0], [0.6, 0.8, 0.0]);
        assert_eq!(answer.vectors[1], [0.0, -1.0, 0.0]);
        assert_eq!(answer.vectors[2], [0.0, 0.0, 1.0]);
        assert!(answer.vectors.iter().all(|vector| (norm(vector) - 1.0).abs() < 1e-6));
    }

    #[test]
    fn vectors_without_index_keep_their_listed_order() {
        let body = br#"{"data":[{"embedding":[1,0]},{"embedding":[0,1]}]}"#;
        let answer = check_answer(body, 2, None).expect("valid answer");
        assert_eq!(answer.vectors, [[1.0, 0.0], [0.0, 1.0]]);
        assert_eq!(answer.model, None);
    }

    #[test]
    fn malformed_answers_are_refused() {
        let cases: [(&[u8], usize, Option<usize>, &str); 8] = [
            (b"<html>bad gateway</html>", 1, None, "not an embeddings list"),
            (
                br#"{"data":[{"index":0,"embedding":[1,0]}]}"#,
                2,
                None,
                "1 vectors for 2 texts",
            ),
            (
                br#"{"data":[{"index":0,"embedding":[1,0]},{"index":0,"embedding":[0,1]}]}"#,
                2,
                None,
                "index 0 twice",
            ),
            (
                br#"{"data":[{"index":5,"embedding":[1,0]}]}"#,
                1,
                None,
                "index 5 for 1 texts",
            ),
            (
                br#"{"data":[{"index":0,"embedding":[1,0,0]}]}"#,
                1,
                Some(2),
                "3-dimensional",
            ),
            (
                br#"{"data":[{"index":0,"embedding":[1,0]},{"index":1,"embedding":[1]}]}"#,
                2,
                None,
                "1-dimensional vector for text 1, expected 2",
            ),
            (br#"{"data":[{"index":0,"embedding":[0,0]}]}"#, 1, None, "zero vector"),
            (br#"{"data":[{"index":0,"embedding":[1e39,0]}]}"#, 1, None, "non-finite"),
        ];
        for (body, inputs, dimensions, expected) in cases {
            let reason = check_answer(body, inputs, dimensions).expect_err("refused");
            assert!(reason.contains(expected), "{reason:?} should say {expected:?}");
        }
        let base64 = br#"{"data":[{"index":0,"embedding":"AACAPw=="}]}"#;
        assert!(check_answer(base64, 1, None).is_err());
    }

    #[test]
    fn statuses_are_sorted_into_transient_and_permanent() {
        for code in [408, 409, 429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            let outcome = classify_status(status, "busy", Some(Duration::from_secs(2)), &context());
            match outcome {
                AttemptError::Transient { reason, retry_after } => {
                    assert!(
                        reason.contains(&code.to_string()) && reason.ends_with(": busy"),
                        "{reason}"
                    );
                    assert_eq!(retry_after, Some(Duration::from_secs(2)));
                }
                other => panic!("{code} should be transient, is {other:?}"),
            }
        }
        for code in [400, 401, 403, 404, 413, 422, 301, 405] {
            let status = StatusCode::from_u16(code).unwrap();
            match classify_status(status, "", None, &context()) {
                AttemptError::Permanent(reason) => assert!(reason.contains(&code.to_string()), "{reason}"),
                other => panic!("{code} should be permanent, is {other:?}"),
            }
        }
        let refused = classify_status(StatusCode::UNAUTHORIZED, "", None, &context());
        assert_eq!(
            refused,
            AttemptError::Permanent("the embedding server refused the api key (401)".to_owned())
        );
        let keyless = StatusContext {
            has_key: false,
            ..context()
        };
        let missing = classify_status(StatusCode::UNAUTHORIZED, "", None, &keyless);
        assert!(matches!(missing, AttemptError::Permanent(reason) if reason.contains("requires an api key")));
    }

    #[test]
    fn server_messages_are_short_single_lines_without_the_key() {
        let openai = br#"{"error":{"message":"Incorrect API key provided: sk-secret-123.\nSee docs","type":"x"}}"#;
        assert_eq!(
            server_message(openai, Some("sk-secret-123")),
            "Incorrect API key provided: [redacted]. See docs"
        );
        assert_eq!(
            server_message(br#"{"error":"Input validation error"}"#, None),
            "Input validation error"
        );
        assert_eq!(
            server_message(br#"{"object":"error","message":"too long"}"#, None),
            "too long"
        );
        assert_eq!(server_message(br#"{"detail":"Not Found"}"#, None), "Not Found");
        assert_eq!(server_message(b"  upstream\n  down ", None), "upstream down");
        let long = "é".repeat(500);
        let cut = server_message(long.as_bytes(), None);
        assert_eq!(cut.chars().count(), SERVER_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(parse_retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(RETRY_AFTER, "0".parse().unwrap());
        assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(parse_retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "-1".parse().unwrap());
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn waits_double_with_jitter_and_stay_under_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(retry_wait(1, base, max, None, 0.0), Duration::from_millis(50));
        assert_eq!(retry_wait(1, base, max, None, 1.0), Duration::from_millis(100));
        assert_eq!(retry_wait(3, base, max, None, 1.0), Duration::from_millis(400));
        assert_eq!(retry_wait(30, base, max, None, 1.0), max);
        assert_eq!(retry_wait(u32::MAX, base, max, None, 0.5), Duration::from_millis(750));
        let asked = Some(Duration::from_secs(60));
        assert_eq!(retry_wait(1, base, max, asked, 0.3), max);
        assert_eq!(retry_wait(4, base, max, Some(Duration::ZERO), 0.3), Duration::ZERO);
    }

    #[test]
    fn settings_are_checked_and_never_show_the_key() {
        let mut settings = OpenAiSettings::new("http://localhost:11434/v1/", "nomic-embed-text");
        settings.api_key = Some("sk-very-secret".to_owned());
        let endpoint = endpoint_of(&settings).expect("valid settings");
        assert_eq!(endpoint.as_str(), "http://localhost:11434/v1/embeddings");
        assert_eq!(host_of(&endpoint), "localhost:11434");
        let https = endpoint_of(&OpenAiSettings::new("https://api.openai.com/v1", "m")).unwrap();
        assert_eq!(host_of(&https), "api.openai.com");
        assert!(!format!("{settings:?}").contains("sk-very-secret"));

        let invalid = [
            OpenAiSettings::new("localhost:11434", "m"),
            OpenAiSettings::new("ftp://host/v1", "m"),
            OpenAiSettings::new("http://user:pass@host/v1", "m"),
            OpenAiSettings::new("http://host/v1?api-version=1", "m"),
            OpenAiSettings::new("http://host/v1", " "),
            OpenAiSettings {
                batch_size: 0,
                ..OpenAiSettings::new("http://host/v1", "m")
            },
            OpenAiSettings {
                dimensions: Some(0),
                ..OpenAiSettings::new("http://host/v1", "m")
            },
        ];
        for settings in invalid {
            let reason = endpoint_of(&settings).expect_err("invalid settings");
            assert!(reason.starts_with("invalid settings: "), "{reason}");
            assert!(!reason.contains("pass"), "{reason}");
        }
    }
}

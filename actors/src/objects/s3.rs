//! The S3 adapter of the object-store port, on the `minio` client: any S3
//! (AWS, MinIO, SeaweedFS, …) addressed path-style, one bucket, created at
//! start when it is missing.

use async_trait::async_trait;
use minio::s3::creds::StaticProvider;
use minio::s3::error::{Error as MinioError, S3ServerError};
use minio::s3::http::BaseUrl;
use minio::s3::minio_error_response::MinioErrorCode;
use minio::s3::segmented_bytes::SegmentedBytes;
use minio::s3::types::{Region, S3Api};
use minio::s3::{MinioClient, MinioClientBuilder};

use super::{validate_key, ObjectStore, ObjectStoreError};

/// Where and as whom the S3 adapter connects. `Debug` never shows the
/// secret key.
#[derive(Clone)]
pub struct S3Settings {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Objects in one S3 bucket, each under its key as is. A PUT replaces an
/// object whole, so a reader sees the old or the new bytes, never a mix.
#[derive(Clone)]
pub struct S3ObjectStore {
    client: MinioClient,
    bucket: String,
    endpoint: String,
}

// by hand: the client's own Debug shows its credentials
impl std::fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ObjectStore")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl S3ObjectStore {
    /// Connects and makes sure the bucket exists, creating it if need be:
    /// wrong credentials or an unreachable server fail here, at start.
    pub async fn connect(settings: &S3Settings) -> Result<S3ObjectStore, ObjectStoreError> {
        let store = S3ObjectStore::new(settings)?;
        store.ensure_bucket().await?;
        Ok(store)
    }

    /// The client alone, without a request to the server.
    pub fn new(settings: &S3Settings) -> Result<S3ObjectStore, ObjectStoreError> {
        let endpoint = settings.endpoint.trim_end_matches('/');
        let mut base_url: BaseUrl = endpoint
            .parse()
            .map_err(|error| ObjectStoreError::Settings(format!("endpoint {endpoint}: {error}")))?;
        // path-style (`endpoint/bucket/key`): what MinIO and SeaweedFS serve,
        // and needs no DNS name per bucket
        base_url.virtual_style = false;
        // a set region is used as is; no GetBucketLocation round trip
        base_url.region = Region::new(settings.region.as_str())
            .map_err(|error| ObjectStoreError::Settings(format!("region {:?}: {error}", settings.region)))?;
        let provider = StaticProvider::new(&settings.access_key, &settings.secret_key, None);
        let client = MinioClientBuilder::new(base_url)
            .provider(Some(provider))
            .app_info(Some(("neurostash".to_owned(), env!("CARGO_PKG_VERSION").to_owned())))
            .build()
            .map_err(|error| ObjectStoreError::Settings(format!("endpoint {endpoint}: {}", describe(&error))))?;
        // the name is checked by the client before any request
        minio::s3::types::BucketName::new(settings.bucket.as_str()).map_err(|error| ObjectStoreError::Bucket {
            bucket: settings.bucket.clone(),
            reason: lowercase_first(&error.to_string()),
        })?;
        Ok(S3ObjectStore {
            client,
            bucket: settings.bucket.clone(),
            endpoint: endpoint.to_owned(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The underlying client, for tools and tests that look inside the bucket.
    pub fn client(&self) -> &MinioClient {
        &self.client
    }

    async fn ensure_bucket(&self) -> Result<(), ObjectStoreError> {
        let target = || format!("bucket {}", self.bucket);
        let exists = self
            .client
            .bucket_exists(self.bucket.as_str())
            .map_err(|error| self.bucket_error(error.into()))?
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, target(), None))?
            .exists();
        if exists {
            return Ok(());
        }
        let created = self
            .client
            .create_bucket(self.bucket.as_str())
            .map_err(|error| self.bucket_error(error.into()))?
            .build()
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, endpoint = %self.endpoint, "created the s3 bucket");
                Ok(())
            }
            // another process created it in between
            Err(MinioError::S3Server(S3ServerError::S3Error(response)))
                if response.code() == MinioErrorCode::BucketAlreadyOwnedByYou =>
            {
                Ok(())
            }
            Err(error) => Err(match self.map_error(error, target(), None) {
                ObjectStoreError::Request { reason, .. } => ObjectStoreError::Bucket {
                    bucket: self.bucket.clone(),
                    reason: format!("cannot create it: {reason}"),
                },
                other => other,
            }),
        }
    }

    fn bucket_error(&self, error: MinioError) -> ObjectStoreError {
        ObjectStoreError::Bucket {
            bucket: self.bucket.clone(),
            reason: describe(&error),
        }
    }

    fn object_target(&self, key: &str) -> String {
        format!("object {key} in bucket {}", self.bucket)
    }

    /// Maps a client error; `key` is the object a get asked for, whose
    /// absence is `NotFound`.
    fn map_error(&self, error: MinioError, target: String, key: Option<&str>) -> ObjectStoreError {
        if let MinioError::S3Server(S3ServerError::S3Error(response)) = &error {
            let code = response.code();
            match &code {
                MinioErrorCode::NoSuchKey => {
                    if let Some(key) = key {
                        return ObjectStoreError::NotFound(key.to_owned());
                    }
                }
                MinioErrorCode::NoSuchBucket => {
                    return ObjectStoreError::Bucket {
                        bucket: self.bucket.clone(),
                        reason: "it does not exist".to_owned(),
                    }
                }
                MinioErrorCode::AccessDenied => {
                    return ObjectStoreError::AccessDenied {
                        target,
                        reason: response
                            .message()
                            .as_deref()
                            .map(lowercase_first)
                            .unwrap_or_else(|| "access denied".to_owned()),
                    }
                }
                MinioErrorCode::OtherError(name) if is_credential_error(name) => {
                    return ObjectStoreError::AccessDenied {
                        target,
                        reason: response
                            .message()
                            .as_deref()
                            .map(lowercase_first)
                            .unwrap_or_else(|| name.clone()),
                    }
                }
                _ => {}
            }
        }
        let reason = match &error {
            MinioError::S3Server(S3ServerError::S3Error(response)) => {
                let code = match response.code() {
                    MinioErrorCode::OtherError(name) => name,
                    code => code.to_string(),
                };
                match response.message() {
                    Some(message) => format!("{code}: {}", lowercase_first(message)),
                    None => code,
                }
            }
            other => describe(other),
        };
        ObjectStoreError::Request { target, reason }
    }
}

/// The S3 error codes that mean the credentials are wrong.
/// (the client keeps codes it does not know in lowercase).
fn is_credential_error(code: &str) -> bool {
    [
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidToken",
        "ExpiredToken",
    ]
    .iter()
    .any(|known| known.eq_ignore_ascii_case(code))
}

/// The error with its causes, lowercase first. Requests are signed in a
/// header, so no message here holds the secret key.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    lowercase_first(&message)
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectStoreError> {
        validate_key(key)?;
        let data = SegmentedBytes::from(bytes::Bytes::from(bytes));
        self.client
            .put_object(self.bucket.as_str(), key, data)
            .map_err(|_| ObjectStoreError::InvalidKey(key.to_owned()))?
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, self.object_target(key), None))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectStoreError> {
        validate_key(key)?;
        let response = self
            .client
            .get_object(self.bucket.as_str(), key)
            .map_err(|_| ObjectStoreError::InvalidKey(key.to_owned()))?
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, self.object_target(key), Some(key)))?;
        let content = response
            .content()
            .map_err(|error| self.map_error(error, self.object_target(key), Some(key)))?;
        let bytes = content
            .to_segmented_bytes()
            .await
            .map_err(|error| ObjectStoreError::Request {
                target: self.object_target(key),
                reason: format!("reading the body: {}", describe(&error)),
            })?;
        Ok(bytes.to_bytes().to_vec())
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        validate_key(key)?;
        let result = self
            .client
            .delete_object(self.bucket.as_str(), key)
            .map_err(|_| ObjectStoreError::InvalidKey(key.to_owned()))?
            .build()
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(MinioError::S3Server(S3ServerError::S3Error(response)))
                if response.code() == MinioErrorCode::NoSuchKey =>
            {
                Ok(())
            }
            Err(error) => Err(self.map_error(error, self.object_target(key), None)),
        }
    }
}

/// The variables naming the S3 server the tests use (`scripts/s3.sh`
/// starts one and prints them).
pub const TEST_S3_ENDPOINT_VAR: &str = "NEUROSTASH_TEST_S3_ENDPOINT";
pub const TEST_S3_ACCESS_KEY_VAR: &str = "NEUROSTASH_TEST_S3_ACCESS_KEY";
pub const TEST_S3_SECRET_KEY_VAR: &str = "NEUROSTASH_TEST_S3_SECRET_KEY";

/// Settings for the tests' S3 server with a bucket of its own, when
/// `NEUROSTASH_TEST_S3_*` name one.
pub fn test_s3_settings() -> Option<S3Settings> {
    let var = |name| {
        std::env::var(name)
            .ok()
            .filter(|value: &String| !value.trim().is_empty())
    };
    Some(S3Settings {
        endpoint: var(TEST_S3_ENDPOINT_VAR)?,
        bucket: format!("ns-test-{}", uuid::Uuid::new_v4().simple()),
        region: "us-east-1".to_owned(),
        access_key: var(TEST_S3_ACCESS_KEY_VAR)?,
        secret_key: var(TEST_S3_SECRET_KEY_VAR)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> S3Settings {
        S3Settings {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "neurostash".into(),
            region: "us-east-1".into(),
            access_key: "access".into(),
            secret_key: "very-secret-value".into(),
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let settings = settings();
        let store = S3ObjectStore::new(&settings).unwrap();
        for text in [format!("{settings:?}"), format!("{store:?}")] {
            assert!(!text.contains("very-secret-value"), "{text}");
        }
    }

    #[test]
    fn bad_settings_are_refused_before_any_request() {
        let mut bad_bucket = settings();
        bad_bucket.bucket = "Not A Bucket".into();
        let message = S3ObjectStore::new(&bad_bucket).unwrap_err().to_string();
        assert!(message.contains("Not A Bucket"), "{message}");
        let mut bad_endpoint = settings();
        bad_endpoint.endpoint = "ftp://x".into();
        assert!(matches!(
            S3ObjectStore::new(&bad_endpoint),
            Err(ObjectStoreError::Settings(_))
        ));
    }
}

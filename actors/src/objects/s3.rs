//! The S3 adapter of the object-store port, on the `minio` client: any S3
//! (AWS, MinIO, SeaweedFS, …) addressed path-style, one bucket, created at
//! start when it is missing.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use http::Method;
use minio::s3::builders::ObjectToDelete;
use minio::s3::creds::StaticProvider;
use minio::s3::error::{Error as MinioError, S3ServerError};
use minio::s3::http::BaseUrl;
use minio::s3::minio_error_response::MinioErrorCode;
use minio::s3::response::DeleteResult;
use minio::s3::response_traits::HasEtagFromHeaders;
use minio::s3::segmented_bytes::SegmentedBytes;
use minio::s3::types::{PartInfo, Region, S3Api, ToStream, UploadId};
use minio::s3::{MinioClient, MinioClientBuilder};

use super::{folder_of, presigned_expiry_seconds, validate_key, ByteStream, ObjectStore, ObjectStoreError};

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

/// The size of the parts `put_stream` sends: what one streamed put holds in
/// memory at most (S3 wants 5 MiB or more but the last; 10 000 parts of
/// 16 MiB make objects up to 156 GiB).
pub const STREAM_PART_SIZE: usize = 16 * 1024 * 1024;

/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: u16 = 10_000;

/// S3's limit on the keys of one DeleteObjects request.
const MAX_KEYS_PER_DELETE: usize = 1000;

/// Cuts a body into parts of [`STREAM_PART_SIZE`], holding one part at a
/// time. Written here rather than taken from `put_object_content`, whose
/// reader ends the body at its first empty chunk and whose multipart upload
/// outlives a cancelled put.
struct PartReader {
    body: ByteStream,
    /// What the last chunk had beyond the part it filled.
    rest: Option<Bytes>,
    /// The body has ended; a finished stream must not be polled again.
    ended: bool,
}

impl PartReader {
    fn new(body: ByteStream) -> PartReader {
        PartReader {
            body,
            rest: None,
            ended: false,
        }
    }

    /// The next part: [`STREAM_PART_SIZE`] bytes, fewer only at the end of
    /// the body, none once it has ended.
    async fn next_part(&mut self) -> std::io::Result<SegmentedBytes> {
        let mut part = SegmentedBytes::new();
        while part.len() < STREAM_PART_SIZE {
            let chunk = match self.rest.take() {
                Some(rest) => rest,
                None if self.ended => break,
                None => match self.body.next().await {
                    Some(chunk) => chunk?,
                    None => {
                        self.ended = true;
                        break;
                    }
                },
            };
            let room = STREAM_PART_SIZE - part.len();
            if chunk.len() > room {
                part.append(chunk.slice(..room));
                self.rest = Some(chunk.slice(room..));
            } else if !chunk.is_empty() {
                part.append(chunk);
            }
        }
        Ok(part)
    }
}

/// A multipart upload begun and not yet completed. Dropped while open (the
/// put was cancelled) it aborts the upload in the background: no list shows
/// the parts of an open upload and no `delete_prefix` removes them, so one
/// left behind would keep bytes an erasure must remove.
struct OpenUpload {
    client: MinioClient,
    bucket: String,
    key: String,
    upload_id: Option<UploadId>,
}

impl OpenUpload {
    fn upload_id(&self) -> &UploadId {
        self.upload_id.as_ref().expect("an upload is used only while open")
    }

    /// The upload is complete: nothing to abort.
    fn completed(mut self) {
        self.upload_id = None;
    }

    async fn abort(mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            abort_upload(self.client.clone(), self.bucket.clone(), self.key.clone(), upload_id).await;
        }
    }
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(abort_upload(
                    self.client.clone(),
                    self.bucket.clone(),
                    self.key.clone(),
                    upload_id,
                ));
            }
            Err(_) => tracing::warn!(
                bucket = %self.bucket, key = %self.key, upload_id = %upload_id,
                "a cancelled multipart upload could not be aborted: no runtime left"
            ),
        }
    }
}

async fn abort_upload(client: MinioClient, bucket: String, key: String, upload_id: UploadId) {
    let aborted = match client.abort_multipart_upload(bucket.as_str(), key.as_str(), upload_id.clone()) {
        Ok(request) => request.build().send().await.map(|_| ()),
        Err(error) => Err(error.into()),
    };
    if let Err(error) = aborted {
        // the server keeps the parts until a lifecycle rule expires them
        tracing::warn!(
            bucket = %bucket, key = %key, upload_id = %upload_id, error = %describe(&error),
            "could not abort a failed multipart upload"
        );
    }
}

/// Whether the client can name `key` in a DeleteObjects request: it writes
/// keys into the request's XML unescaped, so a key with markup characters
/// would make the request malformed or name another key.
fn fits_delete_objects_xml(key: &str) -> bool {
    !key.chars().any(|c| matches!(c, '&' | '<' | '>') || c.is_control())
}

impl S3ObjectStore {
    fn invalid_key(key: &str) -> impl FnOnce(minio::s3::error::ValidationErr) -> ObjectStoreError + '_ {
        move |_| ObjectStoreError::InvalidKey(key.to_owned())
    }

    fn body_error(key: &str) -> impl FnOnce(std::io::Error) -> ObjectStoreError + '_ {
        move |source| ObjectStoreError::Body {
            key: key.to_owned(),
            source,
        }
    }

    /// The rest of a body whose first part filled [`STREAM_PART_SIZE`], as a
    /// multipart upload; on any error the upload is aborted.
    async fn put_multipart(
        &self,
        key: &str,
        first_part: SegmentedBytes,
        parts: &mut PartReader,
    ) -> Result<u64, ObjectStoreError> {
        let target = || self.object_target(key);
        let upload_id = self
            .client
            .create_multipart_upload(self.bucket.as_str(), key)
            .map_err(Self::invalid_key(key))?
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, target(), None))?
            .upload_id()
            .await
            .map_err(|error| self.map_error(error.into(), target(), None))?;
        let upload = OpenUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: Some(upload_id),
        };
        match self.send_parts(key, &upload, first_part, parts).await {
            Ok(written) => {
                upload.completed();
                Ok(written)
            }
            Err(error) => {
                upload.abort().await;
                Err(error)
            }
        }
    }

    /// Sends the parts one after the other (one part in memory at a time)
    /// and completes the upload.
    async fn send_parts(
        &self,
        key: &str,
        upload: &OpenUpload,
        first_part: SegmentedBytes,
        parts: &mut PartReader,
    ) -> Result<u64, ObjectStoreError> {
        let target = || self.object_target(key);
        let mut sent = Vec::new();
        let mut written: u64 = 0;
        let mut part = first_part;
        let mut number: u16 = 1;
        loop {
            let size = part.len() as u64;
            let etag = self
                .client
                .upload_part(self.bucket.as_str(), key, upload.upload_id().clone(), number, part)
                .map_err(Self::invalid_key(key))?
                .build()
                .send()
                .await
                .map_err(|error| self.map_error(error, target(), None))?
                .etag()
                .map_err(|error| self.map_error(error.into(), target(), None))?;
            sent.push(PartInfo::new(number, etag, size, None));
            written += size;
            part = parts.next_part().await.map_err(Self::body_error(key))?;
            if part.is_empty() {
                break;
            }
            number += 1;
            if number > MAX_PARTS {
                return Err(ObjectStoreError::Request {
                    target: target(),
                    reason: format!(
                        "the body is longer than {MAX_PARTS} parts of {} MiB",
                        STREAM_PART_SIZE / (1024 * 1024)
                    ),
                });
            }
        }
        self.client
            .complete_multipart_upload(self.bucket.as_str(), key, upload.upload_id().clone(), sent)
            .map_err(Self::invalid_key(key))?
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, target(), None))?;
        Ok(written)
    }

    /// Deletes one object by a key listed from the bucket, which need not
    /// pass [`validate_key`] (another tool may have written it).
    async fn delete_listed(&self, key: &str) -> Result<(), ObjectStoreError> {
        let result = self
            .client
            .delete_object(self.bucket.as_str(), key)
            .map_err(Self::invalid_key(key))?
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

    /// Deletes up to [`MAX_KEYS_PER_DELETE`] listed objects in one request.
    async fn delete_batch(&self, keys: &[String]) -> Result<(), ObjectStoreError> {
        debug_assert!(keys.len() <= MAX_KEYS_PER_DELETE);
        let objects = keys
            .iter()
            .map(|key| ObjectToDelete::try_from(key.as_str()).map_err(Self::invalid_key(key)))
            .collect::<Result<Vec<_>, _>>()?;
        let target = || format!("{} objects in bucket {}", keys.len(), self.bucket);
        let response = self
            .client
            .delete_objects(self.bucket.as_str(), objects)
            .map_err(|error| self.bucket_error(error.into()))?
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, target(), None))?;
        let results = response
            .result()
            .map_err(|error| self.map_error(error, target(), None))?;
        // quiet mode: the server answers with the failures alone
        for result in results {
            if let DeleteResult::Error(failure) = result {
                if failure.code == "NoSuchKey" {
                    continue;
                }
                return Err(ObjectStoreError::Request {
                    target: self.object_target(&failure.object_name),
                    reason: format!("{}: {}", failure.code, lowercase_first(&failure.message)),
                });
            }
        }
        Ok(())
    }

    async fn presign(
        &self,
        key: &str,
        method: Method,
        expires_in: Duration,
    ) -> Result<Option<String>, ObjectStoreError> {
        validate_key(key)?;
        let seconds = presigned_expiry_seconds(expires_in)?;
        // signed here with the configured region: no request to the server
        let response = self
            .client
            .get_presigned_object_url(self.bucket.as_str(), key, method)
            .map_err(Self::invalid_key(key))?
            .expiry_seconds(seconds)
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, self.object_target(key), None))?;
        Ok(Some(response.url))
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<u64, ObjectStoreError> {
        validate_key(key)?;
        let mut parts = PartReader::new(body);
        // a body the store had not begun to take fails before any request
        let first_part = parts.next_part().await.map_err(Self::body_error(key))?;
        if first_part.len() == STREAM_PART_SIZE {
            return self.put_multipart(key, first_part, &mut parts).await;
        }
        // the whole body fits in one part: a single PUT
        let written = first_part.len() as u64;
        self.client
            .put_object(self.bucket.as_str(), key, first_part)
            .map_err(Self::invalid_key(key))?
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, self.object_target(key), None))?;
        Ok(written)
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream, ObjectStoreError> {
        validate_key(key)?;
        let response = self
            .client
            .get_object(self.bucket.as_str(), key)
            .map_err(Self::invalid_key(key))?
            .build()
            .send()
            .await
            .map_err(|error| self.map_error(error, self.object_target(key), Some(key)))?;
        // the client checks a whole-object checksum, when the server sent one,
        // at the end of the stream
        let (body, _length) = response
            .content()
            .map_err(|error| self.map_error(error, self.object_target(key), Some(key)))?
            .to_stream()
            .await
            .map_err(|error| ObjectStoreError::Io {
                key: key.to_owned(),
                source: error,
            })?;
        let target = self.object_target(key);
        Ok(body
            .map(move |chunk| {
                chunk.map_err(|error| std::io::Error::new(error.kind(), format!("reading {target}: {error}")))
            })
            .boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, ObjectStoreError> {
        validate_key(key)?;
        let result = self
            .client
            .stat_object(self.bucket.as_str(), key)
            .map_err(Self::invalid_key(key))?
            .build()
            .send()
            .await;
        match result {
            Ok(response) => {
                let size = response
                    .size()
                    .map_err(|error| self.map_error(error.into(), self.object_target(key), None))?;
                Ok(Some(size))
            }
            Err(MinioError::S3Server(S3ServerError::S3Error(response)))
                if response.code() == MinioErrorCode::NoSuchKey =>
            {
                Ok(None)
            }
            Err(error) => Err(self.map_error(error, self.object_target(key), None)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        validate_key(key)?;
        self.delete_listed(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStoreError> {
        let folder = folder_of(prefix)?;
        let target = || format!("objects under {prefix:?} in bucket {}", self.bucket);
        // the folder's own `/`, so that `tenants/a` does not list `tenants/ab/…`
        let s3_prefix = (!folder.is_empty()).then(|| format!("{folder}/"));
        // one request per page of 1000 keys, the next sent when the last is read
        let mut pages = self
            .client
            .list_objects(self.bucket.as_str())
            .map_err(|error| self.bucket_error(error.into()))?
            .prefix(s3_prefix)
            .recursive(true)
            .build()
            .to_stream()
            .await;
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| self.map_error(error, target(), None))?;
            keys.extend(
                page.contents
                    .into_iter()
                    .filter(|entry| !entry.is_prefix && !entry.is_delete_marker)
                    .map(|entry| entry.name),
            );
        }
        keys.sort_unstable();
        Ok(keys)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ObjectStoreError> {
        let folder = folder_of(prefix)?;
        if folder.is_empty() {
            return Err(ObjectStoreError::InvalidPrefix(prefix.to_owned()));
        }
        // listed whole before deleting, so that no page is read from a
        // listing its own deletions change
        let keys = self.list(prefix).await?;
        let (batchable, one_by_one): (Vec<String>, Vec<String>) =
            keys.iter().cloned().partition(|key| fits_delete_objects_xml(key));
        for batch in batchable.chunks(MAX_KEYS_PER_DELETE) {
            self.delete_batch(batch).await?;
        }
        for key in &one_by_one {
            self.delete_listed(key).await?;
        }
        Ok(keys.len() as u64)
    }

    async fn presign_put(&self, key: &str, expires_in: Duration) -> Result<Option<String>, ObjectStoreError> {
        self.presign(key, Method::PUT, expires_in).await
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<Option<String>, ObjectStoreError> {
        self.presign(key, Method::GET, expires_in).await
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

//! API keys: `ns_<key id>_<secret>`. The key id is public and finds the key;
//! the secret is 256 random bits, shown once, and kept only as an
//! HMAC-SHA256 under the server's secret, compared in constant time.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use domain::ApiKeyId;

const PREFIX: &str = "ns_";

/// A freshly minted key: the token is for the client's eyes only.
pub struct MintedKey {
    pub key_id: ApiKeyId,
    pub token: String,
    pub secret_hash: String,
}

#[derive(Clone)]
pub struct KeyHasher {
    server_secret: Vec<u8>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    pub fn new(server_secret: impl Into<Vec<u8>>) -> Self {
        KeyHasher {
            server_secret: server_secret.into(),
        }
    }

    pub fn hash(&self, secret: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.server_secret).expect("hmac accepts keys of any length");
        mac.update(secret.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn verify(&self, secret: &str, stored_hash: &str) -> bool {
        let computed = self.hash(secret);
        computed.as_bytes().ct_eq(stored_hash.as_bytes()).into()
    }

    /// The signature of an upload URL the API hands out itself (for an
    /// object store that cannot presign). The message cannot be mistaken
    /// for an API key secret, which is hex alone.
    pub fn sign_upload(&self, document: &str, upload: &str, expires_unix: i64) -> String {
        self.hash(&format!(
            "neurostash presigned upload v1\n{document}\n{upload}\n{expires_unix}"
        ))
    }

    pub fn verify_upload(&self, document: &str, upload: &str, expires_unix: i64, signature: &str) -> bool {
        let expected = self.sign_upload(document, upload, expires_unix);
        expected.as_bytes().ct_eq(signature.as_bytes()).into()
    }

    pub fn mint(&self) -> MintedKey {
        let mut rng = rand::thread_rng();
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let key_id = hex::encode(id);
        let secret = hex::encode(secret);
        MintedKey {
            token: format!("{PREFIX}{key_id}_{secret}"),
            secret_hash: self.hash(&secret),
            key_id: ApiKeyId(key_id),
        }
    }
}

/// Splits a presented token into key id and secret; `None` for anything
/// that is not shaped like one of our keys.
pub fn parse_token(token: &str) -> Option<(ApiKeyId, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let hex_of_len = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_of_len(key_id, 12) || !hex_of_len(secret, 64) {
        return None;
    }
    Some((ApiKeyId(key_id.to_owned()), secret))
}

/// Reads the master key: from the configuration, from the configured key
/// file, or from `<data_dir>/secrets/master.key`, generated on first use.
pub fn load_master_key(config: &crate::config::Config) -> anyhow::Result<actors::crypto::MasterKey> {
    use actors::crypto::MasterKey;
    use anyhow::Context;
    if let Some(key) = &config.master_key {
        return MasterKey::parse(key.expose()).context("NEUROSTASH_MASTER_KEY is invalid");
    }
    if let Some(path) = &config.master_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the master key file {}", path.display()))?;
        return MasterKey::parse(&text).with_context(|| format!("the master key file {} is invalid", path.display()));
    }
    let path = config.data_dir.join("secrets").join("master.key");
    let fresh = MasterKey::generate();
    let text = load_or_create_file(&path, 64, || fresh.to_hex().as_bytes().to_vec())
        .with_context(|| format!("cannot read or create the master key file {}", path.display()))?;
    let key = MasterKey::parse(&String::from_utf8_lossy(&text))
        .with_context(|| format!("the master key file {} is invalid", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        master_key_id = key.id(),
        "the master key sits in the data directory: set NEUROSTASH_MASTER_KEY or NEUROSTASH_MASTER_KEY_FILE to keep it apart from the data it protects"
    );
    Ok(key)
}

/// Reads the server secret from `path`, creating it (readable by the owner
/// only) on first use.
pub fn load_or_create_secret(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    load_or_create_file(path, 32, || {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        hex::encode(secret).into_bytes()
    })
}

/// Reads a secret file of at least `min_len` bytes, or creates it (mode
/// 0600, never overwriting a file that appeared meanwhile) from `make`.
fn load_or_create_file(
    path: &std::path::Path,
    min_len: usize,
    make: impl FnOnce() -> Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(secret) if secret.len() >= min_len => return Ok(secret),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("secret file {} is shorter than {min_len} bytes", path.display()),
            ))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let encoded = make();
    // written whole beside the target, then linked into place: another
    // process never reads a half-written secret, and the first link wins
    let staging = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    let written = options
        .open(&staging)
        .and_then(|mut file| file.write_all(&encoded).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::hard_link(&staging, path));
    let _ = std::fs::remove_file(&staging);
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return std::fs::read(path),
        Err(error) => return Err(error),
    }
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_verify_and_others_do_not() {
        let hasher = KeyHasher::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let key = hasher.mint();
        let (key_id, secret) = parse_token(&key.token).unwrap();
        assert_eq!(key_id, key.key_id);
        assert!(hasher.verify(secret, &key.secret_hash));
        assert!(!hasher.verify(&secret.replace('a', "b").replace('1', "2"), &key.secret_hash));
        let other_server = KeyHasher::new(b"another-secret-another-secret-xx".to_vec());
        assert!(!other_server.verify(secret, &key.secret_hash));
        assert!(
            !key.secret_hash.contains(secret),
            "the hash must not contain the secret"
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in ["", "ns_", "ns_abc_def", "xx_0123456789ab_00", "ns_0123456789ab"] {
            assert!(parse_token(token).is_none(), "{token:?}");
        }
    }
}

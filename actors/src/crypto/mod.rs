//! Encryption at rest, all XChaCha20-Poly1305: data keys wrapped by the
//! master key ([`MasterKey`]), single values sealed into event fields
//! ([`seal_field`]), and the chunked streaming format of stored objects
//! ([`stream`]). Key material is zeroed on drop and never printed.

pub mod stream;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use domain::{Sealed, TenantId};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The ciphertext, or its header, was altered, truncated, reordered or
    /// made under another key: no plaintext comes out.
    #[error("{what} failed authentication: corrupted, truncated, reordered or under another key")]
    Authentication { what: String },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("data key {key_id} was wrapped by master key {wrapped_by}, not by the configured master key {configured}")]
    WrongMasterKey {
        key_id: String,
        wrapped_by: String,
        configured: String,
    },
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    #[error("stream of more than {0} chunks cannot be encrypted")]
    TooLong(u64),
}

/// The nonce at the front of a ciphertext; its length was checked by the caller.
fn nonce_of(bytes: &[u8]) -> Result<XNonce, CryptoError> {
    XNonce::try_from(bytes).map_err(|_| CryptoError::Malformed {
        what: "nonce".into(),
        reason: format!("{} bytes instead of {NONCE_LEN}", bytes.len()),
    })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// The public id of a data key: 16 lowercase hex characters, named in every
/// sealed value and object header so the right key can be found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    pub fn generate() -> KeyId {
        KeyId(hex::encode(random_bytes::<8>()))
    }

    pub fn parse(text: &str) -> Option<KeyId> {
        let valid = text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| KeyId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's data key in plain, as held in memory while in use.
pub struct DataKey {
    id: KeyId,
    tenant_id: TenantId,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    pub fn generate(tenant_id: TenantId) -> DataKey {
        DataKey {
            id: KeyId::generate(),
            tenant_id,
            bytes: Zeroizing::new(random_bytes()),
        }
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.bytes).into())
    }
}

/// The key that wraps every data key. Its id (a hash of it) is stored beside
/// each wrapped key, so a wrong master key is named as such instead of
/// surfacing as a failed decryption.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        let bytes = Zeroizing::new(bytes);
        let mut hasher = Sha256::new();
        hasher.update(b"neurostash master key id v1\0");
        hasher.update(bytes.as_ref());
        let id = hex::encode(&hasher.finalize()[..8]);
        MasterKey { bytes, id }
    }

    /// 32 bytes written as 64 hex characters or as base64; whitespace around
    /// it (a key file's newline) is ignored.
    pub fn parse(text: &str) -> Result<MasterKey, CryptoError> {
        let text = text.trim();
        let decoded = Zeroizing::new(
            if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(text).map_err(|_| CryptoError::InvalidMasterKey("not valid hex".into()))?
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .or_else(|_| URL_SAFE_NO_PAD.decode(text))
                    .map_err(|_| {
                        CryptoError::InvalidMasterKey("must be 32 bytes as 64 hex characters or base64".into())
                    })?
            },
        );
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::InvalidMasterKey(format!("must be {KEY_LEN} bytes, found {}", decoded.len())))?;
        Ok(MasterKey::from_bytes(bytes))
    }

    pub fn generate() -> MasterKey {
        MasterKey::from_bytes(random_bytes())
    }

    /// The key as 64 hex characters, for writing a fresh key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_ref()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn wrap_aad(key_id: &KeyId, tenant_id: TenantId) -> Vec<u8> {
        format!("neurostash data key v1\0{key_id}\0{tenant_id}").into_bytes()
    }

    /// `nonce || ciphertext || tag` of the data key, bound to its id and
    /// tenant so a wrapped key cannot be moved to another row.
    pub fn wrap(&self, key: &DataKey) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&*self.bytes).into());
        let nonce = random_bytes::<NONCE_LEN>();
        let aad = Self::wrap_aad(&key.id, key.tenant_id);
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: key.bytes.as_ref(),
                    aad: &aad,
                },
            )
            .expect("xchacha20poly1305 encrypts any message under 256 GiB");
        let mut wrapped = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&ciphertext);
        wrapped
    }

    pub fn unwrap(
        &self,
        key_id: KeyId,
        tenant_id: TenantId,
        wrapped_by: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, CryptoError> {
        if wrapped_by != self.id {
            return Err(CryptoError::WrongMasterKey {
                key_id: key_id.to_string(),
                wrapped_by: wrapped_by.to_owned(),
                configured: self.id.clone(),
            });
        }
        let what = || format!("wrapped data key {key_id}");
        if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(CryptoError::Malformed {
                what: what(),
                reason: format!("{} bytes instead of {}", wrapped.len(), NONCE_LEN + KEY_LEN + TAG_LEN),
            });
        }
        let cipher = XChaCha20Poly1305::new((&*self.bytes).into());
        let (nonce, ciphertext) = wrapped.split_at(NONCE_LEN);
        let aad = Self::wrap_aad(&key_id, tenant_id);
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &nonce_of(nonce)?,
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| CryptoError::Authentication { what: what() })?,
        );
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&plain);
        Ok(DataKey {
            id: key_id,
            tenant_id,
            bytes,
        })
    }
}

fn field_aad(key: &DataKey, field: &str) -> Vec<u8> {
    format!("neurostash field v1\0{}\0{field}\0{}", key.tenant_id, key.id).into_bytes()
}

/// Seals one event field. The field name and tenant are bound in, so a
/// sealed file name cannot be passed off as another field or another
/// tenant's value.
pub fn seal_field(key: &DataKey, field: &str, plaintext: &str) -> Sealed {
    let nonce = random_bytes::<NONCE_LEN>();
    let aad = field_aad(key, field);
    let ciphertext = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext.as_bytes(),
                aad: &aad,
            },
        )
        .expect("xchacha20poly1305 encrypts any message under 256 GiB");
    let mut body = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&ciphertext);
    let text = format!(
        "{}{}.{}",
        domain::sealed::SEALED_PREFIX,
        key.id,
        URL_SAFE_NO_PAD.encode(body)
    );
    Sealed::from_text(text).expect("sealing produces a well-formed sealed value")
}

pub fn open_field(key: &DataKey, field: &str, sealed: &Sealed) -> Result<String, CryptoError> {
    let what = || format!("sealed {field}");
    if sealed.key_id() != key.id.as_str() {
        return Err(CryptoError::Malformed {
            what: what(),
            reason: format!("sealed under key {}, not {}", sealed.key_id(), key.id),
        });
    }
    let body_text = &sealed.as_str()[domain::sealed::SEALED_PREFIX.len() + key.id.as_str().len() + 1..];
    let body = URL_SAFE_NO_PAD
        .decode(body_text)
        .map_err(|error| CryptoError::Malformed {
            what: what(),
            reason: error.to_string(),
        })?;
    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed {
            what: what(),
            reason: "too short".into(),
        });
    }
    let (nonce, ciphertext) = body.split_at(NONCE_LEN);
    let aad = field_aad(key, field);
    let plain = key
        .cipher()
        .decrypt(
            &nonce_of(nonce)?,
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Authentication { what: what() })?;
    String::from_utf8(plain).map_err(|_| CryptoError::Malformed {
        what: what(),
        reason: "not utf-8".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn tenant() -> TenantId {
        TenantId(Uuid::now_v7())
    }

    #[test]
    fn a_sealed_field_opens_only_with_its_key_field_and_tenant() {
        let key = DataKey::generate(tenant());
        let sealed = seal_field(&key, "file_name", "quarterly report.pdf");
        assert!(!sealed.as_str().contains("quarterly"));
        assert_eq!(sealed.key_id(), key.id().as_str());
        assert_eq!(open_field(&key, "file_name", &sealed).unwrap(), "quarterly report.pdf");
        assert!(matches!(
            open_field(&key, "email", &sealed),
            Err(CryptoError::Authentication { .. })
        ));
        let other = DataKey::generate(tenant());
        assert!(open_field(&other, "file_name", &sealed).is_err());
        // the same value sealed twice differs: a fresh nonce each time
        assert_ne!(seal_field(&key, "file_name", "a"), seal_field(&key, "file_name", "a"));
    }

    #[test]
    fn a_tampered_sealed_field_is_refused() {
        let key = DataKey::generate(tenant());
        let sealed = seal_field(&key, "file_name", "notes.md");
        let mut text = sealed.as_str().to_owned();
        let last = text.pop().unwrap();
        text.push(if last == 'A' { 'B' } else { 'A' });
        let tampered = Sealed::from_text(text).unwrap();
        assert!(open_field(&key, "file_name", &tampered).is_err());
    }

    #[test]
    fn wrapped_keys_unwrap_only_under_their_master_key_and_row() {
        let master = MasterKey::generate();
        let key = DataKey::generate(tenant());
        let wrapped = master.wrap(&key);
        let unwrapped = master
            .unwrap(key.id().clone(), key.tenant_id(), master.id(), &wrapped)
            .unwrap();
        let sealed = seal_field(&key, "f", "x");
        assert_eq!(open_field(&unwrapped, "f", &sealed).unwrap(), "x");
        // moved to another tenant's row
        assert!(master
            .unwrap(key.id().clone(), tenant(), master.id(), &wrapped)
            .is_err());
        let other = MasterKey::generate();
        assert!(matches!(
            other.unwrap(key.id().clone(), key.tenant_id(), master.id(), &wrapped),
            Err(CryptoError::WrongMasterKey { .. })
        ));
        // a wrong master key that claims the right id still fails to decrypt
        let mut forged = MasterKey::generate();
        forged.id = master.id().to_owned();
        assert!(matches!(
            forged.unwrap(key.id().clone(), key.tenant_id(), master.id(), &wrapped),
            Err(CryptoError::Authentication { .. })
        ));
    }

    #[test]
    fn master_keys_parse_from_hex_or_base64_and_nothing_else() {
        let master = MasterKey::generate();
        let hex_text = master.to_hex();
        assert_eq!(MasterKey::parse(&format!("{}\n", *hex_text)).unwrap().id(), master.id());
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_text.as_str()).unwrap());
        assert_eq!(MasterKey::parse(&b64).unwrap().id(), master.id());
        for bad in ["", "abc", &"00".repeat(31), &"zz".repeat(32)] {
            assert!(MasterKey::parse(bad).is_err(), "{bad:?}");
        }
        let shown = format!("{master:?}");
        assert!(!shown.contains(hex_text.as_str()));
    }
}

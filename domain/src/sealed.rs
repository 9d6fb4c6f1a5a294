//! A value encrypted under a tenant's data key, as it is carried in events:
//! `nsf1.<key id>.<base64url of nonce and ciphertext>`. The domain never
//! opens one; it only keeps it. Erasing the tenant destroys the key, and with
//! it every reading of the value, while the event stays in the log.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The prefix of the current sealed-value format.
pub const SEALED_PREFIX: &str = "nsf1.";

#[derive(Clone, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(
    description = "a value sealed with XChaCha20-Poly1305 under the tenant's data key: nsf1.<key id>.<base64url nonce+ciphertext>"
)]
pub struct Sealed(#[schemars(regex(pattern = r"^nsf1\.[0-9a-f]{16}\.[A-Za-z0-9_-]+$"))] String);

impl Sealed {
    /// Wraps text produced by the sealing code; `None` when it is not shaped
    /// like a sealed value.
    pub fn from_text(text: String) -> Option<Sealed> {
        let rest = text.strip_prefix(SEALED_PREFIX)?;
        let (key_id, body) = rest.split_once('.')?;
        let well_formed = key_id.len() == 16
            && key_id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then_some(Sealed(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the data key it was sealed under.
    pub fn key_id(&self) -> &str {
        let rest = &self.0[SEALED_PREFIX.len()..];
        rest.split_once('.').map_or(rest, |(key_id, _)| key_id)
    }
}

// by hand: only well-formed sealed text deserializes, which lets
// [`Protected`] tell a sealed value from a plain one written before sealing
impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Sealed::from_text(text).ok_or_else(|| serde::de::Error::custom("not a sealed value"))
    }
}

/// A sensitive event field: sealed under the tenant's key. Events written
/// before fields were sealed hold the plain text, and stay readable as such.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Protected {
    Sealed(Sealed),
    /// Written by a version that did not seal this field yet.
    Plain(String),
}

impl Protected {
    /// The text as stored: the sealed form, or the legacy plain text.
    pub fn as_str(&self) -> &str {
        match self {
            Protected::Sealed(sealed) => sealed.as_str(),
            Protected::Plain(text) => text,
        }
    }

    /// Reads stored text back: sealed when it has the sealed shape.
    pub fn from_stored(text: &str) -> Protected {
        match Sealed::from_text(text.to_owned()) {
            Some(sealed) => Protected::Sealed(sealed),
            None => Protected::Plain(text.to_owned()),
        }
    }
}

impl From<Sealed> for Protected {
    fn from(sealed: Sealed) -> Self {
        Protected::Sealed(sealed)
    }
}

// the ciphertext is not secret, but a long base64 blob in a Debug dump only
// hides what matters: which key it needs
impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(key {})", self.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_text_is_a_sealed_value() {
        let good = "nsf1.0123456789abcdef.AAECAwQ-_w".to_owned();
        let sealed = Sealed::from_text(good.clone()).unwrap();
        assert_eq!(sealed.key_id(), "0123456789abcdef");
        assert_eq!(sealed.as_str(), good);
        for bad in [
            "",
            "report.pdf",
            "nsf1.",
            "nsf1.0123456789abcdef.",
            "nsf1.0123456789ABCDEF.AAAA",
            "nsf1.0123.AAAA",
            "nsf1.0123456789abcdef.AA AA",
            "nsf2.0123456789abcdef.AAAA",
        ] {
            assert!(Sealed::from_text(bad.to_owned()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn protected_fields_read_sealed_and_legacy_plain_text() {
        let sealed: Protected = serde_json::from_str("\"nsf1.0123456789abcdef.AAECAwQ\"").unwrap();
        assert!(matches!(sealed, Protected::Sealed(_)));
        let plain: Protected = serde_json::from_str("\"report.pdf\"").unwrap();
        assert_eq!(plain, Protected::Plain("report.pdf".into()));
        assert_eq!(
            serde_json::to_string(&sealed).unwrap(),
            "\"nsf1.0123456789abcdef.AAECAwQ\""
        );
        assert_eq!(Protected::from_stored(sealed.as_str()), sealed);
    }
}

//! A value encrypted under a tenant's data key, as it is carried in events:
//! `nsf1.<key id>.<base64url of nonce and ciphertext>`. The domain never
//! opens one; it only keeps it. Erasing the tenant destroys the key, and with
//! it every reading of the value, while the event stays in the log.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The prefix of the current sealed-value format.
pub const SEALED_PREFIX: &str = "nsf1.";

#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
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
}

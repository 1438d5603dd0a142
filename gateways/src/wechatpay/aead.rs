//! `AEAD_AES_256_GCM`, WeChat Pay's encryption of notification resources and downloaded
//! platform certificates, keyed with the merchant's APIv3 key.
//!
//! The APIv3 key is used verbatim as the AES key (its 32 ASCII characters are the 32 key bytes;
//! no hex or base64 decoding). The nonce is the UTF-8 bytes of the 12-character `nonce` field
//! (the standard 96-bit GCM nonce), the associated data the UTF-8 bytes of `associated_data`
//! (may be empty), and `ciphertext` is base64 of ciphertext‖16-byte tag.
//!
//! Real APIv3 keys are 32 bytes (AES-256). A 16-byte key selects AES-128-GCM: the official
//! wechatpay-go unit vectors use one (gateways.md §2.4), and reproducing them is part of our
//! tests. [`ApiV3Key::new`] for a merchant's configuration accepts 32 bytes only.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};

use crate::crypto::{b64, unb64};

/// Why a resource could not be decrypted (or encrypted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    #[error("the APIv3 key must be 32 bytes (AES-256; 16 accepted only for SDK test vectors), got {0}")]
    KeyLength(usize),
    #[error("the nonce must be 12 bytes, got {0}")]
    NonceLength(usize),
    #[error("the ciphertext is not valid base64")]
    Base64,
    #[error("the ciphertext is shorter than its 16-byte tag")]
    TooShort,
    #[error("authentication failed: wrong APIv3 key, nonce or associated data, or altered ciphertext")]
    Authentication,
    #[error("the decrypted resource is not UTF-8")]
    NotUtf8,
}

/// The merchant's APIv3 key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiV3Key(Vec<u8>);

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiV3Key(<redacted, {} bytes>)", self.0.len())
    }
}

impl ApiV3Key {
    /// A merchant's APIv3 key: exactly 32 bytes after trimming surrounding ASCII whitespace (a
    /// key file written with `echo` ends in a newline).
    pub fn new(bytes: &[u8]) -> Result<ApiV3Key, AeadError> {
        let k = bytes.trim_ascii();
        if k.len() != 32 {
            return Err(AeadError::KeyLength(k.len()));
        }
        Ok(ApiV3Key(k.to_vec()))
    }

    /// 32 bytes, or 16 (AES-128-GCM, as in the wechatpay-go test vectors).
    pub fn new_allowing_test_length(bytes: &[u8]) -> Result<ApiV3Key, AeadError> {
        let k = bytes.trim_ascii();
        if k.len() != 32 && k.len() != 16 {
            return Err(AeadError::KeyLength(k.len()));
        }
        Ok(ApiV3Key(k.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decrypt base64 `ciphertext` (ciphertext‖tag) to bytes.
    pub fn decrypt(&self, nonce: &str, associated_data: &str, ciphertext_b64: &str) -> Result<Vec<u8>, AeadError> {
        let ct = unb64(ciphertext_b64).ok_or(AeadError::Base64)?;
        if ct.len() < 16 {
            return Err(AeadError::TooShort);
        }
        let nonce = nonce.as_bytes();
        if nonce.len() != 12 {
            return Err(AeadError::NonceLength(nonce.len()));
        }
        let payload = Payload {
            msg: &ct,
            aad: associated_data.as_bytes(),
        };
        let out = match self.0.len() {
            32 => Aes256Gcm::new_from_slice(&self.0)
                .map_err(|_| AeadError::KeyLength(32))?
                .decrypt(
                    nonce.try_into().map_err(|_| AeadError::NonceLength(nonce.len()))?,
                    payload,
                ),
            16 => Aes128Gcm::new_from_slice(&self.0)
                .map_err(|_| AeadError::KeyLength(16))?
                .decrypt(
                    nonce.try_into().map_err(|_| AeadError::NonceLength(nonce.len()))?,
                    payload,
                ),
            n => return Err(AeadError::KeyLength(n)),
        };
        out.map_err(|_| AeadError::Authentication)
    }

    /// Decrypt to a UTF-8 string (resources are JSON, certificates PEM).
    pub fn decrypt_to_string(
        &self,
        nonce: &str,
        associated_data: &str,
        ciphertext_b64: &str,
    ) -> Result<String, AeadError> {
        String::from_utf8(self.decrypt(nonce, associated_data, ciphertext_b64)?).map_err(|_| AeadError::NotUtf8)
    }

    /// Encrypt (the sandbox's side, and tests): base64 of ciphertext‖tag.
    pub fn encrypt(&self, nonce: &str, associated_data: &str, plaintext: &[u8]) -> Result<String, AeadError> {
        let nonce = nonce.as_bytes();
        if nonce.len() != 12 {
            return Err(AeadError::NonceLength(nonce.len()));
        }
        let payload = Payload {
            msg: plaintext,
            aad: associated_data.as_bytes(),
        };
        let out = match self.0.len() {
            32 => Aes256Gcm::new_from_slice(&self.0)
                .map_err(|_| AeadError::KeyLength(32))?
                .encrypt(
                    nonce.try_into().map_err(|_| AeadError::NonceLength(nonce.len()))?,
                    payload,
                ),
            16 => Aes128Gcm::new_from_slice(&self.0)
                .map_err(|_| AeadError::KeyLength(16))?
                .encrypt(
                    nonce.try_into().map_err(|_| AeadError::NonceLength(nonce.len()))?,
                    payload,
                ),
            n => return Err(AeadError::KeyLength(n)),
        };
        out.map(|v| b64(&v)).map_err(|_| AeadError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchant_key_must_be_32_bytes_and_surrounding_whitespace_is_ignored() {
        assert!(ApiV3Key::new(b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb\n").is_ok());
        assert_eq!(ApiV3Key::new(b"testAPIv3Key0000"), Err(AeadError::KeyLength(16)));
        assert!(ApiV3Key::new_allowing_test_length(b"testAPIv3Key0000").is_ok());
        assert_eq!(
            ApiV3Key::new_allowing_test_length(b"short"),
            Err(AeadError::KeyLength(5))
        );
        assert!(!format!("{:?}", ApiV3Key::new(b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap()).contains("a7cd"));
    }

    /// Published vector W2 (wechatpay-go `utils/aes_test.go`), 16-byte key.
    #[test]
    fn vector_w2_decrypts_with_the_16_byte_key_and_fails_with_another_key_or_ciphertext() {
        let key = ApiV3Key::new_allowing_test_length(b"testAPIv3Key0000").unwrap();
        let pt = key
            .decrypt_to_string(
                "wCq51qZv4Yfg",
                "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
            )
            .unwrap();
        assert_eq!(pt, "Hello World");
        let other = ApiV3Key::new_allowing_test_length(b"testAPIv3Key1111").unwrap();
        assert_eq!(
            other.decrypt(
                "wCq51qZv4Yfg",
                "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC"
            ),
            Err(AeadError::Authentication)
        );
        // "Hello World\n" in the clear: too short to hold a tag, so it cannot authenticate.
        assert_eq!(
            key.decrypt("wCq51qZv4Yfg", "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", "SGVsbG8gV29ybGQK"),
            Err(AeadError::TooShort)
        );
    }

    /// Published vector W4 (wechatpay-java `AeadAesCipherTest`), 32-byte key, both directions.
    #[test]
    fn vector_w4_encrypts_and_decrypts_with_the_32_byte_key() {
        let key = ApiV3Key::new(b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
        assert_eq!(
            key.encrypt("uluk4a9R25RW", "associatedData", b"message").unwrap(),
            "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI="
        );
        assert_eq!(
            key.decrypt_to_string("uluk4a9R25RW", "associatedData", "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=")
                .unwrap(),
            "message"
        );
        assert_eq!(
            key.decrypt("uluk4a9R25RW", "bad-associatedData", "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI="),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            key.decrypt("bad-4a9R25RW", "associatedData", "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI="),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            key.decrypt("short", "", "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI="),
            Err(AeadError::NonceLength(5))
        );
        assert_eq!(key.decrypt("uluk4a9R25RW", "", "!!"), Err(AeadError::Base64));
        assert_eq!(key.decrypt("uluk4a9R25RW", "", "AAAA"), Err(AeadError::TooShort));
    }
}

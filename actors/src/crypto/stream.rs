//! The chunked streaming format of encrypted objects (document bytes and
//! artifacts), so that a file of any size is encrypted and decrypted in
//! constant memory:
//!
//! ```text
//! header  = "NSE1" | version (1) | chunk size (u32 BE) | key id length (u8) | key id | nonce prefix (19 bytes)
//! chunk i = XChaCha20-Poly1305(plaintext_i, nonce = prefix | i (u32 BE) | last (1 or 0), aad = header)
//! ```
//!
//! Every chunk but the last holds exactly `chunk size` plaintext bytes; the
//! last holds the rest (possibly none) and is sealed with the last flag. This
//! is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015): a
//! fresh nonce per chunk; the counter makes a reordered or dropped chunk fail
//! authentication, and the flag makes a stream cut at a chunk boundary fail
//! too, since its new final chunk was not sealed as last. The header is
//! authenticated as associated data of every chunk.

use std::io;

use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures::stream::StreamExt;

use super::{random_bytes, CryptoError, DataKey, KeyId, TAG_LEN};

pub const MAGIC: &[u8; 4] = b"NSE1";
pub const VERSION: u8 = 1;
/// 64 KiB: large enough that the 16-byte tag per chunk costs 0.02 %, small
/// enough that a reader holds little.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// A header naming a chunk size above this is refused, so a forged header
/// cannot make a reader allocate without bound.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
const PREFIX_LEN: usize = 19;
const MAX_HEADER_LEN: usize = 4 + 1 + 4 + 1 + 255 + PREFIX_LEN;

pub use crate::objects::ByteStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub key_id: KeyId,
    pub chunk_size: u32,
    nonce_prefix: [u8; PREFIX_LEN],
}

impl StreamHeader {
    fn encode(&self) -> Vec<u8> {
        let key_id = self.key_id.as_str().as_bytes();
        let mut out = Vec::with_capacity(10 + key_id.len() + PREFIX_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.push(key_id.len() as u8);
        out.extend_from_slice(key_id);
        out.extend_from_slice(&self.nonce_prefix);
        out
    }

    /// Parses a header at the start of `bytes`: `Ok(None)` while more bytes
    /// are needed, else the header and its length.
    pub fn parse(bytes: &[u8]) -> Result<Option<(StreamHeader, usize)>, CryptoError> {
        let malformed = |reason: String| CryptoError::Malformed {
            what: "encrypted object header".into(),
            reason,
        };
        let probe = bytes.len().min(4);
        if bytes[..probe] != MAGIC[..probe] {
            return Err(malformed("not an encrypted object (bad magic)".into()));
        }
        // each field is checked as soon as it has arrived, so a hostile
        // header fails before anything is buffered for it
        if let Some(&version) = bytes.get(4) {
            if version != VERSION {
                return Err(malformed(format!("unsupported format version {version}")));
            }
        }
        if bytes.len() < 9 {
            return Ok(None);
        }
        let chunk_size = u32::from_be_bytes(bytes[5..9].try_into().expect("4 bytes"));
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(malformed(format!("chunk size {chunk_size} out of range")));
        }
        if bytes.len() < 10 {
            return Ok(None);
        }
        let key_id_len = bytes[9] as usize;
        let total = 10 + key_id_len + PREFIX_LEN;
        if bytes.len() < total {
            return Ok(None);
        }
        let key_id = std::str::from_utf8(&bytes[10..10 + key_id_len])
            .ok()
            .and_then(KeyId::parse)
            .ok_or_else(|| malformed("invalid key id".into()))?;
        let nonce_prefix = bytes[10 + key_id_len..total].try_into().expect("prefix length");
        Ok(Some((
            StreamHeader {
                key_id,
                chunk_size,
                nonce_prefix,
            },
            total,
        )))
    }
}

fn chunk_nonce(prefix: &[u8; PREFIX_LEN], counter: u32, last: bool) -> XNonce {
    let mut nonce = [0u8; 24];
    nonce[..PREFIX_LEN].copy_from_slice(prefix);
    nonce[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    nonce[23] = u8::from(last);
    XNonce::from(nonce)
}

/// Seals one object's chunks in order.
pub struct ChunkEncryptor {
    cipher: XChaCha20Poly1305,
    header: StreamHeader,
    header_bytes: Vec<u8>,
    counter: u32,
    finished: bool,
}

impl ChunkEncryptor {
    pub fn new(key: &DataKey, chunk_size: u32) -> ChunkEncryptor {
        assert!(
            chunk_size > 0 && chunk_size <= MAX_CHUNK_SIZE,
            "chunk size out of range"
        );
        let header = StreamHeader {
            key_id: key.id().clone(),
            chunk_size,
            nonce_prefix: random_bytes(),
        };
        ChunkEncryptor {
            cipher: key.cipher(),
            header_bytes: header.encode(),
            header,
            counter: 0,
            finished: false,
        }
    }

    pub fn header(&self) -> &[u8] {
        &self.header_bytes
    }

    pub fn chunk_size(&self) -> usize {
        self.header.chunk_size as usize
    }

    /// Seals `chunk` in place (the tag is appended). Every chunk but the
    /// last must be exactly `chunk_size` long.
    pub fn seal(&mut self, chunk: &mut Vec<u8>, last: bool) -> Result<(), CryptoError> {
        assert!(!self.finished, "a finished stream takes no more chunks");
        assert!(
            chunk.len() == self.chunk_size() || (last && chunk.len() <= self.chunk_size()),
            "chunk of {} bytes in a stream of {}-byte chunks",
            chunk.len(),
            self.chunk_size()
        );
        let nonce = chunk_nonce(&self.header.nonce_prefix, self.counter, last);
        self.cipher
            .encrypt_in_place(&nonce, &self.header_bytes, chunk)
            .map_err(|_| CryptoError::TooLong(u64::from(u32::MAX)))?;
        self.finished = last;
        self.counter = match self.counter.checked_add(1) {
            Some(next) => next,
            None if last => self.counter,
            None => return Err(CryptoError::TooLong(u64::from(u32::MAX))),
        };
        Ok(())
    }
}

/// Opens one object's chunks in order.
pub struct ChunkDecryptor {
    cipher: XChaCha20Poly1305,
    header: StreamHeader,
    header_bytes: Vec<u8>,
    counter: u32,
    finished: bool,
}

impl ChunkDecryptor {
    pub fn new(key: &DataKey, header: StreamHeader) -> Result<ChunkDecryptor, CryptoError> {
        if &header.key_id != key.id() {
            return Err(CryptoError::Malformed {
                what: "encrypted object header".into(),
                reason: format!("names key {}, not {}", header.key_id, key.id()),
            });
        }
        Ok(ChunkDecryptor {
            cipher: key.cipher(),
            header_bytes: header.encode(),
            header,
            counter: 0,
            finished: false,
        })
    }

    /// Bytes of one full sealed chunk.
    pub fn sealed_chunk_len(&self) -> usize {
        self.header.chunk_size as usize + TAG_LEN
    }

    pub fn open(&mut self, chunk: &mut Vec<u8>, last: bool) -> Result<(), CryptoError> {
        let failed = |counter: u32| CryptoError::Authentication {
            what: format!("encrypted object chunk {counter}"),
        };
        if self.finished {
            return Err(failed(self.counter));
        }
        let nonce = chunk_nonce(&self.header.nonce_prefix, self.counter, last);
        self.cipher
            .decrypt_in_place(&nonce, &self.header_bytes, chunk)
            .map_err(|_| failed(self.counter))?;
        self.finished = last;
        self.counter = self.counter.wrapping_add(1);
        Ok(())
    }
}

fn to_io(error: CryptoError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Cuts `input` into chunks of `chunk_len` bytes and hands each, in order,
/// to `transform` with whether it is the last: the remainder at the end of
/// the input, possibly empty. A chunk counts as not-last only once a byte
/// after it has been seen. The first error, from the input or from
/// `transform`, ends the stream. Holds at most one chunk plus one incoming
/// piece at a time.
fn rechunked<F>(input: ByteStream, chunk_len: usize, transform: F) -> ByteStream
where
    F: FnMut(Vec<u8>, bool) -> Result<Bytes, CryptoError> + Send + 'static,
{
    struct State<F> {
        input: ByteStream,
        pending: BytesMut,
        transform: F,
        done: bool,
    }
    let state = State {
        input,
        pending: BytesMut::new(),
        transform,
        done: false,
    };
    futures::stream::unfold(state, move |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            if state.pending.len() > chunk_len {
                let chunk = state.pending.split_to(chunk_len).to_vec();
                let out = (state.transform)(chunk, false).map_err(to_io);
                state.done = out.is_err();
                return Some((out, state));
            }
            match state.input.next().await {
                Some(Ok(piece)) => state.pending.extend_from_slice(&piece),
                Some(Err(error)) => {
                    state.done = true;
                    return Some((Err(error), state));
                }
                None => {
                    state.done = true;
                    let chunk = std::mem::take(&mut state.pending).to_vec();
                    return Some(((state.transform)(chunk, true).map_err(to_io), state));
                }
            }
        }
    })
    .boxed()
}

/// Encrypts a byte stream under `key`: the header, then sealed chunks.
/// Holds at most one chunk plus one incoming piece at a time.
pub fn encrypt_stream(key: &DataKey, chunk_size: u32, input: ByteStream) -> ByteStream {
    let mut encryptor = ChunkEncryptor::new(key, chunk_size);
    let header = Bytes::copy_from_slice(encryptor.header());
    let chunk_len = encryptor.chunk_size();
    let chunks = rechunked(input, chunk_len, move |mut chunk, last| {
        encryptor.seal(&mut chunk, last).map(|()| Bytes::from(chunk))
    });
    futures::stream::once(async move { Ok(header) }).chain(chunks).boxed()
}

/// Reads the header of an encrypted stream: the key it names, and the stream
/// with the header consumed, ready for [`decrypt_stream`].
pub async fn read_header(mut input: ByteStream) -> Result<(StreamHeader, ByteStream), io::Error> {
    let mut buffered = BytesMut::new();
    loop {
        if let Some((header, len)) = StreamHeader::parse(&buffered).map_err(to_io)? {
            let rest = buffered.split_off(len).freeze();
            let input = if rest.is_empty() {
                input
            } else {
                futures::stream::once(async move { Ok(rest) }).chain(input).boxed()
            };
            return Ok((header, input));
        }
        if buffered.len() > MAX_HEADER_LEN {
            return Err(to_io(CryptoError::Malformed {
                what: "encrypted object header".into(),
                reason: "too long".into(),
            }));
        }
        match input.next().await {
            Some(piece) => buffered.extend_from_slice(&piece?),
            None => {
                return Err(to_io(CryptoError::Malformed {
                    what: "encrypted object header".into(),
                    reason: "object ends inside its header".into(),
                }))
            }
        }
    }
}

/// Decrypts what follows a header read by [`read_header`]. An error ends the
/// stream; plaintext of a chunk is only released once that chunk verified,
/// so a consumer never acts on forged bytes (but must discard what it got
/// from a stream that ends in an error).
pub fn decrypt_stream(key: &DataKey, header: StreamHeader, input: ByteStream) -> Result<ByteStream, CryptoError> {
    let mut decryptor = ChunkDecryptor::new(key, header)?;
    let sealed_len = decryptor.sealed_chunk_len();
    Ok(rechunked(input, sealed_len, move |mut chunk, last| {
        if last && chunk.len() < TAG_LEN {
            return Err(CryptoError::Authentication {
                what: "encrypted object (it ends without its final chunk)".into(),
            });
        }
        decryptor.open(&mut chunk, last).map(|()| Bytes::from(chunk))
    }))
}

/// Encrypts bytes already in memory (artifacts): the same format.
pub fn encrypt_bytes(key: &DataKey, plaintext: &[u8]) -> Vec<u8> {
    let mut encryptor = ChunkEncryptor::new(key, DEFAULT_CHUNK_SIZE);
    let chunk_size = encryptor.chunk_size();
    let chunks = plaintext.len().div_ceil(chunk_size).max(1);
    let mut out = Vec::with_capacity(encryptor.header().len() + plaintext.len() + chunks * TAG_LEN);
    out.extend_from_slice(encryptor.header());
    for index in 0..chunks {
        let start = index * chunk_size;
        let end = (start + chunk_size).min(plaintext.len());
        let mut chunk = plaintext[start..end].to_vec();
        encryptor
            .seal(&mut chunk, index + 1 == chunks)
            .expect("an in-memory object is far below the chunk limit");
        out.extend_from_slice(&chunk);
    }
    out
}

/// Decrypts a whole object in memory; `key_for` finds the key its header names.
pub fn decrypt_bytes(
    ciphertext: &[u8],
    key_for: impl FnOnce(&KeyId) -> Result<std::sync::Arc<DataKey>, CryptoError>,
) -> Result<Vec<u8>, CryptoError> {
    let (header, header_len) = StreamHeader::parse(ciphertext)?.ok_or_else(|| CryptoError::Malformed {
        what: "encrypted object header".into(),
        reason: "object ends inside its header".into(),
    })?;
    let key = key_for(&header.key_id)?;
    let mut decryptor = ChunkDecryptor::new(&key, header)?;
    let sealed_len = decryptor.sealed_chunk_len();
    let body = &ciphertext[header_len..];
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        if rest.len() > sealed_len {
            let mut chunk = rest[..sealed_len].to_vec();
            decryptor.open(&mut chunk, false)?;
            out.extend_from_slice(&chunk);
            rest = &rest[sealed_len..];
        } else {
            if rest.len() < TAG_LEN {
                return Err(CryptoError::Authentication {
                    what: "encrypted object (it ends without its final chunk)".into(),
                });
            }
            let mut chunk = rest.to_vec();
            decryptor.open(&mut chunk, true)?;
            out.extend_from_slice(&chunk);
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use domain::TenantId;
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;

    fn key() -> Arc<DataKey> {
        Arc::new(DataKey::generate(TenantId(Uuid::now_v7())))
    }

    fn pieces_of(bytes: &[u8], piece: usize) -> ByteStream {
        let pieces: Vec<io::Result<Bytes>> = bytes
            .chunks(piece.max(1))
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        futures::stream::iter(pieces).boxed()
    }

    async fn collect(stream: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    async fn round_trip(key: &Arc<DataKey>, plaintext: &[u8], chunk_size: u32, piece: usize) -> Vec<u8> {
        let ciphertext = collect(encrypt_stream(key, chunk_size, pieces_of(plaintext, piece)))
            .await
            .unwrap();
        let (header, rest) = read_header(pieces_of(&ciphertext, piece)).await.unwrap();
        assert_eq!(&header.key_id, key.id());
        collect(decrypt_stream(key, header, rest).unwrap()).await.unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any bytes, any chunk size, any way the input is cut into pieces:
        /// decryption gives the plaintext back, and the in-memory and
        /// streaming forms agree.
        #[test]
        fn streams_round_trip(plaintext in proptest::collection::vec(any::<u8>(), 0..5000), chunk_size in 1u32..700, piece in 1usize..900) {
            let key = key();
            let decrypted = runtime().block_on(round_trip(&key, &plaintext, chunk_size, piece));
            prop_assert_eq!(&decrypted, &plaintext);
            let whole = encrypt_bytes(&key, &plaintext);
            let opened = decrypt_bytes(&whole, |_| Ok(key.clone())).unwrap();
            prop_assert_eq!(opened, plaintext);
        }

        /// Flipping any one bit of an encrypted object makes it fail.
        #[test]
        fn any_flipped_bit_is_detected(plaintext in proptest::collection::vec(any::<u8>(), 0..3000), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let key = key();
            let mut ciphertext = encrypt_bytes(&key, &plaintext);
            let index = at.index(ciphertext.len());
            ciphertext[index] ^= 1 << bit;
            prop_assert!(decrypt_bytes(&ciphertext, |_| Ok(key.clone())).is_err());
        }
    }

    fn small_chunks(key: &DataKey, plaintext: &[u8], chunk_size: u32) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut encryptor = ChunkEncryptor::new(key, chunk_size);
        let pieces: Vec<&[u8]> = plaintext.chunks(chunk_size as usize).collect();
        let chunks = pieces
            .iter()
            .enumerate()
            .map(|(index, piece)| {
                let mut chunk = piece.to_vec();
                encryptor.seal(&mut chunk, index + 1 == pieces.len()).unwrap();
                chunk
            })
            .collect();
        (encryptor.header().to_vec(), chunks)
    }

    #[test]
    fn truncation_at_a_chunk_boundary_and_reordering_are_detected() {
        let key = key();
        let plaintext: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let (header, chunks) = small_chunks(&key, &plaintext, 100);
        assert_eq!(chunks.len(), 10);
        let join = |parts: &[&Vec<u8>]| {
            let mut out = header.clone();
            for part in parts {
                out.extend_from_slice(part);
            }
            out
        };
        let all: Vec<&Vec<u8>> = chunks.iter().collect();
        assert_eq!(decrypt_bytes(&join(&all), |_| Ok(key.clone())).unwrap(), plaintext);
        // the last chunk dropped: what remains ends in a chunk not sealed as last
        let truncated = join(&all[..9]);
        assert!(matches!(
            decrypt_bytes(&truncated, |_| Ok(key.clone())),
            Err(CryptoError::Authentication { .. })
        ));
        let mut swapped = all.clone();
        swapped.swap(2, 3);
        assert!(decrypt_bytes(&join(&swapped), |_| Ok(key.clone())).is_err());
        let mut dropped = all.clone();
        dropped.remove(4);
        assert!(decrypt_bytes(&join(&dropped), |_| Ok(key.clone())).is_err());
        assert!(decrypt_bytes(&header, |_| Ok(key.clone())).is_err());
    }

    #[test]
    fn the_header_names_the_key_and_another_key_cannot_open_it() {
        let key = key();
        let ciphertext = encrypt_bytes(&key, b"secret document");
        let (header, _) = StreamHeader::parse(&ciphertext).unwrap().unwrap();
        assert_eq!(&header.key_id, key.id());
        let other = key_with_id(key.id().clone());
        assert!(matches!(
            decrypt_bytes(&ciphertext, |_| Ok(other.clone())),
            Err(CryptoError::Authentication { .. })
        ));
        assert!(!ciphertext.windows(6).any(|w| w == b"secret"));
    }

    fn key_with_id(id: KeyId) -> Arc<DataKey> {
        let mut key = DataKey::generate(TenantId(Uuid::now_v7()));
        key.id = id;
        Arc::new(key)
    }

    #[test]
    fn hostile_headers_are_refused_without_allocating() {
        assert!(StreamHeader::parse(b"PK\x03\x04").is_err());
        let mut header = Vec::from(*MAGIC);
        header.push(VERSION);
        header.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(StreamHeader::parse(&header).is_err());
        assert!(matches!(StreamHeader::parse(b"NS"), Ok(None)));
    }

    #[test]
    fn an_input_error_ends_the_encrypted_stream_with_that_error() {
        let key = key();
        let input = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"first piece")),
            Err(io::Error::other("client went away")),
        ])
        .boxed();
        let result = runtime().block_on(collect(encrypt_stream(&key, 4, input)));
        assert_eq!(result.unwrap_err().to_string(), "client went away");
    }
}

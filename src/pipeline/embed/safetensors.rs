//! Reading f32 tensors out of a `.safetensors` file: an 8-byte
//! little-endian header length, a JSON header naming each tensor's dtype,
//! shape and byte range, then the raw data.

use std::collections::HashMap;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SafetensorsError {
    #[error("not a safetensors file: {0}")]
    Malformed(String),
    #[error("tensor {name} is missing")]
    Missing { name: String },
    #[error("tensor {name} is {dtype}, not F32")]
    WrongType { name: String, dtype: String },
    #[error("tensor {name} has shape {actual:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
}

#[derive(Debug, Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// The tensors of one file, borrowed from its bytes.
pub struct Tensors<'a> {
    entries: HashMap<String, TensorEntry>,
    data: &'a [u8],
}

impl<'a> Tensors<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Tensors<'a>, SafetensorsError> {
        let malformed = |why: &str| SafetensorsError::Malformed(why.to_owned());
        let length_bytes: [u8; 8] = bytes
            .get(..8)
            .and_then(|prefix| prefix.try_into().ok())
            .ok_or_else(|| malformed("shorter than its header length"))?;
        let header_length =
            usize::try_from(u64::from_le_bytes(length_bytes)).map_err(|_| malformed("header length overflows"))?;
        let header_end = 8usize
            .checked_add(header_length)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| malformed("header runs past the end of the file"))?;
        let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..header_end])
            .map_err(|error| SafetensorsError::Malformed(format!("header is not json: {error}")))?;
        let data = &bytes[header_end..];
        let mut entries = HashMap::new();
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let entry: TensorEntry = serde_json::from_value(value)
                .map_err(|error| SafetensorsError::Malformed(format!("tensor {name}: {error}")))?;
            let [start, end] = entry.data_offsets;
            if start > end || end > data.len() {
                return Err(SafetensorsError::Malformed(format!(
                    "tensor {name} lies outside the data"
                )));
            }
            entries.insert(name, entry);
        }
        Ok(Tensors { entries, data })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The tensor `name` as f32 values, checked to have `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, SafetensorsError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| SafetensorsError::Missing { name: name.to_owned() })?;
        if entry.dtype != "F32" {
            return Err(SafetensorsError::WrongType {
                name: name.to_owned(),
                dtype: entry.dtype.clone(),
            });
        }
        let [start, end] = entry.data_offsets;
        let elements: usize = entry.shape.iter().product();
        if entry.shape != shape || end - start != elements * 4 {
            return Err(SafetensorsError::WrongShape {
                name: name.to_owned(),
                actual: entry.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(self.data[start..end]
            .chunks_exact(4)
            .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .collect())
    }
}

/// A safetensors file of f32 tensors, for tests that need weights.
#[cfg(test)]
pub(crate) fn encode(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|value| value.to_le_bytes()));
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    header.insert("__metadata__".to_owned(), serde_json::json!({"format": "pt"}));
    let header = serde_json::to_vec(&header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tensors_by_name_and_checks_type_and_shape() {
        let bytes = encode(&[("a", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]), ("b", vec![1], vec![-0.5])]);
        let tensors = Tensors::parse(&bytes).unwrap();
        assert!(tensors.contains("a") && !tensors.contains("c"));
        assert_eq!(tensors.f32("a", &[2, 2]).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(tensors.f32("b", &[1]).unwrap(), [-0.5]);
        assert!(matches!(
            tensors.f32("a", &[4]),
            Err(SafetensorsError::WrongShape { .. })
        ));
        assert!(matches!(tensors.f32("c", &[1]), Err(SafetensorsError::Missing { .. })));
    }

    #[test]
    fn other_types_are_refused() {
        let header = br#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header);
        bytes.extend([0; 8]);
        let tensors = Tensors::parse(&bytes).unwrap();
        assert!(matches!(
            tensors.f32("ids", &[1]),
            Err(SafetensorsError::WrongType { .. })
        ));
    }

    #[test]
    fn truncated_and_inconsistent_files_are_malformed() {
        let bytes = encode(&[("a", vec![2], vec![1.0, 2.0])]);
        for cut in [0, 4, 8, 20, bytes.len() - 1] {
            assert!(Tensors::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend(b"{}");
        assert!(Tensors::parse(&huge).is_err());
    }
}

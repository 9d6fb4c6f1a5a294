//! Extraction lives in the `extract` crate, apart from the server, so that
//! its fuzz targets build without the rest of NeuroStash.

pub use extract::*;

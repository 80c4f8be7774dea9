//! Key material: generation in the §2 format, the redacting `PlainKey` type, and hashing.
//! Pure functions (randomness aside); no Kubernetes here.

pub mod format;
pub mod hash;
pub mod plain;

pub use format::{fingerprint, generate, preview};
pub use hash::{Argon2Params, Pepper, argon2_hash, argon2_verify};
pub use plain::PlainKey;

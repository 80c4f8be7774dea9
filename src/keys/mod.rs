//! Key material: generation in the §2 format, the redacting `PlainKey` type, and hashing.
//! Pure functions (randomness aside); no Kubernetes here.

pub mod format;
pub mod hash;
pub mod plain;

pub use format::{fingerprint, generate, preview};
pub use hash::{Argon2Params, Pepper, argon2_hash, argon2_verify};
pub use plain::PlainKey;

/// Where the pepper lives (DESIGN §6): names the operator and every verifier agree on.
pub mod pepper_secret {
    /// Name of the pepper Secret in the hash namespace.
    pub const PEPPER_SECRET: &str = "keyward-pepper";
    /// The data key of the current pepper.
    pub const PEPPER_KEY: &str = "pepper";
    /// The data key of the previous pepper, present during a change.
    pub const PREVIOUS_KEY: &str = "pepper-previous";
    /// Shortest pepper accepted (bytes).
    pub const MIN_PEPPER_BYTES: usize = 32;
}

//! The stored, portable hash (argon2id PHC string, verifiable by any argon2 library) and
//! the keyed fast hash (HMAC-SHA256 under the pepper) that lets verifiers skip argon2.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use subtle::ConstantTimeEq;

use super::format::hex;
use super::plain::PlainKey;

/// argon2id cost parameters (DESIGN §3 defaults: m=19456 KiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Why hashing failed (bad parameters or no randomness; never the key).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(
        "argon2 parameters m={memory_kib} t={iterations} p={parallelism} are invalid: {reason}"
    )]
    Params {
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        reason: String,
    },
    #[error("argon2 hashing failed: {0}")]
    Hash(String),
}

impl Argon2Params {
    fn hasher(&self) -> Result<Argon2<'static>, HashError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| HashError::Params {
                memory_kib: self.memory_kib,
                iterations: self.iterations,
                parallelism: self.parallelism,
                reason: e.to_string(),
            })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks the parameters without hashing anything.
    pub fn validate(&self) -> Result<(), HashError> {
        self.hasher().map(|_| ())
    }
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Counts an argon2 run while it lasts, wherever it was started from: the figure tests
/// and metrics check the hashing pool's bound against.
struct Running;

impl Running {
    fn start() -> Self {
        debug_assert!(
            crate::hashing::on_hashing_thread(),
            "argon2 runs only on the process's hashing pool (crate::hashing)"
        );
        let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        RUNS.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// argon2 runs in this process: (running now, most at once, started in all).
pub fn argon2_runs() -> (usize, usize, u64) {
    (
        IN_FLIGHT.load(Ordering::SeqCst),
        PEAK.load(Ordering::SeqCst),
        RUNS.load(Ordering::SeqCst),
    )
}

thread_local! {
    static HMACS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Keyed fast hashes computed on this thread so far: a check's work counted, not timed
/// (the verifier must do the same work whether a lookup id exists or not).
pub fn hmacs_on_this_thread() -> u64 {
    HMACS.with(std::cell::Cell::get)
}

/// Largest argon2 memory a PHC string may ask for (1 GiB); larger ones do not verify.
const MAX_MEMORY_KIB: u32 = 1 << 20;

thread_local! {
    /// This hashing thread's argon2 memory, reused run after run: one allocation per
    /// thread instead of one per run, so the process holds workers × argon2 memory and the
    /// allocator is not left with freed 19 MiB chunks it never returns.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_memory<R>(blocks: usize, run: impl FnOnce(&mut [Block]) -> R) -> R {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() != blocks {
            // Replaced, not grown: a one-off larger run does not stay resident.
            *memory = vec![Block::default(); blocks];
        }
        run(&mut memory[..])
    })
}

/// argon2 of `key` with `salt` under `argon2` into `out`, on this thread's memory.
fn argon2_into(
    argon2: &Argon2<'_>,
    params: &Params,
    key: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(key, salt, out, memory)
    })
}

/// The argon2id PHC string of `key`, with a random salt. Runs on the hashing pool only.
pub fn argon2_hash(key: &PlainKey, params: &Argon2Params) -> Result<String, HashError> {
    let _running = Running::start();
    let argon2 = params.hasher()?;
    let argon2_params = argon2.params().clone();
    let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
    getrandom::fill(&mut salt).map_err(|e| HashError::Hash(e.to_string()))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        &argon2,
        &argon2_params,
        key.expose().as_bytes(),
        &salt,
        &mut out,
    )
    .map_err(|e| HashError::Hash(e.to_string()))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&argon2_params)
            .map_err(|e| HashError::Hash(e.to_string()))?,
        salt: Some(Salt::new(&salt).map_err(|e| HashError::Hash(e.to_string()))?),
        hash: Some(Output::new(&out).map_err(|e| HashError::Hash(e.to_string()))?),
    };
    Ok(phc.to_string())
}

/// Whether `key` matches a PHC string (its own parameters are used). Runs on the hashing
/// pool only.
pub fn argon2_verify(key: &str, phc: &str) -> bool {
    let _running = Running::start();
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    if params.m_cost() > MAX_MEMORY_KIB {
        return false;
    }
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    if argon2_into(&argon2, &params, key.as_bytes(), salt.as_ref(), &mut out).is_err() {
        return false;
    }
    out.ct_eq(expected.as_bytes()).into()
}

/// The operator's and verifier's secret for keyed hashes.
#[derive(Clone)]
pub struct Pepper(Vec<u8>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pepper(id={})", self.id())
    }
}

impl Pepper {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// 32 fresh bytes from the OS CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A public id of the pepper (first 8 hex of its SHA-256), recorded next to each fast
    /// hash so a verifier knows whether it can trust it.
    pub fn id(&self) -> String {
        hex(&Sha256::digest(&self.0)[..4])
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        HMACS.with(|n| n.set(n.get() + 1));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// HMAC-SHA256 of the key, hex: the verifier's fast check and the index of imported keys.
    pub fn fast_hash(&self, key: &str) -> String {
        hex(&self.mac(key.as_bytes()))
    }

    /// Constant-time comparison of a key with a recorded fast hash.
    pub fn matches(&self, key: &str, fast_hash: &str) -> bool {
        let computed = self.fast_hash(key);
        computed.as_bytes().ct_eq(fast_hash.as_bytes()).into()
    }

    /// The keyed fingerprint of a weak imported key: nothing public allows guessing it.
    pub fn keyed_fingerprint(&self, key: &PlainKey) -> String {
        hex(&self.mac(key.expose().as_bytes())[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip_with_default_parameters() {
        let pool = crate::hashing::HashPool::new(1);
        pool.caller("test", 1)
            .run_blocking(round_trip)
            .expect("hashing pool");
    }

    fn round_trip() {
        let key = PlainKey::new("kw_0123456789abcdefghijklmnopqrstuv");
        let phc = argon2_hash(&key, &Argon2Params::default()).expect("hashes");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(argon2_verify(key.expose(), &phc));
        assert!(!argon2_verify("kw_other", &phc));
        assert!(!argon2_verify(key.expose(), "not a phc string"));
        let again = argon2_hash(&key, &Argon2Params::default()).expect("hashes");
        assert_ne!(phc, again, "salted");
    }

    #[test]
    fn bad_parameters_are_reported() {
        let bad = Argon2Params {
            memory_kib: 1,
            iterations: 0,
            parallelism: 1,
        };
        assert!(bad.validate().is_err());
        assert!(Argon2Params::default().validate().is_ok());
    }

    #[test]
    fn fast_hash_is_keyed() {
        let a = Pepper::new(vec![1; 32]);
        let b = Pepper::new(vec![2; 32]);
        assert_ne!(a.fast_hash("kw_x"), b.fast_hash("kw_x"));
        assert!(a.matches("kw_x", &a.fast_hash("kw_x")));
        assert!(!a.matches("kw_y", &a.fast_hash("kw_x")));
        assert_eq!(a.id().len(), 8);
        assert!(!format!("{a:?}").contains("1, 1"));
    }
}

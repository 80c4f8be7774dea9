//! keyward: a Kubernetes operator that manages API keys as custom resources.
#![forbid(unsafe_code)]

pub mod allowlist;
pub mod apply;
pub mod cli;
pub mod clock;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod hashing;
pub mod history;
pub mod keys;
pub mod metrics;
pub mod outbound;
pub mod providers;
pub mod record;
pub mod rotation;
pub mod telemetry;
pub mod verifier;

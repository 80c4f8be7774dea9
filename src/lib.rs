//! keyward: a Kubernetes operator that manages API keys as custom resources.
#![forbid(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod crd;
pub mod duration;
pub mod telemetry;

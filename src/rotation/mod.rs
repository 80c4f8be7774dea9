pub mod cron;
pub mod policy;

pub use policy::{Cadence, Policy};

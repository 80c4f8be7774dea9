//! Third-party AI provider credentials (DESIGN §7, seed 004): the provider table, where a
//! validation request goes, the key as text, and what an answer means. Pure: the
//! ProviderCredential controller does the I/O.

pub mod classify;
pub mod endpoint;
pub mod fallback;
pub mod schedule;
pub mod table;
pub mod text;

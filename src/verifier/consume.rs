//! Consuming a single-use pool key (DESIGN §5): the first presentation updates its record
//! to `consumed` under a resourceVersion precondition, so exactly one verification succeeds
//! across replicas. Within a replica, presentations of one key are served one at a time, and
//! the winner's consumption is seen by the next without an API call. On a 409 the record is
//! read once and the update retried on the newer version; a second 409 answers
//! `UNAVAILABLE`. So does any failure to reach the API server: single-use keys fail closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use super::check::Code;
use super::index::Source;
use crate::record::{SingleUseRecord, UseState};

/// How long consuming may wait for the API server before answering `UNAVAILABLE` (the
/// client also retries 503s and 429s on its own, for far longer than a gateway waits).
pub const API_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Serialises presentations of one key within this replica; entries go once unused.
#[derive(Default)]
pub struct Turns {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Turns {
    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    fn release(&self, name: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Nobody else holds or waits for it: forget it (bounded by presentations in flight).
        if locks.get(name).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(name);
        }
    }
}

/// What consuming found, and the record as it now is (to update the index).
pub struct Consumed {
    pub code: Code,
    pub now: Option<(SingleUseRecord, String)>,
}

/// Consumes the record `name` that the index showed at `resource_version`.
pub async fn consume(
    api: &Api<Secret>,
    hash_namespace: &str,
    turns: &Turns,
    name: &str,
    seen: &SingleUseRecord,
    resource_version: &str,
    current: impl Fn() -> Option<(SingleUseRecord, String)>,
) -> Consumed {
    let lock = turns.lock_for(name);
    let outcome = {
        let _turn = lock.lock().await;
        // Another presentation here may have consumed it while this one waited.
        let (record, rv) =
            current().unwrap_or_else(|| (seen.clone(), resource_version.to_string()));
        if record.state == UseState::Consumed {
            Consumed {
                code: Code::UsageExceeded,
                now: None,
            }
        } else {
            attempt(api, hash_namespace, name, record, rv).await
        }
    };
    drop(lock);
    turns.release(name);
    outcome
}

async fn attempt(
    api: &Api<Secret>,
    hash_namespace: &str,
    name: &str,
    record: SingleUseRecord,
    rv: String,
) -> Consumed {
    let unavailable = Consumed {
        code: Code::Unavailable,
        now: None,
    };
    let mut candidate = (record, rv);
    for try_ in 0..2 {
        let (record, rv) = &candidate;
        if record.state == UseState::Consumed {
            return Consumed {
                code: Code::UsageExceeded,
                now: None,
            };
        }
        let mut consumed = record.clone();
        consumed.state = UseState::Consumed;
        consumed.consumed_at = Some(crate::clock::ms(jiff::Timestamp::now()));
        let mut secret = consumed.to_secret(hash_namespace);
        secret.metadata.resource_version = Some(rv.clone());
        let answer = tokio::time::timeout(
            API_PATIENCE,
            api.replace(name, &PostParams::default(), &secret),
        )
        .await;
        let Ok(answer) = answer else {
            return unavailable;
        };
        match answer {
            Ok(written) => {
                let rv = written.metadata.resource_version.unwrap_or_default();
                return Consumed {
                    code: Code::Valid,
                    now: Some((consumed, rv)),
                };
            }
            Err(kube::Error::Api(s)) if s.code == 409 && try_ == 0 => {
                // Someone wrote it meanwhile (another replica, or the operator marking it
                // taken): read it once and decide on the newer version.
                let Ok(Ok(Some(fresh))) =
                    tokio::time::timeout(API_PATIENCE, api.get_opt(name)).await
                else {
                    return unavailable;
                };
                let Ok(record) = SingleUseRecord::from_secret(&fresh) else {
                    return unavailable;
                };
                candidate = (record, fresh.metadata.resource_version.unwrap_or_default());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Consumed {
                    code: Code::NotFound,
                    now: None,
                };
            }
            Err(_) => return unavailable,
        }
    }
    unavailable
}

/// The record of a pool entry, its Secret's name and version.
pub fn pool_record(source: &Source) -> Option<(&SingleUseRecord, &str, &str)> {
    match source {
        Source::Pool {
            record,
            secret_name,
            resource_version,
        } => Some((record, secret_name, resource_version)),
        Source::ApiKey(_) => None,
    }
}

//! Server-side apply of YAML manifests through the API, as `kubectl apply --server-side`
//! does: each document's kind is resolved by discovery, then applied under one field
//! manager.

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};

/// Why applying manifests failed, naming the file and object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<serde_saphyr::Error>,
    },
    #[error("{path}: document {index} has no apiVersion/kind")]
    NoKind { path: PathBuf, index: usize },
    #[error("{path}: {kind} is not served by the API server: {source}")]
    Discovery {
        path: PathBuf,
        kind: String,
        source: Box<kube::Error>,
    },
    #[error("{path}: applying {kind} {name}: {source}")]
    Apply {
        path: PathBuf,
        kind: String,
        name: String,
        source: Box<kube::Error>,
    },
}

/// One applied object.
#[derive(Debug, Clone)]
pub struct Applied {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// The `.yaml`/`.yml`/`.json` files of a folder (or the file itself), sorted by name.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ApplyError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| ApplyError::Read {
        path: path.into(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Applies every object in the files, in order, into `default_namespace` when they name none.
pub async fn apply_files(
    client: &Client,
    files: &[PathBuf],
    default_namespace: &str,
    field_manager: &str,
) -> Result<Vec<Applied>, ApplyError> {
    let mut applied = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| ApplyError::Read {
            path: path.clone(),
            source,
        })?;
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_str_multiple(&text).map_err(|source| ApplyError::Parse {
                path: path.clone(),
                source: Box::new(source),
            })?;
        for (index, value) in documents.into_iter().enumerate() {
            if value.is_null() {
                continue;
            }
            let object: DynamicObject =
                serde_json::from_value(value).map_err(|_| ApplyError::NoKind {
                    path: path.clone(),
                    index,
                })?;
            let types = object.types.clone().ok_or_else(|| ApplyError::NoKind {
                path: path.clone(),
                index,
            })?;
            let gvk = GroupVersionKind::try_from(&types).map_err(|_| ApplyError::NoKind {
                path: path.clone(),
                index,
            })?;
            let (resource, caps) =
                discovery::pinned_kind(client, &gvk)
                    .await
                    .map_err(|source| ApplyError::Discovery {
                        path: path.clone(),
                        kind: types.kind.clone(),
                        source: Box::new(source),
                    })?;
            let name = object.name_any();
            let namespace = match caps.scope {
                Scope::Namespaced => Some(
                    object
                        .namespace()
                        .unwrap_or_else(|| default_namespace.to_string()),
                ),
                Scope::Cluster => None,
            };
            let api: Api<DynamicObject> = match &namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            api.patch(
                &name,
                &PatchParams::apply(field_manager).force(),
                &Patch::Apply(&object),
            )
            .await
            .map_err(|source| ApplyError::Apply {
                path: path.clone(),
                kind: types.kind.clone(),
                name: name.clone(),
                source: Box::new(source),
            })?;
            applied.push(Applied {
                kind: types.kind,
                namespace,
                name,
            });
        }
    }
    Ok(applied)
}

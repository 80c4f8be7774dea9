//! Writing Secrets keyward owns. Secret material is created with a plain create, so a
//! Secret that appeared under the same name meanwhile is a 409 and is never merged into
//! (DESIGN §3); an existing Secret is updated by server-side apply guarded by the
//! resourceVersion keyward read, so a stale cache can never overwrite a newer key.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};

use super::{Context, FIELD_MANAGER};

/// Whether a failed write may still have happened: anything but the API server's refusal
/// (4xx) — a 5xx, a timeout, a lost connection.
pub fn outcome_unknown(e: &kube::Error) -> bool {
    !matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code))
}

/// What a guarded delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// This call deleted it.
    Now,
    /// It was gone already, or had changed since it was read (someone else won).
    NotOurs,
}

/// A JSON pointer token for `key` (RFC 6901).
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Context {
    /// Removes the data key `data_key` from `secret` and sets `annotation` to `value`, in
    /// one JSON patch guarded by the resourceVersion that was read (a `test` that fails
    /// with 422 when the Secret changed meanwhile). Server-side apply cannot do this: it
    /// removes only fields the applier alone manages, and the key was written by a create.
    pub async fn empty_secret(
        &self,
        api: &Api<Secret>,
        secret: &Secret,
        data_key: &str,
        annotation: &str,
        value: &str,
    ) -> Result<Secret, kube::Error> {
        let mut ops = vec![serde_json::json!(
            {"op": "test", "path": "/metadata/resourceVersion", "value": secret.resource_version()}
        )];
        if secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(data_key))
        {
            ops.push(serde_json::json!(
                {"op": "remove", "path": format!("/data/{}", pointer_escape(data_key))}
            ));
        }
        if secret.metadata.annotations.is_none() {
            ops.push(serde_json::json!(
                {"op": "add", "path": "/metadata/annotations", "value": {}}
            ));
        }
        ops.push(serde_json::json!({"op": "add",
            "path": format!("/metadata/annotations/{}", pointer_escape(annotation)), "value": value}));
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(kube::Error::SerdeError)?;
        let answer = api
            .patch(
                &secret.name_any(),
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::<()>::Json(patch),
            )
            .await;
        match answer {
            Ok(written) => {
                self.activity.wrote(&written);
                Ok(written)
            }
            Err(e) => {
                if outcome_unknown(&e) {
                    self.activity.uncertain(secret);
                }
                Err(e)
            }
        }
    }

    /// Creates `desired` when `existing` is `None`, else applies it over `existing`.
    pub async fn create_or_apply(
        &self,
        api: &Api<Secret>,
        mut desired: Secret,
        existing: Option<&Secret>,
    ) -> Result<Secret, kube::Error> {
        let answer = match existing {
            None => {
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                api.create(&params, &desired).await
            }
            Some(current) => {
                desired.metadata.resource_version = current.resource_version();
                let name = desired.metadata.name.clone().unwrap_or_default();
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
            }
        };
        match answer {
            Ok(written) => {
                self.activity.wrote(&written);
                Ok(written)
            }
            Err(e) => {
                if outcome_unknown(&e) {
                    self.activity.uncertain(&desired);
                }
                Err(e)
            }
        }
    }

    /// Deletes `secret` only if it is still the version that was read (uid and
    /// resourceVersion preconditions).
    pub async fn delete_guarded(
        &self,
        api: &Api<Secret>,
        secret: &Secret,
    ) -> Result<Deleted, kube::Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.uid(),
                resource_version: secret.resource_version(),
            }),
            ..Default::default()
        };
        let name = secret.name_any();
        match api.delete(&name, &params).await {
            Ok(answer) => {
                let namespace = secret.namespace().unwrap_or_default();
                self.activity.deleted_either(answer, &namespace, &name);
                Ok(Deleted::Now)
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Deleted::NotOurs),
            Err(e) => {
                if outcome_unknown(&e) {
                    self.activity.uncertain(secret);
                }
                Err(e)
            }
        }
    }

    /// Deletes `namespace/name` whatever its version (a 404 means done).
    pub async fn delete_secret(
        &self,
        api: &Api<Secret>,
        namespace: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(answer) => {
                self.activity.deleted_either(answer, namespace, name);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

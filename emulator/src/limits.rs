//! Size limits kube-apiserver (and the etcd behind it) enforce on every write, with the
//! status codes and wording clients see.

use serde_json::Value;

use crate::error::ApiError;
use crate::kinds::Cause;

/// The apiserver's MaxRequestBodyBytes: write bodies over it are refused before decoding.
pub const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;

/// etcd's default max request size: a stored object over it never reaches storage.
pub const MAX_OBJECT: usize = 1024 * 1024 + 512 * 1024;

/// Total size of an object's annotations, keys and values (TotalAnnotationSizeLimitB).
pub const MAX_ANNOTATIONS: usize = 256 * 1024;

/// 413 for a write body over [`MAX_REQUEST_BODY`].
pub fn check_body(len: usize) -> Result<(), ApiError> {
    if len > MAX_REQUEST_BODY {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_REQUEST_BODY}"),
        ));
    }
    Ok(())
}

/// The metadata validation cause for annotations over [`MAX_ANNOTATIONS`].
pub fn check_annotations(object: &Value) -> Option<Cause> {
    let total: usize = object["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    (total > MAX_ANNOTATIONS).then(|| {
        (
            "metadata.annotations".into(),
            "FieldValueTooLong",
            format!("metadata.annotations: Too long: must have at most {MAX_ANNOTATIONS} bytes"),
        )
    })
}

/// The 500 etcd's "request is too large" becomes when an object outgrows storage (the
/// apiserver passes it through unmapped). JSON is measured, a little larger than the
/// protobuf etcd stores.
pub fn check_object(object: &Value) -> Result<(), ApiError> {
    let size = serde_json::to_vec(object).map_or(0, |v| v.len());
    if size > MAX_OBJECT {
        return Err(ApiError::internal("etcdserver: request is too large"));
    }
    Ok(())
}

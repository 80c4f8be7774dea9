//! The HTTP face of the emulator: routing of Kubernetes REST paths, body decoding by
//! content type, query parameters, fault hooks, and streaming watches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::discovery;
use crate::error::ApiError;
use crate::faults::{self, FaultAction, Hooks};
use crate::resources::ResourceType;
use crate::schema::FieldValidation;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::ssa::Part;
use crate::store::{Change, DeleteOptions, Deleted, EventType, PatchType, Store, WriteOptions};
use crate::table;

/// Everything a request handler needs.
pub struct Shared {
    pub store: Store,
    pub hooks: Hooks,
    pub bookmark_interval: Duration,
    pub server_address: String,
}

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut response = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response();
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status(), &[])
}

/// A parsed resource request.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Entry point for every request.
pub async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!("reading request body: {e}")));
        }
    };
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_pairs(q).into_iter().collect())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let resources = shared.store.resources();
    match segments.as_slice() {
        [] => json_response(
            200,
            &json!({"paths": ["/api", "/api/v1", "/apis", "/openapi/v2", "/openapi/v3", "/version"]}),
            &[],
        ),
        ["version"] => json_response(200, &discovery::version(), &[]),
        ["healthz" | "livez" | "readyz"] => (StatusCode::OK, "ok").into_response(),
        ["openapi", "v2"] => json_response(200, &discovery::openapi_v2(&resources), &[]),
        ["openapi", "v3"] => json_response(200, &discovery::openapi_v3_index(&resources), &[]),
        ["openapi", "v3", "api", version] => json_response(
            200,
            &discovery::openapi_v3_document(&resources, "", version),
            &[],
        ),
        ["openapi", "v3", "apis", group, version] => json_response(
            200,
            &discovery::openapi_v3_document(&resources, group, version),
            &[],
        ),
        ["api"] => json_response(200, &discovery::core_versions(&shared.server_address), &[]),
        ["apis"] => json_response(200, &discovery::group_list(&resources), &[]),
        ["api", version] => match discovery::resource_list(&resources, "", version) {
            Some(v) => json_response(200, &v, &[]),
            None => not_found_path(&path),
        },
        ["apis", group] => match discovery::group(&resources, group) {
            Some(v) => json_response(200, &v, &[]),
            None => not_found_path(&path),
        },
        ["apis", group, version] => match discovery::resource_list(&resources, group, version) {
            Some(v) => json_response(200, &v, &[]),
            None => not_found_path(&path),
        },
        ["api", version, rest @ ..] => match resolve(&resources, "", version, rest) {
            Some(target) => {
                serve(&shared, parts.method, &parts.headers, &query, target, bytes).await
            }
            None => not_found_path(&path),
        },
        ["apis", group, version, rest @ ..] => match resolve(&resources, group, version, rest) {
            Some(target) => {
                serve(&shared, parts.method, &parts.headers, &query, target, bytes).await
            }
            None => not_found_path(&path),
        },
        _ => not_found_path(&path),
    }
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn not_found_path(path: &str) -> Response {
    let mut e = ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    e.details = Some(
        json!({"causes": [{"reason": "UnexpectedServerResponse", "message": format!("404 page not found: {path}")}]}),
    );
    error_response(&e)
}

fn resolve(
    resources: &[ResourceType],
    group: &str,
    version: &str,
    rest: &[&str],
) -> Option<Target> {
    let find = |plural: &str| {
        resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let rt = find(plural)?;
            if !rt.namespaced {
                return None;
            }
            (
                Some(ns.to_string()),
                std::iter::once(*plural)
                    .chain(tail.iter().copied())
                    .collect::<Vec<_>>(),
            )
        }
        other => (None, other.to_vec()),
    };
    let rt = find(rest.first()?)?;
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return None;
    }
    if let Some(sub) = &subresource
        && !(sub == "status" && rt.status_subresource
            || rt.plural == "namespaces" && sub == "finalize")
    {
        return None;
    }
    // A namespaced resource addressed without a namespace is only valid for lists.
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return None;
    }
    Some(Target {
        rt,
        namespace,
        name,
        subresource,
    })
}

/// Integral floats become integers, as they do when kube-apiserver decodes into Go values
/// and encodes again (`256.0` is stored and served as `256`).
fn normalize_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Value::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

fn decode_body(headers: &HeaderMap, bytes: &Bytes) -> Result<Value, ApiError> {
    let mut value = decode_body_raw(headers, bytes)?;
    normalize_numbers(&mut value);
    Ok(value)
}

fn decode_body_raw(headers: &HeaderMap, bytes: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match media {
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(bytes)
            .map_err(|e| ApiError::new(415, "UnsupportedMediaType", e)),
        // JSON is YAML, and what most clients send under these types: take the fast path.
        "application/yaml" | "application/apply-patch+yaml" => {
            serde_json::from_slice::<Value>(bytes)
                .or_else(|_| serde_saphyr::from_slice::<Value>(bytes))
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        _ => serde_json::from_slice::<Value>(bytes).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
    }
}

/// The options kinds a write is validated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OptionsKind {
    Create,
    Update,
    /// A PATCH; `true` for server-side apply.
    Patch(bool),
}

/// The apiserver's checks of a write's query options, before it reads the object:
/// ValidateCreateOptions, ValidateUpdateOptions and ValidatePatchOptions in
/// staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go, answered
/// as 422 Invalid on `CreateOptions.meta.k8s.io ""` and the like.
fn validate_options(query: &HashMap<String, String>, kind: OptionsKind) -> Result<(), ApiError> {
    let mut causes: Vec<(String, &'static str, String)> = Vec::new();
    let manager = query.get("fieldManager").map(String::as_str).unwrap_or("");
    match kind {
        OptionsKind::Patch(false) if query.contains_key("force") => causes.push((
            "force".into(),
            "FieldValueForbidden",
            "force: Forbidden: may not be specified for non-apply patch".into(),
        )),
        OptionsKind::Patch(true) if manager.is_empty() => causes.push((
            "fieldManager".into(),
            "FieldValueRequired",
            "fieldManager: Required value: is required for apply patch".into(),
        )),
        _ => {}
    }
    if manager.len() > 128 {
        causes.push((
            "fieldManager".into(),
            "FieldValueTooLong",
            "fieldManager: Too long: may not be more than 128 bytes".into(),
        ));
    } else if manager.chars().any(|c| c.is_control()) {
        causes.push((
            "fieldManager".into(),
            "FieldValueInvalid",
            format!(
                "fieldManager: Invalid value: {manager:?}: must only contain printable characters"
            ),
        ));
    }
    if let Some(dry_run) = query.get("dryRun")
        && dry_run != "All"
    {
        causes.push((
            "dryRun".into(),
            "FieldValueNotSupported",
            format!("dryRun: Unsupported value: [{dry_run:?}]: supported values: \"All\""),
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    let kind = match kind {
        OptionsKind::Create => "CreateOptions",
        OptionsKind::Update => "UpdateOptions",
        OptionsKind::Patch(_) => "PatchOptions",
    };
    Err(ApiError::invalid_kind("meta.k8s.io", kind, "", causes))
}

fn write_options(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<WriteOptions, ApiError> {
    let field_validation = match query.get("fieldValidation").map(String::as_str) {
        None | Some("") => FieldValidation::Warn,
        Some(v) => FieldValidation::parse(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, got {v:?}"
            ))
        })?,
    };
    Ok(WriteOptions {
        field_manager: query.get("fieldManager").cloned(),
        field_validation,
        dry_run: query.get("dryRun").is_some_and(|v| v == "All"),
        force: query.get("force").is_some_and(|v| v == "true"),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    })
}

fn check_kind(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    let api_version = body["apiVersion"].as_str().unwrap_or_default();
    let kind = body["kind"].as_str().unwrap_or_default();
    let events_alias = rt.storage == "events" && matches!(api_version, "v1" | "events.k8s.io/v1");
    if !api_version.is_empty() && api_version != rt.api_version() && !events_alias {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

/// `Accept: …;as=PartialObjectMetadata[List]`: answer with metadata only, as the apiserver
/// does for metadata watches and lists.
fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn partial(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// The user a request is attributed to: its bearer token (see [`crate::Emulator::kubeconfig_yaml_as`]).
fn user_of(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

fn verb_of(method: &Method, target: &Target, query: &HashMap<String, String>) -> &'static str {
    let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    match (method, target.name.is_some()) {
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::DELETE, true) => "delete",
        _ => "unknown",
    }
}

async fn serve(
    shared: &Arc<Shared>,
    method: Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    target: Target,
    bytes: Bytes,
) -> Response {
    let verb = verb_of(&method, &target, query);
    let resource_label = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.rt.plural),
        None => target.rt.plural.clone(),
    };
    let what = format!("{verb} {resource_label}");
    let mut after = None;
    let mut cut_watch = None;
    shared.hooks.record(crate::faults::Recorded {
        user: user_of(headers),
        verb: verb.to_string(),
        group: target.rt.group.clone(),
        resource: target.rt.plural.clone(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
    });
    match shared.hooks.on_request(
        verb,
        &resource_label,
        target.namespace.as_deref(),
        target.name.as_deref(),
    ) {
        Some(FaultAction::Fail(code)) => {
            return faults::refusal(code, None, format!("injected failure ({code}) for {what}"));
        }
        Some(FaultAction::Throttle(secs)) => {
            return faults::refusal(429, Some(secs), format!("injected throttling for {what}"));
        }
        Some(FaultAction::FailAfter(code)) => after = Some(Some(code)),
        Some(FaultAction::HangAfter) => after = Some(None),
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultAction::Hang) => return shared.hooks.hang(&what).await,
        Some(FaultAction::CutWatch(d)) => cut_watch = Some(d),
        Some(FaultAction::ExpireWatch) if verb == "watch" => {
            let current = shared.store.current_rv();
            let from = query.get("resourceVersion").map_or("0", String::as_str);
            let gone = ApiError::gone(format!(
                "too old resource version: {from} ({current}) (injected)"
            ));
            return stream_response(vec![event_line("ERROR", &gone.status())], None);
        }
        Some(FaultAction::ExpireWatch) | None => {}
    }
    let response = match dispatch(shared, verb, headers, query, &target, &bytes, cut_watch).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    match after {
        Some(Some(code)) => faults::refusal(
            code,
            None,
            format!("injected failure ({code}) after {what}"),
        ),
        Some(None) => shared.hooks.hang(&what).await,
        None => response,
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    verb: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    target: &Target,
    bytes: &Bytes,
    cut_watch: Option<Duration>,
) -> Result<Response, ApiError> {
    if matches!(verb, "create" | "update" | "patch") {
        crate::limits::check_body(bytes.len())?;
    }
    let store = &shared.store;
    let rt = &target.rt;
    let ns = target.namespace.clone().unwrap_or_default();
    let part = if target.subresource.as_deref() == Some("status") {
        Part::Status
    } else {
        Part::Main
    };
    match verb {
        "get" => {
            let name = target.name.as_deref().unwrap_or_default();
            let object = store.get(rt, &ns, name)?;
            if wants_table(headers) {
                return Ok(json_response(
                    200,
                    &table::table(rt, &[object], store.current_rv(), None),
                    &[],
                ));
            }
            if wants_metadata(headers) {
                return Ok(json_response(200, &partial(&object), &[]));
            }
            Ok(json_response(200, &object, &[]))
        }
        "list" | "watch" | "deletecollection" => {
            let labels = LabelSelector::parse(
                query
                    .get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
            .map_err(ApiError::bad_request)?;
            let supported = |f: &str| {
                matches!(f, "metadata.name" | "metadata.namespace")
                    || rt.extra_field_selectors.iter().any(|x| x == f)
            };
            let fields = FieldSelector::parse(
                query
                    .get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
                &supported,
            )
            .map_err(ApiError::bad_request)?;
            let filter = move |o: &Value| {
                labels.matches(o["metadata"]["labels"].as_object()) && fields.matches(o)
            };
            let ns_filter = target.namespace.as_deref();
            if verb == "watch" {
                return watch(
                    shared,
                    target,
                    query,
                    Box::new(filter),
                    render_for(headers),
                    cut_watch,
                )
                .await;
            }
            if verb == "deletecollection" {
                let page = store.list(rt, ns_filter, &filter, None, None)?;
                let opts = delete_options(query, bytes)?;
                for item in &page.items {
                    let name = item["metadata"]["name"].as_str().unwrap_or_default();
                    let item_ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
                    let _ = store.delete(rt, item_ns, name, &opts);
                }
                return Ok(json_response(
                    200,
                    &list_body(rt, page.items, page.resource_version, None, None),
                    &[],
                ));
            }
            let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
                None => None,
                Some(Ok(0)) => None,
                Some(Ok(l)) => Some(l),
                Some(Err(_)) => {
                    return Err(ApiError::bad_request(
                        "limit must be a non-negative integer",
                    ));
                }
            };
            let page = store.list(
                rt,
                ns_filter,
                &filter,
                limit,
                query
                    .get("continue")
                    .map(String::as_str)
                    .filter(|c| !c.is_empty()),
            )?;
            if wants_table(headers) {
                return Ok(json_response(
                    200,
                    &table::table(
                        rt,
                        &page.items,
                        page.resource_version,
                        page.continue_token.as_deref(),
                    ),
                    &[],
                ));
            }
            let metadata_only = wants_metadata(headers);
            let items = if metadata_only {
                page.items.iter().map(partial).collect()
            } else {
                page.items
            };
            let mut body = list_body(
                rt,
                items,
                page.resource_version,
                page.continue_token,
                page.remaining,
            );
            if metadata_only {
                body["kind"] = json!("PartialObjectMetadataList");
                body["apiVersion"] = json!("meta.k8s.io/v1");
            }
            Ok(json_response(200, &body, &[]))
        }
        "create" => {
            if target.name.is_some() {
                return Err(ApiError::method_not_allowed(
                    "POST is not supported on a named resource",
                ));
            }
            if rt.namespaced && target.namespace.is_none() {
                return Err(ApiError::not_found(rt, ""));
            }
            validate_options(query, OptionsKind::Create)?;
            let body = decode_body(headers, bytes)?;
            check_kind(rt, &body)?;
            let opts = write_options(query, headers)?;
            let written = store.create(rt, &ns, body, &opts)?;
            Ok(json_response(201, &written.object, &written.warnings))
        }
        "update" => {
            let name = target.name.as_deref().unwrap_or_default();
            validate_options(query, OptionsKind::Update)?;
            let body = decode_body(headers, bytes)?;
            check_kind(rt, &body)?;
            let opts = write_options(query, headers)?;
            let written = store.update(rt, &ns, name, body, part, &opts)?;
            Ok(json_response(200, &written.object, &written.warnings))
        }
        "patch" => {
            let name = target.name.as_deref().unwrap_or_default();
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let patch_type = match content_type.split(';').next().unwrap_or_default().trim() {
                "application/merge-patch+json" => PatchType::Merge,
                "application/json-patch+json" => PatchType::Json,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchType::Apply,
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                        ),
                    ));
                }
            };
            validate_options(query, OptionsKind::Patch(patch_type == PatchType::Apply))?;
            let body = decode_body(headers, bytes)?;
            let opts = write_options(query, headers)?;
            let written = store.patch(rt, &ns, name, patch_type, body, part, &opts)?;
            Ok(json_response(
                if written.created { 201 } else { 200 },
                &written.object,
                &written.warnings,
            ))
        }
        "delete" => {
            let name = target.name.as_deref().unwrap_or_default();
            let opts = delete_options(query, bytes)?;
            // An object left waiting for finalizers comes back with 200; 202 only when the
            // client asked for cascading deletion with orphanDependents=false
            // (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/delete.go).
            let accepted = if opts.orphan_dependents == Some(false) {
                202
            } else {
                200
            };
            match store.delete(rt, &ns, name, &opts)? {
                Deleted::Pending(object) => Ok(json_response(accepted, &object, &[])),
                Deleted::Gone(object) if rt.custom => Ok(json_response(200, &object, &[])),
                Deleted::Gone(object) => {
                    let mut details =
                        json!({"name": name, "kind": rt.plural, "uid": object["metadata"]["uid"]});
                    if !rt.group.is_empty() {
                        details["group"] = json!(rt.group);
                    }
                    Ok(json_response(
                        200,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                        &[],
                    ))
                }
            }
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn delete_options(
    query: &HashMap<String, String>,
    bytes: &Bytes,
) -> Result<DeleteOptions, ApiError> {
    let body: Value = if bytes.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let text = |v: &Value| v.as_str().map(String::from);
    Ok(DeleteOptions {
        precondition_uid: text(&body["preconditions"]["uid"]),
        precondition_rv: text(&body["preconditions"]["resourceVersion"]),
        orphan_dependents: body["orphanDependents"].as_bool(),
        propagation: text(&body["propagationPolicy"])
            .or_else(|| query.get("propagationPolicy").cloned())
            .or_else(|| match body["orphanDependents"].as_bool() {
                Some(true) => Some("Orphan".into()),
                _ => None,
            }),
        dry_run: body["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "All"))
            || query.get("dryRun").is_some_and(|v| v == "All"),
    })
}

fn list_body(
    rt: &ResourceType,
    items: Vec<Value>,
    rv: u64,
    continue_token: Option<String>,
    remaining: Option<u64>,
) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        metadata["remainingItemCount"] = json!(r);
    }
    json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": metadata, "items": items})
}

type Filter = Box<dyn Fn(&Value) -> bool + Send + Sync>;

/// A watch event line: `{"type":KIND,"object":OBJECT}` and a newline, written directly
/// (no intermediate JSON value: a watch fans every change out to every watcher).
fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    // Serializing a Value into memory cannot fail.
    let _ = serde_json::to_writer(&mut line, object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// How watch event objects are rendered, by the request's Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    Full,
    /// `as=PartialObjectMetadata`: metadata only.
    Metadata,
    /// `as=Table`: one row per event, as `kubectl get -w` asks.
    Table,
}

fn render_for(headers: &HeaderMap) -> Render {
    if wants_table(headers) {
        Render::Table
    } else if wants_metadata(headers) {
        Render::Metadata
    } else {
        Render::Full
    }
}

fn event_line_as(kind: &str, object: &Value, render: Render, rt: &ResourceType) -> Bytes {
    match render {
        Render::Full => event_line(kind, object),
        Render::Metadata => event_line(kind, &partial(object)),
        Render::Table => {
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            event_line(
                kind,
                &table::table(rt, std::slice::from_ref(object), rv, None),
            )
        }
    }
}

/// Streams watch events as newline-delimited JSON, as the apiserver does.
async fn watch(
    shared: &Arc<Shared>,
    target: &Target,
    query: &HashMap<String, String>,
    filter: Filter,
    render: Render,
    cut: Option<Duration>,
) -> Result<Response, ApiError> {
    let rt = target.rt.clone();
    let ns = target.namespace.clone();
    let rv_param = query.get("resourceVersion").cloned().unwrap_or_default();
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let initial_events = query.get("sendInitialEvents").map(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let store = &shared.store;

    let matches_ns = {
        let ns = ns.clone();
        move |c: &Change| ns.as_ref().is_none_or(|n| &c.namespace == n)
    };
    // What to send first, and from which version on to follow.
    let (initial, mut last_rv, mut receiver, initial_end) =
        if rv_param.is_empty() || rv_param == "0" || initial_events == Some(true) {
            let (items, rv, receiver) = store.snapshot_and_watch(&rt, ns.as_deref());
            let initial: Vec<Bytes> =
                if initial_events == Some(false) && !(rv_param.is_empty() || rv_param == "0") {
                    Vec::new()
                } else {
                    items
                        .iter()
                        .filter(|o| filter(o))
                        .map(|o| event_line_as("ADDED", o, render, &rt))
                        .collect()
                };
            (initial, rv, receiver, initial_events == Some(true))
        } else {
            let from: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version {rv_param:?}"))
            })?;
            match store.watch_from(&rt.storage, from) {
                Ok((missed, receiver)) => {
                    let mut lines = Vec::new();
                    let mut last = from;
                    for change in missed.iter().filter(|c| matches_ns(c)) {
                        if let Some(line) = change_line(&rt, change, &filter, render) {
                            lines.push(line);
                        }
                        last = change.rv;
                    }
                    (lines, last.max(from), receiver, false)
                }
                Err(e) => {
                    let body = event_line("ERROR", &e.status());
                    return Ok(stream_response(vec![body], None));
                }
            }
        };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let mut drops = shared.hooks.watch_drops();
    drops.mark_unchanged();
    let interval = shared.bookmark_interval;
    let rt_task = rt.clone();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if initial_end {
            let bookmark = json!({"apiVersion": rt_task.api_version(), "kind": rt_task.kind, "metadata": {
                "resourceVersion": last_rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            }});
            if tx
                .send(Ok(event_line("BOOKMARK", &bookmark)))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let cut_at = cut.map(|c| tokio::time::Instant::now() + c);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let sleep_until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let sleep_until_cut = async {
                match cut_at {
                    Some(c) => tokio::time::sleep_until(c).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep_until_deadline => return,
                _ = sleep_until_cut => {
                    // Half an event, then the connection breaks (an error ends the body
                    // without its last chunk): what a client sees when a watch is cut.
                    let _ = tx.send(Ok(Bytes::from_static(b"{\"type\":\"MODIFIED\",\"object\":{"))).await;
                    let _ = tx.send(Err(std::io::Error::other("injected watch cut"))).await;
                    return;
                }
                _ = drops.changed() => return,
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = json!({"apiVersion": rt_task.api_version(), "kind": rt_task.kind, "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(Ok(event_line("BOOKMARK", &bookmark))).await.is_err() {
                        return;
                    }
                }
                received = receiver.recv() => {
                    let change = match received {
                        Ok(c) => c,
                        // Lagging behind or closed: end the watch; the client re-watches.
                        Err(_) => return,
                    };
                    if change.rv <= last_rv || change.storage != rt_task.storage || !matches_ns(&change) {
                        continue;
                    }
                    last_rv = change.rv;
                    if let Some(line) = change_line(&rt_task, &change, &filter, render)
                        && tx.send(Ok(line)).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Ok(stream_response(Vec::new(), Some(rx)))
}

/// The event a watcher with `filter` sees for a change: objects entering the selection are
/// ADDED, leaving it DELETED, as the apiserver's watch cache does.
fn change_line(
    rt: &ResourceType,
    change: &Change,
    filter: &Filter,
    render: Render,
) -> Option<Bytes> {
    let object = Store::present_ref(rt, &change.object);
    let now = filter(&object);
    match change.kind {
        EventType::Modified => {
            let before = change
                .previous
                .as_ref()
                .map(|p| filter(&Store::present_ref(rt, p)))
                .unwrap_or(now);
            match (before, now) {
                (true, true) => Some(event_line_as("MODIFIED", &object, render, rt)),
                (false, true) => Some(event_line_as("ADDED", &object, render, rt)),
                (true, false) => Some(event_line_as("DELETED", &object, render, rt)),
                (false, false) => None,
            }
        }
        kind => now.then(|| event_line_as(kind.as_str(), &object, render, rt)),
    }
}

fn stream_response(
    lines: Vec<Bytes>,
    rx: Option<mpsc::Receiver<Result<Bytes, std::io::Error>>>,
) -> Response {
    let body = match rx {
        Some(rx) => Body::from_stream(ReceiverStream::new(rx)),
        None => Body::from(lines.concat()),
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let pairs = form_pairs("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&x=%zz");
        assert_eq!(
            pairs[0],
            ("labelSelector".into(), "app=web,tier in (a)".into())
        );
        assert_eq!(pairs[1], ("watch".into(), "1".into()));
        assert_eq!(pairs[2], ("x".into(), "%zz".into()));
    }
}

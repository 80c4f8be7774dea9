//! `keyward verify [KEY|-] [--url URL]`: asks a verifier about a key (seed 000's test script,
//! made Kubernetes-native). The key is read from stdin when it is `-` or absent, so it never
//! sits in process arguments.

use std::io::Read;

use crate::keys::PlainKey;

/// Why `keyward verify` got no answer.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading the key from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("no key given: pass it on stdin (recommended) or as an argument")]
    NoKey,
    #[error(transparent)]
    Client(#[from] crate::outbound::ClientError),
    #[error("asking the verifier at {url}: {detail} (is it running? --url sets its address)")]
    Unreachable { url: String, detail: String },
    #[error("reading the verifier's answer: {0}")]
    Read(#[source] reqwest::Error),
    #[error("the verifier at {url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("the verifier's answer is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
}

/// Reads the key: the argument, or stdin for `-` / none (trailing newline trimmed).
pub fn read_key(arg: Option<&str>) -> Result<PlainKey, VerifyError> {
    let key = match arg {
        Some(k) if k != "-" => k.to_string(),
        _ => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(VerifyError::Stdin)?;
            input.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if key.is_empty() {
        return Err(VerifyError::NoKey);
    }
    Ok(PlainKey::new(key))
}

/// POSTs the key to `{url}/v1/keys/verify`; returns the verifier's JSON answer.
pub async fn ask(
    url: &str,
    ca_file: Option<&std::path::Path>,
    key: &PlainKey,
) -> Result<serde_json::Value, VerifyError> {
    let endpoint = format!("{}/v1/keys/verify", url.trim_end_matches('/'));
    let client = crate::outbound::client(Some(std::time::Duration::from_secs(30)), ca_file)?;
    let response = client
        .post(&endpoint)
        .json(&serde_json::json!({"key": key.expose()}))
        .send()
        .await
        .map_err(|e| VerifyError::Unreachable {
            url: url.to_string(),
            detail: crate::outbound::describe(&e),
        })?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(VerifyError::Read)?;
    if !status.is_success() {
        return Err(VerifyError::Status {
            url: url.to_string(),
            status,
        });
    }
    serde_json::from_slice(&bytes).map_err(VerifyError::NotJson)
}

/// One line for people: `VALID default/billing (owner team-billing)`.
pub fn describe(answer: &serde_json::Value) -> String {
    let code = answer["code"].as_str().unwrap_or("UNKNOWN");
    match answer.get("key") {
        Some(k) => {
            let owner = k["owner"]
                .as_str()
                .map(|o| format!(" (owner {o})"))
                .unwrap_or_default();
            format!(
                "{code} {}/{}{owner}",
                k["namespace"].as_str().unwrap_or_default(),
                k["name"].as_str().unwrap_or_default()
            )
        }
        None => code.to_string(),
    }
}

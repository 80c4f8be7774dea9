//! `keyward verify [KEY|-] [--url URL]`: asks a verifier about a key (seed 000's test script,
//! made Kubernetes-native). The key is read from stdin when it is `-` or absent, so it never
//! sits in process arguments.

use std::io::Read;

use crate::keys::PlainKey;

/// Reads the key: the argument, or stdin for `-` / none (trailing newline trimmed).
pub fn read_key(arg: Option<&str>) -> Result<PlainKey, String> {
    let key = match arg {
        Some(k) if k != "-" => k.to_string(),
        _ => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| format!("reading the key from stdin: {e}"))?;
            input.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if key.is_empty() {
        return Err("no key given: pass it on stdin (recommended) or as an argument".into());
    }
    Ok(PlainKey::new(key))
}

/// POSTs the key to `{url}/v1/keys/verify`; returns the verifier's JSON answer.
pub async fn ask(url: &str, key: &PlainKey) -> Result<serde_json::Value, String> {
    let endpoint = format!("{}/v1/keys/verify", url.trim_end_matches('/'));
    let client = crate::outbound::client(Some(std::time::Duration::from_secs(30)), None)
        .map_err(|e| e.to_string())?;
    let response = client
        .post(&endpoint)
        .json(&serde_json::json!({"key": key.expose()}))
        .send()
        .await
        .map_err(|e| {
            format!(
                "asking the verifier at {url}: {}",
                crate::outbound::describe(&e)
            )
        })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("reading the verifier's answer: {e}"))?;
    if !status.is_success() {
        return Err(format!("the verifier at {url} answered {status}"));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("the verifier's answer is not JSON: {e}"))
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

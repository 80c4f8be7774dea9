//! The provider key as text (DESIGN §7): read from its Secret, checked before it may go into
//! a header, masked for status, and scrubbed out of whatever a provider answers.

use crate::keys::PlainKey;

/// Longest key keyward sends (a header of 4 KiB is already far beyond any provider's key).
pub const MAX_KEY_BYTES: usize = 4096;
/// Longest message kept from a provider's answer.
pub const MAX_MESSAGE_CHARS: usize = 1024;
/// Pieces of the key this long or longer are scrubbed from provider messages.
const PIECE: usize = 8;

/// Why the Secret's value cannot be sent as a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("the key is empty")]
    Empty,
    #[error("the key is longer than 4 KiB")]
    TooLong,
    #[error("the key is not UTF-8 text")]
    NotText,
    #[error(
        "the key contains a line break or another control character (it would inject headers): nothing was sent"
    )]
    ControlCharacters,
}

/// The key from the Secret's bytes: one trailing line ending (`\n` or `\r\n`, as `echo` and
/// editors leave) is trimmed; anything else that cannot travel in a header is refused.
pub fn key_from_secret(bytes: &[u8]) -> Result<PlainKey, KeyProblem> {
    let text = std::str::from_utf8(bytes).map_err(|_| KeyProblem::NotText)?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if text.len() > MAX_KEY_BYTES {
        return Err(KeyProblem::TooLong);
    }
    if text.chars().any(char::is_control) {
        return Err(KeyProblem::ControlCharacters);
    }
    Ok(PlainKey::new(text))
}

/// The key masked for status and tables: its first 3 and last 4 characters around `…`, and
/// only for keys of 16 characters or more (so at least 9 stay hidden); shorter keys show
/// nothing but `…`.
pub fn preview(key: &PlainKey) -> String {
    let chars: Vec<char> = key.expose().chars().collect();
    if chars.len() < 16 {
        return "…".to_string();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// `text` with every run made of pieces of the key (any 8 or more characters in a row that
/// occur in the key, the whole key included) replaced by the key's preview.
pub fn scrub(text: &str, key: &PlainKey) -> String {
    let key_chars: Vec<char> = key.expose().chars().collect();
    let chars: Vec<char> = text.chars().collect();
    if key_chars.len() < PIECE || chars.len() < PIECE {
        return text.to_string();
    }
    let pieces: std::collections::HashSet<&[char]> = key_chars.windows(PIECE).collect();
    // Which characters of `text` lie inside some 8-character piece of the key: any longer
    // run of the key is covered by its 8-character windows.
    let mut covered = vec![false; chars.len()];
    for (i, window) in chars.windows(PIECE).enumerate() {
        if pieces.contains(window) {
            covered[i..i + PIECE].iter_mut().for_each(|c| *c = true);
        }
    }
    let mask = preview(key);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if covered[i] {
            out.push_str(&mask);
            while i < chars.len() && covered[i] {
                i += 1;
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// What a provider's error answer says, for `status.message`: from a JSON body its error
/// code or type and message (`error.code`, `error.type`, `error.message`, `message`,
/// `detail`), else the body's first line; scrubbed of the key and cut to 1024 characters.
pub fn message(body: &[u8], key: &PlainKey) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|v| {
            let err = v.get("error").unwrap_or(&v);
            let text = |field: &str| {
                err.get(field)
                    .or_else(|| v.get(field))
                    .and_then(|x| x.as_str())
                    .map(str::to_string)
            };
            let error_string = v.get("error").and_then(|e| e.as_str()).map(str::to_string);
            let label = text("code").or_else(|| text("type"));
            let said = text("message").or_else(|| text("detail")).or(error_string);
            match (label, said) {
                (Some(l), Some(m)) => format!("{l}: {m}"),
                (Some(l), None) => l,
                (None, Some(m)) => m,
                (None, None) => String::new(),
            }
        });
    let text = match from_json {
        Some(t) if !t.is_empty() => t,
        _ => String::from_utf8_lossy(body)
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    // Scrub before cutting, so no piece of the key survives at the cut.
    let clean: String = scrub(&text, key)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clean.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    fn key() -> PlainKey {
        PlainKey::new(KEY)
    }

    #[test]
    fn a_secret_value_becomes_a_key_or_a_refusal_that_says_why() {
        assert_eq!(
            key_from_secret(b"sk-abc\n").expect("trimmed").expose(),
            "sk-abc"
        );
        assert_eq!(
            key_from_secret(b"sk-abc\r\n").expect("trimmed").expose(),
            "sk-abc"
        );
        for (bytes, problem) in [
            (&b""[..], KeyProblem::Empty),
            (b"\n", KeyProblem::Empty),
            (b"sk-abc\nX-Injected: 1", KeyProblem::ControlCharacters),
            (b"sk-abc\r", KeyProblem::ControlCharacters),
            (b"sk-abc\n\n", KeyProblem::ControlCharacters),
            (b"sk\tabc", KeyProblem::ControlCharacters),
            (b"sk-\xff", KeyProblem::NotText),
        ] {
            assert_eq!(key_from_secret(bytes), Err(problem), "{bytes:?}");
        }
        assert_eq!(
            key_from_secret("k".repeat(4097).as_bytes()),
            Err(KeyProblem::TooLong)
        );
        assert!(key_from_secret("k".repeat(4096).as_bytes()).is_ok());
    }

    #[test]
    fn previews_show_at_most_three_and_four_characters() {
        assert_eq!(preview(&key()), "sk-…6789");
        assert_eq!(preview(&PlainKey::new("short-key-123")), "…");
        assert_eq!(preview(&PlainKey::new("0123456789abcdef")), "012…cdef");
    }

    #[test]
    fn any_eight_characters_of_the_key_are_scrubbed() {
        let echoed = format!("Incorrect API key provided: {KEY}. Find yours at example.");
        assert_eq!(
            scrub(&echoed, &key()),
            "Incorrect API key provided: sk-…6789. Find yours at example."
        );
        // Providers that mask part of it still echo long pieces.
        let partial = "Incorrect API key provided: sk-proj-********************WXYZ0123456789.";
        assert_eq!(
            scrub(partial, &key()),
            "Incorrect API key provided: sk-…6789********************sk-…6789."
        );
        // Seven characters in a row are not a piece.
        assert_eq!(scrub("ABCDEFG", &key()), "ABCDEFG");
        assert_eq!(scrub("xABCDEFGHx", &key()), "xsk-…6789x");
    }

    #[test]
    fn messages_come_from_the_error_fields_scrubbed_and_cut() {
        let openai = format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {KEY}.","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
        );
        assert_eq!(
            message(openai.as_bytes(), &key()),
            "invalid_api_key: Incorrect API key provided: sk-…6789."
        );
        let anthropic =
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        assert_eq!(
            message(anthropic, &key()),
            "authentication_error: invalid x-api-key"
        );
        assert_eq!(
            message(br#"{"detail":"Unauthorized"}"#, &key()),
            "Unauthorized"
        );
        assert_eq!(
            message(b"\n<html>Bad gateway</html>\nmore", &key()),
            "<html>Bad gateway</html>"
        );
        let long = format!(r#"{{"message":"{}{KEY}"}}"#, "x".repeat(2000));
        let m = message(long.as_bytes(), &key());
        assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS);
        assert!(!m.contains("ABCDEFGH"));
        // The key cut in half at the limit leaves no 8-character piece either.
        let at_cut = format!(r#"{{"message":"{}{KEY}"}}"#, "x".repeat(1020));
        assert!(!message(at_cut.as_bytes(), &key()).contains("sk-proj-"));
    }
}

//! The key format of DESIGN §2: `<prefix><body><checksum>`, with a public lookup id, a
//! preview and a fingerprint that are safe to show anywhere.

use sha2::{Digest, Sha256};

use super::plain::PlainKey;
use crate::crd::{Alphabet, KeyFormat};

/// Length of the public lookup id at the start of the body.
pub const LOOKUP_ID_LEN: usize = 8;
/// Length of the checksum suffix.
pub const CHECKSUM_LEN: usize = 6;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8] = b"0123456789abcdef";

/// The characters of an alphabet.
pub fn characters(alphabet: Alphabet) -> &'static [u8] {
    match alphabet {
        Alphabet::Base62 => BASE62,
        Alphabet::Base64Url => BASE64URL,
        Alphabet::Hex => HEX,
    }
}

/// Random bits in a body of `length` characters beyond the public lookup id.
pub fn secret_bits(format: &KeyFormat) -> f64 {
    let per_char = (characters(format.alphabet).len() as f64).log2();
    (format.length as f64 - LOOKUP_ID_LEN as f64).max(0.0) * per_char
}

/// Why a format cannot be used (the admission rules refuse these too; this is the
/// operator's own check for objects admitted elsewhere).
pub fn check(format: &KeyFormat) -> Result<(), String> {
    if format.prefix.len() > 16
        || !format
            .prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "prefix {:?} must be 0-16 characters of letters, digits, '_' and '-'",
            format.prefix
        ));
    }
    if secret_bits(format) < 128.0 {
        let need = match format.alphabet {
            Alphabet::Hex => 40,
            _ => 30,
        };
        return Err(format!(
            "length {} leaves {:.0} random bits after the 8-character lookup id; at least 128 are needed ({} needs length >= {need})",
            format.length,
            secret_bits(format),
            alphabet_name(format.alphabet)
        ));
    }
    Ok(())
}

pub fn alphabet_name(alphabet: Alphabet) -> &'static str {
    match alphabet {
        Alphabet::Base62 => "base62",
        Alphabet::Base64Url => "base64url",
        Alphabet::Hex => "hex",
    }
}

/// 6 base62 characters of CRC32 over `prefix + body`.
pub fn checksum(prefix_and_body: &str) -> String {
    let mut n = crc32fast::hash(prefix_and_body.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// Fills `length` characters from the OS CSPRNG, uniformly (rejection sampling, no modulo
/// bias).
fn random_body(alphabet: &[u8], length: usize) -> Result<String, getrandom::Error> {
    let n = alphabet.len();
    let limit = 256 - (256 % n);
    let mut out = String::with_capacity(length);
    let mut buf = [0u8; 64];
    while out.len() < length {
        getrandom::fill(&mut buf)?;
        for b in buf {
            if (b as usize) < limit && out.len() < length {
                out.push(alphabet[b as usize % n] as char);
            }
        }
    }
    Ok(out)
}

/// A new key in `format`, from the OS CSPRNG.
pub fn generate(format: &KeyFormat) -> Result<PlainKey, getrandom::Error> {
    let body = random_body(characters(format.alphabet), format.length as usize)?;
    let mut key = format!("{}{}", format.prefix, body);
    if format.checksum {
        let sum = checksum(&key);
        key.push_str(&sum);
    }
    Ok(PlainKey::new(key))
}

/// What a presented key claims to be, split by a known format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub prefix: &'a str,
    pub lookup_id: &'a str,
}

/// Splits `key` by `format` if it has that shape (prefix, length, alphabet, checksum).
pub fn parse<'a>(key: &'a str, format: &KeyFormat) -> Option<Parsed<'a>> {
    let rest = key.strip_prefix(format.prefix.as_str())?;
    let body_len = format.length as usize;
    let expected = body_len + if format.checksum { CHECKSUM_LEN } else { 0 };
    if rest.len() != expected || !rest.is_ascii() {
        return None;
    }
    let body = &rest[..body_len];
    let alphabet = characters(format.alphabet);
    if !body.bytes().all(|b| alphabet.contains(&b)) {
        return None;
    }
    if format.checksum && rest[body_len..] != checksum(&key[..format.prefix.len() + body_len]) {
        return None;
    }
    Some(Parsed {
        prefix: &key[..format.prefix.len()],
        lookup_id: &body[..LOOKUP_ID_LEN.min(body_len)],
    })
}

/// First 16 hex characters of SHA-256 of the key: safe to show anywhere.
pub fn fingerprint(key: &PlainKey) -> String {
    let digest = Sha256::digest(key.expose().as_bytes());
    hex(&digest[..8])
}

/// `prefix + lookup id + "…"`, e.g. `sk_live_3fK9aQ2m…`.
pub fn preview(key: &PlainKey, format: &KeyFormat) -> String {
    match parse(key.expose(), format) {
        Some(p) => format!("{}{}…", p.prefix, p.lookup_id),
        None => imported_preview(key),
    }
}

/// An imported key has no public part: show at most its first 4 characters, and none of a
/// short key.
pub fn imported_preview(key: &PlainKey) -> String {
    let shown = (key.expose().chars().count() / 8).min(4);
    format!("{}…", key.expose().chars().take(shown).collect::<String>())
}

/// A rough entropy estimate of an imported key: length × log2(size of the smallest
/// standard character class that covers it).
pub fn estimated_bits(key: &PlainKey) -> f64 {
    let k = key.expose();
    let class = if k.bytes().all(|b| b.is_ascii_digit()) {
        10.0
    } else if k.bytes().all(|b| b.is_ascii_hexdigit()) {
        16.0
    } else if k.bytes().all(|b| b.is_ascii_alphanumeric()) {
        62.0
    } else if k
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        64.0
    } else {
        95.0
    };
    k.chars().count() as f64 * f64::log2(class)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(prefix: &str, length: u32, alphabet: Alphabet, checksum: bool) -> KeyFormat {
        KeyFormat {
            prefix: prefix.into(),
            length,
            alphabet,
            checksum,
        }
    }

    #[test]
    fn generated_keys_have_the_format_and_parse_back() {
        for alphabet in [Alphabet::Base62, Alphabet::Base64Url, Alphabet::Hex] {
            for checksum in [true, false] {
                let f = format("sk_live_", 40, alphabet, checksum);
                let key = generate(&f).expect("random");
                let expected_len = 8 + 40 + if checksum { 6 } else { 0 };
                assert_eq!(key.len(), expected_len);
                assert!(key.expose().starts_with("sk_live_"));
                let parsed = parse(key.expose(), &f).expect("parses");
                assert_eq!(parsed.lookup_id, &key.expose()[8..16]);
                assert_eq!(preview(&key, &f), format!("sk_live_{}…", parsed.lookup_id));
            }
        }
    }

    #[test]
    fn checksum_rejects_typos() {
        let f = KeyFormat::default();
        let key = generate(&f).expect("random");
        let mut typo = key.expose().to_string();
        let i = 10;
        let replacement = if &typo[i..=i] == "a" { "b" } else { "a" };
        typo.replace_range(i..=i, replacement);
        assert!(parse(&typo, &f).is_none());
        assert!(parse(key.expose(), &f).is_some());
        assert!(parse("kw_short", &f).is_none());
        assert!(parse(&format!("xx{}", &key.expose()[2..]), &f).is_none());
    }

    #[test]
    fn checksum_is_six_base62_characters() {
        assert_eq!(checksum("").len(), 6);
        assert_eq!(checksum(""), "000000", "CRC32 of nothing is 0");
        let c = checksum("kw_abc");
        assert!(c.bytes().all(|b| BASE62.contains(&b)));
    }

    #[test]
    fn bodies_use_every_character_and_only_those() {
        let f = format("", 4000, Alphabet::Base62, false);
        let key = generate(&f).expect("random");
        let distinct: std::collections::BTreeSet<u8> = key.expose().bytes().collect();
        assert_eq!(distinct.len(), 62, "4000 draws cover the whole alphabet");
        assert!(key.expose().bytes().all(|b| BASE62.contains(&b)));
    }

    #[test]
    fn entropy_floor_matches_the_admission_rule() {
        assert!(check(&format("kw_", 30, Alphabet::Base62, true)).is_ok());
        assert!(check(&format("kw_", 29, Alphabet::Base62, true)).is_err());
        assert!(check(&format("kw_", 30, Alphabet::Base64Url, true)).is_ok());
        assert!(check(&format("kw_", 29, Alphabet::Base64Url, true)).is_err());
        assert!(check(&format("kw_", 40, Alphabet::Hex, true)).is_ok());
        assert!(check(&format("kw_", 39, Alphabet::Hex, true)).is_err());
        assert!(check(&format("a.b", 32, Alphabet::Base62, true)).is_err());
    }

    #[test]
    fn fingerprints_and_previews_are_safe() {
        let key = PlainKey::new("kw_ABCDEFGHsecretpartsecretpart");
        let fp = fingerprint(&key);
        assert_eq!(fp.len(), 16);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            imported_preview(&PlainKey::new("abcdefghijklmnopqrstuvwxyz012345")),
            "abcd…"
        );
        assert_eq!(imported_preview(&PlainKey::new("short")), "…");
        assert!(estimated_bits(&PlainKey::new("1234")) < 20.0);
        assert!(estimated_bits(&PlainKey::new("aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF")) > 128.0);
    }
}

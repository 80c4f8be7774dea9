//! The API reference page (`docs/api.md`), rendered from the CRDs' `openAPIV3Schema`: every
//! field with its type, default and what admission checks. Rendering the schema rather than
//! writing prose keeps the page saying exactly what the apiserver enforces; pure (CRDs in,
//! Markdown out), so `tests/api_docs.rs` can compare it with the file and rewrite it.
//!
//! The output is stable: kinds in the order given, fields in the schema's own order (by name:
//! the schema keeps properties in a sorted map), each nested object's table after its
//! parent's, depth first.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    ValidationRule,
};
use serde_json::Value;

/// First line of every generated page: how the docs test tells a page it may rewrite or
/// remove from one written by hand.
pub const GENERATED_MARKER: &str =
    "<!-- Generated from the CRDs by tests/api_docs.rs; do not edit. -->";

/// The command that rewrites the generated pages.
pub const REGENERATE: &str = "KEYWARD_UPDATE_DOCS=1 cargo nextest run --test api_docs";

/// The reference page for `crds`, one section per kind in the order given.
pub fn markdown(crds: &[CustomResourceDefinition]) -> String {
    let groups: BTreeSet<&str> = crds.iter().map(|c| c.spec.group.as_str()).collect();
    let groups: Vec<String> = groups.into_iter().map(code).collect();
    let mut out = format!("{GENERATED_MARKER}\n\n# API reference\n\n");
    out.push_str(&format!(
        "Every field of the custom resources in group {}: its type, default, and what the \
         apiserver checks when an object is created or updated.\n\n",
        groups.join(", ")
    ));
    out.push_str(
        "This page is generated from the CRDs, which come from the Rust types in `src/crd/` \
         (the same schemas as `crds/` and `keyward crds`); do not edit it by hand. After \
         changing the types, regenerate it:\n\n",
    );
    out.push_str(&format!("```sh\n{REGENERATE}\n```\n\n"));
    out.push_str(
        "Fields are listed in the schema's order, which is alphabetical; each nested object \
         has its own table after its parent's. **Validation** lists the bounds and formats \
         the schema sets and, for each rule, the message an object is refused with. Where \
         that message is computed from the object, ‹field› stands for the field's value and \
         \\[a / b\\] for alternatives the object decides between.\n\n",
    );
    for crd in crds {
        let kind = &crd.spec.names.kind;
        out.push_str(&format!("- [{kind}](#{})\n", kind.to_lowercase()));
    }
    for crd in crds {
        kind_section(&mut out, crd);
    }
    out
}

/// One kind: what identifies it, then a table per object level, root first.
fn kind_section(out: &mut String, crd: &CustomResourceDefinition) {
    let names = &crd.spec.names;
    let kind = &names.kind;
    out.push_str(&format!("\n## {kind}\n"));
    let served: Vec<_> = crd.spec.versions.iter().filter(|v| v.served).collect();
    for version in &served {
        // Anchors carry the version only when there is a choice, so links to a kind with one
        // version stay put when another is added.
        let (title, anchor) = if served.len() > 1 {
            (
                format!("{kind} {}", version.name),
                format!("{}.{}", kind.to_lowercase(), version.name),
            )
        } else {
            (kind.clone(), kind.to_lowercase())
        };
        let root = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        if let Some(description) = root.and_then(|r| r.description.as_deref()) {
            out.push_str(&format!("\n{}\n", description.trim()));
        }
        out.push('\n');
        out.push_str(&format!(
            "- API version: {}\n",
            code(&format!("{}/{}", crd.spec.group, version.name))
        ));
        out.push_str(&format!("- Kind: {}\n", code(kind)));
        let mut resource = format!("- Resource: {}", code(&names.plural));
        if let Some(singular) = names.singular.as_deref().filter(|s| !s.is_empty()) {
            resource.push_str(&format!(", singular {}", code(singular)));
        }
        out.push_str(&resource);
        out.push('\n');
        if let Some(short) = names.short_names.as_deref().filter(|s| !s.is_empty()) {
            out.push_str(&format!("- Short names: {}\n", codes(short)));
        }
        if let Some(categories) = names.categories.as_deref().filter(|c| !c.is_empty()) {
            out.push_str(&format!("- Categories: {}\n", codes(categories)));
        }
        out.push_str(&format!("- Scope: {}\n", crd.spec.scope));
        if let Some(sub) = &version.subresources {
            let mut list = Vec::new();
            if sub.status.is_some() {
                list.push("status".to_string());
            }
            if sub.scale.is_some() {
                list.push("scale".to_string());
            }
            if !list.is_empty() {
                out.push_str(&format!("- Subresources: {}\n", codes(&list)));
            }
        }
        if let Some(columns) = version
            .additional_printer_columns
            .as_deref()
            .filter(|c| !c.is_empty())
        {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            out.push_str(&format!(
                "- Columns of `kubectl get`: {}\n",
                plain(&names.join(", "))
            ));
        }
        let Some(root) = root else {
            out.push_str("\nThis version has no schema.\n");
            continue;
        };
        if let Some(rules) = root.x_kubernetes_validations.as_deref() {
            out.push_str("- Rules on the whole object:\n");
            for rule in rules {
                out.push_str(&format!("  - {}\n", rule_text(rule)));
            }
        }
        object_levels(out, &title, &anchor, "", root);
    }
}

/// The table of `node`'s fields, then the tables of the objects below it. `path` is empty at
/// the root, whose table follows the kind's summary without a heading of its own.
fn object_levels(out: &mut String, title: &str, anchor: &str, path: &str, node: &JSONSchemaProps) {
    if !path.is_empty() {
        out.push_str(&format!(
            "\n### <a id=\"{}\"></a>{title} {}\n",
            anchor_id(anchor, path),
            code(path)
        ));
        if let Some(description) = node.description.as_deref() {
            out.push_str(&format!("\n{}\n", description.trim()));
        }
    }
    let Some(properties) = node.properties.as_ref() else {
        return;
    };
    let required: BTreeSet<&str> = node.required.iter().flatten().map(String::as_str).collect();
    out.push_str("\n| Field | Type | Default | Validation | Description |\n");
    out.push_str("|---|---|---|---|---|\n");
    for (name, field) in properties {
        let field_path = join(path, name);
        let link = nested_object(field)
            .map(|(_, suffix)| format!("#{}", anchor_id(anchor, &format!("{field_path}{suffix}"))));
        let mut validation = Vec::new();
        if required.contains(name.as_str()) {
            validation.push("required".to_string());
        }
        validation.extend(constraints(field));
        let cells = [
            code(&field_path),
            type_text(field, link.as_deref()),
            field
                .default
                .as_ref()
                .map(|d| value_text(&d.0))
                .unwrap_or_default(),
            validation.join("<br>"),
            field
                .description
                .as_deref()
                .map(description_text)
                .unwrap_or_default(),
        ];
        out.push_str(&row(&cells));
    }
    for (name, field) in properties {
        if let Some((object, suffix)) = nested_object(field) {
            let child = format!("{}{suffix}", join(path, name));
            object_levels(out, title, anchor, &child, object);
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The object with fields of its own that a field holds: itself, each item of a list
/// (`[]`), or each value of a map (`.*`); with the suffix that names its level.
fn nested_object(node: &JSONSchemaProps) -> Option<(&JSONSchemaProps, &'static str)> {
    let has_fields = |n: &JSONSchemaProps| n.properties.as_ref().is_some_and(|p| !p.is_empty());
    if has_fields(node) {
        return Some((node, ""));
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &node.items
        && has_fields(items)
    {
        return Some((items, "[]"));
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &node.additional_properties
        && has_fields(values)
    {
        return Some((values, ".*"));
    }
    None
}

/// The HTML id of an object level: the lowercase kind and the field path, dot-separated as
/// `kubectl explain` spells it (`apikey.spec.rotation.restartTargets`). Heading slugs never
/// contain dots, so these cannot collide with them.
fn anchor_id(anchor: &str, path: &str) -> String {
    let path = path.replace("[]", "").replace(".*", "");
    format!("{anchor}.{path}")
}

/// What a field holds, e.g. `string, one of …`, `array of string`, `map of string to
/// string`, or a link to a nested object's table.
fn type_text(node: &JSONSchemaProps, link: Option<&str>) -> String {
    if node.x_kubernetes_int_or_string == Some(true) {
        return "integer or string".to_string();
    }
    let preserve = node.x_kubernetes_preserve_unknown_fields == Some(true);
    let mut text = match node.type_.as_deref() {
        Some("array") => match &node.items {
            Some(JSONSchemaPropsOrArray::Schema(items)) => {
                format!("array of {}", type_text(items, link))
            }
            _ => "array".to_string(),
        },
        Some("object") if node.properties.as_ref().is_some_and(|p| !p.is_empty()) => match link {
            Some(target) => format!("[object]({target})"),
            None => "object".to_string(),
        },
        Some("object") => match &node.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(values)) => {
                format!("map of string to {}", type_text(values, link))
            }
            Some(JSONSchemaPropsOrBool::Bool(true)) => "object (any fields)".to_string(),
            _ if preserve => "object (any fields)".to_string(),
            _ => "object".to_string(),
        },
        Some(other) => other.to_string(),
        None => "any".to_string(),
    };
    if let Some(values) = node.enum_.as_deref().filter(|v| !v.is_empty()) {
        let values: Vec<String> = values.iter().map(|v| value_text(&v.0)).collect();
        text.push_str(&format!(", one of {}", values.join(", ")));
    }
    text
}

/// The checks on one value, each a line of the Validation cell. A list's items and a map's
/// values are checked too, so their constraints follow, marked as such.
fn constraints(node: &JSONSchemaProps) -> Vec<String> {
    let mut out = own_constraints(node);
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &node.items {
        out.extend(
            own_constraints(items)
                .into_iter()
                .map(|c| format!("each item: {c}")),
        );
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &node.additional_properties {
        out.extend(
            own_constraints(values)
                .into_iter()
                .map(|c| format!("each value: {c}")),
        );
    }
    out
}

fn own_constraints(node: &JSONSchemaProps) -> Vec<String> {
    let mut out = Vec::new();
    let exclusive = |flag: Option<bool>| {
        if flag == Some(true) {
            " (exclusive)"
        } else {
            ""
        }
    };
    if let Some(min) = node.minimum {
        out.push(format!(
            "minimum {}{}",
            number(min),
            exclusive(node.exclusive_minimum)
        ));
    }
    if let Some(max) = node.maximum {
        out.push(format!(
            "maximum {}{}",
            number(max),
            exclusive(node.exclusive_maximum)
        ));
    }
    if let Some(step) = node.multiple_of {
        out.push(format!("multiple of {}", number(step)));
    }
    let counts = [
        ("minLength", node.min_length),
        ("maxLength", node.max_length),
        ("minItems", node.min_items),
        ("maxItems", node.max_items),
        ("minProperties", node.min_properties),
        ("maxProperties", node.max_properties),
    ];
    for (name, count) in counts {
        if let Some(count) = count {
            out.push(format!("{name} {count}"));
        }
    }
    if node.unique_items == Some(true) {
        out.push("unique items".to_string());
    }
    if let Some(pattern) = node.pattern.as_deref() {
        out.push(format!("pattern {}", code(pattern)));
    }
    if let Some(format) = node.format.as_deref() {
        out.push(format!("format {}", code(format)));
    }
    match node.x_kubernetes_list_type.as_deref() {
        Some("map") => {
            let keys = node
                .x_kubernetes_list_map_keys
                .as_deref()
                .unwrap_or_default();
            out.push(format!("one item per {}", codes(keys)));
        }
        Some("set") => out.push("items are unique (a set)".to_string()),
        _ => {}
    }
    for rule in node.x_kubernetes_validations.iter().flatten() {
        out.push(rule_text(rule));
    }
    out
}

/// What the apiserver says when `rule` refuses an object: its message, as plain text. A
/// computed message is shown as a template of its text with placeholders; a rule without a
/// message is reported by the apiserver as `failed rule: <the CEL source>`, so that is shown.
fn rule_text(rule: &ValidationRule) -> String {
    if let Some(expression) = rule.message_expression.as_deref().filter(|e| !e.is_empty()) {
        return match cel_message::template(expression) {
            Some(template) => template,
            // The apiserver falls back to the static message when the expression fails.
            None => match rule.message.as_deref().filter(|m| !m.is_empty()) {
                Some(message) => plain(message),
                None => "a message computed from the object".to_string(),
            },
        };
    }
    match rule.message.as_deref().filter(|m| !m.is_empty()) {
        Some(message) => plain(message),
        None => format!("failed rule: {}", code(&rule.rule)),
    }
}

/// A JSON value as written in a manifest: a string bare when that is unambiguous, quoted
/// when it is empty or starts or ends with a space (`"Bearer "`), anything else as JSON.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() && s.trim() == s => code(s),
        other => code(&other.to_string()),
    }
}

/// Schema bounds are floats on the wire (`256.0`); whole ones read better without the `.0`.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A description in one table cell: lines of a paragraph joined (doc comments wrap at a
/// fixed width), paragraphs kept apart with line breaks. Descriptions are Markdown already.
fn description_text(text: &str) -> String {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join(" "));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join(" "));
    }
    paragraphs.join("<br><br>")
}

/// A table row. A cell must stay on one line, and `|` ends a cell even inside a code span
/// unless escaped.
fn row(cells: &[String]) -> String {
    let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
    format!("| {} |\n", cells.join(" | "))
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// Text that is not Markdown (a rule's message) shown as written: every character Markdown
/// could read as emphasis, a link, HTML or code is escaped. `|` is left to `cell`.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '~' | '&') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An inline code span that shows `text` exactly: the fence is longer than any run of
/// backticks inside, and padding keeps edge backticks and spaces from being eaten.
fn code(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let edge_space = text.starts_with(' ') && text.ends_with(' ') && text.trim() != "";
    if text.starts_with('`') || text.ends_with('`') || edge_space {
        format!("{fence} {text} {fence}")
    } else {
        format!("{fence}{text}{fence}")
    }
}

fn codes<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|i| code(i.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reading a `messageExpression` as the message it builds. The page cannot evaluate CEL
/// without an object, and the CEL source is no message; but such expressions are nearly
/// always string literals joined with `+`, field values and conditionals, which read as a
/// template: literals as text, `self.x` as ‹x›, `c ? a : b` as \[a / b\]. Anything else
/// becomes ‹…›.
mod cel_message {
    use super::plain;

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Str(String),
        Word(String),
        Punct(char),
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Piece {
        Text(String),
        /// A value taken from the object; `None` when it is not a plain field.
        Value(Option<String>),
        Choice(Vec<Vec<Piece>>),
    }

    /// The template, or `None` when the expression does not even tokenize.
    pub(super) fn template(expression: &str) -> Option<String> {
        let tokens = tokenize(expression)?;
        Some(render(&message(&tokens)))
    }

    fn render(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => plain(text),
                Piece::Value(Some(field)) => format!("‹{}›", plain(field)),
                Piece::Value(None) => "‹…›".to_string(),
                Piece::Choice(alternatives) => {
                    let each: Vec<String> = alternatives.iter().map(|a| render(a)).collect();
                    format!("\\[{}\\]", each.join(" / "))
                }
            })
            .collect()
    }

    fn tokenize(source: &str) -> Option<Vec<Token>> {
        let chars: Vec<char> = source.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let raw = matches!(c, 'r' | 'R') && matches!(chars.get(i + 1), Some('\'' | '"'));
            if c.is_whitespace() {
                i += 1;
            } else if c == '\'' || c == '"' || raw {
                let (text, next) = string_literal(&chars, if raw { i + 1 } else { i }, raw)?;
                tokens.push(Token::Str(text));
                i = next;
            } else if c.is_alphanumeric() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            } else {
                tokens.push(Token::Punct(c));
                i += 1;
            }
        }
        Some(tokens)
    }

    /// A CEL string literal starting at `start` (its quote): its text and the index after it.
    fn string_literal(chars: &[char], start: usize, raw: bool) -> Option<(String, usize)> {
        let quote = chars[start];
        let triple = chars.get(start + 1) == Some(&quote) && chars.get(start + 2) == Some(&quote);
        let width = if triple { 3 } else { 1 };
        let closes = |i: usize| (0..width).all(|k| chars.get(i + k) == Some(&quote));
        let mut text = String::new();
        let mut i = start + width;
        loop {
            let c = *chars.get(i)?;
            if closes(i) {
                return Some((text, i + width));
            }
            if c == '\\' && !raw {
                let escaped = *chars.get(i + 1)?;
                text.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                i += 2;
            } else {
                text.push(c);
                i += 1;
            }
        }
    }

    /// Index of the first `wanted` outside any brackets.
    fn top_level(tokens: &[Token], wanted: char) -> Option<usize> {
        let mut depth = 0usize;
        for (i, token) in tokens.iter().enumerate() {
            match token {
                Token::Punct('(' | '[' | '{') => depth += 1,
                Token::Punct(')' | ']' | '}') => depth = depth.saturating_sub(1),
                Token::Punct(c) if *c == wanted && depth == 0 => return Some(i),
                _ => {}
            }
        }
        None
    }

    /// Index of the `:` that belongs to a `?` just before `tokens`, skipping nested pairs.
    fn matching_colon(tokens: &[Token]) -> Option<usize> {
        let mut depth = 0usize;
        let mut pending = 0usize;
        for (i, token) in tokens.iter().enumerate() {
            match token {
                Token::Punct('(' | '[' | '{') => depth += 1,
                Token::Punct(')' | ']' | '}') => depth = depth.saturating_sub(1),
                Token::Punct('?') if depth == 0 => pending += 1,
                Token::Punct(':') if depth == 0 => {
                    if pending == 0 {
                        return Some(i);
                    }
                    pending -= 1;
                }
                _ => {}
            }
        }
        None
    }

    /// An expression: a conditional (lowest precedence, so split there first) or a
    /// concatenation.
    fn message(tokens: &[Token]) -> Vec<Piece> {
        if let Some(question) = top_level(tokens, '?') {
            let rest = &tokens[question + 1..];
            let Some(colon) = matching_colon(rest) else {
                return vec![Piece::Value(None)];
            };
            let mut alternatives = vec![message(&rest[..colon])];
            // `a ? x : b ? y : z` is one choice among three.
            match message(&rest[colon + 1..]).as_slice() {
                [Piece::Choice(more)] => alternatives.extend(more.iter().cloned()),
                other => alternatives.push(other.to_vec()),
            }
            return vec![Piece::Choice(alternatives)];
        }
        let mut pieces = Vec::new();
        let mut rest = tokens;
        loop {
            let end = top_level(rest, '+').unwrap_or(rest.len());
            pieces.extend(term(&rest[..end]));
            if end == rest.len() {
                return pieces;
            }
            rest = &rest[end + 1..];
        }
    }

    fn term(tokens: &[Token]) -> Vec<Piece> {
        match tokens {
            [Token::Str(text)] => vec![Piece::Text(text.clone())],
            [Token::Punct('('), inner @ .., Token::Punct(')')] if wraps(tokens) => message(inner),
            [
                Token::Word(f),
                Token::Punct('('),
                inner @ ..,
                Token::Punct(')'),
            ] if f == "string" && wraps(&tokens[1..]) => message(inner),
            [Token::Word(s), rest @ ..] if s == "self" => vec![Piece::Value(field(rest))],
            _ => vec![Piece::Value(None)],
        }
    }

    /// Whether the opening bracket at the start closes at the very end, as in `(a + b)` but
    /// not `(a) + (b)`.
    fn wraps(tokens: &[Token]) -> bool {
        let mut depth = 0usize;
        for (i, token) in tokens.iter().enumerate() {
            match token {
                Token::Punct('(' | '[' | '{') => depth += 1,
                Token::Punct(')' | ']' | '}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i == tokens.len() - 1;
                    }
                }
                _ => {}
            }
        }
        false
    }

    /// `.a.b` after `self` as the field path `a.b`; `self` alone is the field itself.
    fn field(tokens: &[Token]) -> Option<String> {
        if tokens.is_empty() {
            return Some("value".to_string());
        }
        let mut names = Vec::new();
        for pair in tokens.chunks(2) {
            match pair {
                [Token::Punct('.'), Token::Word(name)] => names.push(name.as_str()),
                _ => return None,
            }
        }
        Some(names.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> JSONSchemaProps {
        serde_json::from_value(value).expect("a valid schema")
    }

    fn rule(value: Value) -> ValidationRule {
        serde_json::from_value(value).expect("a valid rule")
    }

    #[test]
    fn pipes_are_escaped_and_cells_stay_on_one_line() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(
            row(&[code("x|y"), "plain".to_string()]),
            "| `x\\|y` | plain |\n"
        );
    }

    #[test]
    fn plain_text_shows_markdown_characters_as_written() {
        assert_eq!(
            plain("'_' and * in <b> [x] `c` ~1 a&b \\"),
            "'\\_' and \\* in \\<b> \\[x\\] \\`c\\` \\~1 a\\&b \\\\"
        );
        assert_eq!(plain("length >= 30"), "length >= 30");
    }

    #[test]
    fn code_spans_survive_backticks_and_edge_spaces() {
        assert_eq!(code("kw_"), "`kw_`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
        assert_eq!(code(" a "), "`  a  `");
    }

    #[test]
    fn enums_list_their_values() {
        let node = schema(json!({"type": "string", "enum": ["Delete", "Retain"]}));
        assert_eq!(type_text(&node, None), "string, one of `Delete`, `Retain`");
    }

    #[test]
    fn arrays_name_their_item_type() {
        let strings = schema(json!({"type": "array", "items": {"type": "string"}}));
        assert_eq!(type_text(&strings, None), "array of string");
        let kinds = schema(json!({
            "type": "array",
            "items": {"type": "string", "enum": ["Deployment", "StatefulSet"]},
        }));
        assert_eq!(
            type_text(&kinds, None),
            "array of string, one of `Deployment`, `StatefulSet`"
        );
        let objects = schema(json!({
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        }));
        assert_eq!(
            type_text(&objects, Some("#k.list")),
            "array of [object](#k.list)"
        );
    }

    #[test]
    fn maps_name_their_value_type() {
        let labels = schema(json!({
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 63},
        }));
        assert_eq!(type_text(&labels, None), "map of string to string");
        let nested = schema(json!({
            "type": "object",
            "additionalProperties": {"type": "object", "properties": {"a": {"type": "string"}}},
        }));
        assert_eq!(
            type_text(&nested, Some("#k.m")),
            "map of string to [object](#k.m)"
        );
        assert_eq!(
            type_text(&schema(json!({"type": "object"})), None),
            "object"
        );
        assert_eq!(
            type_text(
                &schema(json!({"x-kubernetes-preserve-unknown-fields": true})),
                None
            ),
            "any"
        );
        assert_eq!(
            type_text(&schema(json!({"x-kubernetes-int-or-string": true})), None),
            "integer or string"
        );
    }

    #[test]
    fn objects_with_fields_link_to_their_table() {
        let node = schema(json!({"type": "object", "properties": {"a": {"type": "string"}}}));
        assert_eq!(type_text(&node, Some("#k.spec")), "[object](#k.spec)");
        assert_eq!(
            anchor_id("apikey", "spec.rotation.restartTargets[]"),
            "apikey.spec.rotation.restartTargets"
        );
        assert_eq!(anchor_id("apikey", "spec.labels.*"), "apikey.spec.labels");
    }

    #[test]
    fn defaults_read_as_in_a_manifest() {
        assert_eq!(value_text(&json!("kw_")), "`kw_`");
        assert_eq!(value_text(&json!("Bearer ")), "`\"Bearer \"`");
        assert_eq!(value_text(&json!("")), "`\"\"`");
        assert_eq!(value_text(&json!(false)), "`false`");
        assert_eq!(value_text(&json!(32)), "`32`");
        assert_eq!(value_text(&json!({"a": [1]})), "`{\"a\":[1]}`");
    }

    #[test]
    fn bounds_drop_a_whole_float_fraction() {
        assert_eq!(number(256.0), "256");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.5), "0.5");
    }

    #[test]
    fn constraints_of_the_value_then_of_items_and_map_values() {
        let node = schema(json!({
            "type": "array",
            "maxItems": 64,
            "items": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^a|b$"},
        }));
        assert_eq!(
            constraints(&node),
            [
                "maxItems 64",
                "each item: minLength 1",
                "each item: maxLength 128",
                "each item: pattern `^a|b$`",
            ]
        );
        let node = schema(json!({
            "type": "integer", "format": "uint32", "minimum": 0.0, "maximum": 10.0,
            "exclusiveMaximum": true,
        }));
        assert_eq!(
            constraints(&node),
            ["minimum 0", "maximum 10 (exclusive)", "format `uint32`"]
        );
        let node = schema(json!({
            "type": "object",
            "maxProperties": 32,
            "additionalProperties": {"type": "string", "maxLength": 1024},
        }));
        assert_eq!(
            constraints(&node),
            ["maxProperties 32", "each value: maxLength 1024"]
        );
        let node = schema(json!({
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
        }));
        assert_eq!(constraints(&node), ["one item per `type`"]);
    }

    #[test]
    fn rules_show_their_message_as_plain_text_not_their_cel() {
        let r = rule(
            json!({"rule": "self.startsWith('/')", "message": "path must start with '/' (e.g. /v1_x)"}),
        );
        assert_eq!(rule_text(&r), "path must start with '/' (e.g. /v1\\_x)");
        let r = rule(json!({"rule": "self.size() > 0"}));
        assert_eq!(rule_text(&r), "failed rule: `self.size() > 0`");
    }

    #[test]
    fn computed_messages_read_as_templates() {
        let r = rule(super::super::rules::key_entropy()[0].clone());
        assert_eq!(
            rule_text(&r),
            "length ‹length› leaves fewer than 128 random bits after the 8-character public \
             lookup id; \\[hex needs length >= 40 / \\[‹alphabet› / base62\\] needs length >= 30\\]"
        );
        let r = rule(json!({
            "rule": "true",
            "messageExpression": "self.a == 1 ? \"one\" : self.a == 2 ? 'two' : 'many: ' + string(self.a.size())",
        }));
        assert_eq!(rule_text(&r), "\\[one / two / many: ‹…›\\]");
        let r = rule(json!({"rule": "true", "messageExpression": "'got ' + self + r'\\n'"}));
        assert_eq!(rule_text(&r), "got ‹value›\\\\n");
    }

    #[test]
    fn an_unreadable_computed_message_falls_back_to_the_static_one() {
        let r = rule(json!({"rule": "true", "messageExpression": "'open", "message": "static"}));
        assert_eq!(rule_text(&r), "static");
        let r = rule(json!({"rule": "true", "messageExpression": "'open"}));
        assert_eq!(rule_text(&r), "a message computed from the object");
    }

    #[test]
    fn descriptions_join_wrapped_lines_and_keep_paragraphs() {
        assert_eq!(
            description_text("first line\nsecond line\n\nnext | paragraph\n"),
            "first line second line<br><br>next | paragraph"
        );
    }
}

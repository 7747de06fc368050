//! Keeps input values out of error messages that come from serde.

/// serde quotes the offending input value in some messages (`invalid type: string "…"`,
/// `invalid type: integer `…``, `unknown variant `…``), and that value may be personal data or a
/// credential. This replaces every double-quoted span, and in those value-quoting messages every
/// backtick span too, with `…`. Field names (`missing field `sub``) stay readable.
pub fn redact_values(message: &str) -> String {
    let quotes_values = [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ]
    .iter()
    .any(|kind| message.contains(kind));
    let mut out = String::with_capacity(message.len());
    let mut open: Option<char> = None;
    for c in message.chars() {
        let delimiter = c == '"' || (quotes_values && c == '`');
        match open {
            Some(opened) if c == opened => {
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None if delimiter => {
                out.push(c);
                out.push('…');
                open = Some(c);
            }
            None => out.push(c),
        }
    }
    if let Some(opened) = open {
        out.push(opened);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_replaced_and_field_names_kept() {
        assert_eq!(
            redact_values(r#"invalid type: string "ada@example.com", expected a map"#),
            r#"invalid type: string "…", expected a map"#
        );
        assert_eq!(
            redact_values("invalid type: integer `12345678`, expected a string at line 1"),
            "invalid type: integer `…`, expected a string at line 1"
        );
        assert_eq!(
            redact_values(r#"unterminated "secret"#),
            r#"unterminated "…""#
        );
        assert_eq!(redact_values("missing field `sub`"), "missing field `sub`");
    }
}

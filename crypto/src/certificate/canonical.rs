//! Canonical JSON: sorted keys, no whitespace, integers only, `JSON.stringify` string escapes.

use crate::Error;

/// The canonical text of a JSON value (RFC 8785 JCS for integer-only documents).
///
/// Floats are refused: certificates hold byte counts and times as integers and strings, and
/// refusing floats avoids number-formatting differences between implementations.
pub fn canonical_json(value: &serde_json::Value) -> Result<String, Error> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &serde_json::Value, out: &mut String) -> Result<(), Error> {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                return Err(Error::CertificateMalformed(
                    "fractional numbers are not allowed".into(),
                ));
            }
            out.push_str(&n.to_string());
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // JCS sorts by UTF-16 code units; sorting the keys' UTF-16 encodings does exactly that.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                if let Some(v) = map.get(*key) {
                    write_value(v, out)?;
                }
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_and_escapes_like_jcs() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"b":[1,true,null],"a":"x\n\u0001\"é","€":1,"\ud83d\ude00":2}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v).unwrap(),
            "{\"a\":\"x\\n\\u0001\\\"é\",\"b\":[1,true,null],\"€\":1,\"\u{1f600}\":2}"
        );
        assert!(canonical_json(&serde_json::json!({"x": 1.5})).is_err());
    }
}

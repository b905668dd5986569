//! Percent-coding of URL query parts: strict decoding (RFC 3986) and the
//! encoding of a query value.
//!
//! Pure functions; must not know which parameters exist (see `query.rs`,
//! `http/api.rs`).

use std::fmt::Write;

/// Strict RFC 3986 percent-decoding to UTF-8. `+` stays `+` (it is not a
/// space outside HTML forms, and it is the offset sign clients send).
pub fn decode(s: &str) -> Result<String, &'static str> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or("malformed percent-encoding")?;
            let hi = (hex[0] as char).to_digit(16);
            let lo = (hex[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err("malformed percent-encoding"),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not valid UTF-8 once percent-decoded")
}

/// A form value (`application/x-www-form-urlencoded`): `+` is a space,
/// then strict percent-decoding as [`decode`].
pub fn decode_form(s: &str) -> Result<String, &'static str> {
    decode(&s.replace('+', " "))
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `:`
/// (kept readable in date-times), for a query value.
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_strict_and_keeps_plus() {
        assert_eq!(decode("a%20b+c").unwrap(), "a b+c");
        assert_eq!(decode("%41%c3%A9").unwrap(), "Aé");
        assert!(decode("%4").is_err());
        assert!(decode("%zz").is_err());
        assert!(decode("%ff").is_err());
    }

    #[test]
    fn a_form_value_reads_plus_as_a_space() {
        assert_eq!(decode_form("a+b%2Bc").unwrap(), "a b+c");
        assert!(decode_form("a+%").is_err());
    }

    #[test]
    fn encoding_round_trips_through_decoding() {
        let v = "2026-01-01T00:00:00+01:00 é&=/%";
        let e = encode(v);
        assert_eq!(e, "2026-01-01T00:00:00%2B01:00%20%C3%A9%26%3D%2F%25");
        assert_eq!(decode(&e).unwrap(), v);
    }
}

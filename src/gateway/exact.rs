//! Numbers read exactly, and a call's exact canonical bytes.
//!
//! serde_json reads a number into an i64, a u64 or an f64. An integer beyond 64 bits,
//! or a decimal with more digits than a double holds, would be rounded, and the policy,
//! the audit log and the identical-call comparison would see another number than the
//! upstream, which reads the original text. So such a number is refused before any
//! decision ([`check_numbers`]). Every number left is read exactly: its value is the
//! value of its text.
//!
//! Two spellings of one value (`100`, `100.0`, `1e2`) may still mean different things
//! to an upstream (an int or a float in Python), so a call's canonical form
//! ([`canonical`]) keeps each number's original text, sorts keys and normalises only
//! string escapes, which every JSON reader decodes alike. Policies, on the other hand,
//! see a number by its value ([`number_text`]), so no spelling slips past a rule.

use std::fmt;

use serde_json::Number;

/// A number the gateway would round, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InexactNumber {
    /// RFC 6901 pointer into the message.
    pub pointer: String,
    pub text: String,
}

impl fmt::Display for InexactNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.text.len() > 64 {
            format!("{}… ({} characters)", &self.text[..48], self.text.len())
        } else {
            self.text.clone()
        };
        write!(
            f,
            "the number {shown} at {} cannot be read exactly by every reader (an integer \
             beyond ±(2^53 − 1), or more digits than a double holds); send it as a string",
            if self.pointer.is_empty() {
                "the top level"
            } else {
                &self.pointer
            }
        )
    }
}

/// Checks every number in a JSON text the strict reader accepted.
pub fn check_numbers(json: &[u8]) -> Result<(), InexactNumber> {
    let mut reader = Reader::new(json);
    let mut path = Vec::new();
    reader.check_value(&mut path)
}

/// The canonical bytes of a JSON text the strict reader accepted: no whitespace, object
/// keys sorted, strings with minimal escapes, numbers and literals as written.
pub fn canonical(json: &[u8]) -> Vec<u8> {
    let mut reader = Reader::new(json);
    let mut out = Vec::with_capacity(json.len());
    reader.canonical_value(&mut out);
    out
}

/// The canonical bytes of a `tools/call` body's `params.arguments` (`{}` when absent).
pub fn canonical_arguments(body: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        params: Option<Params<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Params<'a> {
        #[serde(borrow)]
        arguments: Option<&'a serde_json::value::RawValue>,
    }
    match serde_json::from_slice::<Call<'_>>(body) {
        Ok(Call {
            params: Some(Params {
                arguments: Some(raw),
            }),
        }) => canonical(raw.get().as_bytes()),
        _ => b"{}".to_vec(),
    }
}

/// The largest integer every common JSON reader holds exactly: JavaScript (the official
/// TypeScript SDK among them) reads every number as a double, so `9007199254740993`
/// would be one number to the policy and another to such an upstream. RFC 7493 (I-JSON)
/// sets the same bound.
pub const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// Whether this number token means the same value to the gateway and to any upstream:
/// an integer within ±(2^53 − 1), or a decimal whose double reads back as the same value.
pub fn is_exact(text: &str) -> bool {
    if !text.contains(['.', 'e', 'E']) {
        let magnitude = text.strip_prefix('-').unwrap_or(text);
        return magnitude
            .parse::<u64>()
            .is_ok_and(|n| n <= MAX_EXACT_INTEGER);
    }
    let Ok(double) = text.parse::<f64>() else {
        return false;
    };
    if !double.is_finite() {
        return false;
    }
    // `{:e}` writes the shortest digits that read back as the same double; the text is
    // exact when it denotes that same decimal value.
    match (decimal(text), decimal(&format!("{double:e}"))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A number as policies and targets see it: by value, in plain decimal, so `100`,
/// `100.0` and `1e2` are all `100`, and `-0` is `0`.
pub fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(0.0) => "0".to_owned(),
        // Display writes the shortest round-tripping digits, without an exponent.
        Some(f) => format!("{f}"),
        None => n.to_string(),
    }
}

/// Whether a number written as text (a header's, say) has exactly the value of a number
/// read from a body: compared as decimals, never through a double, so
/// `9007199254740993` is not `9007199254740992` and `1.0000000000000001` is not `1`.
pub fn same_value(text: &str, n: &Number) -> bool {
    let syntax = text.strip_prefix('-').unwrap_or(text);
    let well_formed = !syntax.is_empty()
        && syntax.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && syntax.bytes().filter(|&b| b == b'.').count() <= 1
        && !syntax.starts_with('.')
        && !syntax.ends_with('.');
    well_formed
        && match (decimal(text), decimal(&number_text(n))) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
}

/// A decimal number's value as (negative, significant digits, power of ten), with no
/// leading or trailing zeros in the digits; zero is `(false, "", 0)`.
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = int.chars().chain(frac.chars()).collect();
    let mut power = exponent.checked_sub(frac.len() as i64)?;
    let trimmed = digits.trim_end_matches('0').len();
    power = power.checked_add((digits.len() - trimmed) as i64)?;
    digits.truncate(trimmed);
    let digits = digits.trim_start_matches('0').to_owned();
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    Some((negative, digits, power))
}

/// A step into a JSON value, for the pointer of an error.
enum Step<'a> {
    /// An object key, as its raw string token with quotes.
    Key(&'a [u8]),
    Index(usize),
}

fn pointer(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Key(raw) => {
                let key: String = serde_json::from_slice(raw).unwrap_or_default();
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// A cursor over JSON text that serde_json already accepted, so it only needs to find
/// token boundaries; depth is bounded by serde_json's recursion limit.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                return Some(b);
            }
        }
        None
    }

    /// Consumes the next non-space byte if it is `b`.
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A string token, quotes included.
    fn string(&mut self) -> &'a [u8] {
        let start = self.pos;
        self.pos += 1;
        while let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            match b {
                b'\\' => self.pos += 1,
                b'"' => break,
                _ => {}
            }
        }
        &self.bytes[start..self.pos.min(self.bytes.len())]
    }

    /// A number or a literal (`true`, `false`, `null`).
    fn scalar(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(&b) = self.bytes.get(self.pos) {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.') {
                self.pos += 1;
            } else {
                break;
            }
        }
        &self.bytes[start..self.pos]
    }

    fn check_value(&mut self, path: &mut Vec<Step<'a>>) -> Result<(), InexactNumber> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                while !self.eat(b'}') && self.peek().is_some() {
                    self.eat(b',');
                    self.peek();
                    let key = self.string();
                    self.eat(b':');
                    path.push(Step::Key(key));
                    self.check_value(path)?;
                    path.pop();
                }
                Ok(())
            }
            Some(b'[') => {
                self.pos += 1;
                let mut index = 0;
                while !self.eat(b']') && self.peek().is_some() {
                    self.eat(b',');
                    path.push(Step::Index(index));
                    self.check_value(path)?;
                    path.pop();
                    index += 1;
                }
                Ok(())
            }
            Some(b'"') => {
                self.string();
                Ok(())
            }
            Some(_) => {
                let token = self.scalar();
                let text = std::str::from_utf8(token).unwrap_or_default();
                let is_number = token
                    .first()
                    .is_some_and(|b| b.is_ascii_digit() || *b == b'-');
                if is_number && !is_exact(text) {
                    return Err(InexactNumber {
                        pointer: pointer(path),
                        text: text.to_owned(),
                    });
                }
                Ok(())
            }
            // Truncated input: nothing was read, so nothing can be rounded.
            None => Ok(()),
        }
    }

    fn canonical_value(&mut self, out: &mut Vec<u8>) {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut members: Vec<(String, Vec<u8>)> = Vec::new();
                while !self.eat(b'}') && self.peek().is_some() {
                    self.eat(b',');
                    self.peek();
                    let key: String = serde_json::from_slice(self.string()).unwrap_or_default();
                    self.eat(b':');
                    let mut value = Vec::new();
                    self.canonical_value(&mut value);
                    members.push((key, value));
                }
                members.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(out, key);
                    out.push(b':');
                    out.extend_from_slice(value);
                }
                out.push(b'}');
            }
            Some(b'[') => {
                self.pos += 1;
                out.push(b'[');
                let mut first = true;
                while !self.eat(b']') && self.peek().is_some() {
                    self.eat(b',');
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    self.canonical_value(out);
                }
                out.push(b']');
            }
            Some(b'"') => {
                let text: String = serde_json::from_slice(self.string()).unwrap_or_default();
                write_string(out, &text);
            }
            Some(_) => out.extend_from_slice(self.scalar()),
            None => {}
        }
    }
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_beyond_what_a_double_holds_are_inexact() {
        assert!(is_exact("9007199254740991"));
        assert!(is_exact("-9007199254740991"));
        assert!(is_exact("-0"));
        assert!(!is_exact("9007199254740992"));
        assert!(!is_exact("9007199254740993"));
        assert!(!is_exact("18446744073709551615"));
        assert!(!is_exact("99999999999999999999"));
        assert!(!is_exact("-9223372036854775809"));
    }

    #[test]
    fn truncated_input_ends_the_walk() {
        assert!(check_numbers(br#"{"a":[1,{"b":2"#).is_ok());
        assert_eq!(canonical(br#"{"a":1"#), br#"{"a":1}"#);
        assert_eq!(canonical(b"[1,2"), b"[1,2]");
    }

    #[test]
    fn decimals_are_exact_when_their_double_reads_back_as_the_same_value() {
        for ok in [
            "0.1", "1.5", "1e2", "100.0", "1E+2", "-0.0", "0e0", "1e20", "2.5e-3",
        ] {
            assert!(is_exact(ok), "{ok}");
        }
        for bad in [
            "9007199254740993.0",
            "0.1000000000000000000001",
            "1e400",
            "1e-400",
            "123456789012345678901234567890.0",
        ] {
            assert!(!is_exact(bad), "{bad}");
        }
    }

    #[test]
    fn the_first_inexact_number_is_named_with_its_pointer() {
        let body = br#"{"params":{"arguments":{"a/b":[1, 2.5, 99999999999999999999]}}}"#;
        let err = check_numbers(body).unwrap_err();
        assert_eq!(err.pointer, "/params/arguments/a~1b/2");
        assert_eq!(err.text, "99999999999999999999");
        assert!(err.to_string().contains("send it as a string"), "{err}");
        assert!(check_numbers(br#"{"a":[1,-2,3.5e10,{"b":"99999999999999999999"}]}"#).is_ok());
    }

    #[test]
    fn policies_see_numbers_by_value() {
        let text = |s: &str| number_text(&serde_json::from_str::<Number>(s).unwrap());
        assert_eq!(text("100"), "100");
        assert_eq!(text("100.0"), "100");
        assert_eq!(text("1e2"), "100");
        assert_eq!(text("-0.0"), "0");
        assert_eq!(text("0.1"), "0.1");
        assert_eq!(text("1e20"), "100000000000000000000");
        assert_eq!(text("-12"), "-12");
    }

    #[test]
    fn a_header_number_matches_only_the_same_exact_value() {
        let n = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert!(same_value("42", &n("42")));
        assert!(same_value("42.0", &n("42")));
        assert!(same_value("0.5", &n("5e-1")));
        assert!(!same_value("9007199254740993", &n("9007199254740992")));
        assert!(!same_value("1.0000000000000001", &n("1")));
        assert!(!same_value("1e0", &n("1")));
        assert!(!same_value("+1", &n("1")));
        assert!(!same_value("", &n("0")));
        assert!(!same_value(".5", &n("0.5")));
    }

    #[test]
    fn canonical_bytes_sort_keys_and_keep_number_text() {
        let a = canonical(br#" { "b" : [ 1e2 , 9007199254740993 ], "a" : "\u0041\n" } "#);
        assert_eq!(
            String::from_utf8(a).unwrap(),
            r#"{"a":"A\n","b":[1e2,9007199254740993]}"#
        );
        assert_ne!(
            canonical(br#"{"page_id":9007199254740993}"#),
            canonical(br#"{"page_id":9007199254740992}"#)
        );
        assert_ne!(canonical(br#"{"n":100}"#), canonical(br#"{"n":100.0}"#));
        assert_eq!(canonical(br#"{"o":{}, "e":[]}"#), br#"{"e":[],"o":{}}"#);
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"z":1, "a":0.10}}}"#;
        assert_eq!(canonical_arguments(body), br#"{"a":0.10,"z":1}"#);
        let bare = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
        assert_eq!(canonical_arguments(bare), b"{}");
    }
}

//! An independent JSON reader, written here from RFC 8259 and sharing no code with
//! serde_json, that keeps every number as the exact decimal it spells.
//!
//! It is what the fuzz targets compare toolgate's reader with. Why hand-written: the
//! obvious second reader, serde_json with `arbitrary_precision`, cannot be used. Cargo
//! unifies features per package and version, so enabling it anywhere in this fuzz
//! crate (even under another dependency name) turns it on for toolgate's serde_json too,
//! and the reader under test would no longer be the one that ships. Another JSON crate
//! would do, but none at hand keeps numbers exactly without the same caveat or a large
//! dependency; 200 lines of grammar are easy to check against the RFC.
//!
//! What it accepts: exactly RFC 8259's JSON-text (whitespace, one value, whitespace),
//! in valid UTF-8, without a byte order mark, and, like I-JSON (RFC 7493), without
//! escaped lone surrogates, which no Rust `String` can hold. It does not stop at a
//! duplicate key: it notes it, so a caller can tell "valid but ambiguous" from invalid.

use std::collections::HashSet;

/// A JSON value as written: object members in order, numbers exact.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Decimal),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member `key` of an object (the first, should there be several).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A number's exact value: `digits` × 10^`exponent`, with `digits` free of leading and
/// trailing zeros (empty for zero, whose sign is dropped: -0 is 0).
#[derive(Debug, Clone)]
pub struct Decimal {
    /// As written.
    pub text: String,
    pub negative: bool,
    pub digits: String,
    /// Saturates at ±10^30, far beyond any exponent a 64-bit number can have.
    pub exponent: i128,
}

/// Equal when they are the same number, however written: `1e2` equals `100` and
/// `100.0`, `9007199254740993` does not equal `9007199254740992`.
impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        (self.negative, &self.digits, self.exponent)
            == (other.negative, &other.digits, other.exponent)
    }
}

const EXPONENT_CAP: i128 = 1_000_000_000_000_000_000_000_000_000_000;

impl Decimal {
    fn from_parts(text: &str, negative: bool, int: &[u8], frac: &[u8], exponent: i128) -> Self {
        let mut digits: String = int.iter().chain(frac).map(|&b| b as char).collect();
        let mut exponent = exponent - frac.len() as i128;
        let leading = digits.len() - digits.trim_start_matches('0').len();
        digits.drain(..leading);
        while digits.ends_with('0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Decimal {
                text: text.to_owned(),
                negative: false,
                digits,
                exponent: 0,
            };
        }
        Decimal {
            text: text.to_owned(),
            negative,
            digits,
            exponent,
        }
    }

    /// Reads a number alone, as JSON spells it (serde_json prints numbers that way).
    pub fn parse(text: &str) -> Option<Decimal> {
        let mut p = Parser::new(text.as_bytes());
        match p.number() {
            Ok(Json::Number(d)) if p.pos == text.len() => Some(d),
            _ => None,
        }
    }

    /// Reads a plain decimal as a header may carry it, more loosely than JSON: a sign
    /// `+` or `-`, digits with leading zeros, an optional point with digits on either
    /// side or both, and no exponent (`+7`, `007`, `1.`, `.5`).
    pub fn parse_plain(text: &str) -> Option<Decimal> {
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        Some(Decimal::from_parts(
            text,
            negative,
            int.as_bytes(),
            frac.as_bytes(),
            0,
        ))
    }

    /// The nearest f64, as Rust's correctly rounded parser gives it.
    pub fn to_f64(&self) -> f64 {
        self.text
            .parse()
            .expect("a JSON number is a Rust float literal")
    }
}

/// Why the reference reader refused a text.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Not JSON-text; the byte offset and what was expected there.
    Syntax(usize, &'static str),
    /// Nested deeper than `MAX_DEPTH`, which is only a guard for this reader's stack.
    TooDeep,
}

/// Deeper than serde_json's limit (128), so never the reason for a difference.
pub const MAX_DEPTH: usize = 512;

pub struct Parsed {
    pub value: Result<Json, Error>,
    /// An object had two members with the same key (after unescaping), somewhere
    /// before the point where reading stopped.
    pub duplicate_key: bool,
    /// The deepest nesting of arrays and objects met.
    pub depth: usize,
}

pub fn parse(bytes: &[u8]) -> Parsed {
    let mut p = Parser::new(bytes);
    let value = p.text();
    Parsed {
        value,
        duplicate_key: p.duplicate_key,
        depth: p.max_depth,
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
    duplicate_key: bool,
}

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Parser {
            bytes,
            pos: 0,
            depth: 0,
            max_depth: 0,
            duplicate_key: false,
        }
    }

    fn syntax<T>(&self, expected: &'static str) -> Result<T, Error> {
        Err(Error::Syntax(self.pos, expected))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> bool {
        let yes = self.peek() == Some(b);
        if yes {
            self.pos += 1;
        }
        yes
    }

    /// RFC 8259 `ws`: space, tab, line feed, carriage return. Nothing else.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn text(&mut self) -> Result<Json, Error> {
        let value = self.value()?;
        self.ws();
        if self.pos != self.bytes.len() {
            return self.syntax("the end of the text");
        }
        Ok(value)
    }

    fn value(&mut self) -> Result<Json, Error> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.syntax("a value"),
        }
    }

    fn literal(&mut self, word: &[u8], value: Json) -> Result<Json, Error> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            self.syntax("true, false or null")
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.pos += 1;
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
        if self.depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Json, Error> {
        self.enter()?;
        let mut members = Vec::new();
        let mut keys = HashSet::new();
        self.ws();
        if !self.eat(b'}') {
            loop {
                self.ws();
                if self.peek() != Some(b'"') {
                    return self.syntax("a member name");
                }
                let key = self.string()?;
                if !keys.insert(key.clone()) {
                    self.duplicate_key = true;
                }
                self.ws();
                if !self.eat(b':') {
                    return self.syntax("':'");
                }
                let value = self.value()?;
                members.push((key, value));
                self.ws();
                match self.next() {
                    Some(b',') => {}
                    Some(b'}') => break,
                    _ => return self.syntax("',' or '}'"),
                }
            }
        }
        self.depth -= 1;
        Ok(Json::Object(members))
    }

    fn array(&mut self) -> Result<Json, Error> {
        self.enter()?;
        let mut items = Vec::new();
        self.ws();
        if !self.eat(b']') {
            loop {
                items.push(self.value()?);
                self.ws();
                match self.next() {
                    Some(b',') => {}
                    Some(b']') => break,
                    _ => return self.syntax("',' or ']'"),
                }
            }
        }
        self.depth -= 1;
        Ok(Json::Array(items))
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let Some(hex) = self.bytes.get(self.pos..self.pos + 4) else {
            return self.syntax("four hex digits");
        };
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return self.syntax("four hex digits");
        }
        self.pos += 4;
        let hex = std::str::from_utf8(hex).expect("ASCII");
        Ok(u32::from_str_radix(hex, 16).expect("hex digits"))
    }

    fn string(&mut self) -> Result<String, Error> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let Some(b) = self.next() else {
                return self.syntax("'\"'");
            };
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let c = match self.next() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let first = self.hex4()?;
                            let code = match first {
                                0xD800..=0xDBFF => {
                                    if !(self.eat(b'\\') && self.eat(b'u')) {
                                        return self.syntax("a low surrogate escape");
                                    }
                                    let second = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&second) {
                                        return self.syntax("a low surrogate");
                                    }
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return self.syntax("no lone low surrogate"),
                                c => c,
                            };
                            char::from_u32(code).expect("a scalar value")
                        }
                        _ => return self.syntax("an escape"),
                    };
                    out.push(c);
                }
                0x00..=0x1F => return self.syntax("no control character in a string"),
                0x20..=0x7F => out.push(b as char),
                _ => {
                    // One multi-byte UTF-8 sequence; std decides whether it is valid.
                    let len = match b {
                        0xC2..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        0xF0..=0xF4 => 4,
                        _ => return self.syntax("UTF-8"),
                    };
                    let start = self.pos - 1;
                    let Some(seq) = self.bytes.get(start..start + len) else {
                        return self.syntax("UTF-8");
                    };
                    let Ok(s) = std::str::from_utf8(seq) else {
                        return self.syntax("UTF-8");
                    };
                    out.push_str(s);
                    self.pos = start + len;
                }
            }
        }
    }

    fn digits(&mut self) -> &'a [u8] {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }

    fn number(&mut self) -> Result<Json, Error> {
        let start = self.pos;
        let negative = self.eat(b'-');
        let int = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                &self.bytes[self.pos - 1..self.pos]
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.syntax("a digit"),
        };
        let mut frac: &[u8] = &[];
        if self.eat(b'.') {
            frac = self.digits();
            if frac.is_empty() {
                return self.syntax("a digit after '.'");
            }
        }
        let mut exponent: i128 = 0;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            let negative_exp = self.eat(b'-') || {
                self.eat(b'+');
                false
            };
            let digits = self.digits();
            if digits.is_empty() {
                return self.syntax("a digit in the exponent");
            }
            for &d in digits {
                exponent = (exponent * 10 + i128::from(d - b'0')).min(EXPONENT_CAP);
            }
            if negative_exp {
                exponent = -exponent;
            }
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).expect("ASCII");
        Ok(Json::Number(Decimal::from_parts(
            text, negative, int, frac, exponent,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn numbers_compare_by_exact_value() {
        assert_eq!(num("1e2"), num("100"));
        assert_eq!(num("100.0"), num("1E+2"));
        assert_eq!(num("-0"), num("0.000e-5"));
        assert_ne!(num("9007199254740993"), num("9007199254740992"));
        assert_ne!(num("99999999999999999999"), num("1e20"));
        assert_eq!(num("0.1"), num("1e-1"));
        let plain = |s| Decimal::parse_plain(s);
        assert_eq!(plain("+007.50"), Some(num("7.5")));
        assert_eq!(plain(".5"), Some(num("0.5")));
        assert_eq!(plain("-1."), Some(num("-1")));
        assert_eq!(plain("1e5"), None);
        assert_eq!(plain("."), None);
        assert_eq!(plain("inf"), None);
    }

    #[test]
    fn the_grammar_is_rfc_8259s() {
        for ok in [
            "0",
            " [1, -0.5e+3, \"a\\u00e9\\ud83d\\ude00\", {\"k\": null}] ",
            "\"\u{e9}\"",
        ] {
            assert!(parse(ok.as_bytes()).value.is_ok(), "{ok}");
        }
        for bad in [
            "01",
            "1.",
            "+1",
            ".5",
            "[1,]",
            "{\"a\"}",
            "\"\\ud800\"",
            "\"\t\"",
            "\u{feff}1",
            "1 2",
            "NaN",
            "",
        ] {
            assert!(parse(bad.as_bytes()).value.is_err(), "{bad}");
        }
        assert!(parse(b"\"\xff\"").value.is_err());
    }

    #[test]
    fn a_duplicate_key_is_noted_not_refused() {
        let p = parse(br#"{"a":1,"b":{"a":2,"\u0061":3}}"#);
        assert!(p.value.is_ok() && p.duplicate_key);
        assert_eq!(p.depth, 2);
    }
}

//! JSON reading and writing shared by both signaling formats ([`super::group`] and
//! [`super::p2p::messages`]).
//!
//! **Reading** goes through [`serde_json::Value`] by hand rather than `serde` derives, so that
//! every error can name its JSON path: a [`Path`] is built on the stack while descending and
//! rendered only when an error needs it (`transport.candidates[1].port`, the root as `$`). The
//! accessors treat `null` as absent, cap every list at [`MAX_LIST_ITEMS`], accept integers as
//! JSON numbers or decimal strings, and quote untrusted text in errors cut to a readable length.
//!
//! **Writing** is one small streaming writer ([`emit`]): fields in the order the caller
//! writes them, commas placed by the writer, strings escaped exactly as `serde_json` escapes
//! them (RFC 8259 §7), no whitespace. It writes straight into one `String`, without building a
//! `Value` tree first.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{SignalingError, Ssrc};

/// Most items any list (or object used as a map) in a signaling document may hold.
pub(crate) const MAX_LIST_ITEMS: usize = 64;

/// RFC 8445 §5.3: at most 256 ice-chars in a ufrag or password.
pub(crate) const ICE_CREDENTIAL_MAX_CHARS: usize = 256;

/// Longest DTLS fingerprint in bytes (sha-512).
const FINGERPRINT_MAX_BYTES: usize = 64;

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// A JSON path, built on the stack while descending and only rendered when an error needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path<'a> {
    /// The document itself, rendered `$`.
    Root,
    /// A key of an object.
    Key(&'a Self, &'a str),
    /// An element of an array.
    Index(&'a Self, usize),
}

impl<'a> Path<'a> {
    /// The path of `key` in the object at this path.
    pub(crate) fn key<'b>(&'b self, key: &'b str) -> Path<'b>
    where
        'a: 'b,
    {
        Path::Key(self, key)
    }

    /// The path of element `index` of the array at this path.
    pub(crate) fn index<'b>(&'b self, index: usize) -> Path<'b>
    where
        'a: 'b,
    {
        Path::Index(self, index)
    }

    /// [`SignalingError::MissingField`] for this path.
    pub(crate) fn missing(&self) -> SignalingError {
        SignalingError::MissingField {
            field: self.to_string(),
        }
    }

    /// [`SignalingError::InvalidField`] for this path.
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> SignalingError {
        SignalingError::InvalidField {
            field: self.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("$"),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// A field of `obj`, with `null` treated as absent.
pub(crate) fn optional<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A field of `obj` that must be present and not `null`.
pub(crate) fn required<'v>(
    obj: &'v Map<String, Value>,
    at: &Path<'_>,
    key: &str,
) -> Result<&'v Value, SignalingError> {
    optional(obj, key).ok_or_else(|| at.key(key).missing())
}

/// A required string field.
pub(crate) fn required_str<'v>(
    obj: &'v Map<String, Value>,
    at: &Path<'_>,
    key: &str,
) -> Result<&'v str, SignalingError> {
    string(required(obj, at, key)?, &at.key(key))
}

/// The items of an optional list field, each parsed with `item`; absent is empty.
pub(crate) fn optional_list<T>(
    obj: &Map<String, Value>,
    at: &Path<'_>,
    key: &str,
    item: impl Fn(&Value, &Path<'_>) -> Result<T, SignalingError>,
) -> Result<Vec<T>, SignalingError> {
    let Some(value) = optional(obj, key) else {
        return Ok(Vec::new());
    };
    let list_at = at.key(key);
    array(value, &list_at)?
        .iter()
        .enumerate()
        .map(|(i, v)| item(v, &list_at.index(i)))
        .collect()
}

/// An object.
pub(crate) fn object<'v>(
    value: &'v Value,
    at: &Path<'_>,
) -> Result<&'v Map<String, Value>, SignalingError> {
    value
        .as_object()
        .ok_or_else(|| at.invalid(format!("expected an object, found {}", type_name(value))))
}

/// An array of at most [`MAX_LIST_ITEMS`] elements.
pub(crate) fn array<'v>(value: &'v Value, at: &Path<'_>) -> Result<&'v [Value], SignalingError> {
    match value {
        Value::Array(list) if list.len() <= MAX_LIST_ITEMS => Ok(list),
        Value::Array(list) => Err(at.invalid(too_many(list.len()))),
        other => Err(at.invalid(format!("expected an array, found {}", type_name(other)))),
    }
}

/// A string.
pub(crate) fn string<'v>(value: &'v Value, at: &Path<'_>) -> Result<&'v str, SignalingError> {
    value
        .as_str()
        .ok_or_else(|| at.invalid(format!("expected a string, found {}", type_name(value))))
}

/// A boolean.
pub(crate) fn boolean(value: &Value, at: &Path<'_>) -> Result<bool, SignalingError> {
    value
        .as_bool()
        .ok_or_else(|| at.invalid(format!("expected a boolean, found {}", type_name(value))))
}

/// A string, or a number taken as its decimal text (for opaque ids Telegram may send either way).
pub(crate) fn text(value: &Value, at: &Path<'_>) -> Result<String, SignalingError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(at.invalid(format!(
            "expected a string or a number, found {}",
            type_name(other)
        ))),
    }
}

/// An optional [`text`] field; absent is the empty string.
pub(crate) fn optional_text(
    obj: &Map<String, Value>,
    at: &Path<'_>,
    key: &str,
) -> Result<String, SignalingError> {
    match optional(obj, key) {
        Some(value) => text(value, &at.key(key)),
        None => Ok(String::new()),
    }
}

/// An IPv4 or IPv6 address given as a string.
pub(crate) fn ip_addr(value: &Value, at: &Path<'_>) -> Result<IpAddr, SignalingError> {
    let s = string(value, at)?;
    s.parse()
        .map_err(|_| at.invalid(format!("{} is not an ip address", quoted(s))))
}

/// An integer in `min..=max`, given as a JSON number or a decimal string (optionally negative).
pub(crate) fn integer<T>(value: &Value, at: &Path<'_>, min: T, max: T) -> Result<T, SignalingError>
where
    T: Copy + fmt::Display + Into<i128> + TryFrom<i128>,
{
    // `None` = well-formed but too large even for i128, i.e. out of range.
    let parsed: Option<i128> = match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some(u.into()),
            (None, Some(i)) => Some(i.into()),
            (None, None) => return Err(at.invalid(format!("{n} is not an integer"))),
        },
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(at.invalid(format!("{} is not a decimal integer", quoted(s))));
            }
            s.parse::<i128>().ok()
        }
        other => {
            return Err(at.invalid(format!(
                "expected an integer or a decimal string, found {}",
                type_name(other)
            )));
        }
    };
    parsed
        .filter(|n| (min.into()..=max.into()).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            let shown = match value {
                Value::String(s) => quoted(s),
                other => other.to_string(),
            };
            at.invalid(format!("{shown} is out of range {min}..={max}"))
        })
}

/// An optional [`integer`] field.
pub(crate) fn optional_integer<T>(
    obj: &Map<String, Value>,
    at: &Path<'_>,
    key: &str,
    min: T,
    max: T,
) -> Result<Option<T>, SignalingError>
where
    T: Copy + fmt::Display + Into<i128> + TryFrom<i128>,
{
    match optional(obj, key) {
        Some(value) => integer(value, &at.key(key), min, max).map(Some),
        None => Ok(None),
    }
}

/// An SSRC in either the signed (MTProto `int`) or the unsigned (RTP) 32-bit range.
pub(crate) fn ssrc(value: &Value, at: &Path<'_>) -> Result<Ssrc, SignalingError> {
    let n: i64 = integer(value, at, i64::from(i32::MIN), i64::from(u32::MAX))?;
    match (u32::try_from(n), i32::try_from(n)) {
        (Ok(unsigned), _) => Ok(Ssrc(unsigned)),
        (Err(_), Ok(signed)) => Ok(Ssrc::from_i32_bits(signed)),
        // `integer` already enforced the range; kept as an error rather than a panic.
        (Err(_), Err(_)) => Err(at.invalid(format!("{n} is not a 32-bit ssrc"))),
    }
}

/// The JSON type of `value`, with an article, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The reason for a list (or map) longer than [`MAX_LIST_ITEMS`].
pub(crate) fn too_many(len: usize) -> String {
    format!("{len} items, at most {MAX_LIST_ITEMS} allowed")
}

/// Quotes untrusted text for an error message, cut to a readable length.
pub(crate) fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}...", s.get(..cut).unwrap_or_default()),
        None => format!("{s:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks of fields both formats carry
// ---------------------------------------------------------------------------------------------

/// RFC 8445 §5.3 `ice-char = ALPHA / DIGIT / "+" / "/"`, `min..=256` of them.
pub(crate) fn check_ice_credential(
    value: &str,
    at: &Path<'_>,
    min: usize,
) -> Result<(), SignalingError> {
    if let Some(bad) = value
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'))
    {
        return Err(at.invalid(format!(
            "character {bad:?} is not an ice-char (RFC 8445: ALPHA / DIGIT / + / /)"
        )));
    }
    // All ASCII now, so bytes are chars.
    if !(min..=ICE_CREDENTIAL_MAX_CHARS).contains(&value.len()) {
        return Err(at.invalid(format!(
            "{} chars, RFC 8445 requires {min}..={ICE_CREDENTIAL_MAX_CHARS}",
            value.len()
        )));
    }
    Ok(())
}

/// One fingerprint byte: exactly two hex digits (no sign, unlike `u8::from_str_radix`).
pub(crate) fn hex_byte(part: &str) -> Option<u8> {
    if part.len() == 2 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
        u8::from_str_radix(part, 16).ok()
    } else {
        None
    }
}

/// Digest size in bytes of an RFC 8122 hash name (FIPS 180-4, RFC 1321), case-insensitive.
pub(crate) fn digest_len(hash: &str) -> Option<usize> {
    match hash.to_ascii_lowercase().as_str() {
        "md5" => Some(16),
        "sha-1" => Some(20),
        "sha-224" => Some(28),
        "sha-256" => Some(32),
        "sha-384" => Some(48),
        "sha-512" => Some(64),
        _ => None,
    }
}

/// RFC 8122 §5 fingerprint: hex byte pairs joined by `:`, at most 64 of them, and as many as
/// `hash` produces when [`digest_len`] knows it (an unknown hash is the caller's decision).
pub(crate) fn check_fingerprint(
    hash: &str,
    fingerprint: &str,
    at: &Path<'_>,
) -> Result<(), SignalingError> {
    let mut bytes = 0usize;
    for part in fingerprint.split(':') {
        if hex_byte(part).is_none() {
            return Err(at.invalid(format!(
                "{} is not colon-separated hex bytes",
                quoted(fingerprint)
            )));
        }
        bytes += 1;
        if bytes > FINGERPRINT_MAX_BYTES {
            return Err(at.invalid(format!("more than {FINGERPRINT_MAX_BYTES} bytes")));
        }
    }
    match digest_len(hash) {
        Some(expected) if expected != bytes => Err(at.invalid(format!(
            "{bytes} bytes, a {hash} fingerprint has {expected}"
        ))),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Writes one JSON object with `fields` and returns its text; `capacity` is a size hint.
pub(crate) fn emit(capacity: usize, fields: impl FnOnce(&mut Object<'_>)) -> String {
    let mut out = String::with_capacity(capacity);
    write_object(&mut out, fields);
    out
}

fn write_object(out: &mut String, fields: impl FnOnce(&mut Object<'_>)) {
    out.push('{');
    fields(&mut Object { out, first: true });
    out.push('}');
}

fn write_array(out: &mut String, items: impl FnOnce(&mut Array<'_>)) {
    out.push('[');
    items(&mut Array { out, first: true });
    out.push(']');
}

/// A JSON object being written: each call adds one field, in call order.
#[derive(Debug)]
pub(crate) struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl Object<'_> {
    /// Writes the separator and `"key":`, and returns the buffer for the value.
    fn key(&mut self, key: &str) -> &mut String {
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        push_string(self.out, key);
        self.out.push(':');
        self.out
    }

    /// Adds `key` with a scalar `value`.
    pub(crate) fn field(&mut self, key: &str, value: impl Scalar) -> &mut Self {
        value.write(self.key(key));
        self
    }

    /// Adds `key` with an object value.
    pub(crate) fn object(&mut self, key: &str, fields: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        write_object(self.key(key), fields);
        self
    }

    /// Adds `key` with an array value.
    pub(crate) fn array(&mut self, key: &str, items: impl FnOnce(&mut Array<'_>)) -> &mut Self {
        write_array(self.key(key), items);
        self
    }
}

/// A JSON array being written: each call adds one element, in call order.
#[derive(Debug)]
pub(crate) struct Array<'a> {
    out: &'a mut String,
    first: bool,
}

impl Array<'_> {
    fn next(&mut self) -> &mut String {
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        self.out
    }

    /// Adds a scalar element.
    pub(crate) fn item(&mut self, value: impl Scalar) -> &mut Self {
        value.write(self.next());
        self
    }

    /// Adds an object element.
    pub(crate) fn object(&mut self, fields: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        write_object(self.next(), fields);
        self
    }
}

/// A value written as one JSON token: strings escaped, numbers and booleans bare.
pub(crate) trait Scalar {
    /// Appends the JSON text of `self` to `out`.
    fn write(self, out: &mut String);
}

impl Scalar for &str {
    fn write(self, out: &mut String) {
        push_string(out, self);
    }
}

impl Scalar for &String {
    fn write(self, out: &mut String) {
        push_string(out, self);
    }
}

impl Scalar for bool {
    fn write(self, out: &mut String) {
        out.push_str(if self { "true" } else { "false" });
    }
}

macro_rules! integer_scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn write(self, out: &mut String) {
                // Writing into a String cannot fail.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_scalar!(u8, u16, u32, u64, i32, i64);

/// A value written as a JSON string of its `Display` text (`"32001"`, `"192.0.2.1"`), for
/// numbers and addresses that a peer expects as strings. The text must need no escaping, as
/// the `Display` of numbers and IP addresses does not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quoted<T>(pub(crate) T);

impl<T: fmt::Display> Scalar for Quoted<T> {
    fn write(self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = write!(out, "\"{}\"", self.0);
    }
}

/// Text that already is one valid JSON token (e.g. a canonical unsigned integer), written as is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Raw<'a>(pub(crate) &'a str);

impl Scalar for Raw<'_> {
    fn write(self, out: &mut String) {
        out.push_str(self.0);
    }
}

/// Writes `s` as a JSON string literal (RFC 8259 §7), escaping as `serde_json` does: `"`, `\`
/// and the control characters, with the short forms `\b \t \n \f \r` where they exist.
fn push_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => {
                // Writing into a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_render_as_documented() {
        let root = Path::Root;
        let list = root.key("transport");
        let list = list.key("candidates");
        let item = list.index(1);
        assert_eq!(root.to_string(), "$");
        assert_eq!(item.key("port").to_string(), "transport.candidates[1].port");
        assert_eq!(
            root.key("ufrag").missing(),
            SignalingError::MissingField {
                field: "ufrag".into()
            }
        );
    }

    #[test]
    fn integers_accept_numbers_and_decimal_strings_within_range() {
        let at = Path::Root;
        assert_eq!(integer(&Value::from(7), &at, 0u8, 9), Ok(7));
        assert_eq!(integer(&Value::from("-3"), &at, -5i32, 5), Ok(-3));
        let too_big = integer(&Value::from("300"), &at, 0u8, 255).unwrap_err();
        assert_eq!(
            too_big.to_string(),
            "invalid field `$`: \"300\" is out of range 0..=255"
        );
        let not_decimal = integer(&Value::from("0x10"), &at, 0u8, 255).unwrap_err();
        assert!(not_decimal.to_string().contains("is not a decimal integer"));
        let float = integer(&Value::from(1.5), &at, 0u8, 255).unwrap_err();
        assert!(float.to_string().contains("1.5 is not an integer"));
    }

    #[test]
    fn lists_are_capped() {
        let long = Value::Array(vec![Value::Null; MAX_LIST_ITEMS + 1]);
        let err = array(&long, &Path::Root.key("candidates")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid field `candidates`: 65 items, at most 64 allowed"
        );
    }

    #[test]
    fn writer_places_commas_and_nests() {
        let text = emit(0, |o| {
            o.field("a", 1u8)
                .field("b", "x")
                .field("c", Quoted(42u32))
                .field("d", true)
                .field("e", Raw("10"))
                .array("f", |a| {
                    a.item(1u8).object(|o| {
                        o.field("g", false);
                    });
                })
                .object("h", |_| {})
                .array("i", |_| {});
        });
        assert_eq!(
            text,
            r#"{"a":1,"b":"x","c":"42","d":true,"e":10,"f":[1,{"g":false}],"h":{},"i":[]}"#
        );
    }

    proptest! {
        /// The writer escapes strings exactly as serde_json does, so the text parses back.
        #[test]
        fn strings_are_escaped_like_serde_json(s in any::<String>()) {
            let mut ours = String::new();
            push_string(&mut ours, &s);
            prop_assert_eq!(&ours, &serde_json::to_string(&s).unwrap());
        }
    }
}

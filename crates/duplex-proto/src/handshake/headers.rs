//! Header field grammar for the handshake: comma-separated token lists (Upgrade,
//! Connection, Sec-WebSocket-Protocol) and extension lists (Sec-WebSocket-Extensions,
//! RFC 6455 section 9.1).

use std::fmt;

use http::HeaderMap;
use http::header::HeaderName;

use super::HandshakeError;

/// Whether `c` is a `tchar` (RFC 9110 section 5.6.2): a byte allowed in a token.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Whether `s` is a non-empty token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// The elements of a comma-separated list header, over all its fields, trimmed,
/// empty elements skipped (RFC 9110 section 5.6.1). A field that is not ASCII
/// gives one element that matches nothing.
fn list_elements<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().flat_map(|value| {
        value
            .to_str()
            .unwrap_or("\u{fffd}")
            .split(',')
            .map(trim_ows)
            .filter(|element| !element.is_empty())
    })
}

/// Whether the list header `name` holds `token`, compared without regard to case.
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    list_elements(headers, name).any(|element| element.eq_ignore_ascii_case(token))
}

/// The tokens of the list header `name`, in order.
///
/// # Errors
///
/// [`HandshakeError::InvalidHeader`] if an element is not a token.
pub(crate) fn tokens(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Vec<String>, HandshakeError> {
    list_elements(headers, name)
        .map(|element| {
            if is_token(element) {
                Ok(element.to_owned())
            } else {
                Err(HandshakeError::InvalidHeader {
                    name: name.clone(),
                    reason: "each element must be a token",
                })
            }
        })
        .collect()
}

/// One extension in a `Sec-WebSocket-Extensions` header: a name and parameters.
///
/// ```
/// use duplex_proto::handshake::Extension;
/// let ext = Extension::new("permessage-deflate")
///     .with_param("client_max_window_bits", None)
///     .with_param("server_max_window_bits", Some("10"));
/// assert_eq!(
///     ext.to_string(),
///     "permessage-deflate; client_max_window_bits; server_max_window_bits=10"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extension {
    /// The extension's name, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order: a name, and a value when one was given. Quoted values
    /// are unquoted.
    pub params: Vec<(String, Option<String>)>,
}

impl Extension {
    /// An extension with no parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Extension {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter.
    pub fn with_param(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.params.push((name.into(), value.map(str::to_owned)));
        self
    }

    /// Every parameter called `name`: its value, or `None` for a bare parameter.
    pub fn param<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        self.params
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            if let Some(value) = value {
                write!(f, "={value}")?;
            }
        }
        Ok(())
    }
}

/// Formats extensions as one `Sec-WebSocket-Extensions` value.
pub(crate) fn format_extensions(extensions: &[Extension]) -> String {
    extensions
        .iter()
        .map(Extension::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses every `Sec-WebSocket-Extensions` field into a list of extensions, in
/// order (RFC 6455 section 9.1).
///
/// # Errors
///
/// [`HandshakeError::InvalidHeader`] for anything outside the grammar.
pub fn parse_extensions(headers: &HeaderMap) -> Result<Vec<Extension>, HandshakeError> {
    let name = http::header::SEC_WEBSOCKET_EXTENSIONS;
    let mut all = Vec::new();
    for value in headers.get_all(&name) {
        let invalid = |reason| HandshakeError::InvalidHeader {
            name: name.clone(),
            reason,
        };
        let text = value.to_str().map_err(|_| invalid("not ASCII"))?;
        ExtensionParser {
            rest: text.as_bytes(),
        }
        .parse_into(&mut all)
        .map_err(invalid)?;
    }
    Ok(all)
}

/// A recursive-descent parser over one header value:
///
/// ```text
/// extension-list  = *( "," OWS ) extension *( OWS "," [ OWS extension ] )
/// extension       = token *( OWS ";" OWS param )
/// param           = token [ OWS "=" OWS ( token / quoted-string ) ]
/// ```
struct ExtensionParser<'a> {
    rest: &'a [u8],
}

impl ExtensionParser<'_> {
    fn parse_into(mut self, out: &mut Vec<Extension>) -> Result<(), &'static str> {
        loop {
            self.skip_ows();
            match self.rest.first() {
                None => return Ok(()),
                Some(b',') => {
                    self.rest = &self.rest[1..];
                    continue;
                }
                Some(_) => {}
            }
            let mut extension = Extension::new(self.token().ok_or("expected an extension name")?);
            loop {
                self.skip_ows();
                match self.rest.first() {
                    None => break,
                    Some(b',') => break,
                    Some(b';') => self.rest = &self.rest[1..],
                    Some(_) => return Err("expected ';' or ','"),
                }
                self.skip_ows();
                let name = self.token().ok_or("expected a parameter name")?;
                self.skip_ows();
                let value = if self.rest.first() == Some(&b'=') {
                    self.rest = &self.rest[1..];
                    self.skip_ows();
                    Some(self.value()?)
                } else {
                    None
                };
                extension.params.push((name, value));
            }
            out.push(extension);
        }
    }

    fn skip_ows(&mut self) {
        while let Some(b' ' | b'\t') = self.rest.first() {
            self.rest = &self.rest[1..];
        }
    }

    fn token(&mut self) -> Option<String> {
        let len = self.rest.iter().take_while(|&&c| is_tchar(c)).count();
        if len == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(String::from_utf8_lossy(token).into_owned())
    }

    /// A token or a quoted string whose content is a token (section 9.1).
    fn value(&mut self) -> Result<String, &'static str> {
        if self.rest.first() != Some(&b'"') {
            return self.token().ok_or("expected a parameter value");
        }
        self.rest = &self.rest[1..];
        let mut value = Vec::new();
        loop {
            match self.rest {
                [b'"', rest @ ..] => {
                    self.rest = rest;
                    break;
                }
                [b'\\', c, rest @ ..] => {
                    value.push(*c);
                    self.rest = rest;
                }
                [c, rest @ ..] => {
                    value.push(*c);
                    self.rest = rest;
                }
                [] => return Err("unterminated quoted string"),
            }
        }
        let value = String::from_utf8(value).map_err(|_| "quoted value is not a token")?;
        if is_token(&value) {
            Ok(value)
        } else {
            Err("quoted value is not a token")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{CONNECTION, SEC_WEBSOCKET_EXTENSIONS};

    fn headers(name: HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn token_lists_are_case_insensitive_and_span_fields() {
        let h = headers(CONNECTION, &["keep-alive,  UpGrade", ""]);
        assert!(has_token(&h, &CONNECTION, "upgrade"));
        let h = headers(CONNECTION, &["keep-alive", "Upgrade"]);
        assert!(has_token(&h, &CONNECTION, "upgrade"));
        let h = headers(CONNECTION, &["keep-alive, upgraded"]);
        assert!(!has_token(&h, &CONNECTION, "upgrade"));
    }

    #[test]
    fn parses_several_offers_with_params() {
        let h = headers(
            SEC_WEBSOCKET_EXTENSIONS,
            &[
                "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate",
                "x-custom ; a = \"b\" ;c",
            ],
        );
        let exts = parse_extensions(&h).unwrap();
        assert_eq!(
            exts,
            vec![
                Extension::new("permessage-deflate")
                    .with_param("client_max_window_bits", None)
                    .with_param("server_max_window_bits", Some("10")),
                Extension::new("permessage-deflate"),
                Extension::new("x-custom")
                    .with_param("a", Some("b"))
                    .with_param("c", None),
            ]
        );
        assert_eq!(
            exts[0].param("server_max_window_bits").collect::<Vec<_>>(),
            vec![Some("10")]
        );
    }

    #[test]
    fn empty_list_elements_are_skipped() {
        let h = headers(SEC_WEBSOCKET_EXTENSIONS, &[", ,foo ,, bar;x"]);
        let names: Vec<_> = parse_extensions(&h)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["foo", "bar"]);
    }

    #[test]
    fn rejects_what_the_grammar_does_not_allow() {
        for bad in [
            "permessage-deflate; =10",
            "permessage-deflate; a=",
            "permessage-deflate; a=\"unterminated",
            "permessage-deflate; a=\"not a token\"",
            "per message",
            "a; b c",
            ";a",
        ] {
            let h = headers(SEC_WEBSOCKET_EXTENSIONS, &[bad]);
            assert!(parse_extensions(&h).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn formats_back_to_a_header_value() {
        let exts = vec![
            Extension::new("a").with_param("x", Some("1")),
            Extension::new("b"),
        ];
        assert_eq!(format_extensions(&exts), "a; x=1, b");
    }
}

//! Header names and values given to the builders, checked where they are
//! given.

use std::fmt;

use http::header::{HeaderName, HeaderValue};

/// A header that is not valid HTTP, refused by the setter it was given to:
/// [`ClientBuilder::header`](crate::ClientBuilder::header),
/// [`Acceptance::header`](crate::Acceptance::header) or
/// [`Rejection::header`](crate::Rejection::header).
///
/// It converts into [`Error::Config`](crate::Error::Config) for `?` in a
/// client, and into a 500 [`Rejection`](crate::Rejection) for `?` in a
/// request check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader {
    name: String,
    bad_name: bool,
}

impl InvalidHeader {
    /// The header's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the name is what is wrong; otherwise the value is.
    pub fn is_name(&self) -> bool {
        self.bad_name
    }
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bad_name {
            write!(
                f,
                "invalid header name {:?}: a name is letters, digits and !#$%&'*+-.^_`|~, \
                 nothing else",
                self.name
            )
        } else {
            // The value is not shown: it may be a secret (Authorization, Cookie).
            write!(
                f,
                "invalid value for header {}: a value holds no control characters \
                 and no line breaks",
                self.name
            )
        }
    }
}

impl std::error::Error for InvalidHeader {}

/// `name` and `value` as a header, or the error naming it.
pub(crate) fn parse<K, V>(name: K, value: V) -> Result<(HeaderName, HeaderValue), InvalidHeader>
where
    K: AsRef<str>,
    V: TryInto<HeaderValue>,
{
    let given = name.as_ref();
    let invalid = |bad_name| InvalidHeader {
        name: given.to_owned(),
        bad_name,
    };
    let name = HeaderName::try_from(given).map_err(|_| invalid(true))?;
    let value = value.try_into().map_err(|_| invalid(false))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_name_or_value_is_named_and_the_value_not_shown() {
        let err = parse("x bad", "ok").unwrap_err();
        assert!(err.is_name());
        assert!(err.to_string().contains("\"x bad\""), "{err}");

        let err = parse("Authorization", "Bearer secret\r\nX-Injected: 1").unwrap_err();
        assert!(!err.is_name());
        assert_eq!(err.name(), "Authorization");
        let text = err.to_string();
        assert!(text.contains("header Authorization"), "{text}");
        assert!(!text.contains("secret"), "{text}");

        let (name, value) = parse(http::header::ORIGIN, "https://example.com").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("origin", "https://example.com")
        );
    }
}

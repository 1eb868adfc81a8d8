//! Who may open which document: valid names, and the access a token's
//! `docs` claim gives.

use serde_json::Value;

use crate::auth::Claims;

/// The longest document name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// What a connection may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive the document and its updates, send awareness; updates sent
    /// are ignored.
    Read,
    /// Edit too.
    Write,
}

/// The access a token's claims give to document `name`: without a `docs`
/// claim, write access to every document; with one (an object of names or
/// `prefix*` patterns to `"read"` or `"write"`), the exact name, else the
/// longest matching pattern, decides; `None` if nothing matches.
pub fn access(claims: Option<&Claims>, name: &str) -> Option<Access> {
    let Some(docs) = claims.and_then(|c| c.docs.as_ref()) else {
        return Some(Access::Write);
    };
    let rules = docs.as_object()?;
    let parse = |v: &Value| match v.as_str() {
        Some("read") => Some(Access::Read),
        Some("write") => Some(Access::Write),
        _ => None,
    };
    if let Some(rule) = rules.get(name) {
        return parse(rule);
    }
    rules
        .iter()
        .filter_map(|(pattern, rule)| {
            let prefix = pattern.strip_suffix('*')?;
            name.starts_with(prefix).then_some((prefix.len(), rule))
        })
        .max_by_key(|(len, _)| *len)
        .and_then(|(_, rule)| parse(rule))
}

/// Whether `name` is a document name: 1 to 128 of `A-Z a-z 0-9 - _ .`, not
/// starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn access_rules() {
        let access = |claims: Option<&serde_json::Value>, name: &str| {
            let claims: Option<Claims> = claims.map(|c| serde_json::from_value(c.clone()).unwrap());
            super::access(claims.as_ref(), name)
        };
        assert_eq!(access(None, "a"), Some(Access::Write));
        assert_eq!(access(Some(&json!({"sub": "x"})), "a"), Some(Access::Write));
        let claims = json!({"docs": {"notes": "write", "team-*": "read", "team-own*": "write", "*": "read"}});
        assert_eq!(access(Some(&claims), "notes"), Some(Access::Write));
        assert_eq!(access(Some(&claims), "team-x"), Some(Access::Read));
        assert_eq!(
            access(Some(&claims), "team-own-1"),
            Some(Access::Write),
            "the longest pattern"
        );
        assert_eq!(access(Some(&claims), "other"), Some(Access::Read));
        let only = json!({"docs": {"notes": "read"}});
        assert_eq!(access(Some(&only), "other"), None);
        assert_eq!(access(Some(&json!({"docs": {"a": "admin"}})), "a"), None);
        assert_eq!(access(Some(&json!({"docs": []})), "a"), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("notes"));
        assert!(valid_name("team-1_a.md"));
        assert!(!valid_name(""));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a%20b"));
        assert!(!valid_name(&"a".repeat(129)));
    }
}

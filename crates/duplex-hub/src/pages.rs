//! The hub's pages, embedded in the binary from this crate's `web/`
//! folder: `duplex serve` works from any folder, nothing is read from disk
//! at run time, and the crate's package carries its pages.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Its bytes.
    pub body: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page served at `path` (`/`, `/chat`, `/ticker`, `/static/FILE`).
pub fn page(path: &str) -> Option<Page> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (include_str!("../web/index.html"), HTML),
        "/chat" => (include_str!("../web/chat.html"), HTML),
        "/ticker" => (include_str!("../web/ticker.html"), HTML),
        "/editor" => (include_str!("../web/editor.html"), HTML),
        "/static/editor.js" => (include_str!("../web/editor.js"), JS),
        "/static/editor.css" => (include_str!("../web/editor.css"), CSS),
        "/static/client.js" => (include_str!("../web/client.js"), JS),
        "/static/chat.js" => (include_str!("../web/chat.js"), JS),
        "/static/ticker.js" => (include_str!("../web/ticker.js"), JS),
        "/static/style.css" => (include_str!("../web/style.css"), CSS),
        _ => return None,
    };
    Some(Page { body, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(page("/").unwrap().content_type, HTML);
        assert_eq!(page("/static/client.js").unwrap().content_type, JS);
        assert_eq!(page("/static/style.css").unwrap().content_type, CSS);
        assert!(page("/static/../Cargo.toml").is_none());
        assert!(page("/nope").is_none());
    }
}

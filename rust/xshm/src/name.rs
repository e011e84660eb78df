//! Segment names, the rules every language shares (docs/LAYOUT.md section 3).
#![forbid(unsafe_code)] // pure: no OS calls, no unsafe (src/lib.rs, "Safety")

use crate::error::{Error, Result};

/// The longest name body, in bytes, after the leading '/'.
pub const MAX_NAME_BYTES: usize = 255;

/// The canonical form of a segment name: exactly one leading '/', then 1 to 255 bytes with no
/// '/' and no NUL, and not "." or "..". A name without the slash gets one. Anything else is
/// [`Error::Argument`], so every language names the same segment with the same string.
pub fn normalize_name(name: &str) -> Result<String> {
    let body = name.strip_prefix('/').unwrap_or(name);
    if body.is_empty() {
        return Err(Error::Argument("segment name is empty".into()));
    }
    if body.len() > MAX_NAME_BYTES {
        return Err(Error::Argument(format!(
            "segment name is {} bytes after the leading '/'; at most 255 are allowed",
            body.len()
        )));
    }
    if body.contains('/') {
        return Err(Error::Argument(format!(
            "segment name '{name}' contains '/' after the leading one"
        )));
    }
    if body.contains('\0') {
        return Err(Error::Argument("segment name contains a NUL byte".into()));
    }
    if body == "." || body == ".." {
        return Err(Error::Argument(format!(
            "segment name '{name}' is not allowed"
        )));
    }
    Ok(format!("/{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_canonical_or_refused() {
        assert_eq!(normalize_name("abc").unwrap(), "/abc");
        assert_eq!(normalize_name("/abc").unwrap(), "/abc");
        assert_eq!(normalize_name("a..b").unwrap(), "/a..b");
        assert_eq!(normalize_name(&"x".repeat(255)).unwrap().len(), 256);
        for bad in ["", "/", "//x", "a/b", ".", "/..", "a\0b"] {
            let e = normalize_name(bad).unwrap_err();
            assert!(matches!(e, Error::Argument(_)), "{bad:?}: {e:?}");
        }
        assert!(normalize_name(&"x".repeat(256)).is_err());
        assert!(normalize_name(&format!("/{}", "é".repeat(128))).is_err()); // 256 bytes
    }
}

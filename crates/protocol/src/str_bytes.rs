//! [`StrBytes`]: a UTF-8 string that shares the buffer it was decoded from, so decoding a topic
//! name or a client id slices the request instead of copying it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::Utf8Error;

use bytes::Bytes;

/// A string backed by [`Bytes`]. Every constructor checks (or knows) that the bytes are UTF-8,
/// once; reading it as a `&str` afterwards costs nothing.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StrBytes(Bytes);

impl StrBytes {
    /// The empty string (no allocation).
    pub const fn new() -> StrBytes {
        StrBytes(Bytes::new())
    }

    /// Wraps `bytes` after checking that they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<StrBytes, Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(StrBytes(bytes))
    }

    /// A string that lives for the whole program (no allocation).
    pub const fn from_static_str(s: &'static str) -> StrBytes {
        StrBytes(Bytes::from_static(s.as_bytes()))
    }

    /// Takes over `s`'s buffer (no copy).
    pub fn from_string(s: String) -> StrBytes {
        StrBytes(Bytes::from(s.into_bytes()))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        #[allow(unsafe_code)]
        // SAFETY: the field is private and every constructor above puts only UTF-8 in it
        // (checked by `from_utf8`, or taken from a `str`/`String`); `Bytes` never changes its
        // contents, so they are still UTF-8. Checking again here would cost a pass over the
        // string on every access, and strings are read far more often than they are decoded.
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The underlying bytes, borrowed.
    pub fn as_bytes_ref(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for StrBytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

// Hashes as the `str` it borrows as, so maps keyed by `StrBytes` can be searched with a `&str`.
impl std::hash::Hash for StrBytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl AsRef<str> for StrBytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for StrBytes {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for StrBytes {
    fn from(s: String) -> StrBytes {
        StrBytes::from_string(s)
    }
}

impl From<&'static str> for StrBytes {
    fn from(s: &'static str) -> StrBytes {
        StrBytes::from_static_str(s)
    }
}

impl From<StrBytes> for Bytes {
    fn from(s: StrBytes) -> Bytes {
        s.0
    }
}

impl TryFrom<Bytes> for StrBytes {
    type Error = Utf8Error;

    fn try_from(bytes: Bytes) -> Result<StrBytes, Utf8Error> {
        StrBytes::from_utf8(bytes)
    }
}

impl PartialEq<str> for StrBytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StrBytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for StrBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for StrBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_utf8_is_accepted() {
        assert!(StrBytes::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_err());
        let s = StrBytes::from_utf8(Bytes::from_static("höhe".as_bytes())).unwrap();
        assert_eq!(s.as_str(), "höhe");
        assert_eq!(s, "höhe");
        assert_eq!(StrBytes::from_string("a".repeat(3)).len(), 3);
        assert_eq!(format!("{:?}", StrBytes::from_static_str("t")), "\"t\"");
    }
}

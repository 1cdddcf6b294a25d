// SPDX-License-Identifier: Apache-2.0
//! The one internal error type of the core. `py_errors.rs` maps it to Python exceptions in a
//! single `From` impl; nothing here knows about PyO3.

use std::fmt;

/// Where and why a response body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeErrorInfo {
    /// Stable slug: `xml_syntax`, `dtd_forbidden`, `pi_forbidden`, `unknown_entity`, `too_deep`,
    /// `too_long`, `too_many_attributes`, `not_utf8`, `invalid_char`, `not_soap`,
    /// `unexpected_element`, `invalid_value`, `soap_fault`.
    pub kind: &'static str,
    pub msg: String,
    /// Byte offset in the body where the offending event starts.
    pub offset: u64,
    /// MoRef value of the object being decoded, when known.
    pub moref: Option<String>,
    /// Property path being decoded, when known.
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmwatchError {
    /// Malformed or unexpected input: raised as `vmwatch.DecodeError`.
    Decode(Box<DecodeErrorInfo>),
    /// Bad arguments from Python (raised as `ValueError`).
    Config(String),
    /// A bug (for example a caught panic): raised as `vmwatch.VmwatchInternalError`.
    Internal(String),
}

/// Most bytes of the input an error message quotes (a MoRef, a path, a value, a name): a 50 MB
/// `<op>` must not become a 50 MB log line. Longer input is cut at a character boundary and
/// marked with its full length.
pub const MAX_QUOTE: usize = 200;

/// Most bytes of a whole decode error message (its quotes included): the safety net for a
/// message built without [`quote`].
pub const MAX_MESSAGE: usize = 2 * MAX_QUOTE + 200;

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Input bytes as they may appear in a message: lossy UTF-8, at most [`MAX_QUOTE`] bytes, with
/// "... (N bytes)" when cut.
pub fn quote(b: &[u8]) -> String {
    quote_max(b, MAX_QUOTE)
}

/// As [`quote`], with another bound.
pub fn quote_max(b: &[u8], max: usize) -> String {
    if b.len() <= max {
        return String::from_utf8_lossy(b).into_owned();
    }
    // cutting the bytes may split a character: lossy decoding turns the tail into one U+FFFD
    let head = String::from_utf8_lossy(&b[..max]);
    format!("{}... ({} bytes)", head.trim_end_matches('\u{fffd}'), b.len())
}

/// A string taken from the input, bounded as [`quote`] does.
pub fn quote_str(s: &str) -> String {
    quote(s.as_bytes())
}

fn bound_message(mut msg: String) -> String {
    if msg.len() > MAX_MESSAGE {
        let cut = truncate_str(&msg, MAX_MESSAGE).len();
        msg.truncate(cut);
        msg.push_str("...");
    }
    msg
}

impl VmwatchError {
    #[cold]
    pub fn decode(kind: &'static str, msg: impl Into<String>, offset: u64) -> Self {
        VmwatchError::Decode(Box::new(DecodeErrorInfo {
            kind,
            msg: bound_message(msg.into()),
            offset,
            moref: None,
            path: None,
        }))
    }
}

impl fmt::Display for VmwatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmwatchError::Decode(e) => {
                write!(f, "{} at byte offset {}", e.msg, e.offset)?;
                if let Some(m) = &e.moref {
                    write!(f, " (object {}", quote_str(m))?;
                    if let Some(p) = &e.path {
                        write!(f, ", path {}", quote_str(p))?;
                    }
                    write!(f, ")")?;
                }
                Ok(())
            }
            VmwatchError::Config(m) => write!(f, "{m}"),
            VmwatchError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for VmwatchError {}

pub type Result<T> = std::result::Result<T, VmwatchError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_messages_are_bounded() {
        assert_eq!(quote(b"vm-1"), "vm-1");
        let q = quote(&[b'x'; 50 << 20]);
        assert!(
            q.len() < MAX_QUOTE + 30 && q.ends_with("(52428800 bytes)"),
            "{}",
            &q[..50]
        );
        // a cut inside a multi-byte character leaves no replacement character behind
        let q = quote("\u{e9}".repeat(MAX_QUOTE).as_bytes());
        assert!(!q.contains('\u{fffd}') && q.starts_with('\u{e9}'));
        assert_eq!(truncate_str("\u{e9}\u{e9}", 3), "\u{e9}");
        let VmwatchError::Decode(mut e) = VmwatchError::decode("invalid_value", "y".repeat(10 << 20), 7) else {
            unreachable!()
        };
        assert!(e.msg.len() <= MAX_MESSAGE + 3);
        e.moref = Some("m".repeat(1 << 20));
        e.path = Some("p".repeat(1 << 20));
        assert!(VmwatchError::Decode(e).to_string().len() < MAX_MESSAGE + 2 * MAX_QUOTE + 100);
    }
}

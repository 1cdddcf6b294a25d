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

impl VmwatchError {
    pub fn decode(kind: &'static str, msg: impl Into<String>, offset: u64) -> Self {
        VmwatchError::Decode(Box::new(DecodeErrorInfo {
            kind,
            msg: msg.into(),
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
                    write!(f, " (object {m}")?;
                    if let Some(p) = &e.path {
                        write!(f, ", path {p}")?;
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

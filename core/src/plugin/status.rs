//! A plugin's status and message as an [`Error`], and its text made printable: what the loader
//! makes of a failed call, from opening a file to a post.

use crate::error::{Error, ErrorKind};
use crate::plugin::abi::{self, Status};

/// A plugin's message made safe to show: cut at its first NUL, invalid UTF-8 replaced, and
/// control characters other than newline and tab escaped (`\u{1b}`).
pub(crate) fn printable(bytes: &[u8]) -> String {
    let bytes = bytes.split(|b| *b == 0).next().unwrap_or_default();
    let text = String::from_utf8_lossy(bytes);
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The error of a call that failed with `status`: its kind from the status, its text from the
/// plugin's message bytes.
pub(crate) fn status_error(status: Status, message: &[u8]) -> Error {
    let text = printable(message);
    let text = if text.trim().is_empty() {
        "the provider gave no message".to_string()
    } else {
        text
    };
    match abi::error_kind_from_code(status) {
        Some(kind) => Error::new(kind, text),
        None => Error::new(
            ErrorKind::Other,
            format!("the provider returned an unknown status {status}: {text}"),
        ),
    }
}

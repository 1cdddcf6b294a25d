// SPDX-License-Identifier: Apache-2.0
//! A small, zero-copy XML tokenizer for SOAP responses (the decoder's hot path).
//!
//! It checks what the decoder relies on: tags are balanced and end names match, start tags and
//! attributes are syntactically complete, comments and CDATA are closed, DTDs and processing
//! instructions (other than the XML declaration) are refused, and names, attribute values and
//! attribute counts stay under the limits below. It does not validate name characters or
//! normalise line ends (the decoder hashes text as sent); UTF-8 and NUL bytes are checked once
//! for the whole body by the decoder. Entity references stay in `Text` (see [`unescape_into`]).
//! Every error carries the byte offset where the offending construct starts; no input can make
//! it panic, recurse or loop, and memory stays proportional to the nesting depth. A broken limit
//! is `recoverable`: the tag was read whole (elements past the depth limit are counted, not kept),
//! so the decoder may skip the object update around it; any other error ends the document.

use crate::errors::quote;
use crate::scan::{self, eq_bytes, Backend, Scanner};
use memchr::{memchr, memchr2, memmem};

/// A token; every slice borrows from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok<'a> {
    /// `<name attrs>` or `<name attrs/>` (`empty`).
    Start {
        name: &'a [u8],
        attrs: &'a [u8],
        empty: bool,
    },
    /// `</name>`.
    End {
        name: &'a [u8],
    },
    /// Character data, entity references not yet resolved.
    Text(&'a [u8]),
    /// The content of `<![CDATA[...]]>`.
    CData(&'a [u8]),
    Eof,
}

/// A tokenizer error: slug, message, offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    pub kind: &'static str,
    pub msg: String,
    pub offset: u64,
    /// A limit broken by a start tag that was still read whole (`too_deep`, `too_long`,
    /// `too_many_attributes`): the tokenizer can go on, so the caller may skip the enclosing element.
    /// Every other error leaves the document undelimitable.
    pub recoverable: bool,
}

// Errors are boxed: a `Result<Tok, _>` is then no larger than a `Tok`, and the decoder's loops
// move tokens, not room for an error (copies of a larger result stalled the store buffer).
#[cold]
fn err(kind: &'static str, msg: impl Into<String>, offset: usize) -> Box<XmlError> {
    Box::new(XmlError {
        kind,
        msg: msg.into(),
        offset: offset as u64,
        recoverable: false,
    })
}

#[cold]
fn limit(kind: &'static str, msg: impl Into<String>, offset: usize) -> Box<XmlError> {
    let mut e = err(kind, msg, offset);
    e.recoverable = true;
    e
}

/// Longest attribute value, in bytes. SOAP attributes are `xmlns:*` URIs, `xsi:type` and a
/// MoRef's `type`: well under 200 bytes in real vSphere data. 64 KiB leaves room for any sane
/// producer, and keeps every value within the encoder's 16-bit length prefix (value.rs). Text
/// content is deliberately not limited like this: `guestinfo.userdata` in extraConfig can be
/// megabytes.
pub const MAX_ATTR_VALUE_LEN: usize = 64 * 1024 - 1;

/// Most attributes on one element. vCenter puts at most 5 on an element (the Envelope's `xmlns`
/// declarations); a proxy or another SOAP stack may add a few. Bounds the work per start tag.
pub const MAX_ATTRS: usize = 64;

/// Longest element name, in bytes (prefix included). vSphere's longest property and type names
/// are under 80 bytes.
pub const MAX_NAME_LEN: usize = 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

const NAME_BYTE: u8 = 0;
const NAME_END: u8 = 1;
const NAME_BAD: u8 = 2;

/// Byte classes in an element name: one table load per byte instead of a chain of compares.
static NAME_CLASS: [u8; 256] = {
    let mut t = [NAME_BYTE; 256];
    t[b' ' as usize] = NAME_END;
    t[b'\t' as usize] = NAME_END;
    t[b'\r' as usize] = NAME_END;
    t[b'\n' as usize] = NAME_END;
    t[b'/' as usize] = NAME_END;
    t[b'>' as usize] = NAME_END;
    t[b'<' as usize] = NAME_BAD;
    t[b'"' as usize] = NAME_BAD;
    t[b'\'' as usize] = NAME_BAD;
    t[b'=' as usize] = NAME_BAD;
    t[b'&' as usize] = NAME_BAD;
    t
};

#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub struct Tokenizer<'a> {
    buf: &'a [u8],
    /// Where the structural bytes are (scan.rs).
    scan: Scanner<'a>,
    pos: usize,
    /// Names of open elements.
    open: Vec<&'a [u8]>,
    max_depth: usize,
    /// Open elements beyond `max_depth` (each refused with `too_deep`, then skipped): counted, not
    /// kept, so that their end tags close them without growing `open`.
    excess: usize,
}

impl<'a> Tokenizer<'a> {
    /// A tokenizer over `buf`; a UTF-8 byte order mark is skipped (offsets still count it).
    pub fn new(buf: &'a [u8], max_depth: usize) -> Self {
        Self::with_backend(buf, max_depth, Backend::detect())
    }

    /// As [`new`](Self::new), with the given structural scan backend (tests compare them).
    pub fn with_backend(buf: &'a [u8], max_depth: usize, backend: Backend) -> Self {
        Tokenizer {
            buf,
            scan: Scanner::new(buf, backend),
            pos: if buf.starts_with(BOM) { BOM.len() } else { 0 },
            open: Vec::with_capacity(32),
            max_depth,
            excess: 0,
        }
    }

    /// Offset of the next token.
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The structural scan backend in use.
    pub fn backend(&self) -> Backend {
        self.scan.backend()
    }

    /// Number of open elements.
    #[inline]
    pub fn depth(&self) -> usize {
        self.open.len()
    }

    /// The next token. Text, end tags and start tags are read here (inlined into the decoder's
    /// loops); markup declarations, processing instructions, the end of the document and errors in
    /// [`next_other`](Self::next_other), off the hot path.
    #[inline(always)]
    pub fn next_tok(&mut self) -> Result<Tok<'a>, Box<XmlError>> {
        let buf = self.buf;
        let start = self.pos;
        if start < buf.len() {
            if buf[start] != b'<' {
                let end = self.scan.find(start + 1, |m| m.lt).unwrap_or(buf.len());
                self.pos = end;
                return Ok(Tok::Text(&buf[start..end]));
            }
            match buf.get(start + 1) {
                Some(b'/') => {
                    // `</name>` closing the innermost open element (a name never contains '>')
                    if self.excess == 0 {
                        if let Some(&open) = self.open.last() {
                            let from = start + 2;
                            let end = from + open.len();
                            if buf.get(end) == Some(&b'>') && eq_bytes(&buf[from..end], open) {
                                self.open.pop();
                                self.pos = end + 1;
                                return Ok(Tok::End { name: &buf[from..end] });
                            }
                        }
                    }
                    return self.end_tag(start);
                }
                Some(b'!' | b'?') | None => {}
                Some(_) => {
                    // `<name>`, the most frequent tag: no attributes, within the limits
                    let from = start + 1;
                    let i = scan::name_end(buf, from, self.scan.backend());
                    if buf.get(i) == Some(&b'>')
                        && i > from
                        && i - from <= MAX_NAME_LEN
                        && self.excess == 0
                        && self.open.len() < self.max_depth
                    {
                        let name = &buf[from..i];
                        self.open.push(name);
                        self.pos = i + 1;
                        return Ok(Tok::Start {
                            name,
                            attrs: &buf[i..i],
                            empty: false,
                        });
                    }
                    return self.start_tag(start);
                }
            }
        }
        self.next_other()
    }

    #[cold]
    #[inline(never)]
    fn next_other(&mut self) -> Result<Tok<'a>, Box<XmlError>> {
        loop {
            let buf = self.buf;
            let start = self.pos;
            if start >= buf.len() {
                if self.excess > 0 {
                    return Err(err(
                        "xml_syntax",
                        "unexpected end of document inside deep elements",
                        start,
                    ));
                }
                if let Some(name) = self.open.last() {
                    return Err(err(
                        "xml_syntax",
                        format!("unexpected end of document inside <{}>", quote(name)),
                        start,
                    ));
                }
                return Ok(Tok::Eof);
            }
            if buf[start] != b'<' {
                let end = self.scan.find(start + 1, |m| m.lt).unwrap_or(buf.len());
                self.pos = end;
                return Ok(Tok::Text(&buf[start..end]));
            }
            let rest = &buf[start + 1..];
            match rest.first() {
                Some(b'/') => return self.end_tag(start),
                Some(b'!') => {
                    if rest.starts_with(b"!--") {
                        let body = start + 4;
                        match memmem::find(&buf[body..], b"-->") {
                            Some(i) => self.pos = body + i + 3,
                            None => return Err(err("xml_syntax", "unclosed comment", start)),
                        }
                        continue;
                    }
                    if rest.starts_with(b"![CDATA[") {
                        if self.open.is_empty() {
                            return Err(err("xml_syntax", "CDATA outside the root element", start));
                        }
                        let body = start + 9;
                        return match memmem::find(&buf[body..], b"]]>") {
                            Some(i) => {
                                self.pos = body + i + 3;
                                Ok(Tok::CData(&buf[body..body + i]))
                            }
                            None => Err(err("xml_syntax", "unclosed CDATA section", start)),
                        };
                    }
                    if rest.starts_with(b"!DOCTYPE") || rest.starts_with(b"!ENTITY") {
                        return Err(err(
                            "dtd_forbidden",
                            "DTDs and entity declarations are not accepted",
                            start,
                        ));
                    }
                    return Err(err("xml_syntax", "unexpected markup declaration", start));
                }
                Some(b'?') => {
                    // Only the XML declaration, and only first in the document: a processing
                    // instruction anywhere else would be silently ignored, so it is refused.
                    let first = start == 0 || (start == BOM.len() && buf.starts_with(BOM));
                    let decl = first && rest.len() > 4 && rest.starts_with(b"?xml") && is_space(rest[4]);
                    let Some(i) = memmem::find(&buf[start + 2..], b"?>") else {
                        return Err(err("xml_syntax", "unclosed processing instruction", start));
                    };
                    if !decl {
                        return Err(err(
                            "pi_forbidden",
                            "processing instructions other than the XML declaration are not accepted",
                            start,
                        ));
                    }
                    self.pos = start + 2 + i + 2;
                    continue;
                }
                Some(_) => return self.start_tag(start),
                None => return Err(err("xml_syntax", "unexpected end of document after '<'", start)),
            }
        }
    }

    /// An end tag other than `</name>` of the innermost element (see `next_tok`).
    #[inline(never)]
    fn end_tag(&mut self, start: usize) -> Result<Tok<'a>, Box<XmlError>> {
        let buf = self.buf;
        let from = start + 2;
        let Some(i) = self.scan.find(from, |m| m.gt).map(|at| at - from) else {
            return Err(err("xml_syntax", "unclosed end tag", start));
        };
        let mut name = &buf[from..from + i];
        while let Some((&last, head)) = name.split_last() {
            if is_space(last) {
                name = head;
            } else {
                break;
            }
        }
        if self.excess > 0 {
            // an element refused as too deep: being skipped, its name is not checked
            self.excess -= 1;
            self.pos = from + i + 1;
            return Ok(Tok::End { name });
        }
        match self.open.pop() {
            Some(open) if open == name => {
                self.pos = from + i + 1;
                Ok(Tok::End { name })
            }
            Some(open) => Err(err(
                "xml_syntax",
                format!("end tag </{}> does not match <{}>", quote(name), quote(open)),
                start,
            )),
            None => Err(err("xml_syntax", "end tag without start tag", start)),
        }
    }

    #[inline(never)]
    fn start_tag(&mut self, start: usize) -> Result<Tok<'a>, Box<XmlError>> {
        let buf = self.buf;
        let from = start + 1;
        // name: up to whitespace, '/' or '>'
        let i = scan::name_end(buf, from, self.scan.backend());
        if i < buf.len() && NAME_CLASS[buf[i] as usize] == NAME_BAD {
            return Err(err("xml_syntax", "invalid character in element name", i));
        }
        let name = &buf[from..i];
        if name.is_empty() {
            return Err(err("xml_syntax", "element without a name", start));
        }
        // a broken limit is reported once the whole tag is read, so that the tokenizer can go on
        let mut broken: Option<Box<XmlError>> = None;
        if name.len() > MAX_NAME_LEN {
            broken = Some(limit(
                "too_long",
                format!("element name longer than {MAX_NAME_LEN} bytes"),
                start,
            ));
        }
        // find the closing '>' outside quotes; each quoted value is one attribute
        let attrs_from = i;
        let mut j = i;
        let mut values = 0usize;
        // (`<name>`, the most frequent tag, has nothing to search for)
        while buf.get(j) != Some(&b'>') {
            let Some(at) = self.scan.find(j, |m| m.gt | m.quot | m.apos) else {
                return Err(err("xml_syntax", "unclosed start tag", start));
            };
            if buf[at] == b'>' {
                j = at;
                break;
            }
            // the closing quote, or a '<' before it (one search for both)
            let dq = buf[at] == b'"';
            let close = if dq {
                self.scan.find(at + 1, |m| m.quot | m.lt)
            } else {
                self.scan.find(at + 1, |m| m.apos | m.lt)
            };
            let Some(c) = close.filter(|&c| buf[c] != b'<') else {
                let closed = if dq {
                    self.scan.find(at + 1, |m| m.quot)
                } else {
                    self.scan.find(at + 1, |m| m.apos)
                };
                return Err(match closed {
                    Some(_) => err("xml_syntax", "'<' in an attribute value", at),
                    None => err("xml_syntax", "unclosed attribute value", at),
                });
            };
            let q = c - (at + 1);
            if q > MAX_ATTR_VALUE_LEN && broken.is_none() {
                broken = Some(limit(
                    "too_long",
                    format!("attribute value longer than {MAX_ATTR_VALUE_LEN} bytes"),
                    at,
                ));
            }
            values += 1;
            if values > MAX_ATTRS && broken.is_none() {
                broken = Some(limit(
                    "too_many_attributes",
                    format!("more than {MAX_ATTRS} attributes on one element"),
                    start,
                ));
            }
            j = at + 1 + q + 1;
        }
        let empty = j > attrs_from && buf[j - 1] == b'/';
        let attrs = &buf[attrs_from..if empty { j - 1 } else { j }];
        self.pos = j + 1;
        // an empty element counts too: `<a/>` at the limit is one level too deep
        if self.excess > 0 || self.open.len() >= self.max_depth {
            if !empty {
                self.excess += 1;
            }
            return Err(limit(
                "too_deep",
                format!("elements nested deeper than {}", self.max_depth),
                start,
            ));
        }
        if !empty {
            self.open.push(name);
        }
        match broken {
            Some(e) => Err(e),
            None => Ok(Tok::Start { name, attrs, empty }),
        }
    }
}

/// Iterate `key="value"` pairs of a start tag's attribute bytes. Malformed attributes end the
/// iteration with an error.
pub struct Attrs<'a> {
    buf: &'a [u8],
    pos: usize,
    backend: Backend,
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self::with_backend(buf, Backend::detect())
    }

    /// As [`new`](Self::new), with the given scan backend (the tokenizer's).
    pub fn with_backend(buf: &'a [u8], backend: Backend) -> Self {
        Attrs { buf, pos: 0, backend }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), usize>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.buf;
        let mut i = self.pos;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let key_start = i;
        i = scan::key_end(b, i, self.backend);
        let key = &b[key_start..i];
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if key.is_empty() || i >= b.len() || b[i] != b'=' {
            self.pos = b.len();
            return Some(Err(key_start));
        }
        i += 1;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let quote = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => {
                self.pos = b.len();
                return Some(Err(key_start));
            }
        };
        let v_start = i + 1;
        let end = scan::find_byte(b, v_start, quote, self.backend);
        let Some(len) = (end < b.len()).then(|| end - v_start) else {
            self.pos = b.len();
            return Some(Err(key_start));
        };
        self.pos = v_start + len + 1;
        Some(Ok((key, &b[v_start..v_start + len])))
    }
}

/// Append `raw` text to `out` with entity and character references resolved. Only the five
/// predefined entities exist (DTDs are refused); an unknown one is an error (its offset in `raw`).
pub fn unescape_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), (usize, &'static str)> {
    let mut rest = raw;
    let mut base = 0usize;
    while let Some(amp) = memchr(b'&', rest) {
        out.extend_from_slice(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = memchr2(b';', b'&', after).filter(|&s| after[s] == b';') else {
            return Err((base + amp, "unterminated entity reference"));
        };
        let name = &after[..semi];
        match name {
            b"amp" => out.push(b'&'),
            b"lt" => out.push(b'<'),
            b"gt" => out.push(b'>'),
            b"quot" => out.push(b'"'),
            b"apos" => out.push(b'\''),
            _ if name.first() == Some(&b'#') => {
                let code = if let Some(hex) = name[1..].strip_prefix(b"x") {
                    std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                } else {
                    std::str::from_utf8(&name[1..]).ok().and_then(|d| d.parse::<u32>().ok())
                };
                match code.and_then(char::from_u32).filter(|&c| c != '\0') {
                    Some(c) => {
                        let mut tmp = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                    }
                    None => return Err((base + amp, "invalid character reference")),
                }
            }
            _ => return Err((base + amp, "undeclared entity")),
        }
        let consumed = amp + 1 + semi + 1;
        rest = &rest[consumed..];
        base += consumed;
    }
    out.extend_from_slice(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Result<Vec<Tok<'_>>, Box<XmlError>> {
        let mut t = Tokenizer::new(s.as_bytes(), 64);
        let mut out = Vec::new();
        loop {
            let tok = t.next_tok()?;
            if tok == Tok::Eof {
                return Ok(out);
            }
            out.push(tok);
        }
    }

    #[test]
    fn basic() {
        let t = toks("<?xml version='1.0'?><!-- c --><a x='1' y=\"2\"><b/>t<![CDATA[<x>]]></a >").unwrap();
        assert_eq!(
            t,
            vec![
                Tok::Start {
                    name: b"a",
                    attrs: b" x='1' y=\"2\"",
                    empty: false
                },
                Tok::Start {
                    name: b"b",
                    attrs: b"",
                    empty: true
                },
                Tok::Text(b"t"),
                Tok::CData(b"<x>"),
                Tok::End { name: b"a" },
            ]
        );
    }

    #[test]
    fn a_quote_or_lt_ends_an_attribute_value() {
        let e = toks("<a b=\"x<y\">").unwrap_err();
        assert_eq!((e.msg.as_str(), e.offset), ("'<' in an attribute value", 5));
        let e = toks("<a b='x<y'>").unwrap_err();
        assert_eq!((e.msg.as_str(), e.offset), ("'<' in an attribute value", 5));
        let e = toks("<a b=\"x y>").unwrap_err();
        assert_eq!((e.msg.as_str(), e.offset), ("unclosed attribute value", 5));
        let e = toks("<a b=\"x<y>").unwrap_err();
        assert_eq!((e.msg.as_str(), e.offset), ("unclosed attribute value", 5));
        assert_eq!(toks("<a b='x\"y' c=\"'\"/>").unwrap().len(), 1);
    }

    #[test]
    fn errors() {
        assert_eq!(toks("<a></b>").unwrap_err().kind, "xml_syntax");
        assert_eq!(toks("<a>").unwrap_err().kind, "xml_syntax");
        assert_eq!(toks("</a>").unwrap_err().kind, "xml_syntax");
        assert_eq!(toks("<a x='>").unwrap_err().kind, "xml_syntax");
        assert_eq!(toks("<!DOCTYPE a><a/>").unwrap_err().kind, "dtd_forbidden");
        assert_eq!(toks("<a><!-- </a>").unwrap_err().kind, "xml_syntax");
        assert_eq!(toks(&"<a>".repeat(65)).unwrap_err().kind, "too_deep");
        assert_eq!(toks("<a x='>'>").unwrap_err().offset, 9, "'>' is fine inside a value");
        assert_eq!(toks("<>").unwrap_err().kind, "xml_syntax");
    }

    #[test]
    fn depth_limit_counts_empty_elements_and_needs_no_recursion() {
        let ok = format!("{}{}", "<a>".repeat(64), "</a>".repeat(64));
        assert!(toks(&ok).is_ok());
        assert!(toks(&format!("{}<b/>{}", "<a>".repeat(64), "</a>".repeat(64))).is_err());
        // far deeper than any stack would allow if the tokenizer recursed
        let e = toks(&"<a>".repeat(1_000_000)).unwrap_err();
        assert_eq!((e.kind, e.offset), ("too_deep", 64 * 3));
    }

    #[test]
    fn processing_instructions() {
        assert!(toks("<?xml version='1.0'?><a/>").is_ok());
        assert!(toks("\u{feff}<?xml version='1.0'?><a/>").is_ok(), "after a BOM");
        for bad in [
            "<a><?xml-stylesheet x?></a>",
            "<?php x ?><a/>",
            "<a/><?xml version='1.0'?>",
            " <?xml v?><a/>",
        ] {
            let e = toks(bad).unwrap_err();
            assert_eq!(e.kind, "pi_forbidden", "{bad}");
            assert_eq!(&bad[e.offset as usize..e.offset as usize + 2], "<?");
        }
        assert_eq!(toks("<?xml version='1.0'").unwrap_err().kind, "xml_syntax");
    }

    #[test]
    fn attribute_value_limit() {
        let at = |n: usize| format!("<a x='{}'/>", "v".repeat(n));
        assert!(toks(&at(MAX_ATTR_VALUE_LEN)).is_ok());
        let e = toks(&at(MAX_ATTR_VALUE_LEN + 1)).unwrap_err();
        assert_eq!((e.kind, e.offset), ("too_long", 5));
        assert_eq!(toks("<a x='<'/>").unwrap_err().kind, "xml_syntax");
    }

    #[test]
    fn attribute_count_limit() {
        let tag = |n: usize| format!("<a{}/>", (0..n).map(|i| format!(" a{i}=''")).collect::<String>());
        assert!(toks(&tag(MAX_ATTRS)).is_ok());
        let e = toks(&tag(MAX_ATTRS + 1)).unwrap_err();
        assert_eq!((e.kind, e.offset), ("too_many_attributes", 0));
        assert_eq!(toks(&tag(1_000_000)).unwrap_err().kind, "too_many_attributes");
    }

    #[test]
    fn name_limit() {
        let el = |n: usize| format!("<r><{0}/></r>", "n".repeat(n));
        assert!(toks(&el(MAX_NAME_LEN)).is_ok());
        let e = toks(&el(MAX_NAME_LEN + 1)).unwrap_err();
        assert_eq!((e.kind, e.offset), ("too_long", 3));
    }

    #[test]
    fn a_broken_limit_can_be_skipped() {
        // every token after a limit error is still right: the caller may skip the element
        let deep = format!("<r><s>{}x{}</s><t/></r>", "<a>".repeat(100), "</a>".repeat(100));
        let mut long = format!(
            "<r><s><b x='{}'/><{}>y</",
            "v".repeat(MAX_ATTR_VALUE_LEN + 1),
            "n".repeat(2000)
        );
        long.push_str(&format!("{}></s><t/></r>", "n".repeat(2000)));
        for doc in [deep, long] {
            let mut t = Tokenizer::new(doc.as_bytes(), 64);
            let (mut limits, mut tail) = (0, Vec::new());
            loop {
                match t.next_tok() {
                    Ok(Tok::Eof) => break,
                    Ok(tok) => tail.push(tok),
                    Err(e) => {
                        assert!(e.recoverable, "{e:?}");
                        limits += 1;
                        tail.clear();
                    }
                }
            }
            assert!(limits > 0);
            // after the last refused tag: the rest of <s>, then <t/> and </r> as usual
            let n = tail.len();
            assert_eq!(
                &tail[n - 3..],
                &[
                    Tok::End { name: b"s" },
                    Tok::Start {
                        name: b"t",
                        attrs: b"",
                        empty: true
                    },
                    Tok::End { name: b"r" }
                ]
            );
            assert_eq!(t.depth(), 0);
        }
        // syntax errors are not recoverable, nor is the end of the document inside refused elements
        assert!(!toks("<a></b>").unwrap_err().recoverable);
        let mut t = Tokenizer::new(b"<a><b><c>", 1);
        assert!(t.next_tok().is_ok());
        assert!(t.next_tok().unwrap_err().recoverable);
        assert!(t.next_tok().unwrap_err().recoverable);
        assert!(!t.next_tok().unwrap_err().recoverable);
    }

    /// Every token and error (or the end) of `doc`, with the offset after each.
    fn stream(doc: &[u8], backend: Backend, depth: usize) -> Vec<(Result<Tok<'_>, Box<XmlError>>, usize)> {
        let mut t = Tokenizer::with_backend(doc, depth, backend);
        let mut out = Vec::new();
        for _ in 0..doc.len() + 2 {
            let r = t.next_tok();
            let done = matches!(r, Ok(Tok::Eof)) || matches!(&r, Err(e) if !e.recoverable);
            out.push((r, t.pos()));
            if done {
                break;
            }
        }
        out
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    /// Random documents built from XML fragments, well-formed and not: both scan backends must give
    /// the same tokens, errors, offsets and positions (`VMWATCH_XML_SCALAR=1 cargo test` also runs
    /// every other test on the scalar one).
    #[test]
    fn scalar_and_simd_backends_give_identical_streams() {
        const PIECES: &[&str] = &[
            "<a>",
            "</a>",
            "<b x='1'>",
            "</b>",
            "<c/>",
            "<d y=\"v\" z='w'/>",
            "text",
            " ",
            "\n\t",
            "&amp;",
            "&",
            "<!-- c -->",
            "<!--",
            "-->",
            "<![CDATA[x<y]]>",
            "<![CDATA[",
            "]]>",
            "<?xml version='1.0'?>",
            "<?pi?>",
            "<!DOCTYPE x>",
            "<",
            ">",
            "'",
            "\"",
            "=",
            "/",
            "</",
            "/>",
            "<e a='<'>",
            "<e a='>'>",
            "</a >",
            "<f\ta='1'\n/>",
            "<ns:g xmlns:ns='u'>",
            "</ns:g>",
            "<",
            "é",
            "<h a=\"",
            "<\u{e9}l>",
            "</\u{e9}l>",
            "\u{feff}",
        ];
        let mut seed = 0x5eed;
        let mut long = 0;
        for round in 0..4000 {
            let n = 1 + lcg(&mut seed) as usize % 40;
            let mut doc = String::new();
            for _ in 0..n {
                doc.push_str(PIECES[lcg(&mut seed) as usize % PIECES.len()]);
                // long names, values and text cross the 16- and 64-byte boundaries of the scan
                if lcg(&mut seed) % 10 == 0 {
                    let len = lcg(&mut seed) as usize % 150;
                    doc.push_str(&"n".repeat(len));
                    long += 1;
                }
            }
            if round % 50 == 0 {
                doc = format!("<r>{}{}", "<a>".repeat(round / 50), doc);
            }
            let depth = 1 + lcg(&mut seed) as usize % 8;
            let scalar = stream(doc.as_bytes(), Backend::Scalar, depth);
            let simd = stream(doc.as_bytes(), Backend::best(), depth);
            assert_eq!(scalar, simd, "{doc:?}");
            for (tok, _) in &scalar {
                if let Ok(Tok::Start { attrs, .. }) = tok {
                    let a: Vec<_> = Attrs::with_backend(attrs, Backend::Scalar).collect();
                    let b: Vec<_> = Attrs::with_backend(attrs, Backend::best()).collect();
                    assert_eq!(a, b, "{attrs:?}");
                }
            }
        }
        assert!(long > 1000);
    }

    #[test]
    fn limits_hold_on_both_backends() {
        for backend in [Backend::Scalar, Backend::best()] {
            let run = |doc: &str| {
                let mut t = Tokenizer::with_backend(doc.as_bytes(), 64, backend);
                loop {
                    match t.next_tok() {
                        Ok(Tok::Eof) => return None,
                        Ok(_) => {}
                        Err(e) => return Some((e.kind, e.offset)),
                    }
                }
            };
            assert_eq!(run(&"<a>".repeat(65)), Some(("too_deep", 64 * 3)));
            let at = format!("<a x='{}'/>", "v".repeat(MAX_ATTR_VALUE_LEN + 1));
            assert_eq!(run(&at), Some(("too_long", 5)));
            let tag = format!(
                "<a{}/>",
                (0..MAX_ATTRS + 1).map(|i| format!(" a{i}=''")).collect::<String>()
            );
            assert_eq!(run(&tag), Some(("too_many_attributes", 0)));
            assert_eq!(
                run(&format!("<r><{}/></r>", "n".repeat(MAX_NAME_LEN + 1))),
                Some(("too_long", 3))
            );
            assert_eq!(run("<a x='<'/>"), Some(("xml_syntax", 5)));
            assert_eq!(run(&format!("<{}&/>", "n".repeat(40))), Some(("xml_syntax", 41)));
            assert_eq!(run(&format!("<a>{}</b>", "t".repeat(100))), Some(("xml_syntax", 103)));
        }
    }

    #[test]
    fn messages_quote_little_of_the_input() {
        let long = "n".repeat(50 << 20);
        let e = toks(&format!("<a></{long}>")).unwrap_err();
        assert!(e.msg.len() < 300, "{}", e.msg.len());
        assert!(e.msg.contains("(52428800 bytes)"));
    }

    #[test]
    fn attributes() {
        for backend in [Backend::Scalar, Backend::best()] {
            let a: Vec<_> = Attrs::with_backend(b" a='1' b = \"x y\"", backend).collect();
            assert_eq!(a, vec![Ok((&b"a"[..], &b"1"[..])), Ok((&b"b"[..], &b"x y"[..]))]);
            assert!(Attrs::with_backend(b" a", backend).next().unwrap().is_err());
            assert!(Attrs::with_backend(b" a=1", backend).next().unwrap().is_err());
            let long = format!(" {}='{}' k=\"{}\"", "n".repeat(40), "v".repeat(50), "'".repeat(20));
            let a: Vec<_> = Attrs::with_backend(long.as_bytes(), backend).collect();
            assert_eq!(a.len(), 2);
            assert_eq!(a[1], Ok((&b"k"[..], "'".repeat(20).as_bytes())));
            assert!(
                Attrs::with_backend(format!(" k='{}", "v".repeat(40)).as_bytes(), backend)
                    .next()
                    .unwrap()
                    .is_err()
            );
        }
    }

    #[test]
    fn unescape() {
        let mut out = Vec::new();
        unescape_into(b"a&amp;b&lt;&#x2F;&#47;&quot;", &mut out).unwrap();
        assert_eq!(out, b"a&b</\x2f\"");
        assert!(unescape_into(b"&bogus;", &mut Vec::new()).is_err());
        assert!(unescape_into(b"a & b", &mut Vec::new()).is_err());
        assert!(unescape_into(b"&#0;", &mut Vec::new()).is_err());
        assert!(unescape_into(b"&#xD800;", &mut Vec::new()).is_err());
    }
}

// SPDX-License-Identifier: Apache-2.0
//! Decoder of raw `WaitForUpdatesExResponse` SOAP bodies (and SOAP faults).
//!
//! One pass over the bytes with a zero-copy tokenizer (xml.rs); property values are not
//! materialised but streamed into [`ValueEncoder`] and reduced to fingerprints on the spot.
//! Element and attribute names are matched by local name, so any namespace prefix works;
//! `xsi:` is recognised by its namespace URI (declared anywhere) or, undeclared, by the usual
//! prefix. DTDs (and so entity declarations) are refused, nesting is bounded by [`MAX_DEPTH`],
//! start tags by the limits in xml.rs, XSI prefixes in scope by [`MAX_XSI_PREFIXES`]; the body
//! must be UTF-8 without NUL bytes. Every error carries the byte offset of the offending event.
//! Memory is proportional to the number of changes (and to the largest single value), never to
//! the nesting or to the whole body.

use crate::errors::{DecodeErrorInfo, Result, VmwatchError};
use crate::filter::{keyed_extra_config_key, Filter, DEVICE_PATH, EXTRA_CONFIG_PATH};
use crate::value::ValueEncoder;
use crate::xml::{unescape_into, Attrs as RawAttrs, Tok, Tokenizer};
use memchr::memmem;
use std::borrow::Cow;
use std::sync::LazyLock;

// Change kinds. Must match vmwatch.types.Kind and the KIND_* constants of vmwatch._vmwatch.
pub const KIND_ENTER: u8 = 0;
pub const KIND_MODIFY: u8 = 1;
pub const KIND_LEAVE: u8 = 2;

/// Deeper documents are refused. The SOAP structure takes 8 levels down to a `<val>`; the
/// captures in tests/data reach 12 in all. The deepest value vSphere can produce is a snapshot
/// tree, one `childSnapshotList` level per snapshot, and a chain is capped at 32 snapshots: about
/// 45 levels in all. 256 is far above that, and keeps the tokenizer's open-element stack (the only
/// per-level memory: parsing is iterative, so depth never touches the call stack) tiny.
pub const MAX_DEPTH: usize = 256;

/// Distinct prefixes bound to the XSI namespace at once. vCenter binds one (`xsi`), vcsim one
/// per `<val>` (`_XMLSchema-instance`, repeated: a repeated binding is not counted). Every
/// prefixed attribute is checked against these, so the bound keeps that check cheap.
pub const MAX_XSI_PREFIXES: usize = 16;

const XSI_NS: &[u8] = b"http://www.w3.org/2001/XMLSchema-instance";

static XMLNS_FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"xmlns:"));

/// A SOAP fault returned instead of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapFault {
    /// `xsi:type` of the fault detail (or its element name without the `Fault` suffix), else the
    /// faultcode.
    pub fault_type: String,
    pub message: String,
}

/// One property change, reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    /// `None` when the change is not fingerprinted (a keyed path of an ignored extraConfig key).
    pub fp: Option<u64>,
    /// For extraConfig changes: the `"ns/name"` the change carries (`Some(None)`: it carries none,
    /// which replaces an earlier name of the same coalesced update, spec 3 step B quirk).
    pub name: Option<Option<(String, String)>>,
    /// Sorted kept extraConfig keys, only when requested.
    pub kept_keys: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUpdate {
    pub moref: String,
    pub obj_type: String,
    pub kind: u8,
    pub changes: Vec<Change>,
}

/// `(moref, path, fault type)`; path is empty for a missing object.
pub type Missing = (String, String, String);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateSet {
    /// `None` when the response carried no UpdateSet (a heartbeat).
    pub version: Option<String>,
    pub truncated: bool,
    pub objects: Vec<ObjectUpdate>,
    pub missing: Vec<Missing>,
}

impl UpdateSet {
    pub fn changes(&self) -> usize {
        self.objects.iter().map(|o| o.changes.len()).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Update(UpdateSet),
    Fault(SoapFault),
}

#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Collect the kept extraConfig keys of each change (for `vmwatch decode`).
    pub kept_keys: bool,
}

/// Decode one body.
pub fn decode(body: &[u8], filter: &Filter, opts: DecodeOptions) -> Result<Decoded> {
    check_chars(body)?;
    let mut p = Parser::new(body, filter, opts);
    p.document().map_err(|e| p.locate(e))
}

/// The whole body is UTF-8 and free of NUL bytes (XML allows neither): checked once, up front,
/// so that no text, name or attribute is ever decoded lossily.
fn check_chars(body: &[u8]) -> Result<()> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(VmwatchError::decode(
            "not_utf8",
            "the body is not valid UTF-8",
            e.valid_up_to() as u64,
        ));
    }
    if let Some(i) = memchr::memchr(0, body) {
        return Err(VmwatchError::decode("invalid_char", "NUL byte in the body", i as u64));
    }
    Ok(())
}

/// Attributes of interest on a start tag, references resolved.
#[derive(Default)]
struct Attrs<'a> {
    /// Local part of `xsi:type`.
    xsi_type: Cow<'a, [u8]>,
    nil: bool,
    /// Unprefixed `type` (a MoRef's type).
    mo_type: Cow<'a, [u8]>,
}

/// A start tag.
#[derive(Clone, Copy)]
struct Elem<'a> {
    name: &'a [u8],
    attrs: &'a [u8],
}

fn local(name: &[u8]) -> &[u8] {
    match memchr_colon(name) {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

#[inline]
fn memchr_colon(b: &[u8]) -> Option<usize> {
    memchr::memchr(b':', b)
}

/// Slug of an [`unescape_into`] error.
fn entity_kind(msg: &str) -> &'static str {
    if msg == "undeclared entity" {
        "unknown_entity"
    } else {
        "xml_syntax"
    }
}

#[inline]
fn all_space(t: &[u8]) -> bool {
    t.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
}

struct Parser<'a, 'f> {
    body: &'a [u8],
    tok: Tokenizer<'a>,
    filter: &'f Filter,
    opts: DecodeOptions,
    last_pos: u64,
    /// Prefixes bound to the XSI namespace, with the depth of their declaration.
    xsi_prefixes: Vec<(&'a [u8], usize)>,
    pop_after_empty: bool,
    text: Vec<u8>,
    refbuf: Vec<u8>,
    enc: ValueEncoder,
    cur_moref: Option<String>,
    cur_path: Option<String>,
}

impl<'a, 'f> Parser<'a, 'f> {
    fn new(body: &'a [u8], filter: &'f Filter, opts: DecodeOptions) -> Self {
        Parser {
            body,
            tok: Tokenizer::new(body, MAX_DEPTH),
            filter,
            opts,
            last_pos: 0,
            xsi_prefixes: Vec::new(),
            pop_after_empty: false,
            text: Vec::new(),
            refbuf: Vec::new(),
            enc: ValueEncoder::new(),
            cur_moref: None,
            cur_path: None,
        }
    }

    fn err(&self, kind: &'static str, msg: impl Into<String>) -> VmwatchError {
        VmwatchError::decode(kind, msg, self.last_pos)
    }

    fn locate(&self, e: VmwatchError) -> VmwatchError {
        match e {
            VmwatchError::Decode(mut info) => {
                if info.moref.is_none() {
                    info.moref = self.cur_moref.clone();
                }
                if info.path.is_none() {
                    info.path = self.cur_path.clone();
                }
                VmwatchError::Decode(info)
            }
            other => other,
        }
    }

    fn depth(&self) -> usize {
        self.tok.depth()
    }

    /// Next token; tracks `xmlns:` declarations of the XSI namespace.
    #[inline]
    fn next(&mut self) -> Result<Tok<'a>> {
        if self.pop_after_empty {
            self.pop_after_empty = false;
            self.pop_xmlns(self.depth() + 1);
        }
        self.last_pos = self.tok.pos() as u64;
        let t = self
            .tok
            .next_tok()
            .map_err(|e| VmwatchError::decode(e.kind, e.msg, e.offset))?;
        if let Tok::End { .. } = t {
            self.pop_xmlns(self.depth() + 1);
        }
        Ok(t)
    }

    /// Register the XSI prefixes a start tag declares (at its own depth). Called for every
    /// element whose content is interpreted: structural ones in `children`, and inside values
    /// in the same pass that reads `xsi:type`; skipped subtrees need none.
    #[inline]
    fn declare(&mut self, attrs: &'a [u8], empty: bool) -> Result<()> {
        if attrs.len() > 6 && XMLNS_FINDER.find(attrs).is_some() {
            // declarations of a non-empty element live at its (new) depth
            let depth = self.depth() + usize::from(empty);
            self.scan_xmlns(attrs, depth)?;
            self.pop_after_empty = empty;
        }
        Ok(())
    }

    fn scan_xmlns(&mut self, attrs: &'a [u8], depth: usize) -> Result<()> {
        for a in RawAttrs::new(attrs) {
            let (key, value) = a.map_err(|_| self.err("xml_syntax", "malformed attribute"))?;
            if let Some(prefix) = key.strip_prefix(b"xmlns:") {
                // an already bound prefix stays bound as long as this one would
                if *self.attr_value(value)? == *XSI_NS && !self.xsi_prefixes.iter().any(|(p, _)| *p == prefix) {
                    if self.xsi_prefixes.len() >= MAX_XSI_PREFIXES {
                        return Err(self.err(
                            "too_many_attributes",
                            format!("more than {MAX_XSI_PREFIXES} prefixes bound to the XSI namespace"),
                        ));
                    }
                    self.xsi_prefixes.push((prefix, depth));
                }
            }
        }
        Ok(())
    }

    /// An attribute value (a slice of the body) with references resolved.
    fn attr_value(&self, value: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        if memchr::memchr(b'&', value).is_none() {
            return Ok(Cow::Borrowed(value));
        }
        let at = (value.as_ptr() as usize).wrapping_sub(self.body.as_ptr() as usize) as u64;
        let mut out = Vec::with_capacity(value.len());
        unescape_into(value, &mut out)
            .map_err(|(off, msg)| VmwatchError::decode(entity_kind(msg), msg, at + off as u64))?;
        Ok(Cow::Owned(out))
    }

    fn pop_xmlns(&mut self, depth: usize) {
        while let Some(&(_, d)) = self.xsi_prefixes.last() {
            if d >= depth {
                self.xsi_prefixes.pop();
            } else {
                break;
            }
        }
    }

    fn is_xsi_prefix(&self, prefix: &[u8]) -> bool {
        if self.xsi_prefixes.is_empty() {
            return prefix == b"xsi";
        }
        self.xsi_prefixes.iter().any(|(p, _)| *p == prefix)
    }

    fn attrs(&self, e: Elem<'a>) -> Result<Attrs<'a>> {
        let mut out = Attrs::default();
        if e.attrs.is_empty() {
            return Ok(out);
        }
        // (xsi:type, xsi:nil, type) seen: a repeated one is not well-formed and would be ambiguous
        let mut seen = [false; 3];
        for a in RawAttrs::new(e.attrs) {
            let (key, value) = a.map_err(|_| self.err("xml_syntax", "malformed attribute"))?;
            let slot = match memchr_colon(key) {
                Some(i) => {
                    let (prefix, name) = (&key[..i], &key[i + 1..]);
                    if prefix == b"xmlns" || !self.is_xsi_prefix(prefix) {
                        continue;
                    }
                    match name {
                        b"type" => {
                            out.xsi_type = match self.attr_value(value)? {
                                Cow::Borrowed(v) => Cow::Borrowed(local(v)),
                                Cow::Owned(v) => Cow::Owned(local(&v).to_vec()),
                            };
                            0
                        }
                        b"nil" => {
                            let v = self.attr_value(value)?;
                            out.nil = *v == *b"true" || *v == *b"1";
                            1
                        }
                        _ => continue,
                    }
                }
                None if key == b"type" => {
                    out.mo_type = self.attr_value(value)?;
                    2
                }
                None => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(self.err(
                    "xml_syntax",
                    format!("duplicate attribute {}", String::from_utf8_lossy(key)),
                ));
            }
        }
        Ok(out)
    }

    fn unescape(&self, raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
        unescape_into(raw, out)
            .map_err(|(off, msg)| VmwatchError::decode(entity_kind(msg), msg, self.last_pos + off as u64))
    }

    /// Skip the rest of an element whose start tag was just read.
    fn skip(&mut self) -> Result<()> {
        let target = self.depth() - 1;
        loop {
            match self.next()? {
                Tok::End { .. } if self.depth() == target => return Ok(()),
                Tok::Text(t) if memchr::memchr(b'&', t).is_some() => {
                    let mut sink = std::mem::take(&mut self.refbuf);
                    sink.clear();
                    let r = self.unescape(t, &mut sink);
                    self.refbuf = sink;
                    r?;
                }
                Tok::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
                _ => {}
            }
        }
    }

    /// Text content of a leaf element whose start tag was just read (entities resolved, CDATA merged).
    fn read_text(&mut self) -> Result<String> {
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let r = self.read_text_into(&mut text);
        let out = r.and_then(|()| match std::str::from_utf8(&text) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.err("not_utf8", "text is not valid UTF-8")),
        });
        self.text = text;
        out
    }

    fn read_text_into(&mut self, text: &mut Vec<u8>) -> Result<()> {
        loop {
            match self.next()? {
                Tok::Text(t) => {
                    if memchr::memchr(b'&', t).is_some() {
                        self.unescape(t, text)?;
                    } else {
                        text.extend_from_slice(t);
                    }
                }
                Tok::CData(t) => text.extend_from_slice(t),
                Tok::End { .. } => return Ok(()),
                Tok::Start { name, .. } => {
                    return Err(self.err(
                        "unexpected_element",
                        format!("unexpected element <{}> in text", String::from_utf8_lossy(name)),
                    ))
                }
                Tok::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
            }
        }
    }

    fn leaf_text(&mut self, empty: bool) -> Result<String> {
        if empty {
            Ok(String::new())
        } else {
            self.read_text()
        }
    }

    /// Iterate children of the current element: calls `f(parser, elem, is_empty)` for each child
    /// element; `f` must consume the child (via read_text/skip/...) when it is not empty.
    fn children<F>(&mut self, mut f: F) -> Result<()>
    where
        F: FnMut(&mut Self, Elem<'a>, bool) -> Result<()>,
    {
        let target = self.depth() - 1;
        loop {
            match self.next()? {
                Tok::Start { name, attrs, empty } => {
                    self.declare(attrs, empty)?;
                    f(self, Elem { name, attrs }, empty)?
                }
                Tok::End { .. } if self.depth() == target => return Ok(()),
                Tok::End { .. } => return Err(self.err("xml_syntax", "unbalanced end tag")),
                Tok::Text(t) if !all_space(t) => {
                    return Err(self.err("unexpected_element", "unexpected text between elements"));
                }
                Tok::CData(_) => return Err(self.err("unexpected_element", "unexpected CDATA between elements")),
                Tok::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
                Tok::Text(_) => {}
            }
        }
    }

    fn document(&mut self) -> Result<Decoded> {
        // <Envelope>
        let env = loop {
            match self.next()? {
                Tok::Start { name, attrs, empty } => {
                    self.declare(attrs, empty)?;
                    break (Elem { name, attrs }, empty);
                }
                Tok::Text(t) if all_space(t) => continue,
                Tok::Eof => return Err(self.err("not_soap", "empty document: no SOAP envelope")),
                _ => return Err(self.err("not_soap", "expected a SOAP envelope")),
            }
        };
        if local(env.0.name) != b"Envelope" || env.1 {
            return Err(self.err("not_soap", "root element is not a SOAP Envelope"));
        }
        let mut out: Option<Decoded> = None;
        self.children(|p, s, empty| {
            match local(s.name) {
                b"Body" if !empty => {
                    p.children(|p, s, empty| {
                        let name = local(s.name);
                        match name {
                            b"Fault" => {
                                out = Some(Decoded::Fault(if empty { p.empty_fault() } else { p.fault()? }));
                            }
                            _ if name.ends_with(b"Response") => {
                                out = Some(Decoded::Update(if empty {
                                    UpdateSet::default()
                                } else {
                                    p.response()?
                                }));
                            }
                            _ => {
                                return Err(p.err(
                                    "unexpected_element",
                                    format!("unexpected <{}> in SOAP Body", String::from_utf8_lossy(name)),
                                ))
                            }
                        }
                        Ok(())
                    })?;
                }
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })?;
        // trailing content
        loop {
            match self.next()? {
                Tok::Eof => break,
                Tok::Text(t) if all_space(t) => {}
                _ => return Err(self.err("xml_syntax", "content after the SOAP envelope")),
            }
        }
        out.ok_or_else(|| self.err("not_soap", "SOAP Body has no response or fault"))
    }

    fn empty_fault(&self) -> SoapFault {
        SoapFault {
            fault_type: String::new(),
            message: String::new(),
        }
    }

    fn fault(&mut self) -> Result<SoapFault> {
        let mut code = String::new();
        let mut message = String::new();
        let mut detail_type = String::new();
        self.children(|p, s, empty| {
            match local(s.name) {
                b"faultcode" => code = p.leaf_text(empty)?,
                b"faultstring" => message = p.leaf_text(empty)?,
                b"detail" if !empty => {
                    p.children(|p, s, empty| {
                        if detail_type.is_empty() {
                            let a = p.attrs(s)?;
                            detail_type = if !a.xsi_type.is_empty() {
                                String::from_utf8_lossy(&a.xsi_type).into_owned()
                            } else {
                                let n = local(s.name);
                                let t = n.strip_suffix(b"Fault").filter(|x| !x.is_empty()).unwrap_or(n);
                                String::from_utf8_lossy(t).into_owned()
                            };
                        }
                        if !empty {
                            p.skip()?;
                        }
                        Ok(())
                    })?;
                }
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })?;
        let fault_type = if detail_type.is_empty() {
            String::from_utf8_lossy(local(code.as_bytes())).into_owned()
        } else {
            detail_type
        };
        Ok(SoapFault { fault_type, message })
    }

    fn response(&mut self) -> Result<UpdateSet> {
        let mut set = UpdateSet::default();
        self.children(|p, s, empty| {
            if local(s.name) == b"returnval" {
                set.version = Some(String::new());
                if !empty {
                    p.update_set(&mut set)?;
                }
            } else if !empty {
                p.skip()?;
            }
            Ok(())
        })?;
        Ok(set)
    }

    fn update_set(&mut self, set: &mut UpdateSet) -> Result<()> {
        self.children(|p, s, empty| {
            match local(s.name) {
                b"version" => set.version = Some(p.leaf_text(empty)?),
                b"truncated" => set.truncated = p.boolean(empty)?,
                b"filterSet" if !empty => p.filter_update(set)?,
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })
    }

    /// A change's `op`: true when it removes the value.
    fn op(&mut self, empty: bool) -> Result<bool> {
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let r = if empty { Ok(()) } else { self.read_text_into(&mut text) };
        let out = r.and_then(|()| match text.trim_ascii() {
            b"add" | b"assign" | b"" => Ok(false),
            b"remove" | b"indirectRemove" => Ok(true),
            other => Err(self.err(
                "invalid_value",
                format!("invalid change op {:?}", String::from_utf8_lossy(other)),
            )),
        });
        self.text = text;
        out
    }

    fn boolean(&mut self, empty: bool) -> Result<bool> {
        let t = self.leaf_text(empty)?;
        match t.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(self.err("invalid_value", format!("invalid boolean {other:?}"))),
        }
    }

    fn filter_update(&mut self, set: &mut UpdateSet) -> Result<()> {
        self.children(|p, s, empty| {
            match local(s.name) {
                b"objectSet" if !empty => {
                    let obj = p.object_update(&mut set.missing)?;
                    set.objects.push(obj);
                }
                b"objectSet" => return Err(p.err("invalid_value", "empty objectSet")),
                b"missingSet" if !empty => {
                    let (moref, fault) = p.missing_set(b"obj")?;
                    set.missing.push((moref, String::new(), fault));
                }
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })
    }

    /// A `MissingObject` (`what` is `obj`) or `MissingProperty` (`what` is `path`): that
    /// element's text and the fault type.
    fn missing_set(&mut self, what: &[u8]) -> Result<(String, String)> {
        let mut id = String::new();
        let mut fault = String::new();
        self.children(|p, s, empty| {
            match local(s.name) {
                n if n == what => id = p.leaf_text(empty)?,
                b"fault" if !empty => fault = p.localized_fault()?,
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })?;
        Ok((id, fault))
    }

    /// A `LocalizedMethodFault`: the `xsi:type` of its inner `<fault>`.
    fn localized_fault(&mut self) -> Result<String> {
        let mut t = String::new();
        self.children(|p, s, empty| {
            if local(s.name) == b"fault" {
                let a = p.attrs(s)?;
                t = String::from_utf8_lossy(&a.xsi_type).into_owned();
            }
            if !empty {
                p.skip()?;
            }
            Ok(())
        })?;
        Ok(t)
    }

    fn object_update(&mut self, missing: &mut Vec<Missing>) -> Result<ObjectUpdate> {
        let mut obj = ObjectUpdate {
            moref: String::new(),
            obj_type: String::new(),
            kind: u8::MAX,
            changes: Vec::new(),
        };
        let mut local_missing: Vec<(String, String)> = Vec::new();
        self.cur_moref = None;
        self.children(|p, s, empty| {
            match local(s.name) {
                b"kind" => {
                    let k = p.leaf_text(empty)?;
                    obj.kind = match k.trim() {
                        "enter" => KIND_ENTER,
                        "modify" => KIND_MODIFY,
                        "leave" => KIND_LEAVE,
                        other => return Err(p.err("invalid_value", format!("invalid update kind {other:?}"))),
                    };
                }
                b"obj" => {
                    obj.obj_type = String::from_utf8_lossy(&p.attrs(s)?.mo_type).into_owned();
                    obj.moref = p.leaf_text(empty)?;
                    p.cur_moref = Some(obj.moref.clone());
                }
                b"changeSet" if !empty => {
                    let c = p.change()?;
                    obj.changes.push(c);
                }
                b"changeSet" => return Err(p.err("invalid_value", "empty changeSet")),
                b"missingSet" if !empty => local_missing.push(p.missing_set(b"path")?),
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })?;
        if obj.kind == u8::MAX {
            return Err(self.err("invalid_value", "object update without kind"));
        }
        if obj.moref.is_empty() {
            return Err(self.err("invalid_value", "object update without obj"));
        }
        for (path, fault) in local_missing {
            missing.push((obj.moref.clone(), path, fault));
        }
        self.cur_moref = None;
        Ok(obj)
    }

    fn change(&mut self) -> Result<Change> {
        let mut path: Option<String> = None;
        let mut null = false;
        self.enc.reset();
        self.cur_path = None;
        self.children(|p, s, empty| {
            match local(s.name) {
                b"name" => {
                    let n = p.leaf_text(empty)?;
                    p.cur_path = Some(n.clone());
                    path = Some(n);
                }
                b"op" => null = p.op(empty)?,
                b"val" => p.value(s, empty)?,
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })?;
        let Some(path) = path else {
            return Err(self.err("invalid_value", "property change without name"));
        };
        if null {
            self.enc.reset();
        }
        let mut change = Change {
            path,
            fp: None,
            name: None,
            kept_keys: None,
        };
        if change.path == EXTRA_CONFIG_PATH {
            let out = self.enc.extra_config(self.filter, self.opts.kept_keys);
            change.fp = Some(out.fp);
            change.name = Some(out.name);
            change.kept_keys = out.kept_keys;
        } else if change.path == DEVICE_PATH {
            change.fp = Some(self.enc.devices());
        } else if let Some(key) = keyed_extra_config_key(&change.path) {
            if key.as_bytes() == self.filter.name_key() {
                change.name = Some(self.enc.top_name(self.filter));
            }
            if !self.filter.is_ignored(key.as_bytes()) {
                change.fp = Some(self.enc.fingerprint());
                if self.opts.kept_keys {
                    change.kept_keys = Some(vec![key.to_owned()]);
                }
            } else if self.opts.kept_keys {
                change.kept_keys = Some(Vec::new());
            }
        } else {
            change.fp = Some(self.enc.fingerprint());
        }
        self.cur_path = None;
        Ok(change)
    }

    fn start_value_elem(&mut self, e: Elem<'a>, empty: bool) -> Result<()> {
        self.declare(e.attrs, empty)?;
        let a = self.attrs(e)?;
        self.enc.start(local(e.name), &a.xsi_type, a.nil);
        if !a.mo_type.is_empty() {
            self.enc.attr(b"type", &a.mo_type);
        }
        Ok(())
    }

    /// Stream a `<val>` into the encoder.
    fn value(&mut self, e: Elem<'a>, empty: bool) -> Result<()> {
        let a = self.attrs(e)?;
        self.enc.begin(&a.xsi_type, a.nil);
        if !a.mo_type.is_empty() {
            self.enc.attr(b"type", &a.mo_type);
        }
        if empty {
            self.enc.end();
            return Ok(());
        }
        loop {
            match self.next()? {
                Tok::Start { name, attrs, empty } => {
                    self.start_value_elem(Elem { name, attrs }, empty)?;
                    if empty {
                        self.enc.end();
                    }
                }
                Tok::End { .. } => {
                    if self.enc.end() {
                        return Ok(());
                    }
                }
                Tok::Text(t) => {
                    if memchr::memchr(b'&', t).is_some() {
                        let mut buf = std::mem::take(&mut self.refbuf);
                        buf.clear();
                        let r = self.unescape(t, &mut buf);
                        self.enc.text(&buf);
                        self.refbuf = buf;
                        r?;
                    } else {
                        self.enc.text(t);
                    }
                }
                Tok::CData(t) => self.enc.text(t),
                Tok::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
            }
        }
    }
}

/// Re-export for errors built outside the parser.
pub fn decode_error_info(e: &VmwatchError) -> Option<&DecodeErrorInfo> {
    match e {
        VmwatchError::Decode(i) => Some(i),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::DEFAULT_NAME_KEY;

    const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

    /// A body with one VM whose powerState change carries `val`.
    fn body(val: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:xsi=\"{XSI}\"><S:Body><R:WaitForUpdatesExResponse xmlns:R=\"urn:vim25\"><returnval>\
             <version>1</version><filterSet><objectSet><kind>modify</kind><obj type=\"VirtualMachine\">vm-1</obj>\
             <changeSet><name>summary.runtime.powerState</name><op>assign</op>{val}</changeSet></objectSet>\
             </filterSet></returnval></R:WaitForUpdatesExResponse></S:Body></S:Envelope>"
        )
    }

    fn run(body: &[u8]) -> Result<UpdateSet> {
        let f = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
        match decode(body, &f, DecodeOptions { kept_keys: false })? {
            Decoded::Update(u) => Ok(u),
            Decoded::Fault(f) => panic!("fault {f:?}"),
        }
    }

    fn err(body: &[u8]) -> DecodeErrorInfo {
        match run(body) {
            Err(VmwatchError::Decode(e)) => *e,
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    fn fp(body: &str) -> Option<u64> {
        run(body.as_bytes()).unwrap().objects[0].changes[0].fp
    }

    #[test]
    fn depth_limit_inside_a_value_without_recursion() {
        // 8 levels of SOAP down to <val>
        let nest = |n: usize| {
            body(&format!(
                "<val xsi:type=\"T\">{}x{}</val>",
                "<a>".repeat(n),
                "</a>".repeat(n)
            ))
        };
        assert!(run(nest(MAX_DEPTH - 8).as_bytes()).is_ok());
        let b = nest(MAX_DEPTH - 7);
        let e = err(b.as_bytes());
        assert_eq!(e.kind, "too_deep");
        assert_eq!(e.moref.as_deref(), Some("vm-1"));
        assert_eq!(e.path.as_deref(), Some("summary.runtime.powerState"));
        assert_eq!(err(nest(1_000_000).as_bytes()).kind, "too_deep");
    }

    #[test]
    fn utf8_and_nul_are_checked_for_the_whole_body() {
        let b = body("<val xsi:type=\"xsd:string\">caf\u{e9}</val>");
        assert!(run(b.as_bytes()).is_ok());
        let at = b.find('\u{e9}').unwrap();
        let mut bad = b.clone().into_bytes();
        bad[at + 1] = b'x'; // a lead byte without its continuation
        assert_eq!((err(&bad).kind, err(&bad).offset), ("not_utf8", at as u64));
        let mut bad = b.into_bytes();
        bad[at - 3] = 0; // the 'c' of "café"
        assert_eq!((err(&bad).kind, err(&bad).offset), ("invalid_char", at as u64 - 3));
        // element names too: the old decoder only checked leaf text
        let named = body("<val xsi:type=\"T\"><n\u{e9}>x</n\u{e9}></val>").into_bytes();
        let at = named.iter().position(|&c| c == 0xc3).unwrap();
        let mut bad = named.clone();
        bad[at + 1] = b'x';
        bad[named.len() - named.iter().rev().position(|&c| c == 0xa9).unwrap() - 1] = b'x';
        assert_eq!(err(&bad).kind, "not_utf8");
    }

    #[test]
    fn offsets_count_a_bom() {
        let b = body("<val>&nope;</val>");
        let at = b.find("&nope;").unwrap() as u64;
        assert_eq!(err(b.as_bytes()).offset, at);
        let with_bom = format!("\u{feff}{b}");
        assert_eq!(err(with_bom.as_bytes()).offset, at + 3);
    }

    #[test]
    fn xsi_prefix_limit_counts_distinct_prefixes() {
        let decls = |n: usize| (0..n).map(|i| format!(" xmlns:p{i}=\"{XSI}\"")).collect::<String>();
        assert!(run(body(&format!("<val{} p0:type=\"T\">x</val>", decls(MAX_XSI_PREFIXES - 1))).as_bytes()).is_ok());
        let e = err(body(&format!("<val{} p0:type=\"T\">x</val>", decls(MAX_XSI_PREFIXES))).as_bytes());
        assert_eq!(e.kind, "too_many_attributes");
        // the same prefix bound again and again (vcsim does it on every <val>) is not counted
        let again = format!(" xmlns:xsi=\"{XSI}\"");
        let nested = format!(
            "<val{again} xsi:type=\"T\">{}x{}</val>",
            format!("<a{again}>").repeat(40),
            "</a>".repeat(40)
        );
        assert!(run(body(&nested).as_bytes()).is_ok());
    }

    #[test]
    fn attribute_references_are_resolved_and_duplicates_refused() {
        let plain = fp(&body("<val xsi:type=\"xsd:string\">x</val>"));
        assert_eq!(plain, fp(&body("<val xsi:type=\"xsd:&#115;tring\">x</val>")));
        assert_ne!(plain, fp(&body("<val xsi:type=\"xsd:int\">x</val>")));
        let b = body("<val xsi:type=\"xsd:string\">x</val>")
            .replace("type=\"VirtualMachine\"", "type=\"Virtual&#77;achine\"");
        assert_eq!(run(b.as_bytes()).unwrap().objects[0].obj_type, "VirtualMachine");
        let b = body("<val xsi:type=\"&lol;\">x</val>");
        let e = err(b.as_bytes());
        assert_eq!((e.kind, e.offset), ("unknown_entity", b.find("&lol;").unwrap() as u64));
        for dup in [
            "<val xsi:type=\"A\" xsi:type=\"B\">x</val>",
            "<val xsi:nil=\"true\" xsi:nil=\"false\"/>",
        ] {
            assert_eq!(err(body(dup).as_bytes()).kind, "xml_syntax", "{dup}");
        }
        let b = body("<val>x</val>").replace("type=\"VirtualMachine\"", "type=\"A\" type=\"B\"");
        assert_eq!(err(b.as_bytes()).kind, "xml_syntax");
    }

    #[test]
    fn large_text_is_not_limited() {
        let big = "u".repeat(8 << 20);
        let a = fp(&body(&format!("<val xsi:type=\"xsd:string\">{big}</val>")));
        let b = fp(&body(&format!("<val xsi:type=\"xsd:string\">{big}v</val>")));
        assert!(a.is_some() && a != b);
    }

    #[test]
    fn missing_sets_of_both_kinds() {
        let fault = "<fault><fault xsi:type=\"NoPermission\"/><localizedMessage/></fault>";
        let b = body("<val>x</val>")
            .replace(
                "</objectSet>",
                &format!("<missingSet><path>config.numaInfo</path>{fault}</missingSet></objectSet>"),
            )
            .replace(
                "</filterSet>",
                &format!("<missingSet><obj type=\"VirtualMachine\">vm-2</obj>{fault}</missingSet></filterSet>"),
            );
        let u = run(b.as_bytes()).unwrap();
        assert_eq!(
            u.missing,
            vec![
                ("vm-1".into(), "config.numaInfo".into(), "NoPermission".into()),
                ("vm-2".into(), String::new(), "NoPermission".into()),
            ]
        );
    }
}

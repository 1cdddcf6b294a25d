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
//! the nesting or to the whole body. Error messages quote at most [`MAX_QUOTE`](crate::errors::MAX_QUOTE) bytes of the input.
//!
//! One bad object update does not cost the others (spec 7.2 #3): an error inside an `objectSet`
//! (or a filter-level `missingSet`) while the XML itself is still well-formed skips to the end of
//! that element and is recorded as a [`BadUpdate`]; decoding goes on with the next one. What
//! cannot be skipped is an error of the envelope: not UTF-8, not XML (a tokenizer error other
//! than a broken limit: the element cannot be delimited then), no SOAP Body, two Bodies, or any
//! error outside every objectSet. A broken limit (nesting, attribute size or count, name length)
//! inside an objectSet skips it: the tokenizer reads the offending tag whole, and counts elements
//! nested beyond the limit instead of keeping them. [`decode_strict`] turns the first bad
//! update into the error (the stateless `vmwatch decode`). A repeated element that would make an
//! update ambiguous (`obj`, `kind`, a change's `name`, `op` or `val`, the set's `version` or
//! `truncated`, a second response in the Body) is an error, never last-one-wins.

use crate::batch::PathName;
use crate::errors::{quote, quote_max, DecodeErrorInfo, Result, VmwatchError};
use crate::filter::{keyed_extra_config_key, Filter, DEVICE_PATH, EXTRA_CONFIG_PATH};
use crate::scan::{self, eq_bytes};
use crate::tagmemo::{self, TagMemo};
use crate::value::ValueEncoder;
use crate::workspace::{self, Buffers, Workspace};
use crate::xml::{unescape_into, Attrs as RawAttrs, Tok, Tokenizer};
use std::borrow::Cow;

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

/// Longest property path, in bytes (a change's `name`, a missingSet's `path`). vSphere's paths are
/// under 100 bytes; a keyed extraConfig path adds the key. Paths are interned for the fingerprint
/// cache (batch.rs, at most 64 of them), so this bounds what a hostile server can make it keep.
pub const MAX_PATH_LEN: usize = 4096;

/// Distinct property paths of one body remembered for sharing (vSphere sends at most the watched
/// paths, 64 at most, plus keyed extraConfig ones); further ones are still decoded, just not shared.
const MAX_INTERNED_PATHS: usize = 256;

/// Longest MoRef value, in bytes. vSphere's are like `vm-1234` (a session-scoped one is under 100).
pub const MAX_MOREF_LEN: usize = 1024;

/// Most bytes kept of a SOAP fault's message (faultstring): vCenter's are one sentence.
pub const MAX_FAULT_MESSAGE: usize = 1024;

const XSI_NS: &[u8] = b"http://www.w3.org/2001/XMLSchema-instance";

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
    /// Shared by the changes of one body with the same path (interned while decoding).
    pub path: PathName,
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

/// An object update (or filter-level missingSet) that could not be decoded and was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUpdate {
    /// MoRef value of the object, when it was read before the error.
    pub moref: Option<String>,
    /// Byte offset in the body where the offending event starts.
    pub offset: u64,
    /// The error's slug (as [`DecodeErrorInfo::kind`]).
    pub error_type: &'static str,
    /// The error's message (bounded: quotes at most [`MAX_QUOTE`](crate::errors::MAX_QUOTE) bytes of the input).
    pub message: String,
    /// Property path being decoded, when known (bounded like the message).
    pub path: Option<String>,
}

impl From<BadUpdate> for VmwatchError {
    fn from(b: BadUpdate) -> Self {
        VmwatchError::Decode(Box::new(DecodeErrorInfo {
            kind: b.error_type,
            msg: b.message,
            offset: b.offset,
            moref: b.moref,
            path: b.path,
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateSet {
    /// `None` when the response carried no UpdateSet (a heartbeat).
    pub version: Option<String>,
    pub truncated: bool,
    pub objects: Vec<ObjectUpdate>,
    pub missing: Vec<Missing>,
    /// Object updates skipped because they could not be decoded, in document order.
    pub bad: Vec<BadUpdate>,
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

/// Decode one body. Object updates that cannot be decoded are skipped and listed in
/// [`UpdateSet::bad`]; only an undecodable envelope is an error.
pub fn decode(body: &[u8], filter: &Filter, opts: DecodeOptions) -> Result<Decoded> {
    decode_with_first_bad(body, filter, opts).0
}

/// As [`decode`], but the first bad object update is the error (even when the envelope turns out
/// undecodable after it: the first problem in document order is the one reported).
pub fn decode_strict(body: &[u8], filter: &Filter, opts: DecodeOptions) -> Result<Decoded> {
    match decode_with_first_bad(body, filter, opts) {
        (_, Some(first)) => Err(first.into()),
        (r, None) => r,
    }
}

fn decode_with_first_bad(body: &[u8], filter: &Filter, opts: DecodeOptions) -> (Result<Decoded>, Option<BadUpdate>) {
    if let Err(e) = check_chars(body) {
        return (Err(e), None);
    }
    workspace::with(|ws| decode_in(body, filter, opts, ws))
}

/// Decode with the given workspace (the body's characters checked).
fn decode_in(
    body: &[u8],
    filter: &Filter,
    opts: DecodeOptions,
    ws: &mut Workspace,
) -> (Result<Decoded>, Option<BadUpdate>) {
    let mut p = Parser::new(body, filter, opts, &mut ws.memo, std::mem::take(&mut ws.bufs));
    let r = p.document().map_err(|e| p.locate(e));
    let first_bad = p.first_bad.take();
    ws.bufs = p.into_buffers();
    (r, first_bad)
}

/// The whole body is UTF-8 and free of NUL bytes (XML allows neither): checked once, up front,
/// so that no text, name or attribute is ever decoded lossily.
fn check_chars(body: &[u8]) -> Result<()> {
    // simdutf8's vector check (runtime CPU detection, scalar fallback) says whether; std says where
    if simdutf8::basic::from_utf8(body).is_err() {
        if let Err(e) = std::str::from_utf8(body) {
            return Err(VmwatchError::decode(
                "not_utf8",
                "the body is not valid UTF-8",
                e.valid_up_to() as u64,
            ));
        }
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

/// Where `part` (a slice of `whole`, or empty) is in `whole`; `None` if it is not in it.
fn range_in(whole: &[u8], part: &[u8]) -> Option<std::ops::Range<usize>> {
    if part.is_empty() {
        return Some(0..0);
    }
    let at = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    (at <= whole.len() && part.len() <= whole.len() - at).then(|| at..at + part.len())
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

/// The first `:`. Names are short: up to 16 bytes, two overlapping words are searched at once
/// (the lowest byte a zero-byte test flags is exact); longer ones with a plain loop, which beats
/// a call into `memchr` for them.
#[inline]
fn memchr_colon(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // the index of the first `:` byte of a little-endian word, if any
    let colon = |w: u64| {
        let x = w ^ (ONES * u64::from(b':'));
        let m = x.wrapping_sub(ONES) & !x & HIGHS;
        (m != 0).then(|| (m.trailing_zeros() / 8) as usize)
    };
    let n = b.len();
    if (8..=16).contains(&n) {
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        return colon(word(0)).or_else(|| colon(word(n - 8)).map(|i| n - 8 + i));
    }
    b.iter().position(|&c| c == b':')
}

/// Text has an entity or character reference to resolve. Most text is a few bytes, where a plain
/// loop beats a call into `memchr`.
#[inline]
fn has_ref(t: &[u8]) -> bool {
    if t.len() < 32 {
        #[allow(clippy::manual_contains)] // `contains` calls core's memchr: measured slower here
        t.iter().any(|&c| c == b'&')
    } else {
        memchr::memchr(b'&', t).is_some()
    }
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

struct Parser<'a, 'f, 'm> {
    body: &'a [u8],
    tok: Tokenizer<'a>,
    filter: &'f Filter,
    opts: DecodeOptions,
    last_pos: u64,
    /// Prefixes bound to the XSI namespace, with the depth of their declaration.
    xsi_prefixes: Vec<(&'a [u8], usize)>,

    /// The prefixes of `xsi_prefixes`, as remembered attributes are keyed.
    scope: tagmemo::Scope,
    /// What is remembered of start tags (this thread's, across bodies).
    memo: &'m mut TagMemo,
    pop_after_empty: bool,
    text: Vec<u8>,
    refbuf: Vec<u8>,
    enc: ValueEncoder,
    cur_moref: Option<String>,
    cur_path: Option<PathName>,
    /// Paths of this body's changes, interned (see `intern_path`).
    paths: Vec<PathName>,
    /// Where the next path is expected in `paths`: objects list their changes in the same order.
    path_hint: usize,
    /// Changes of the previous object update: the capacity of the next one's list.
    changes_hint: usize,
    /// The first bad object update (for [`decode_strict`]).
    first_bad: Option<BadUpdate>,
    /// The tokenizer failed: the XML is not well-formed, nothing can be skipped. (A broken limit,
    /// such as nesting or attribute size, does not count: the tokenizer reads such a tag whole.)
    broken: bool,
}

impl<'a, 'f, 'm> Parser<'a, 'f, 'm> {
    fn new(body: &'a [u8], filter: &'f Filter, opts: DecodeOptions, memo: &'m mut TagMemo, bufs: Buffers) -> Self {
        let Buffers { mut enc, text, refbuf } = bufs;
        enc.reset();
        Parser {
            body,
            tok: Tokenizer::new(body, MAX_DEPTH),
            filter,
            opts,
            last_pos: 0,
            xsi_prefixes: Vec::new(),
            scope: 0,
            memo,
            pop_after_empty: false,
            text,
            refbuf,
            enc,
            cur_moref: None,
            cur_path: None,
            paths: Vec::new(),
            path_hint: 0,
            changes_hint: 0,
            broken: false,
            first_bad: None,
        }
    }

    /// The buffers, back for the next body.
    fn into_buffers(self) -> Buffers {
        Buffers {
            enc: self.enc,
            text: self.text,
            refbuf: self.refbuf,
        }
    }

    /// An error at the current token. Cold and out of line, so that the many error paths of the
    /// loops stay out of their hot code (what a change's loops run must fit the instruction cache).
    #[cold]
    #[inline(never)]
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
                    info.path = self.cur_path.as_deref().map(str::to_owned);
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
    #[inline(always)]
    fn next(&mut self) -> Result<Tok<'a>> {
        if self.pop_after_empty {
            self.pop_after_empty = false;
            self.pop_xmlns(self.depth() + 1);
        }
        self.last_pos = self.tok.pos() as u64;
        let t = match self.tok.next_tok() {
            Ok(t) => t,
            Err(e) => return Err(self.xml_error(*e)),
        };
        if let Tok::End { .. } = t {
            self.pop_xmlns(self.depth() + 1);
        }
        Ok(t)
    }

    /// A tokenizer error. A broken limit leaves the tokenizer able to go on: the caller may skip the
    /// element. (Kept off the hot path of `next`.)
    #[cold]
    #[inline(never)]
    fn xml_error(&mut self, e: crate::xml::XmlError) -> VmwatchError {
        self.broken |= !e.recoverable;
        VmwatchError::decode(e.kind, e.msg, e.offset)
    }

    /// Register the XSI prefixes a start tag declares (at its own depth). Called for every
    /// element whose content is interpreted: structural ones in `children`, and inside values
    /// in the same pass that reads `xsi:type`; skipped subtrees need none.
    #[inline]
    fn declare(&mut self, attrs: &'a [u8], empty: bool) -> Result<()> {
        if attrs.len() > 6 && self.has_xmlns(attrs) {
            // declarations of a non-empty element live at its (new) depth
            let depth = self.depth() + usize::from(empty);
            self.scan_xmlns(attrs, depth)?;
            self.pop_after_empty = empty;
        }
        Ok(())
    }

    /// `attrs` contains `xmlns:` (a declaration, or a value that looks like one: `scan_xmlns` tells).
    /// Most start tags have no `x` at all: an inlined byte search beats a substring search here.
    #[inline]
    fn has_xmlns(&self, attrs: &[u8]) -> bool {
        let mut i = 0;
        loop {
            i = scan::find_byte(attrs, i, b'x', self.tok.backend());
            if i + 6 > attrs.len() {
                return false;
            }
            if &attrs[i..i + 6] == b"xmlns:" {
                return true;
            }
            i += 1;
        }
    }

    /// The XSI prefixes a start tag declares. vcsim declares one on every `<val>`: what a tag's
    /// bytes declare is remembered (for tags that declare at most one XSI prefix and parsed without
    /// error), and only the binding is done again.
    fn scan_xmlns(&mut self, attrs: &'a [u8], depth: usize) -> Result<()> {
        if let Some(d) = self.memo.decl(attrs) {
            if let Some(prefix) = d {
                self.bind_xsi(&attrs[prefix], depth)?;
            }
            return Ok(());
        }
        let (mut count, mut first) = (0usize, None);
        for a in RawAttrs::with_backend(attrs, self.tok.backend()) {
            let (key, value) = a.map_err(|_| self.err("xml_syntax", "malformed attribute"))?;
            if let Some(prefix) = key.strip_prefix(b"xmlns:") {
                if *self.attr_value(value)? == *XSI_NS {
                    count += 1;
                    first = first.or(Some(prefix));
                    self.bind_xsi(prefix, depth)?;
                }
            }
        }
        if count <= 1 {
            match first {
                None => self.memo.remember_decl(attrs, None),
                Some(p) => {
                    if let Some(r) = range_in(attrs, p) {
                        self.memo.remember_decl(attrs, Some(r));
                    }
                }
            }
        }
        Ok(())
    }

    /// An attribute value (a slice of the body) with references resolved.
    fn attr_value(&self, value: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        if !has_ref(value) {
            return Ok(Cow::Borrowed(value));
        }
        let at = (value.as_ptr() as usize).wrapping_sub(self.body.as_ptr() as usize) as u64;
        let mut out = Vec::with_capacity(value.len());
        unescape_into(value, &mut out)
            .map_err(|(off, msg)| VmwatchError::decode(entity_kind(msg), msg, at + off as u64))?;
        Ok(Cow::Owned(out))
    }

    /// Bind `prefix` to the XSI namespace for the elements from `depth` down.
    fn bind_xsi(&mut self, prefix: &'a [u8], depth: usize) -> Result<()> {
        // an already bound prefix stays bound as long as this one would
        if self.xsi_prefixes.iter().any(|(p, _)| *p == prefix) {
            return Ok(());
        }
        if self.xsi_prefixes.len() >= MAX_XSI_PREFIXES {
            return Err(self.err(
                "too_many_attributes",
                format!("more than {MAX_XSI_PREFIXES} prefixes bound to the XSI namespace"),
            ));
        }
        self.xsi_prefixes.push((prefix, depth));
        self.prefixes_changed();
        Ok(())
    }

    fn pop_xmlns(&mut self, depth: usize) {
        while let Some(&(_, d)) = self.xsi_prefixes.last() {
            if d >= depth {
                self.xsi_prefixes.pop();
                self.prefixes_changed();
            } else {
                break;
            }
        }
    }

    fn prefixes_changed(&mut self) {
        let bound = self.xsi_prefixes.iter().map(|&(p, _)| p);
        self.scope = self.memo.scope(bound);
    }

    fn is_xsi_prefix(&self, prefix: &[u8]) -> bool {
        if self.xsi_prefixes.is_empty() {
            return prefix == b"xsi";
        }
        self.xsi_prefixes.iter().any(|(p, _)| *p == prefix)
    }

    /// The attributes of interest of a start tag. Values repeat their attributes all the time
    /// (`xsi:type="Description"`), so a result is remembered by the attribute bytes, as long as the
    /// XSI prefixes in scope are the same (`scope`, see tagmemo.rs); only results without references (borrowed
    /// from the body) are, and an error is never remembered.
    fn attrs(&mut self, e: Elem<'a>) -> Result<Attrs<'a>> {
        let raw = e.attrs;
        if raw.is_empty() {
            return Ok(Attrs::default());
        }
        if let Some(m) = self.remembered(raw) {
            return Ok(m);
        }
        let out = self.parse_attrs(e)?;
        // (an absent attribute is `Cow::default()`, an empty owned value)
        let borrowed = |c: &Cow<'a, [u8]>| -> Option<&'a [u8]> {
            match c {
                Cow::Borrowed(b) => Some(b),
                Cow::Owned(v) if v.is_empty() => Some(&[]),
                Cow::Owned(_) => None,
            }
        };
        if let (Some(xsi_type), Some(mo_type)) = (borrowed(&out.xsi_type), borrowed(&out.mo_type)) {
            if let (Some(xsi_type), Some(mo_type)) = (range_in(raw, xsi_type), range_in(raw, mo_type)) {
                let remembered = tagmemo::Attrs {
                    xsi_type,
                    nil: out.nil,
                    mo_type,
                };
                self.memo.remember_attrs(raw, self.scope, remembered);
            }
        }
        Ok(out)
    }

    /// The remembered attributes of `raw` (in `slot`), if valid in the current scope.
    #[inline]
    fn remembered(&self, raw: &'a [u8]) -> Option<Attrs<'a>> {
        let m = self.memo.attrs(raw, self.scope)?;
        Some(Attrs {
            xsi_type: Cow::Borrowed(&raw[m.xsi_type.clone()]),
            nil: m.nil,
            mo_type: Cow::Borrowed(&raw[m.mo_type.clone()]),
        })
    }

    fn parse_attrs(&self, e: Elem<'a>) -> Result<Attrs<'a>> {
        let mut out = Attrs::default();
        // (xsi:type, xsi:nil, type) seen: a repeated one is not well-formed and would be ambiguous
        let mut seen = [false; 3];
        for a in RawAttrs::with_backend(e.attrs, self.tok.backend()) {
            let (key, value) = a.map_err(|_| self.err("xml_syntax", "malformed attribute"))?;
            let slot = match memchr_colon(key) {
                Some(i) => {
                    let (prefix, name) = (&key[..i], &key[i + 1..]);
                    // the local name first: `xmlns:p` declarations end here without a prefix lookup
                    if !matches!(name, b"type" | b"nil") || prefix == b"xmlns" || !self.is_xsi_prefix(prefix) {
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
                return Err(self.err("xml_syntax", format!("duplicate attribute {}", quote(key))));
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
                Tok::Text(t) if has_ref(t) => {
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
                    if has_ref(t) {
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
                        format!("unexpected element <{}> in text", quote(name)),
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
        let mut bodies = 0u32;
        self.children(|p, s, empty| {
            match local(s.name) {
                b"Body" => {
                    bodies += 1;
                    if bodies > 1 {
                        return Err(p.err("unexpected_element", "two SOAP Bodies in one envelope"));
                    }
                    if empty {
                        return Ok(());
                    }
                    p.children(|p, s, empty| {
                        let name = local(s.name);
                        if out.is_some() && (name == b"Fault" || name.ends_with(b"Response")) {
                            return Err(p.err(
                                "unexpected_element",
                                format!("a second <{}> in the SOAP Body", quote(name)),
                            ));
                        }
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
                                    format!("unexpected <{}> in SOAP Body", quote(name)),
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
                b"faultcode" => code = quote(p.leaf_text(empty)?.as_bytes()),
                b"faultstring" => message = quote_max(p.leaf_text(empty)?.as_bytes(), MAX_FAULT_MESSAGE),
                b"detail" if !empty => {
                    p.children(|p, s, empty| {
                        if detail_type.is_empty() {
                            let a = p.attrs(s)?;
                            detail_type = if !a.xsi_type.is_empty() {
                                quote(&a.xsi_type)
                            } else {
                                let n = local(s.name);
                                quote(n.strip_suffix(b"Fault").filter(|x| !x.is_empty()).unwrap_or(n))
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
                if set.version.is_some() {
                    return Err(p.err("unexpected_element", "two returnval in one response"));
                }
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
        let mut seen = [false; 2]; // version, truncated
        self.children(|p, s, empty| {
            let name = local(s.name);
            let slot = match name {
                b"version" => Some(0),
                b"truncated" => Some(1),
                _ => None,
            };
            if let Some(i) = slot {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(p.err("unexpected_element", format!("two <{}> in one update set", quote(name))));
                }
            }
            match name {
                b"version" => {
                    let v = p.leaf_text(empty)?;
                    if v.len() > MAX_MOREF_LEN {
                        // sent back with the next wait: refused rather than cut
                        return Err(p.err("too_long", format!("version longer than {MAX_MOREF_LEN} bytes")));
                    }
                    set.version = Some(v);
                }
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
            other => Err(self.err("invalid_value", format!("invalid change op {:?}", quote(other)))),
        });
        self.text = text;
        out
    }

    fn boolean(&mut self, empty: bool) -> Result<bool> {
        let t = self.leaf_text(empty)?;
        match t.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(self.err(
                "invalid_value",
                format!("invalid boolean {:?}", quote(other.as_bytes())),
            )),
        }
    }

    fn filter_update(&mut self, set: &mut UpdateSet) -> Result<()> {
        self.children(|p, s, empty| {
            match local(s.name) {
                b"objectSet" if !empty => {
                    let missing = &mut set.missing;
                    if let Some(obj) = p.recover(&mut set.bad, |p| p.object_update(missing))? {
                        set.objects.push(obj);
                    }
                }
                b"objectSet" => {
                    let e = p.err("invalid_value", "empty objectSet");
                    let b = p.bad_update(e)?;
                    p.push_bad(&mut set.bad, b);
                }
                b"missingSet" if !empty => {
                    if let Some((moref, fault)) = p.recover(&mut set.bad, |p| p.missing_set(b"obj", MAX_MOREF_LEN))? {
                        set.missing.push((moref, String::new(), fault));
                    }
                }
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })
    }

    /// Run `f` on the element whose start tag was just read (not empty). When it fails but the XML
    /// is still well-formed, skip the rest of the element, record a [`BadUpdate`] and return `None`.
    fn recover<T>(&mut self, bad: &mut Vec<BadUpdate>, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        let depth = self.depth(); // the element is open at this depth
        let e = match f(self) {
            Ok(v) => return Ok(Some(v)),
            Err(e) if self.broken => return Err(e),
            Err(e) => e,
        };
        let mut b = self.bad_update(e)?;
        let skipped = self.skip_bad(depth, &mut b);
        if skipped.is_err() && self.first_bad.is_none() {
            // the envelope is undecodable after all, but this came first (decode_strict reports it)
            self.first_bad = Some(b);
            return skipped.map(|()| None);
        }
        skipped?;
        self.push_bad(bad, b);
        Ok(None)
    }

    /// Skip the rest of the element open at `depth` (entities in skipped text are not checked: the
    /// element is discarded anyway). An `obj` still ahead names the object, so that its VM can be
    /// forgotten too.
    fn skip_bad(&mut self, depth: usize, b: &mut BadUpdate) -> Result<()> {
        while self.depth() >= depth {
            let t = match self.next() {
                Ok(t) => t,
                Err(e) if self.broken => return Err(e),
                Err(_) => continue, // a limit broken inside the skipped element (it is counted, not kept)
            };
            match t {
                Tok::Start { name, empty: false, .. }
                    if b.moref.is_none() && self.depth() == depth + 1 && local(name) == b"obj" =>
                {
                    match self.read_text() {
                        Ok(m) if !m.is_empty() && m.len() <= MAX_MOREF_LEN => b.moref = Some(m),
                        Err(e) if self.broken => return Err(e),
                        _ => {} // no usable name: the update stays anonymous
                    }
                }
                Tok::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
                _ => {}
            }
        }
        Ok(())
    }

    /// A decoder error inside an object update as a [`BadUpdate`] (other errors pass through).
    fn bad_update(&mut self, e: VmwatchError) -> Result<BadUpdate> {
        let e = self.locate(e);
        self.cur_moref = None;
        self.cur_path = None;
        match e {
            VmwatchError::Decode(info) => Ok(BadUpdate {
                moref: info.moref,
                offset: info.offset,
                error_type: info.kind,
                message: info.msg,
                path: info.path,
            }),
            other => Err(other),
        }
    }

    /// Record a bad update (the first one is kept for [`decode_strict`]).
    fn push_bad(&mut self, bad: &mut Vec<BadUpdate>, b: BadUpdate) {
        if self.first_bad.is_none() {
            self.first_bad = Some(b.clone());
        }
        bad.push(b);
    }

    /// A `MissingObject` (`what` is `obj`) or `MissingProperty` (`what` is `path`): that
    /// element's text and the fault type.
    fn missing_set(&mut self, what: &[u8], max_len: usize) -> Result<(String, String)> {
        let mut id = String::new();
        let mut fault = String::new();
        self.children(|p, s, empty| {
            match local(s.name) {
                n if n == what => {
                    id = p.leaf_text(empty)?;
                    if id.len() > max_len {
                        return Err(p.err(
                            "too_long",
                            format!("missingSet {} longer than {max_len} bytes", quote(what)),
                        ));
                    }
                }
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
                t = quote(&a.xsi_type);
            }
            if !empty {
                p.skip()?;
            }
            Ok(())
        })?;
        Ok(t)
    }

    /// The shared name of a change's path (`text`, as read). Objects list the same paths in the
    /// same order, so the expected one is compared first; the table holds each distinct path once.
    fn intern_path(&mut self, text: &[u8]) -> Result<PathName> {
        if text.len() > MAX_PATH_LEN {
            return Err(self.err("too_long", format!("property path longer than {MAX_PATH_LEN} bytes")));
        }
        if let Some(p) = self.paths.get(self.path_hint) {
            if eq_bytes(p.as_bytes(), text) {
                self.path_hint += 1;
                return Ok(p.clone());
            }
        }
        if let Some(i) = self.paths.iter().position(|p| eq_bytes(p.as_bytes(), text)) {
            self.path_hint = i + 1;
            return Ok(self.paths[i].clone());
        }
        let Ok(s) = std::str::from_utf8(text) else {
            return Err(self.err("not_utf8", "text is not valid UTF-8"));
        };
        let path: PathName = s.into();
        // a hostile body could list ever new paths: beyond a bound they are not remembered
        if self.paths.len() < MAX_INTERNED_PATHS {
            self.paths.push(path.clone());
            self.path_hint = self.paths.len();
        }
        Ok(path)
    }

    fn object_update(&mut self, missing: &mut Vec<Missing>) -> Result<ObjectUpdate> {
        let mut obj = ObjectUpdate {
            moref: String::new(),
            obj_type: String::new(),
            kind: u8::MAX,
            changes: Vec::with_capacity(self.changes_hint),
        };
        let mut local_missing: Vec<(String, String)> = Vec::new();
        let mut seen = [false; 2]; // kind, obj
        self.cur_moref = None;
        self.children(|p, s, empty| {
            let name = local(s.name);
            let slot = match name {
                b"kind" => Some(0),
                b"obj" => Some(1),
                _ => None,
            };
            if let Some(i) = slot {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(p.err("unexpected_element", format!("two <{}> in one objectSet", quote(name))));
                }
            }
            match name {
                b"kind" => {
                    let k = p.leaf_text(empty)?;
                    obj.kind = match k.trim() {
                        "enter" => KIND_ENTER,
                        "modify" => KIND_MODIFY,
                        "leave" => KIND_LEAVE,
                        other => {
                            return Err(p.err(
                                "invalid_value",
                                format!("invalid update kind {:?}", quote(other.as_bytes())),
                            ))
                        }
                    };
                }
                b"obj" => {
                    obj.obj_type = quote(&p.attrs(s)?.mo_type);
                    obj.moref = p.leaf_text(empty)?;
                    if obj.moref.len() > MAX_MOREF_LEN {
                        return Err(p.err("too_long", format!("obj longer than {MAX_MOREF_LEN} bytes")));
                    }
                    p.cur_moref = Some(obj.moref.clone());
                }
                b"changeSet" if !empty => {
                    let c = p.change()?;
                    obj.changes.push(c);
                }
                b"changeSet" => return Err(p.err("invalid_value", "empty changeSet")),
                b"missingSet" if !empty => local_missing.push(p.missing_set(b"path", MAX_PATH_LEN)?),
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
        self.changes_hint = obj.changes.len().min(MAX_INTERNED_PATHS);
        Ok(obj)
    }

    fn change(&mut self) -> Result<Change> {
        let mut have_path = false;
        let mut null = false;
        let mut seen = [false; 3]; // name, op, val
        self.enc.reset();
        self.cur_path = None;
        self.children(|p, s, empty| {
            let name = local(s.name);
            let slot = match name {
                b"name" => Some(0),
                b"op" => Some(1),
                b"val" => Some(2),
                _ => None,
            };
            if let Some(i) = slot {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(p.err("unexpected_element", format!("two <{}> in one changeSet", quote(name))));
                }
            }
            match name {
                b"name" => {
                    let mut text = std::mem::take(&mut p.text);
                    text.clear();
                    let r = if empty { Ok(()) } else { p.read_text_into(&mut text) };
                    let path = r.and_then(|()| p.intern_path(&text));
                    p.text = text;
                    // kept in `cur_path` for error reports, taken back below
                    p.cur_path = Some(path?);
                    have_path = true;
                }
                b"op" => null = p.op(empty)?,
                b"val" => p.value(s, empty)?,
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })?;
        let Some(path) = self.cur_path.take().filter(|_| have_path) else {
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
        if eq_bytes(change.path.as_bytes(), EXTRA_CONFIG_PATH.as_bytes()) {
            let out = self.enc.extra_config(self.filter, self.opts.kept_keys);
            change.fp = Some(out.fp);
            change.name = Some(kube_name(out.name));
            change.kept_keys = out.kept_keys;
        } else if eq_bytes(change.path.as_bytes(), DEVICE_PATH.as_bytes()) {
            change.fp = Some(self.enc.devices());
        } else if let Some(key) = keyed_extra_config_key(&change.path) {
            if key.as_bytes() == self.filter.name_key() {
                change.name = Some(kube_name(self.enc.top_name(self.filter)));
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
        if e.attrs.is_empty() {
            // most tags inside values: no attributes, nothing to look up (and no `Attrs` built to be
            // copied: its fields written one by one and read back whole stall the store buffer)
            self.encode_start(e.name, b"", false, b"");
            return Ok(());
        }
        // remembered, looked up before the tag's own declarations are read: an entry's scope is the
        // one after its tag's declarations, so a match means that they would bind nothing new (every
        // prefix a declaration binds is in the scope it leaves); the ranges go straight to the encoder
        if let Some(m) = self.memo.attrs(e.attrs, self.scope) {
            let (xsi_type, nil, mo_type) = (m.xsi_type.clone(), m.nil, m.mo_type.clone());
            self.encode_start(e.name, &e.attrs[xsi_type], nil, &e.attrs[mo_type]);
            return Ok(());
        }
        self.declare(e.attrs, empty)?;
        let a = self.attrs(e)?;
        self.encode_start(e.name, &a.xsi_type, a.nil, &a.mo_type);
        Ok(())
    }

    /// An element inside a value starts: its local name, `xsi:type` and MoRef `type` to the encoder.
    #[inline(always)]
    fn encode_start(&mut self, name: &[u8], xsi_type: &[u8], nil: bool, mo_type: &[u8]) {
        self.enc.start(local(name), xsi_type, nil);
        if !mo_type.is_empty() {
            self.enc.attr(b"type", mo_type);
        }
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
                    if has_ref(t) {
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

/// Longest Kubernetes namespace (a DNS label) and object name (a DNS subdomain).
const MAX_NAMESPACE_LEN: usize = 63;
const MAX_NAME_LEN: usize = 253;

/// A `namespace/name` that no Kubernetes object can have (too long) is no name: the fingerprint cache
/// remembers each VM's name, and must not keep megabytes a hostile extraConfig value put there.
fn kube_name(n: Option<(String, String)>) -> Option<(String, String)> {
    n.filter(|(ns, name)| ns.len() <= MAX_NAMESPACE_LEN && name.len() <= MAX_NAME_LEN)
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

    #[test]
    fn the_first_colon_is_found_in_names_of_any_length() {
        for n in 0..40 {
            let plain: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert_eq!(memchr_colon(&plain), None, "{n}");
            for at in 0..n {
                let mut one = plain.clone();
                one[at] = b':';
                assert_eq!(memchr_colon(&one), Some(at), "{n} {at}");
                // a later colon (and bytes next to ':' in value) do not move the first
                for later in at + 1..n {
                    let mut two = one.clone();
                    two[later] = b':';
                    assert_eq!(memchr_colon(&two), Some(at), "{n} {at} {later}");
                }
            }
            let mut near: Vec<u8> = plain.clone();
            for c in near.iter_mut() {
                *c = if *c % 2 == 0 { b';' } else { b'9' }; // 0x3B and 0x39 around ':' (0x3A)
            }
            assert_eq!(memchr_colon(&near), None, "{n} near");
        }
    }
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

    /// Strict: a bad object update is the error.
    fn run(body: &[u8]) -> Result<UpdateSet> {
        let f = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
        match decode_strict(body, &f, DecodeOptions { kept_keys: false })? {
            Decoded::Update(u) => Ok(u),
            Decoded::Fault(f) => panic!("fault {f:?}"),
        }
    }

    /// Bad object updates skipped.
    fn lenient(body: &[u8]) -> Result<UpdateSet> {
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
    fn remembered_attributes_follow_the_prefixes_in_scope() {
        // the same attribute bytes, ` p:type="Foo"`, first with p bound to XSI, then to another URI
        let val = |second: &str, e2: &str| {
            body(&format!(
                "<val xsi:type=\"T\"><a xmlns:p=\"{XSI}\"><e p:type=\"Foo\">1</e></a>\
                 <a xmlns:p=\"{second}\"><{e2}>1</e></a></val>"
            ))
        };
        let other = fp(&val("urn:other", "e p:type=\"Foo\""));
        assert_eq!(other, fp(&val("urn:other", "e")), "p:type is no xsi:type there");
        assert_ne!(other, fp(&val(XSI, "e p:type=\"Foo\"")));
        // and a value with references is never remembered borrowed from another place
        let amp = fp(&body(
            "<val xsi:type=\"T\"><e xsi:type=\"F&#111;o\">1</e><e xsi:type=\"F&#111;o\">1</e></val>",
        ));
        assert_eq!(
            amp,
            fp(&body(
                "<val xsi:type=\"T\"><e xsi:type=\"Foo\">1</e><e xsi:type=\"Foo\">1</e></val>"
            ))
        );
    }

    #[test]
    fn remembered_attributes_are_reused_only_under_the_same_prefixes() {
        // no XSI prefix bound by the envelope: each value binds its own, as vcsim does
        let doc = |vals: &[&str]| {
            let sets: String = vals
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    obj(
                        &format!("vm-{i}"),
                        &format!("<changeSet><name>p</name><op>assign</op>{v}</changeSet>"),
                    )
                })
                .collect();
            format!(
                "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body>\
                 <R:WaitForUpdatesExResponse xmlns:R=\"urn:vim25\"><returnval><version>1</version><filterSet>\
                 {sets}</filterSet></returnval></R:WaitForUpdatesExResponse></S:Body></S:Envelope>"
            )
        };
        let fps = |vals: &[&str]| -> Vec<Option<u64>> {
            let set = run(doc(vals).as_bytes()).unwrap();
            set.objects.iter().map(|o| o.changes[0].fp).collect()
        };
        let typed = format!("<val xmlns:p=\"{XSI}\" p:type=\"A\"><e p:type=\"Foo\">1</e></val>");
        let other = "<val xmlns:p=\"urn:other\" p:type=\"A\"><e p:type=\"Foo\">1</e></val>";
        let q_bound = format!("<val xmlns:q=\"{XSI}\" q:type=\"A\"><e p:type=\"Foo\">1</e></val>");
        let untyped_e = format!("<val xmlns:q=\"{XSI}\" q:type=\"A\"><e>1</e></val>");
        let got = fps(&[&typed, other, &typed, &q_bound, &untyped_e, "<val><e>1</e></val>"]);
        assert_eq!(got[0], got[2], "the same value under the same prefix");
        assert_eq!(got[1], got[5], "p bound elsewhere: neither p:type is an xsi:type");
        assert_eq!(got[3], got[4], "under q, p:type is no xsi:type");
        assert_ne!(got[0], got[3]);
        // tags that declare a prefix, remembered or not, declare it for their children
        let decl = format!("<e xmlns:q=\"{XSI}\" q:type=\"Foo\"><f q:type=\"Bar\">1</f></e>");
        let plain = "<e xsi:type=\"Foo\"><f xsi:type=\"Bar\">1</f></e>";
        assert_eq!(
            fp(&body(&format!("<val xsi:type=\"T\">{decl}{decl}{decl}</val>"))),
            fp(&body(&format!("<val xsi:type=\"T\">{plain}{plain}{plain}</val>")))
        );
    }

    #[test]
    fn what_a_thread_decoded_before_changes_nothing() {
        // real captures, and the same values under other prefixes (bound once, bound per value,
        // bound to another namespace), decoded each with a fresh memo and then all in turn, twice,
        // on one memo
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut bodies: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "xml"))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert!(bodies.len() >= 10);
        let captured = bodies.clone();
        for b in &captured {
            let s = String::from_utf8(b.clone()).unwrap();
            bodies.push(s.replace("_XMLSchema-instance", "x").into_bytes());
            bodies.push(
                s.replace(
                    "xmlns:_XMLSchema-instance=\"http://www.w3.org/2001/XMLSchema-instance\"",
                    "xmlns:_XMLSchema-instance=\"urn:other\"",
                )
                .into_bytes(),
            );
            bodies.push(s.replace("_XMLSchema-instance:type", "xsi:type").into_bytes());
        }
        let f = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
        let opts = DecodeOptions { kept_keys: true };
        let fresh: Vec<_> = bodies
            .iter()
            .map(|b| decode_in(b, &f, opts, &mut Workspace::default()).0)
            .collect();
        let mut memo = Workspace::default();
        for round in 0..2 {
            for (i, b) in bodies.iter().enumerate().rev() {
                let warm = decode_in(b, &f, opts, &mut memo).0;
                assert_eq!(
                    format!("{warm:?}"),
                    format!("{:?}", fresh[i]),
                    "body {i}, round {round}"
                );
            }
        }
        // the variants differ where they should: another namespace is no XSI
        let fp_of = |r: &Result<Decoded>| match r {
            Ok(Decoded::Update(u)) => u
                .objects
                .iter()
                .flat_map(|o| o.changes.iter().map(|c| c.fp))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let n = captured.len();
        assert!((0..n).any(|i| fp_of(&fresh[n + 3 * i + 1]) != fp_of(&fresh[i])));
        assert!((0..n).all(|i| fp_of(&fresh[n + 3 * i]) == fp_of(&fresh[i])));
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

    /// A body with the given objectSets (raw XML).
    fn sets(object_sets: &str) -> String {
        format!(
            "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsi=\"{XSI}\"><S:Body>\
             <R:WaitForUpdatesExResponse xmlns:R=\"urn:vim25\"><returnval><version>1</version><filterSet>\
             {object_sets}</filterSet></returnval></R:WaitForUpdatesExResponse></S:Body></S:Envelope>"
        )
    }

    fn obj(moref: &str, inner: &str) -> String {
        format!("<objectSet><kind>modify</kind><obj type=\"VirtualMachine\">{moref}</obj>{inner}</objectSet>")
    }

    fn power(state: &str) -> String {
        format!("<changeSet><name>summary.runtime.powerState</name><op>assign</op><val>{state}</val></changeSet>")
    }

    #[test]
    fn paths_are_shared_whatever_their_order_and_spelling() {
        let change = |name: &str| format!("<changeSet><name>{name}</name><op>assign</op><val>1</val></changeSet>");
        // the same paths in another order, one spelled with a character reference, and more distinct
        // paths than the table keeps
        let mut inner = vec![
            obj("vm-1", &(change("a.b") + &change("c.d"))),
            obj("vm-2", &(change("c.d") + &change("a.b"))),
            obj("vm-3", &(change("a&#46;b") + &change("e.f"))),
            // text in pieces: CDATA, a comment, a reference after plain text
            obj(
                "vm-6",
                &(change("<![CDATA[c.d]]>") + &change("a.<!-- x -->b") + &change("e&#x2e;f") + &change(" c.d\n")),
            ),
        ];
        let many: String = (0..MAX_INTERNED_PATHS + 10).map(|i| change(&format!("p{i}"))).collect();
        inner.push(obj("vm-4", &many));
        inner.push(obj(
            "vm-5",
            &(change("a.b") + &change(&format!("p{}", MAX_INTERNED_PATHS + 5))),
        ));
        let set = run(sets(&inner.concat()).as_bytes()).unwrap();
        let paths: Vec<Vec<&str>> = set
            .objects
            .iter()
            .map(|o| o.changes.iter().map(|c| &*c.path).collect())
            .collect();
        assert_eq!(paths[0], ["a.b", "c.d"]);
        assert_eq!(paths[1], ["c.d", "a.b"]);
        assert_eq!(paths[2], ["a.b", "e.f"]);
        assert_eq!(paths[3], ["c.d", "a.b", "e.f", " c.d\n"], "paths are not trimmed");
        assert_eq!(paths[4].len(), MAX_INTERNED_PATHS + 10);
        assert!(paths[4].iter().enumerate().all(|(i, p)| *p == format!("p{i}")));
        assert_eq!(paths[5], ["a.b".to_owned(), format!("p{}", MAX_INTERNED_PATHS + 5)]);
        // one allocation per distinct path: the first object's `a.b` is the fifth's
        let a = &set.objects[0].changes[0].path;
        assert!(std::sync::Arc::ptr_eq(a, &set.objects[5].changes[0].path));
        assert!(std::sync::Arc::ptr_eq(a, &set.objects[2].changes[0].path));
    }

    #[test]
    fn a_bad_object_update_is_skipped_and_the_others_kept() {
        let bad_op = "<changeSet><name>config.name</name><op>bogus</op><val>x</val></changeSet>";
        let b = sets(&format!(
            "{}{}{}",
            obj("vm-1", &power("on")),
            obj("vm-2", &format!("{}{bad_op}{}", power("on"), power("off"))),
            obj("vm-3", &power("off"))
        ));
        let u = lenient(b.as_bytes()).unwrap();
        assert_eq!(
            u.objects.iter().map(|o| o.moref.as_str()).collect::<Vec<_>>(),
            ["vm-1", "vm-3"]
        );
        let [bad] = &u.bad[..] else { panic!("{:?}", u.bad) };
        assert_eq!(bad.moref.as_deref(), Some("vm-2"));
        assert_eq!(bad.error_type, "invalid_value");
        assert_eq!(bad.offset, b.find("bogus</op>").unwrap() as u64 + 5); // the end of the bad op
        assert_eq!(bad.path.as_deref(), Some("config.name"));
        assert!(bad.message.contains("bogus"), "{}", bad.message);
        // strict: the same error, as before
        let f = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
        let Err(VmwatchError::Decode(e)) = decode_strict(b.as_bytes(), &f, DecodeOptions { kept_keys: false }) else {
            panic!("strict decode accepted a bad update")
        };
        assert_eq!(
            (e.kind, e.offset, e.moref.as_deref()),
            ("invalid_value", bad.offset, Some("vm-2"))
        );
    }

    #[test]
    fn every_kind_of_per_object_error_is_skipped() {
        let cases = [
            (
                // the obj after the error still names the object
                "<kind>modify</kind><kind>leave</kind><obj>vm-9</obj>",
                "unexpected_element",
                Some("vm-9"),
            ),
            (
                "<kind>modify</kind><obj>vm-9</obj><obj>vm-8</obj>",
                "unexpected_element",
                Some("vm-9"),
            ),
            ("<kind>sideways</kind><obj>vm-9</obj>", "invalid_value", Some("vm-9")),
            ("<kind>sideways</kind><x><obj>vm-9</obj></x>", "invalid_value", None),
            ("<kind>sideways</kind><obj>vm-<b/>9</obj>", "invalid_value", None),
            ("<obj>vm-9</obj>", "invalid_value", Some("vm-9")),
            ("<kind>modify</kind>", "invalid_value", None),
            (
                "<kind>modify</kind><obj>vm-9</obj><changeSet/>",
                "invalid_value",
                Some("vm-9"),
            ),
            (
                "<kind>modify</kind><obj>vm-9</obj><changeSet><op>add</op></changeSet>",
                "invalid_value",
                Some("vm-9"),
            ),
            (
                "<kind>modify</kind><obj>vm-9</obj><changeSet><name>a</name><name>b</name></changeSet>",
                "unexpected_element",
                Some("vm-9"),
            ),
            (
                "<kind>modify</kind><obj>vm-9</obj><changeSet><name>a</name><val>1</val><val>2</val></changeSet>",
                "unexpected_element",
                Some("vm-9"),
            ),
            (
                "<kind>modify</kind><obj>vm-9</obj><changeSet><name>a</name><val>&lol;</val></changeSet>",
                "unknown_entity",
                Some("vm-9"),
            ),
            (
                "<kind>modify</kind><obj>vm-9</obj>stray text",
                "unexpected_element",
                Some("vm-9"),
            ),
            ("<kind>modify</kind><obj>vm-<b/>9</obj>", "unexpected_element", None),
        ];
        for (inner, kind, moref) in cases {
            let b = sets(&format!("<objectSet>{inner}</objectSet>{}", obj("vm-1", &power("on"))));
            let u = match lenient(b.as_bytes()) {
                Ok(u) => u,
                Err(e) => panic!("{inner}: {e}"),
            };
            assert_eq!(u.objects.len(), 1, "{inner}");
            assert_eq!(u.objects[0].moref, "vm-1", "{inner}");
            let [bad] = &u.bad[..] else {
                panic!("{inner}: {:?}", u.bad)
            };
            assert_eq!(
                (bad.error_type, bad.moref.as_deref()),
                (kind, moref),
                "{inner}: {}",
                bad.message
            );
            assert!(bad.offset as usize >= b.find("<objectSet>").unwrap() && (bad.offset as usize) < b.len());
        }
        // an empty objectSet and a bad filter-level missingSet too
        let b = sets(&format!(
            "<objectSet/><missingSet><obj>{}</obj></missingSet>{}",
            "m".repeat(2000),
            obj("vm-1", "")
        ));
        let u = lenient(b.as_bytes()).unwrap();
        assert_eq!((u.objects.len(), u.bad.len(), u.missing.len()), (1, 2, 0));
        assert_eq!(u.bad[1].error_type, "too_long");
    }

    #[test]
    fn errors_of_the_envelope_or_of_the_xml_are_not_skipped() {
        let good = obj("vm-1", &power("on"));
        for (what, b) in [
            (
                "tag mismatch",
                sets(&format!("<objectSet><kind>modify</obj></objectSet>{good}")),
            ),
            (
                "too deep outside the objectSets",
                sets(&good).replace(
                    "<filterSet>",
                    &format!("{}{}<filterSet>", "<a>".repeat(300), "</a>".repeat(300)),
                ),
            ),
            (
                "deep and then broken",
                sets(&format!("<objectSet>{}</b></objectSet>{good}", "<a>".repeat(300))),
            ),
            ("deep to the end", sets(&format!("<objectSet>{}", "<a>".repeat(300)))),
            ("text in filterSet", sets(&format!("{good}stray"))),
            ("two bodies", sets(&good).replace("</S:Body>", "</S:Body><S:Body/>")),
            (
                "two responses",
                sets(&good).replace(
                    "</S:Body>",
                    "<R:WaitForUpdatesExResponse xmlns:R=\"urn:vim25\"/></S:Body>",
                ),
            ),
            (
                "fault and response",
                sets(&good).replace("</S:Body>", "<S:Fault/></S:Body>"),
            ),
            (
                "two versions",
                sets(&good).replace("<version>1</version>", "<version>1</version><version>2</version>"),
            ),
            (
                "two returnvals",
                sets(&good).replace("</returnval>", "</returnval><returnval/>"),
            ),
        ] {
            assert!(lenient(b.as_bytes()).is_err(), "{what}");
        }
    }

    #[test]
    fn a_broken_limit_inside_an_object_update_skips_it() {
        let good = obj("vm-1", &power("on"));
        let deep = |n: usize| format!("<val>{}x{}</val>", "<a>".repeat(n), "</a>".repeat(n));
        let change = |v: &str| format!("<changeSet><name>config.name</name><op>assign</op>{v}</changeSet>");
        for (what, bad, kind) in [
            ("too deep", obj("vm-2", &change(&deep(300))), "too_deep"),
            ("far too deep", obj("vm-2", &change(&deep(1_000_000))), "too_deep"),
            (
                "deep empty element",
                obj(
                    "vm-2",
                    &change(&format!("<val>{}<e/>{}</val>", "<a>".repeat(248), "</a>".repeat(248))),
                ),
                "too_deep",
            ),
            (
                "long attribute",
                obj("vm-2", &change(&format!("<val x=\"{}\">1</val>", "v".repeat(70_000)))),
                "too_long",
            ),
            (
                "long name",
                obj("vm-2", &change(&format!("<val><{0}>1</{0}></val>", "n".repeat(2000)))),
                "too_long",
            ),
            (
                "many attributes",
                obj(
                    "vm-2",
                    &change(&format!(
                        "<val{}>1</val>",
                        (0..100).map(|i| format!(" a{i}=''")).collect::<String>()
                    )),
                ),
                "too_many_attributes",
            ),
        ] {
            let b = sets(&format!("{bad}{good}"));
            let u = match lenient(b.as_bytes()) {
                Ok(u) => u,
                Err(e) => panic!("{what}: {e}"),
            };
            assert_eq!(
                u.objects.iter().map(|o| o.moref.as_str()).collect::<Vec<_>>(),
                ["vm-1"],
                "{what}"
            );
            let [bad] = &u.bad[..] else {
                panic!("{what}: {:?}", u.bad)
            };
            assert_eq!((bad.error_type, bad.moref.as_deref()), (kind, Some("vm-2")), "{what}");
            // strict: the same error as before
            assert_eq!(err(b.as_bytes()).kind, kind, "{what}");
        }
    }

    #[test]
    fn error_messages_quote_little_of_the_input() {
        let big = "x".repeat(50 << 20);
        for b in [
            sets(&obj(
                "vm-1",
                &format!("<changeSet><name>a</name><op>{big}</op></changeSet>"),
            )),
            sets(&format!("<objectSet><kind>{big}</kind></objectSet>")),
            sets(&obj(&big, "")),
            sets(&obj("vm-1", &format!("<changeSet><name>{big}</name></changeSet>"))),
            sets(&obj("vm-1", &format!("<missingSet><path>{big}</path></missingSet>"))),
        ] {
            let u = lenient(b.as_bytes()).unwrap();
            let [bad] = &u.bad[..] else { panic!() };
            assert!(bad.message.len() <= 400, "{}", bad.message.len());
            assert!(bad.moref.as_ref().is_none_or(|m| m.len() <= MAX_MOREF_LEN));
            assert!(bad.path.as_ref().is_none_or(|p| p.len() <= MAX_PATH_LEN));
            let e = VmwatchError::from(bad.clone()).to_string();
            assert!(e.len() <= 1000, "{}", e.len());
        }
        let e = err(sets(&format!("<a></{big}>")).as_bytes());
        assert!(e.msg.len() <= 400);
        let fault = format!(
            "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body><S:Fault>\
             <faultcode>{big}</faultcode><faultstring>{big}</faultstring></S:Fault></S:Body></S:Envelope>"
        );
        let f = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
        let Ok(Decoded::Fault(f)) = decode(fault.as_bytes(), &f, DecodeOptions { kept_keys: false }) else {
            panic!()
        };
        assert!(f.fault_type.len() <= 300 && f.message.len() <= MAX_FAULT_MESSAGE + 30);
    }

    #[test]
    fn names_no_kubernetes_object_can_have_are_no_names() {
        let named = |v: &str| {
            let val = format!(
                "<val xsi:type=\"ArrayOfOptionValue\"><OptionValue xsi:type=\"OptionValue\"><key>{DEFAULT_NAME_KEY}</key>\
                 <value xsi:type=\"xsd:string\">{v}</value></OptionValue></val>"
            );
            let b = sets(&obj(
                "vm-1",
                &format!("<changeSet><name>config.extraConfig</name><op>assign</op>{val}</changeSet>"),
            ));
            lenient(b.as_bytes()).unwrap().objects[0].changes[0]
                .name
                .clone()
                .unwrap()
        };
        let ok = format!("{}/{}", "n".repeat(63), "m".repeat(253));
        assert_eq!(named(&ok), Some(("n".repeat(63), "m".repeat(253))));
        assert_eq!(named(&format!("{}/b", "n".repeat(64))), None);
        assert_eq!(named(&format!("a/{}", "m".repeat(10 << 20))), None);
    }
}

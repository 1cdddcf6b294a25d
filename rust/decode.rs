// SPDX-License-Identifier: Apache-2.0
//! Decoder of raw `WaitForUpdatesExResponse` SOAP bodies (and SOAP faults).
//!
//! One pass over the bytes with quick-xml's borrowing reader; property values are not
//! materialised but streamed into [`ValueEncoder`] and reduced to fingerprints on the spot.
//! Element and attribute names are matched by local name, so any namespace prefix works;
//! `xsi:` is recognised by its namespace URI (declared anywhere) or, undeclared, by the usual
//! prefix. DTDs (and so entity declarations) are refused, nesting is bounded by [`MAX_DEPTH`],
//! and every error carries the byte offset of the offending event.

use crate::errors::{DecodeErrorInfo, Result, VmwatchError};
use crate::filter::{keyed_extra_config_key, Filter, DEVICE_PATH, EXTRA_CONFIG_PATH};
use crate::value::ValueEncoder;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;

// Change kinds. Must match vmwatch.types.Kind and the KIND_* constants of vmwatch._vmwatch.
pub const KIND_ENTER: u8 = 0;
pub const KIND_MODIFY: u8 = 1;
pub const KIND_LEAVE: u8 = 2;

/// Deeper documents are refused (vSphere values nest a few dozen levels at most, snapshot trees
/// included).
pub const MAX_DEPTH: usize = 256;

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
    let mut p = Parser::new(body, filter, opts);
    p.document().map_err(|e| p.locate(e))
}

/// Attributes of interest on a start tag.
#[derive(Default)]
struct Attrs<'a> {
    xsi_type: &'a [u8],
    nil: bool,
    /// Unprefixed `type` (a MoRef's type).
    mo_type: &'a [u8],
}

fn local(name: &[u8]) -> &[u8] {
    match memchr_colon(name) {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

#[inline]
fn memchr_colon(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b':')
}

struct Parser<'a, 'f> {
    reader: Reader<&'a [u8]>,
    /// The whole body (the reader's own slice advances as it reads).
    input: &'a [u8],
    filter: &'f Filter,
    opts: DecodeOptions,
    depth: usize,
    last_pos: u64,
    /// Prefixes bound to the XSI namespace, with the depth of their declaration.
    xsi_prefixes: Vec<(&'a [u8], usize)>,
    pop_after_empty: bool,
    text: Vec<u8>,
    enc: ValueEncoder,
    cur_moref: Option<String>,
    cur_path: Option<String>,
}

type Ev<'a> = Event<'a>;

impl<'a, 'f> Parser<'a, 'f> {
    fn new(body: &'a [u8], filter: &'f Filter, opts: DecodeOptions) -> Self {
        let mut reader = Reader::from_reader(body);
        let cfg = reader.config_mut();
        cfg.trim_text(false);
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        Parser {
            reader,
            input: body,
            filter,
            opts,
            depth: 0,
            last_pos: 0,
            xsi_prefixes: Vec::new(),
            pop_after_empty: false,
            text: Vec::new(),
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

    /// Next markup or text event; comments, PIs and the XML declaration are skipped, DTDs refused.
    /// Tracks depth for Start/End (an Empty element does not change it).
    fn next(&mut self) -> Result<Ev<'a>> {
        if self.pop_after_empty {
            self.pop_after_empty = false;
            self.pop_xmlns(self.depth + 1);
        }
        loop {
            self.last_pos = self.reader.buffer_position();
            let ev = match self.reader.read_event() {
                Ok(ev) => ev,
                Err(e) => {
                    let pos = self.reader.error_position();
                    return Err(VmwatchError::decode("xml_syntax", format!("malformed XML: {e}"), pos));
                }
            };
            match ev {
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
                Event::DocType(_) => {
                    return Err(self.err("dtd_forbidden", "DTDs and entity declarations are not accepted"));
                }
                Event::Start(ref s) => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(self.err("too_deep", format!("elements nested deeper than {MAX_DEPTH}")));
                    }
                    self.scan_xmlns(s, false);
                }
                Event::Empty(ref s) => {
                    if self.depth + 1 > MAX_DEPTH {
                        return Err(self.err("too_deep", format!("elements nested deeper than {MAX_DEPTH}")));
                    }
                    self.scan_xmlns(s, true);
                    // an empty element's declarations end with it (popped at the next event)
                    self.pop_after_empty = true;
                }
                Event::End(_) => {
                    self.pop_xmlns(self.depth);
                    self.depth = self.depth.saturating_sub(1);
                }
                _ => {}
            }
            return Ok(ev);
        }
    }

    fn scan_xmlns(&mut self, s: &BytesStart<'a>, empty: bool) {
        let raw = s.attributes_raw();
        if raw.len() < 6 || !raw.windows(6).any(|w| w == b"xmlns:") {
            return;
        }
        let depth = self.depth + usize::from(empty);
        for a in s.attributes().with_checks(false).flatten() {
            let key = a.key.as_ref();
            if let Some(prefix) = key.strip_prefix(b"xmlns:") {
                if a.value.as_ref() == XSI_NS {
                    // borrow the prefix from the input slice (attributes borrow from it)
                    if let Some(p) = self.borrow_input(prefix) {
                        self.xsi_prefixes.push((p, depth));
                    }
                }
            }
        }
    }

    /// Re-borrow a slice of the input with the input's lifetime (attribute keys are sub-slices).
    fn borrow_input(&self, sub: &[u8]) -> Option<&'a [u8]> {
        let input: &'a [u8] = self.input;
        let base = input.as_ptr() as usize;
        let p = sub.as_ptr() as usize;
        if p >= base && p + sub.len() <= base + input.len() {
            Some(&input[p - base..p - base + sub.len()])
        } else {
            None
        }
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

    fn attrs<'s>(&self, s: &'s BytesStart<'a>) -> Attrs<'s> {
        let mut out = Attrs::default();
        if s.attributes_raw().is_empty() {
            return out;
        }
        for a in s.attributes().with_checks(false).flatten() {
            let key = a.key.as_ref();
            let value: &'s [u8] = match a.value {
                std::borrow::Cow::Borrowed(v) => v,
                std::borrow::Cow::Owned(_) => continue,
            };
            match memchr_colon(key) {
                Some(i) => {
                    let (prefix, name) = (&key[..i], &key[i + 1..]);
                    if prefix == b"xmlns" || !self.is_xsi_prefix(prefix) {
                        continue;
                    }
                    match name {
                        b"type" => out.xsi_type = local(value),
                        b"nil" => out.nil = value == b"true" || value == b"1",
                        _ => {}
                    }
                }
                None => {
                    if key == b"type" {
                        out.mo_type = value;
                    }
                }
            }
        }
        out
    }

    fn resolve_ref(&self, r: &BytesRef<'_>, out: &mut Vec<u8>) -> Result<()> {
        if r.is_char_ref() {
            match r.resolve_char_ref() {
                Ok(Some(c)) => {
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                    Ok(())
                }
                _ => Err(self.err("unknown_entity", "invalid character reference")),
            }
        } else {
            let s: &[u8] = match r.as_ref() {
                b"amp" => b"&",
                b"lt" => b"<",
                b"gt" => b">",
                b"quot" => b"\"",
                b"apos" => b"'",
                other => {
                    return Err(self.err(
                        "unknown_entity",
                        format!("undeclared entity &{};", String::from_utf8_lossy(other)),
                    ))
                }
            };
            out.extend_from_slice(s);
            Ok(())
        }
    }

    /// Skip the rest of an element whose Start was just read.
    fn skip(&mut self) -> Result<()> {
        let target = self.depth - 1;
        loop {
            match self.next()? {
                Event::End(_) if self.depth == target => return Ok(()),
                Event::GeneralRef(r) => {
                    let mut sink = Vec::new();
                    self.resolve_ref(&r, &mut sink)?;
                }
                Event::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
                _ => {}
            }
        }
    }

    /// Text content of a leaf element whose Start was just read (entities resolved, CDATA merged).
    fn read_text(&mut self) -> Result<String> {
        self.text.clear();
        loop {
            match self.next()? {
                Event::Text(t) => self.text.extend_from_slice(&t),
                Event::CData(t) => self.text.extend_from_slice(&t),
                Event::GeneralRef(r) => {
                    let mut buf = std::mem::take(&mut self.text);
                    let res = self.resolve_ref(&r, &mut buf);
                    self.text = buf;
                    res?;
                }
                Event::End(_) => break,
                Event::Start(s) | Event::Empty(s) => {
                    return Err(self.err(
                        "unexpected_element",
                        format!(
                            "unexpected element <{}> in text",
                            String::from_utf8_lossy(s.name().as_ref())
                        ),
                    ))
                }
                Event::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
                _ => {}
            }
        }
        match std::str::from_utf8(&self.text) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.err("not_utf8", "text is not valid UTF-8")),
        }
    }

    fn leaf_text(&mut self, empty: bool) -> Result<String> {
        if empty {
            Ok(String::new())
        } else {
            self.read_text()
        }
    }

    /// Iterate children of the current element: calls `f(parser, start, is_empty)` for each child
    /// element; `f` must consume the child (via read_text/skip/...) when it is not empty.
    fn children<F>(&mut self, mut f: F) -> Result<()>
    where
        F: FnMut(&mut Self, BytesStart<'a>, bool) -> Result<()>,
    {
        let target = self.depth - 1;
        loop {
            match self.next()? {
                Event::Start(s) => f(self, s, false)?,
                Event::Empty(s) => f(self, s, true)?,
                Event::End(_) if self.depth == target => return Ok(()),
                Event::End(_) => return Err(self.err("xml_syntax", "unbalanced end tag")),
                Event::Text(t) if !t.iter().all(|c| c.is_ascii_whitespace()) => {
                    return Err(self.err("unexpected_element", "unexpected text between elements"));
                }
                Event::CData(_) => return Err(self.err("unexpected_element", "unexpected CDATA between elements")),
                Event::GeneralRef(_) => {
                    return Err(self.err("unexpected_element", "unexpected entity between elements"))
                }
                Event::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
                _ => {}
            }
        }
    }

    fn document(&mut self) -> Result<Decoded> {
        // <Envelope>
        let env = loop {
            match self.next()? {
                Event::Start(s) => break s,
                Event::Text(t) if t.iter().all(|c| c.is_ascii_whitespace()) => continue,
                Event::Eof => return Err(self.err("not_soap", "empty document: no SOAP envelope")),
                _ => return Err(self.err("not_soap", "expected a SOAP envelope")),
            }
        };
        if local(env.name().as_ref()) != b"Envelope" {
            return Err(self.err("not_soap", "root element is not a SOAP Envelope"));
        }
        let mut out: Option<Decoded> = None;
        self.children(|p, s, empty| {
            match local(s.name().as_ref()) {
                b"Body" if !empty => {
                    p.children(|p, s, empty| {
                        let qname = s.name();
                        let name = local(qname.as_ref());
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
                Event::Eof => break,
                Event::Text(t) if t.iter().all(|c| c.is_ascii_whitespace()) => {}
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
            match local(s.name().as_ref()) {
                b"faultcode" => code = p.leaf_text(empty)?,
                b"faultstring" => message = p.leaf_text(empty)?,
                b"detail" if !empty => {
                    p.children(|p, s, empty| {
                        if detail_type.is_empty() {
                            let a = p.attrs(&s);
                            detail_type = if !a.xsi_type.is_empty() {
                                String::from_utf8_lossy(a.xsi_type).into_owned()
                            } else {
                                let qname = s.name();
                                let n = local(qname.as_ref());
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
            if local(s.name().as_ref()) == b"returnval" {
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
            match local(s.name().as_ref()) {
                b"version" => set.version = Some(p.leaf_text(empty)?),
                b"truncated" => set.truncated = p.boolean(empty)?,
                b"filterSet" if !empty => p.filter_update(set)?,
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })
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
            match local(s.name().as_ref()) {
                b"objectSet" if !empty => {
                    let obj = p.object_update(&mut set.missing)?;
                    set.objects.push(obj);
                }
                b"objectSet" => return Err(p.err("invalid_value", "empty objectSet")),
                b"missingSet" if !empty => {
                    let mut moref = String::new();
                    let mut fault = String::new();
                    p.children(|p, s, empty| {
                        match local(s.name().as_ref()) {
                            b"obj" => moref = p.leaf_text(empty)?,
                            b"fault" if !empty => fault = p.localized_fault()?,
                            _ if empty => {}
                            _ => p.skip()?,
                        }
                        Ok(())
                    })?;
                    set.missing.push((moref, String::new(), fault));
                }
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })
    }

    /// A `LocalizedMethodFault`: the `xsi:type` of its inner `<fault>`.
    fn localized_fault(&mut self) -> Result<String> {
        let mut t = String::new();
        self.children(|p, s, empty| {
            if local(s.name().as_ref()) == b"fault" {
                let a = p.attrs(&s);
                t = String::from_utf8_lossy(a.xsi_type).into_owned();
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
            match local(s.name().as_ref()) {
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
                    obj.obj_type = String::from_utf8_lossy(p.attrs(&s).mo_type).into_owned();
                    obj.moref = p.leaf_text(empty)?;
                    p.cur_moref = Some(obj.moref.clone());
                }
                b"changeSet" if !empty => {
                    let c = p.change()?;
                    obj.changes.push(c);
                }
                b"changeSet" => return Err(p.err("invalid_value", "empty changeSet")),
                b"missingSet" if !empty => {
                    let mut path = String::new();
                    let mut fault = String::new();
                    p.children(|p, s, empty| {
                        match local(s.name().as_ref()) {
                            b"path" => path = p.leaf_text(empty)?,
                            b"fault" if !empty => fault = p.localized_fault()?,
                            _ if empty => {}
                            _ => p.skip()?,
                        }
                        Ok(())
                    })?;
                    local_missing.push((path, fault));
                }
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
        let mut op = String::new();
        self.enc.reset();
        self.cur_path = None;
        self.children(|p, s, empty| {
            match local(s.name().as_ref()) {
                b"name" => {
                    let n = p.leaf_text(empty)?;
                    p.cur_path = Some(n.clone());
                    path = Some(n);
                }
                b"op" => op = p.leaf_text(empty)?,
                b"val" => p.value(&s, empty)?,
                _ if empty => {}
                _ => p.skip()?,
            }
            Ok(())
        })?;
        let Some(path) = path else {
            return Err(self.err("invalid_value", "property change without name"));
        };
        let null = match op.trim() {
            "add" | "assign" | "" => false,
            "remove" | "indirectRemove" => true,
            other => return Err(self.err("invalid_value", format!("invalid change op {other:?}"))),
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

    /// Stream a `<val>` into the encoder.
    fn value(&mut self, s: &BytesStart<'a>, empty: bool) -> Result<()> {
        let a = self.attrs(s);
        self.enc.begin(a.xsi_type, a.nil);
        if !a.mo_type.is_empty() {
            self.enc.attr(b"type", a.mo_type);
        }
        if empty {
            self.enc.end();
            return Ok(());
        }
        let mut refbuf: Vec<u8> = Vec::new();
        loop {
            match self.next()? {
                Event::Start(s) => {
                    let a = self.attrs(&s);
                    self.enc.start(local(s.name().as_ref()), a.xsi_type, a.nil);
                    if !a.mo_type.is_empty() {
                        self.enc.attr(b"type", a.mo_type);
                    }
                }
                Event::Empty(s) => {
                    let a = self.attrs(&s);
                    self.enc.start(local(s.name().as_ref()), a.xsi_type, a.nil);
                    if !a.mo_type.is_empty() {
                        self.enc.attr(b"type", a.mo_type);
                    }
                    self.enc.end();
                }
                Event::End(_) if self.enc.end() => return Ok(()),
                Event::Text(t) => self.enc.text(&t),
                Event::CData(t) => self.enc.text(&t),
                Event::GeneralRef(r) => {
                    refbuf.clear();
                    self.resolve_ref(&r, &mut refbuf)?;
                    self.enc.text(&refbuf);
                }
                Event::Eof => return Err(self.err("xml_syntax", "unexpected end of document")),
                _ => {}
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

// SPDX-License-Identifier: Apache-2.0
//! Canonical encoding of property values and their 64-bit fingerprints.
//!
//! A value (the `<val>` element of a `PropertyChange`) is encoded as a deterministic byte string
//! built from element local names, the local part of `xsi:type`, other attributes (the MoRef
//! `type`), and text content (entities resolved, CDATA merged, whitespace-only text between
//! elements dropped). Namespace prefixes, attribute quoting and `<a></a>` vs `<a/>` therefore
//! never change a fingerprint. Sibling order is preserved, except for the two arrays whose order
//! is not meaningful: extraConfig entries (sorted by key, ignored keys removed) and virtual
//! devices (sorted by integer `key`). The fingerprint is xxh3-64 of the encoding; a removed or
//! nil value has its own fingerprint, [`NULL_FP`].

use crate::filter::{parse_namespaced_name, Filter};
use crate::workspace::give_back;
use xxhash_rust::xxh3::xxh3_64;

/// Fingerprint of "no value" (op `remove`/`indirectRemove`, `xsi:nil`, or no `<val>`).
pub const NULL_FP: u64 = 0x9e37_79b9_7f4a_7c15;

const TAG_START: u8 = 0x01;
const TAG_TEXT: u8 = 0x02;
const TAG_END: u8 = 0x03;
const TAG_NIL: u8 = 0x04;
const TAG_ATTR: u8 = 0x05;
const DOMAIN_EXTRA_CONFIG: &[u8] = b"\x10extraConfig";
const DOMAIN_DEVICES: &[u8] = b"\x11devices";

/// One direct child of the value (an array item), or the value itself for keyed paths.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    start: u32,
    end: u32,
    /// Text range (in `buf`) of the entry's `<key>` child.
    key: Option<(u32, u32)>,
    /// Text range of the entry's `<value>` child, and whether it is a string.
    value: Option<(u32, u32)>,
    value_is_string: bool,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    /// 0 other, 1 `key`, 2 `value`.
    role: u8,
    string: bool,
    has_child: bool,
    nil: bool,
    /// Offset in `buf` of the text being read (a `TAG_TEXT` header, its length still to be
    /// written), or [`NO_TEXT`]: text goes straight into the encoding, and is taken back if it
    /// turns out to be whitespace between elements.
    pending: u32,
}

const NO_TEXT: u32 = u32::MAX;

/// Streaming encoder of one `<val>`; reused between values and bodies (workspace.rs: no
/// allocation in the steady state).
#[derive(Debug, Default)]
pub struct ValueEncoder {
    buf: Vec<u8>,
    frames: Vec<Frame>,
    entries: Vec<Entry>,
    /// Key/value of the value itself (a single `OptionValue`, for keyed extraConfig paths).
    top: Entry,
    scratch: Vec<u8>,
    order: Vec<u32>,
    /// Devices: `((has no numeric key, key), entry)`, sorted.
    keyed: Vec<((u8, i64), u32)>,
    /// The value has non-whitespace text next to child elements, or is a plain text leaf.
    top_text: bool,
    nil: bool,
    present: bool,
}

/// The outcome of an extraConfig value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraConfigOut {
    pub fp: u64,
    /// First valid `"ns/name"` under the name key, if any.
    pub name: Option<(String, String)>,
    /// Sorted kept keys (only when requested).
    pub kept_keys: Option<Vec<String>>,
}

#[inline(always)]
fn push_str16(buf: &mut Vec<u8>, s: &[u8]) {
    let n = s.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(n as u16).to_le_bytes());
    buf.extend_from_slice(&s[..n]);
}

#[inline]
fn is_ws(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
}

impl ValueEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Give back the buffers that grew past `keep` bytes (one huge value), emptied.
    pub fn trim(&mut self, keep: usize) {
        give_back(&mut self.buf, keep);
        give_back(&mut self.frames, keep);
        give_back(&mut self.entries, keep);
        give_back(&mut self.scratch, keep);
        give_back(&mut self.order, keep);
        give_back(&mut self.keyed, keep);
    }

    /// Bytes held by the buffers (workspace tests).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
            + self.frames.capacity() * std::mem::size_of::<Frame>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.scratch.capacity()
            + self.order.capacity() * 4
            + self.keyed.capacity() * std::mem::size_of::<((u8, i64), u32)>()
    }

    /// Start a new value (the `<val>` element itself).
    pub fn begin(&mut self, type_local: &[u8], nil: bool) {
        self.buf.clear();
        self.frames.clear();
        self.entries.clear();
        self.top = Entry::default();
        self.top_text = false;
        self.nil = nil;
        self.present = true;
        self.start(b"val", type_local, nil);
    }

    /// Forget the current value (a change without `<val>`).
    pub fn reset(&mut self) {
        self.present = false;
        self.nil = false;
    }

    pub fn is_null(&self) -> bool {
        !self.present || self.nil
    }

    /// Depth of open elements inside the value, counting `<val>` itself as 1.
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// Close the text being read in the current element: its length is written, or, when `keep`
    /// says no, it is taken back. Returns the text's range in `buf`.
    #[inline]
    fn close_text(buf: &mut Vec<u8>, at: usize, keep: impl FnOnce(&[u8]) -> bool) -> Option<(u32, u32)> {
        let text = &buf[at + 5..];
        if keep(text) {
            let n = (text.len() as u32).to_le_bytes();
            buf[at + 1..at + 5].copy_from_slice(&n);
            Some(((at + 5) as u32, buf.len() as u32))
        } else {
            buf.truncate(at);
            None
        }
    }

    fn flush_text_before_child(&mut self) {
        let top = self.frames.len() == 1;
        if let Some(parent) = self.frames.last_mut() {
            parent.has_child = true;
            let at = std::mem::replace(&mut parent.pending, NO_TEXT);
            if at != NO_TEXT && Self::close_text(&mut self.buf, at as usize, |t| !t.is_empty() && !is_ws(t)).is_some() {
                self.top_text |= top;
            }
        }
    }

    /// An element starts inside the value.
    pub fn start(&mut self, local: &[u8], type_local: &[u8], nil: bool) {
        self.flush_text_before_child();
        let depth = self.frames.len(); // 0 = the <val> itself
        if depth == 1 {
            self.entries.push(Entry {
                start: self.buf.len() as u32,
                ..Entry::default()
            });
        }
        self.buf.reserve(5 + local.len() + type_local.len());
        self.buf.push(TAG_START);
        push_str16(&mut self.buf, local);
        push_str16(&mut self.buf, type_local);
        let role = match local {
            b"key" => 1,
            b"value" => 2,
            _ => 0,
        };
        let string = type_local.is_empty() || type_local == b"string";
        self.frames.push(Frame {
            role,
            string,
            has_child: false,
            nil,
            pending: NO_TEXT,
        });
    }

    /// A non-xsi attribute of the element just started (e.g. a MoRef's `type`).
    pub fn attr(&mut self, local: &[u8], value: &[u8]) {
        self.buf.push(TAG_ATTR);
        push_str16(&mut self.buf, local);
        self.buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    /// Character data (already unescaped) inside the current element.
    #[inline(always)]
    pub fn text(&mut self, t: &[u8]) {
        let Some(f) = self.frames.last_mut() else { return };
        if f.pending == NO_TEXT {
            f.pending = self.buf.len() as u32;
            self.buf.extend_from_slice(&[TAG_TEXT, 0, 0, 0, 0]);
        }
        self.buf.extend_from_slice(t);
    }

    /// The current element ends. Returns true when it was the `<val>` itself.
    pub fn end(&mut self) -> bool {
        let Some(f) = self.frames.pop() else { return true };
        let depth = self.frames.len(); // depth of the ended element (0 = val)
        if f.nil {
            if f.pending != NO_TEXT {
                self.buf.truncate(f.pending as usize);
            }
            self.buf.push(TAG_NIL);
        } else {
            // a leaf keeps its text (even empty or blank); after children only text that is not blank
            let leaf = !f.has_child;
            let mut nonblank = false;
            let range = if f.pending != NO_TEXT {
                Self::close_text(&mut self.buf, f.pending as usize, |t| {
                    nonblank = (!leaf || depth == 0) && !t.is_empty() && !is_ws(t);
                    leaf || nonblank
                })
            } else if leaf {
                self.buf.extend_from_slice(&[TAG_TEXT, 0, 0, 0, 0]);
                Some((self.buf.len() as u32, self.buf.len() as u32))
            } else {
                None
            };
            if depth == 0 && nonblank {
                self.top_text = true;
            }
            if let Some(range) = range.filter(|_| leaf && f.role != 0) {
                let target = match depth {
                    1 => Some(&mut self.top),
                    2 => self.entries.last_mut(),
                    _ => None,
                };
                if let Some(e) = target {
                    if f.role == 1 {
                        e.key = Some(range);
                    } else {
                        e.value = Some(range);
                        e.value_is_string = f.string;
                    }
                }
            }
        }
        self.buf.push(TAG_END);
        if depth == 1 {
            if let Some(e) = self.entries.last_mut() {
                e.end = self.buf.len() as u32;
            }
        }
        depth == 0
    }

    fn slice(&self, r: (u32, u32)) -> &[u8] {
        &self.buf[r.0 as usize..r.1 as usize]
    }

    /// Fingerprint of the value as encoded (sibling order preserved).
    pub fn fingerprint(&self) -> u64 {
        if self.is_null() {
            NULL_FP
        } else {
            xxh3_64(&self.buf)
        }
    }

    /// Name carried by the value itself when it is a single `OptionValue` (keyed path).
    pub fn top_name(&self, filter: &Filter) -> Option<(String, String)> {
        if self.is_null() {
            return None;
        }
        let e = &self.top;
        let key = e.key.map(|r| self.slice(r))?;
        if key != filter.name_key() || !e.value_is_string {
            return None;
        }
        let v = std::str::from_utf8(self.slice(e.value?)).ok()?;
        parse_namespaced_name(v).map(|(a, b)| (a.to_owned(), b.to_owned()))
    }

    /// extraConfig: ignored keys removed, entries sorted by key (then by encoding for duplicates).
    /// The fingerprint of an empty kept set is well defined (and differs from [`NULL_FP`]).
    pub fn extra_config(&mut self, filter: &Filter, want_keys: bool) -> ExtraConfigOut {
        if self.is_null() {
            return ExtraConfigOut {
                fp: NULL_FP,
                name: None,
                kept_keys: want_keys.then(Vec::new),
            };
        }
        if self.top_text {
            // Not an array: keep it visible, fingerprint as is.
            return ExtraConfigOut {
                fp: xxh3_64(&self.buf),
                name: None,
                kept_keys: want_keys.then(Vec::new),
            };
        }
        let mut name = None;
        self.order.clear();
        for (i, e) in self.entries.iter().enumerate() {
            let key: &[u8] = e.key.map_or(&[], |r| &self.buf[r.0 as usize..r.1 as usize]);
            if name.is_none() && key == filter.name_key() && e.value_is_string {
                if let Some(v) = e.value {
                    if let Ok(s) = std::str::from_utf8(&self.buf[v.0 as usize..v.1 as usize]) {
                        name = parse_namespaced_name(s).map(|(a, b)| (a.to_owned(), b.to_owned()));
                    }
                }
            }
            if !filter.is_ignored(key) {
                self.order.push(i as u32);
            }
        }
        let buf = &self.buf;
        let entries = &self.entries;
        let key_of = |i: u32| -> &[u8] {
            entries[i as usize]
                .key
                .map_or(&[], |r| &buf[r.0 as usize..r.1 as usize])
        };
        let bytes_of = |i: u32| -> &[u8] {
            let e = &entries[i as usize];
            &buf[e.start as usize..e.end as usize]
        };
        // a merge sort: vSphere lists keys nearly sorted, and it finds the sorted runs
        self.order
            .sort_by(|&a, &b| key_of(a).cmp(key_of(b)).then_with(|| bytes_of(a).cmp(bytes_of(b))));
        self.scratch.clear();
        self.scratch.extend_from_slice(DOMAIN_EXTRA_CONFIG);
        for &i in &self.order {
            self.scratch.extend_from_slice(bytes_of(i));
        }
        let kept_keys = want_keys.then(|| {
            let mut keys: Vec<String> = Vec::with_capacity(self.order.len());
            for &i in &self.order {
                if entries[i as usize].key.is_some() {
                    let k = String::from_utf8_lossy(key_of(i)).into_owned();
                    if keys.last() != Some(&k) {
                        keys.push(k);
                    }
                }
            }
            keys
        });
        ExtraConfigOut {
            fp: xxh3_64(&self.scratch),
            name,
            kept_keys,
        }
    }

    /// Devices: sorted by integer `key` (entries without a numeric key last, by encoding).
    pub fn devices(&mut self) -> u64 {
        if self.is_null() {
            return NULL_FP;
        }
        if self.top_text {
            return xxh3_64(&self.buf);
        }
        let buf = &self.buf;
        let entries = &self.entries;
        let num = |e: &Entry| -> Option<i64> {
            let r = e.key?;
            std::str::from_utf8(&buf[r.0 as usize..r.1 as usize])
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let bytes_of = |i: u32| -> &[u8] {
            let e = &entries[i as usize];
            &buf[e.start as usize..e.end as usize]
        };
        // each key parsed once, not once per comparison; entries without a numeric key sort last
        self.keyed.clear();
        self.keyed.extend(
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (num(e).map_or((1, 0), |k| (0, k)), i as u32)),
        );
        self.keyed
            .sort_by(|a, b| a.0.cmp(&b.0).then_with(|| bytes_of(a.1).cmp(bytes_of(b.1))));
        self.order.clear();
        self.order.extend(self.keyed.iter().map(|k| k.1));
        self.scratch.clear();
        self.scratch.extend_from_slice(DOMAIN_DEVICES);
        for &i in &self.order {
            self.scratch.extend_from_slice(bytes_of(i));
        }
        xxh3_64(&self.scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::DEFAULT_NAME_KEY;

    fn option(enc: &mut ValueEncoder, key: &str, vtype: &[u8], value: &str) {
        enc.start(b"OptionValue", b"OptionValue", false);
        enc.start(b"key", b"", false);
        enc.text(key.as_bytes());
        enc.end();
        enc.start(b"value", vtype, false);
        enc.text(value.as_bytes());
        enc.end();
        enc.end();
    }

    fn ec(pairs: &[(&str, &str)], filter: &Filter) -> ExtraConfigOut {
        let mut enc = ValueEncoder::new();
        enc.begin(b"ArrayOfOptionValue", false);
        for (k, v) in pairs {
            option(&mut enc, k, b"string", v);
        }
        assert!(enc.end());
        enc.extra_config(filter, true)
    }

    #[test]
    fn extra_config_sorted_and_filtered() {
        let f = Filter::new(Some(["ign", DEFAULT_NAME_KEY]), DEFAULT_NAME_KEY);
        let a = ec(&[("b", "1"), ("a", "2"), ("ign", "x"), (DEFAULT_NAME_KEY, "ns/n")], &f);
        let b = ec(&[("ign", "y"), ("a", "2"), ("b", "1")], &f);
        assert_eq!(a.fp, b.fp);
        assert_eq!(a.kept_keys, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(a.name, Some(("ns".to_owned(), "n".to_owned())));
        assert_eq!(b.name, None);
        let c = ec(&[("a", "3"), ("b", "1")], &f);
        assert_ne!(a.fp, c.fp);
        let empty = ec(&[("ign", "z")], &f);
        assert_eq!(empty.fp, ec(&[], &f).fp);
        assert_ne!(empty.fp, NULL_FP);
    }

    #[test]
    fn typed_values_differ() {
        let f = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
        let mut enc = ValueEncoder::new();
        enc.begin(b"ArrayOfOptionValue", false);
        option(&mut enc, "k", b"int", "5");
        enc.end();
        let a = enc.extra_config(&f, false).fp;
        enc.begin(b"ArrayOfOptionValue", false);
        option(&mut enc, "k", b"string", "5");
        enc.end();
        assert_ne!(a, enc.extra_config(&f, false).fp);
    }

    #[test]
    fn whitespace_between_elements_ignored_but_leaf_text_kept() {
        let mut enc = ValueEncoder::new();
        enc.begin(b"Foo", false);
        enc.text(b"\n  ");
        enc.start(b"a", b"string", false);
        enc.text(b" x ");
        enc.end();
        enc.text(b"\n");
        enc.end();
        let a = enc.fingerprint();
        enc.begin(b"Foo", false);
        enc.start(b"a", b"string", false);
        enc.text(b" x ");
        enc.end();
        enc.end();
        assert_eq!(a, enc.fingerprint());
        enc.begin(b"Foo", false);
        enc.start(b"a", b"string", false);
        enc.text(b"x");
        enc.end();
        enc.end();
        assert_ne!(a, enc.fingerprint());
    }

    #[test]
    fn devices_sorted_by_integer_key() {
        let dev = |enc: &mut ValueEncoder, key: &str| {
            enc.start(b"VirtualDevice", b"VirtualDisk", false);
            enc.start(b"key", b"", false);
            enc.text(key.as_bytes());
            enc.end();
            enc.end();
        };
        let mut enc = ValueEncoder::new();
        enc.begin(b"ArrayOfVirtualDevice", false);
        for k in ["100", "20", "3"] {
            dev(&mut enc, k);
        }
        enc.end();
        let a = enc.devices();
        enc.begin(b"ArrayOfVirtualDevice", false);
        for k in ["3", "100", "20"] {
            dev(&mut enc, k);
        }
        enc.end();
        assert_eq!(a, enc.devices());
        // keys that are no integers (or padded ones) sort too: any input order, one fingerprint
        let fp = |keys: &[&str]| {
            let mut enc = ValueEncoder::new();
            enc.begin(b"ArrayOfVirtualDevice", false);
            for k in keys {
                dev(&mut enc, k);
            }
            enc.end();
            enc.devices()
        };
        let keys = ["x", " 10 ", "2", "y", "-1", "x"];
        let want = fp(&keys);
        assert_eq!(want, fp(&["y", "x", "2", "x", " 10 ", "-1"]));
        assert_eq!(want, fp(&["2", "-1", "x", "y", "x", " 10 "]));
        assert_ne!(want, fp(&["x", " 10 ", "2", "y", "-1"]));
    }
}

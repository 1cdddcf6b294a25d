// SPDX-License-Identifier: Apache-2.0
//! What the decoder remembers of start tags, from one body to the next (one memo per thread, in
//! its workspace: workspace.rs).
//!
//! vSphere repeats the same few dozen start tags in every value of every VM
//! (`xsi:type="Description"`, vcsim's `xmlns:_XMLSchema-instance="…"` on each `<val>`), in every
//! response. Reading such a tag's attributes (and its namespace declarations) again each time is
//! most of the work of a start tag; so the result is remembered by the tag's attribute bytes:
//! where in those bytes the `xsi:type` local name and the MoRef `type` are, and which XSI prefix
//! the tag declares. A result is used again only for the very same bytes, and for attributes only
//! under the same XSI prefixes in scope (a [`Scope`]), so that what a tag means never depends on
//! what was remembered. Memory is bounded: [`SLOTS`] entries of at most [`MAX_BYTES`] bytes each,
//! and at most [`MAX_PREFIXES`] numbered prefixes (when full, everything is forgotten).

use crate::scan::eq_bytes;
use std::ops::Range;

/// Entries of each kind (one per slot: a newer tag replaces an older one of the same slot).
pub const SLOTS: usize = 128;

/// Longest attribute bytes (and prefix) remembered; longer tags are read every time.
pub const MAX_BYTES: usize = 256;

/// Distinct XSI prefixes that get a number (see [`Scope`]).
pub const MAX_PREFIXES: usize = 255;

/// Prefixes in scope a [`Scope`] names exactly.
const SCOPE_IDS: usize = 7;

/// Which prefixes are bound to the XSI namespace, exactly: up to 7 in scope, one byte each (the
/// prefix's number plus one, in the order bound; 0 is "none bound": `xsi` by convention); more, or
/// a prefix too long to number, get a fresh epoch with the top bit set, which matches nothing
/// remembered before.
pub type Scope = u64;

/// The remembered attributes of interest, as ranges of the tag's attribute bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub xsi_type: Range<usize>,
    pub nil: bool,
    pub mo_type: Range<usize>,
}

#[derive(Debug, Default)]
struct AttrsEntry {
    raw: Vec<u8>,
    scope: Scope,
    attrs: Option<Attrs>,
}

#[derive(Debug, Default)]
struct DeclEntry {
    raw: Vec<u8>,
    /// `None`: nothing remembered; `Some(None)`: the tag declares no XSI prefix.
    xsi: Option<Option<Range<usize>>>,
}

#[derive(Debug)]
pub struct TagMemo {
    attrs: Vec<AttrsEntry>,
    decls: Vec<DeclEntry>,
    prefixes: Vec<Box<[u8]>>,
    epoch: u64,
}

impl Default for TagMemo {
    fn default() -> Self {
        TagMemo {
            attrs: (0..SLOTS).map(|_| AttrsEntry::default()).collect(),
            decls: (0..SLOTS).map(|_| DeclEntry::default()).collect(),
            prefixes: Vec::new(),
            epoch: 0,
        }
    }
}

/// The slot of a tag's attribute bytes (not empty): a mix of the length and three bytes (the
/// `xsi:type` values that tell tags apart are at the end).
#[inline]
fn slot(raw: &[u8]) -> usize {
    let n = raw.len();
    let h = (n as u32)
        ^ (u32::from(raw[n / 2]) << 8)
        ^ (u32::from(raw[n - 1]) << 16)
        ^ (u32::from(raw[n - n.min(3)]) << 24);
    (h.wrapping_mul(0x9E37_79B1) >> 25) as usize % SLOTS
}

impl TagMemo {
    pub fn new() -> Self {
        Self::default()
    }

    /// The attributes remembered for `raw` (not empty) under `scope`.
    #[inline]
    pub fn attrs(&self, raw: &[u8], scope: Scope) -> Option<&Attrs> {
        let e = &self.attrs[slot(raw)];
        if e.scope == scope && eq_bytes(&e.raw, raw) {
            e.attrs.as_ref()
        } else {
            None
        }
    }

    pub fn remember_attrs(&mut self, raw: &[u8], scope: Scope, attrs: Attrs) {
        if raw.is_empty() || raw.len() > MAX_BYTES {
            return;
        }
        let e = &mut self.attrs[slot(raw)];
        e.raw.clear();
        e.raw.extend_from_slice(raw);
        e.scope = scope;
        e.attrs = Some(attrs);
    }

    /// What `raw` (not empty) was remembered to declare: `Some(prefix range or None)`.
    #[inline]
    pub fn decl(&self, raw: &[u8]) -> Option<Option<Range<usize>>> {
        let e = &self.decls[slot(raw)];
        if eq_bytes(&e.raw, raw) {
            e.xsi.clone()
        } else {
            None
        }
    }

    pub fn remember_decl(&mut self, raw: &[u8], xsi: Option<Range<usize>>) {
        if raw.is_empty() || raw.len() > MAX_BYTES {
            return;
        }
        let e = &mut self.decls[slot(raw)];
        e.raw.clear();
        e.raw.extend_from_slice(raw);
        e.xsi = Some(xsi);
    }

    /// The scope of the XSI prefixes bound, in the order bound.
    pub fn scope<'p>(&mut self, bound: impl ExactSizeIterator<Item = &'p [u8]> + Clone) -> Scope {
        if bound.len() > SCOPE_IDS {
            return self.fresh_epoch();
        }
        for _ in 0..2 {
            let mut scope: Scope = 0;
            let mut full = false;
            for p in bound.clone() {
                let id = match self.prefixes.iter().position(|q| **q == *p) {
                    Some(i) => i,
                    None if p.len() > MAX_BYTES => return self.fresh_epoch(),
                    None if self.prefixes.len() < MAX_PREFIXES => {
                        self.prefixes.push(p.into());
                        self.prefixes.len() - 1
                    }
                    None => {
                        full = true;
                        break;
                    }
                };
                scope = scope << 8 | (id as u64 + 1);
            }
            if !full {
                return scope;
            }
            // numbers are running out: forget everything numbered so far, and number again
            self.clear();
        }
        self.fresh_epoch()
    }

    fn fresh_epoch(&mut self) -> Scope {
        self.epoch += 1;
        1 << 63 | self.epoch
    }

    /// Forget everything (the epoch goes on).
    pub fn clear(&mut self) {
        for e in &mut self.attrs {
            e.attrs = None;
            e.raw.clear();
        }
        for e in &mut self.decls {
            e.xsi = None;
            e.raw.clear();
        }
        self.prefixes.clear();
    }

    /// Numbered prefixes (tests).
    pub fn prefixes(&self) -> usize {
        self.prefixes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_remembered_by_bytes_and_scope() {
        let mut m = TagMemo::new();
        let a = Attrs {
            xsi_type: 1..3,
            nil: false,
            mo_type: 0..0,
        };
        m.remember_attrs(b" t=\"x\"", 5, a.clone());
        assert_eq!(m.attrs(b" t=\"x\"", 5), Some(&a));
        assert_eq!(m.attrs(b" t=\"x\"", 6), None, "another scope");
        assert_eq!(m.attrs(b" t=\"y\"", 5), None, "other bytes");
        let long = vec![b'a'; MAX_BYTES + 1];
        m.remember_attrs(&long, 5, a.clone());
        assert_eq!(m.attrs(&long, 5), None, "too long to remember");
        m.remember_decl(b" xmlns:p=\"u\"", Some(7..8));
        assert_eq!(m.decl(b" xmlns:p=\"u\""), Some(Some(7..8)));
        assert_eq!(m.decl(b" xmlns:q=\"u\""), None);
    }

    #[test]
    fn scopes_name_prefixes_exactly_and_never_repeat_an_epoch() {
        let mut m = TagMemo::new();
        let xsi: &[u8] = b"xsi";
        let v: &[u8] = b"_XMLSchema-instance";
        let s1 = m.scope([xsi, v].into_iter());
        assert_eq!(s1, m.scope([xsi, v].into_iter()));
        assert_ne!(s1, m.scope([v, xsi].into_iter()), "order bound matters");
        assert_ne!(s1, m.scope([xsi].into_iter()));
        assert_eq!(m.scope(std::iter::empty()), 0);
        let eight = [xsi; 8];
        let e1 = m.scope(eight.into_iter());
        let e2 = m.scope(eight.into_iter());
        assert!(
            e1 >> 63 == 1 && e1 != e2,
            "more than 7 prefixes: a fresh epoch each time"
        );
        // a full table is forgotten, and what was remembered under the old numbers with it
        m.remember_attrs(
            b" a=\"1\"",
            s1,
            Attrs {
                xsi_type: 0..0,
                nil: true,
                mo_type: 0..0,
            },
        );
        let names: Vec<Vec<u8>> = (0..MAX_PREFIXES + 3).map(|i| format!("p{i}").into_bytes()).collect();
        for n in &names {
            m.scope([n.as_slice()].into_iter());
        }
        assert!(m.prefixes() <= MAX_PREFIXES);
        assert_eq!(m.attrs(b" a=\"1\"", s1), None);
        let s = m.scope([xsi, v].into_iter());
        assert_eq!(s, m.scope([xsi, v].into_iter()));
    }
}

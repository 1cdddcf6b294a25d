// SPDX-License-Identifier: Apache-2.0
//! Per-VM fingerprint cache: LRU + TTL, compact.
//!
//! Memory per VM (x86-64, measured by `tests/cache_bytes.rs` with a counting allocator):
//! * one `Node` in a slab of 1024-node chunks: 72 bytes (MoRef value inline up to 22 bytes, LRU links as `u32`
//!   slots, expiry in deciseconds, present/null path bitmasks, a boxed word slice);
//! * one `u32` slot in a `hashbrown::HashTable` plus its control byte: 5 bytes per bucket,
//!   about 6.5 bytes per VM at typical load;
//! * one heap block of 64-bit words: one per non-null property fingerprint (paths are small
//!   integers from the decider's path table, so no path strings are stored; null values are a
//!   bit in `nulls` and take no word), then the last known `"namespace/name"` packed into words.
//!
//! Measured at 100k VMs (`cargo test --release --test cache_bytes -- --nocapture`): the vcsim VM
//! of tests/data (18 non-null of the 31 default paths) with a 34-byte name: 72 + 6.5 +
//! 8·(18 + 5) + 8 (malloc header) ≈ **270 bytes/VM**; the worst case, all 31 paths non-null:
//! ≈ 375 bytes/VM. The Go operator stores ~615 bytes (hex strings keyed by path strings).

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

/// Maximum number of distinct property paths a cache entry can hold (bits of the masks).
pub const MAX_PATHS: usize = 64;

const NIL: u32 = u32::MAX;
const FLAG_NEGATIVE: u8 = 1;
const FLAG_USED: u8 = 2;
const INLINE_KEY: usize = 22;

/// MoRef value, inline when short (`vm-123456` always is).
#[derive(Debug, Clone)]
enum MoKey {
    Inline { len: u8, buf: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl MoKey {
    fn new(s: &[u8]) -> Self {
        if s.len() <= INLINE_KEY {
            let mut buf = [0u8; INLINE_KEY];
            buf[..s.len()].copy_from_slice(s);
            MoKey::Inline {
                len: s.len() as u8,
                buf,
            }
        } else {
            MoKey::Heap(s.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            MoKey::Inline { len, buf } => &buf[..*len as usize],
            MoKey::Heap(b) => b,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            MoKey::Inline { .. } => 0,
            MoKey::Heap(b) => malloc_size(b.len()),
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    key: MoKey,
    /// Fingerprints of the paths in `mask & !nulls` (ascending bit order), then the name bytes.
    data: Box<[u64]>,
    mask: u64,
    nulls: u64,
    prev: u32,
    next: u32,
    /// Expiry, in deciseconds since the cache's epoch.
    expires: u32,
    name_len: u16,
    flags: u8,
}

impl Node {
    fn vacant() -> Self {
        Node {
            key: MoKey::Inline {
                len: 0,
                buf: [0; INLINE_KEY],
            },
            data: Box::new([]),
            mask: 0,
            nulls: 0,
            prev: NIL,
            next: NIL,
            expires: 0,
            name_len: 0,
            flags: 0,
        }
    }

    fn fp_words(&self) -> usize {
        (self.mask & !self.nulls).count_ones() as usize
    }

    fn fp(&self, bit: u32) -> Option<u64> {
        let b = 1u64 << bit;
        if self.mask & b == 0 {
            return None;
        }
        if self.nulls & b != 0 {
            return Some(crate::value::NULL_FP);
        }
        let idx = (self.mask & !self.nulls & (b - 1)).count_ones() as usize;
        Some(self.data[idx])
    }

    fn name(&self) -> Option<Vec<u8>> {
        if self.name_len == 0 {
            return None;
        }
        let start = self.fp_words();
        let mut out = Vec::with_capacity(self.name_len as usize + 8);
        for w in &self.data[start..] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.truncate(self.name_len as usize);
        Some(out)
    }
}

fn pack_name(name: &[u8], out: &mut Vec<u64>) {
    for chunk in name.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        out.push(u64::from_ne_bytes(w));
    }
}

/// glibc-like allocation size of `n` bytes: 8-byte header, 16-byte granularity, 32 minimum.
pub(crate) fn malloc_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// Nodes per slab chunk (72 KiB): the slab's unused tail is less than one chunk.
const CHUNK: usize = 1024;

/// The node slab, in fixed-size chunks: growing never copies nodes or leaves more than one
/// chunk unused (a doubling `Vec` leaves up to half, ~22 bytes/VM at 100k VMs).
#[derive(Debug, Default)]
struct Slab {
    chunks: Vec<Vec<Node>>,
    len: usize,
}

impl Slab {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, node: Node) {
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(node);
        }
        self.len += 1;
    }

    fn bytes(&self) -> usize {
        self.chunks.len() * malloc_size(CHUNK * std::mem::size_of::<Node>())
            + malloc_size(self.chunks.capacity() * std::mem::size_of::<Vec<Node>>())
    }
}

impl std::ops::Index<usize> for Slab {
    type Output = Node;

    fn index(&self, i: usize) -> &Node {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Slab {
    fn index_mut(&mut self, i: usize) -> &mut Node {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// The fingerprints of one coalesced update: `fps[i]` is valid when bit `i` of `mask` is set.
#[derive(Debug, Clone)]
pub struct Props {
    pub mask: u64,
    pub nulls: u64,
    pub fps: [u64; MAX_PATHS],
}

impl Default for Props {
    fn default() -> Self {
        Props {
            mask: 0,
            nulls: 0,
            fps: [0; MAX_PATHS],
        }
    }
}

impl Props {
    pub fn clear(&mut self) {
        self.mask = 0;
        self.nulls = 0;
    }

    /// Set path `bit` (a later set wins, like a later change in the same update).
    pub fn set(&mut self, bit: u32, fp: u64) {
        let b = 1u64 << bit;
        self.mask |= b;
        if fp == crate::value::NULL_FP {
            self.nulls |= b;
        } else {
            self.nulls &= !b;
        }
        self.fps[bit as usize] = fp;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub added: u64,
    pub evicted: u64,
    pub expired: u64,
    pub hits: u64,
    pub misses: u64,
    pub items: u64,
    pub bytes: u64,
    pub negative: u64,
}

/// The outcome of [`FpCache::update`].
#[derive(Debug, Clone, Copy)]
pub struct Update {
    pub slot: u32,
    /// The VM had no live entry (first sighting, evicted or expired).
    pub new: bool,
    /// Paths whose fingerprint changed or was first seen.
    pub changed: u64,
}

pub struct FpCache {
    nodes: Slab,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    head: u32,
    tail: u32,
    free: Vec<u32>,
    len: usize,
    max_entries: usize,
    ttl_ds: u32,
    data_bytes: usize,
    negative: usize,
    stats: CacheStats,
    scratch: Vec<u64>,
}

impl FpCache {
    /// `ttl_ds`: time to live in deciseconds.
    pub fn new(max_entries: usize, ttl_ds: u32) -> Self {
        FpCache {
            nodes: Slab::default(),
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            head: NIL,
            tail: NIL,
            free: Vec::new(),
            len: 0,
            max_entries: max_entries.max(1),
            ttl_ds,
            data_bytes: 0,
            negative: 0,
            stats: CacheStats::default(),
            scratch: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        let h = self.hash(key);
        let nodes = &self.nodes;
        self.table
            .find(h, |&s| nodes[s as usize].key.as_bytes() == key)
            .copied()
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let n = &self.nodes[slot as usize];
            (n.prev, n.next)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
        let n = &mut self.nodes[slot as usize];
        n.prev = NIL;
        n.next = NIL;
    }

    fn push_front(&mut self, slot: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[slot as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old != NIL {
            self.nodes[old as usize].prev = slot;
        } else {
            self.tail = slot;
        }
        self.head = slot;
    }

    fn touch(&mut self, slot: u32) {
        if self.head != slot {
            self.unlink(slot);
            self.push_front(slot);
        }
    }

    fn remove_slot(&mut self, slot: u32) {
        let h = self.hash(self.nodes[slot as usize].key.as_bytes());
        if let Ok(e) = self.table.find_entry(h, |&s| s == slot) {
            e.remove();
        }
        self.unlink(slot);
        let node = std::mem::replace(&mut self.nodes[slot as usize], Node::vacant());
        self.data_bytes -= malloc_size(node.data.len() * 8) + node.key.heap_bytes();
        if node.flags & FLAG_NEGATIVE != 0 {
            self.negative -= 1;
        }
        self.free.push(slot);
        self.len -= 1;
    }

    fn expired(&self, slot: u32, now: u32) -> bool {
        now >= self.nodes[slot as usize].expires
    }

    /// The live entry of `key`, refreshed in LRU order; an expired entry is dropped.
    pub fn lookup(&mut self, key: &str, now: u32) -> Option<u32> {
        match self.find(key.as_bytes()) {
            Some(slot) if self.expired(slot, now) => {
                self.remove_slot(slot);
                self.stats.expired += 1;
                self.stats.misses += 1;
                None
            }
            Some(slot) => {
                self.touch(slot);
                self.stats.hits += 1;
                Some(slot)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Peek without touching LRU order or stats (expired entries are invisible).
    pub fn peek(&self, key: &str, now: u32) -> Option<u32> {
        self.find(key.as_bytes()).filter(|&s| !self.expired(s, now))
    }

    pub fn remove(&mut self, key: &str) -> bool {
        match self.find(key.as_bytes()) {
            Some(slot) => {
                self.remove_slot(slot);
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.nodes = Slab::default();
        self.table = HashTable::new();
        self.free.clear();
        self.free.shrink_to_fit();
        self.head = NIL;
        self.tail = NIL;
        self.len = 0;
        self.data_bytes = 0;
        self.negative = 0;
    }

    fn alloc_slot(&mut self, now: u32) -> u32 {
        // drop expired entries from the cold end, then the LRU one if still full
        let mut budget = 4;
        while self.tail != NIL && budget > 0 && self.expired(self.tail, now) {
            self.remove_slot(self.tail);
            self.stats.expired += 1;
            budget -= 1;
        }
        if self.len >= self.max_entries && self.tail != NIL {
            self.remove_slot(self.tail);
            self.stats.evicted += 1;
        }
        if let Some(s) = self.free.pop() {
            return s;
        }
        self.nodes.push(Node::vacant());
        (self.nodes.len() - 1) as u32
    }

    /// Rebuild an entry's word block from merged fingerprints and an optional name.
    fn store(&mut self, slot: u32, mask: u64, nulls: u64, fps: &[u64; MAX_PATHS], name: Option<&[u8]>) {
        self.scratch.clear();
        let mut m = mask & !nulls;
        while m != 0 {
            let bit = m.trailing_zeros();
            self.scratch.push(fps[bit as usize]);
            m &= m - 1;
        }
        let name = name.filter(|n| n.len() <= u16::MAX as usize);
        if let Some(n) = name {
            pack_name(n, &mut self.scratch);
        }
        let data: Box<[u64]> = self.scratch.as_slice().into();
        let node = &mut self.nodes[slot as usize];
        let old = std::mem::replace(&mut node.data, data);
        node.mask = mask;
        node.nulls = nulls;
        node.name_len = name.map_or(0, |n| n.len() as u16);
        let new_bytes = malloc_size(node.data.len() * 8);
        self.data_bytes = self.data_bytes + new_bytes - malloc_size(old.len() * 8);
    }

    /// Change detection (spec 3 step C, with removals as values): merge `props` into the entry of
    /// `key`, creating it when absent. Refreshes LRU order, and the TTL when something changed.
    pub fn update(&mut self, key: &str, props: &Props, now: u32) -> Update {
        let expires = now.saturating_add(self.ttl_ds);
        match self.lookup(key, now) {
            None => {
                let slot = self.alloc_slot(now);
                {
                    let n = &mut self.nodes[slot as usize];
                    n.key = MoKey::new(key.as_bytes());
                    n.flags = FLAG_USED;
                    n.expires = expires;
                    n.name_len = 0;
                    n.mask = 0;
                    n.nulls = 0;
                }
                self.data_bytes += self.nodes[slot as usize].key.heap_bytes();
                let h = self.hash(key.as_bytes());
                let nodes = &self.nodes;
                let hasher = &self.hasher;
                self.table
                    .insert_unique(h, slot, |&s| hasher.hash_one(nodes[s as usize].key.as_bytes()));
                self.push_front(slot);
                self.len += 1;
                self.stats.added += 1;
                self.store(slot, props.mask, props.nulls, &props.fps, None);
                Update {
                    slot,
                    new: true,
                    changed: props.mask,
                }
            }
            Some(slot) => {
                let node = &self.nodes[slot as usize];
                let mut changed = 0u64;
                let mut m = props.mask;
                while m != 0 {
                    let bit = m.trailing_zeros();
                    let new_fp = props.fps[bit as usize];
                    if node.fp(bit) != Some(new_fp) {
                        changed |= 1u64 << bit;
                    }
                    m &= m - 1;
                }
                if changed != 0 {
                    let mut merged = [0u64; MAX_PATHS];
                    let mut om = node.mask;
                    while om != 0 {
                        let bit = om.trailing_zeros();
                        merged[bit as usize] = node.fp(bit).unwrap_or(0);
                        om &= om - 1;
                    }
                    let mut pm = props.mask;
                    while pm != 0 {
                        let bit = pm.trailing_zeros();
                        merged[bit as usize] = props.fps[bit as usize];
                        pm &= pm - 1;
                    }
                    let mask = node.mask | props.mask;
                    let nulls = (node.nulls & !props.mask) | props.nulls;
                    let name: Option<Vec<u8>> = node.name();
                    self.store(slot, mask, nulls, &merged, name.as_deref());
                    self.nodes[slot as usize].expires = expires;
                }
                Update {
                    slot,
                    new: false,
                    changed,
                }
            }
        }
    }

    /// Whether the VM has a remembered name (no copy: the decision asks this per extraConfig change).
    pub fn has_name(&self, slot: u32) -> bool {
        self.nodes[slot as usize].name_len != 0
    }

    /// The VM's remembered `"namespace/name"`.
    pub fn name(&self, slot: u32) -> Option<String> {
        self.nodes[slot as usize].name().and_then(|b| String::from_utf8(b).ok())
    }

    /// Remember (or forget) the VM's `"namespace/name"`.
    pub fn set_name(&mut self, slot: u32, name: Option<&str>) {
        let node = &self.nodes[slot as usize];
        if node.name().as_deref() == name.map(str::as_bytes) {
            return;
        }
        let mut fps = [0u64; MAX_PATHS];
        let mut m = node.mask & !node.nulls;
        while m != 0 {
            let bit = m.trailing_zeros();
            fps[bit as usize] = node.fp(bit).unwrap_or(0);
            m &= m - 1;
        }
        let (mask, nulls) = (node.mask, node.nulls);
        self.store(slot, mask, nulls, &fps, name.map(str::as_bytes));
    }

    pub fn is_negative(&self, slot: u32) -> bool {
        self.nodes[slot as usize].flags & FLAG_NEGATIVE != 0
    }

    pub fn set_negative(&mut self, slot: u32, on: bool) {
        let n = &mut self.nodes[slot as usize];
        let was = n.flags & FLAG_NEGATIVE != 0;
        if was == on {
            return;
        }
        if on {
            n.flags |= FLAG_NEGATIVE;
            self.negative += 1;
        } else {
            n.flags &= !FLAG_NEGATIVE;
            self.negative -= 1;
        }
    }

    /// The entry's non-null fingerprints as `(bit, fingerprint)`, in ascending bit order.
    pub fn fingerprints(&self, slot: u32) -> impl Iterator<Item = (u32, u64)> + '_ {
        let node = &self.nodes[slot as usize];
        let mut m = node.mask & !node.nulls;
        node.data[..node.fp_words()].iter().map(move |&fp| {
            let bit = m.trailing_zeros();
            m &= m - 1;
            (bit, fp)
        })
    }

    /// Fingerprint stored for `bit` (tests and the reference comparison).
    pub fn fingerprint(&self, slot: u32, bit: u32) -> Option<u64> {
        self.nodes[slot as usize].fp(bit)
    }

    /// Heap bytes: slab, table (every bucket and control byte) and per-entry blocks, as glibc
    /// allocation sizes.
    pub fn bytes(&self) -> usize {
        self.nodes.bytes() + self.table.allocation_size() + malloc_size(self.free.capacity() * 4) + self.data_bytes
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            items: self.len as u64,
            bytes: self.bytes() as u64,
            negative: self.negative as u64,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::NULL_FP;

    fn props(pairs: &[(u32, u64)]) -> Props {
        let mut p = Props::default();
        for &(b, f) in pairs {
            p.set(b, f);
        }
        p
    }

    #[test]
    fn node_is_small() {
        assert!(std::mem::size_of::<Node>() <= 72, "{}", std::mem::size_of::<Node>());
    }

    #[test]
    fn change_detection() {
        let mut c = FpCache::new(10, 1000);
        let u = c.update("vm-1", &props(&[(0, 1), (3, 2)]), 0);
        assert!(u.new);
        assert_eq!(u.changed, 0b1001);
        let u = c.update("vm-1", &props(&[(0, 1), (3, 2)]), 1);
        assert!(!u.new);
        assert_eq!(u.changed, 0);
        let u = c.update("vm-1", &props(&[(3, 5)]), 2);
        assert_eq!(u.changed, 0b1000);
        assert_eq!(c.fingerprint(u.slot, 0), Some(1));
        let u = c.update("vm-1", &props(&[(3, NULL_FP)]), 3);
        assert_eq!(u.changed, 0b1000);
        assert_eq!(c.fingerprint(u.slot, 3), Some(NULL_FP));
        let u = c.update("vm-1", &props(&[(3, NULL_FP)]), 3);
        assert_eq!(u.changed, 0);
        // empty props on a new entry still count as new
        let u = c.update("vm-2", &props(&[]), 3);
        assert!(u.new);
    }

    #[test]
    fn names_survive_updates() {
        let mut c = FpCache::new(10, 1000);
        let u = c.update("vm-1", &props(&[(0, 1)]), 0);
        c.set_name(u.slot, Some("a-namespace/a-rather-long-vm-name"));
        let u = c.update("vm-1", &props(&[(0, 2), (5, 9)]), 0);
        assert_eq!(c.name(u.slot).as_deref(), Some("a-namespace/a-rather-long-vm-name"));
        assert_eq!(c.fingerprint(u.slot, 5), Some(9));
        c.set_name(u.slot, None);
        assert_eq!(c.name(u.slot), None);
        assert_eq!(c.fingerprint(u.slot, 0), Some(2));
    }

    #[test]
    fn slab_spans_chunks() {
        let n = 2 * CHUNK + 10;
        let mut c = FpCache::new(n, 1000);
        for i in 0..n {
            c.update(&format!("vm-{i}"), &props(&[(0, i as u64)]), 0);
        }
        assert_eq!(c.nodes.chunks.len(), 3);
        for i in 0..n {
            let slot = c.peek(&format!("vm-{i}"), 0).unwrap();
            assert_eq!(c.fingerprint(slot, 0), Some(i as u64));
        }
        // a full cache recycles slots instead of growing
        c.update("vm-new", &props(&[(0, 1)]), 0);
        assert_eq!(c.nodes.len(), n);
        assert!(c.bytes() >= 3 * CHUNK * std::mem::size_of::<Node>());
        c.clear();
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn lru_and_ttl() {
        let mut c = FpCache::new(2, 10);
        c.update("vm-1", &props(&[(0, 1)]), 0);
        c.update("vm-2", &props(&[(0, 1)]), 0);
        assert!(c.lookup("vm-1", 1).is_some()); // vm-2 is now LRU
        c.update("vm-3", &props(&[(0, 1)]), 1);
        assert_eq!(c.len(), 2);
        assert!(c.peek("vm-2", 1).is_none());
        assert!(c.peek("vm-1", 1).is_some());
        assert_eq!(c.stats().evicted, 1);
        // expiry
        assert!(c.lookup("vm-1", 50).is_none());
        assert_eq!(c.stats().expired, 1);
        let u = c.update("vm-1", &props(&[(0, 1)]), 50);
        assert!(u.new);
        // long keys
        let long = "vm-with-a-very-long-moref-value-beyond-inline";
        c.update(long, &props(&[(1, 1)]), 50);
        assert!(c.peek(long, 50).is_some());
        assert!(c.remove(long));
        c.clear();
        assert!(c.is_empty());
    }
}

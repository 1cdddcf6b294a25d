// SPDX-License-Identifier: Apache-2.0
//! The uniqueID index: Kubernetes VirtualMachines by (namespace, name) and by `status.uniqueID`.
//!
//! Written from Python (the Kubernetes watch), read by the batch decision without the GIL.
//! One `RwLock` guards the whole layout so the two lookups never disagree; the decision holds the
//! read lock for one batch (microseconds), writers hold the write lock for one upsert.
//!
//! Layout (issue 6: bytes per VM), each VM stored once:
//! * one 12-byte [`Entry`] in a slab (`Vec`; free slots form an intrusive list);
//! * its name and uniqueID in one shared string arena, as `[len(name)][len(uid)][name][uid]` with
//!   ASCII varint lengths (so the arena stays a `String` and slices of it are `&str`); a record
//!   replaced or removed becomes dead space, reclaimed by compaction once it outweighs the live;
//! * namespaces interned (a few hundred for 100k VMs) with a reference count, freed at zero;
//! * two `hashbrown::HashTable<u32>` of slab slots, by (namespace id, name) and by uniqueID, at
//!   4 bytes plus one control byte per bucket. A uniqueID claimed by several VMs has one bucket
//!   per claimant (`by_unique_id` answers only when there is exactly one).
//!
//! The slab and the arena grow by half, not by doubling. Bytes per VM at 100k VMs: slab 12 and
//! record 22 (pipeline bench, `vm-12x345` as name and uniqueID), each plus up to 50% growth slack
//! (reported), and 2·6.5 for the tables at 100k/131072 load: 54 measured, against ~415 with two
//! maps of owned keys. `tests/index_bytes.rs` checks `bytes()` against a counting allocator
//! (66.5 bytes/VM with 21-character names in 50 namespaces).

use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::{RwLock, RwLockReadGuard};
use std::hash::BuildHasher;
use std::mem::size_of;

use crate::cache::malloc_size;

/// Bit 31 of `Entry::ns`: the VM is being deleted.
const DELETING: u32 = 1 << 31;
/// Namespace id of a vacant slot (whose `off` is then the next vacant slot).
const VACANT: u32 = DELETING - 1;
/// End of the vacant-slot list.
const NIL: u32 = u32::MAX;
/// Dead arena bytes tolerated before a compaction is considered.
const COMPACT_MIN_DEAD: usize = 4096;

/// One VM: where its strings are, its namespace and the priority fields.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Arena offset of the record (vacant: the next vacant slot).
    off: u32,
    /// Interned namespace id, plus [`DELETING`] in bit 31 (vacant: [`VACANT`]).
    ns: u32,
    priority: i32,
}

impl Entry {
    fn ns_id(self) -> u32 {
        self.ns & !DELETING
    }

    fn deleting(self) -> bool {
        self.ns & DELETING != 0
    }

    fn is_vacant(self) -> bool {
        self.ns == VACANT
    }
}

/// A VM's state, owned (returned to Python).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmState {
    pub unique_id: Box<str>,
    pub deleting: bool,
    pub priority: i32,
}

/// A VM as stored, borrowed from the index while its read lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub unique_id: &'a str,
    pub deleting: bool,
    pub priority: i32,
}

/// Append `v` as 6-bit groups, low first; bit 6 marks "more follows". Every byte is ASCII.
fn push_len(out: &mut String, mut v: usize) {
    loop {
        let b = (v & 0x3f) as u8;
        v >>= 6;
        if v == 0 {
            out.push(char::from(b));
            return;
        }
        out.push(char::from(b | 0x40));
    }
}

fn read_len(bytes: &[u8], pos: &mut usize) -> usize {
    let mut v = 0usize;
    let mut shift = 0;
    loop {
        let b = bytes[*pos];
        *pos += 1;
        v |= ((b & 0x3f) as usize) << shift;
        if b & 0x40 == 0 {
            return v;
        }
        shift += 6;
    }
}

/// The (name, uniqueID, record length) of the record at `off`.
fn record(arena: &str, off: u32) -> (&str, &str, usize) {
    let start = off as usize;
    let mut pos = start;
    let name_len = read_len(arena.as_bytes(), &mut pos);
    let uid_len = read_len(arena.as_bytes(), &mut pos);
    let name = &arena[pos..pos + name_len];
    let uid = &arena[pos + name_len..pos + name_len + uid_len];
    (name, uid, pos + name_len + uid_len - start)
}

/// How much to `reserve_exact` so `extra` more items fit: growth by half rather than doubling,
/// which leaves a third less slack on average in the slab and the arena (amortised O(1) still).
fn grow_by_half(len: usize, cap: usize, extra: usize) -> Option<usize> {
    (len + extra > cap).then(|| (cap + cap / 2).max(len + extra).max(64) - len)
}

fn name_hash(hasher: &DefaultHashBuilder, ns: u32, name: &str) -> u64 {
    hasher.hash_one((ns, name))
}

fn uid_hash(hasher: &DefaultHashBuilder, uid: &str) -> u64 {
    hasher.hash_one(uid)
}

#[derive(Debug)]
struct NsSlot {
    name: Box<str>,
    /// VMs in this namespace; 0 means the id is free for reuse.
    refs: u32,
}

/// Interned namespaces with reference counts.
#[derive(Debug, Default)]
struct Namespaces {
    slots: Vec<NsSlot>,
    table: HashTable<u32>,
    free: Vec<u32>,
    name_bytes: usize,
}

impl Namespaces {
    fn lookup(&self, hasher: &DefaultHashBuilder, ns: &str) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hasher.hash_one(ns), |&i| &*slots[i as usize].name == ns)
            .copied()
    }

    /// The id of `ns`, taking one reference.
    fn acquire(&mut self, hasher: &DefaultHashBuilder, ns: &str) -> u32 {
        if let Some(id) = self.lookup(hasher, ns) {
            self.slots[id as usize].refs += 1;
            return id;
        }
        let slot = NsSlot {
            name: ns.into(),
            refs: 1,
        };
        self.name_bytes += malloc_size(ns.len());
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                let id = u32::try_from(self.slots.len()).ok().filter(|&i| i < VACANT);
                self.slots.push(slot);
                id.expect("more than 2^31 namespaces in the index")
            }
        };
        let slots = &self.slots;
        self.table
            .insert_unique(hasher.hash_one(ns), id, |&i| hasher.hash_one(&*slots[i as usize].name));
        id
    }

    /// Drop one reference to `id`; the last one frees the id.
    fn release(&mut self, hasher: &DefaultHashBuilder, id: u32) {
        let s = &mut self.slots[id as usize];
        s.refs -= 1;
        if s.refs > 0 {
            return;
        }
        let name = std::mem::take(&mut s.name);
        self.name_bytes -= malloc_size(name.len());
        if let Ok(e) = self.table.find_entry(hasher.hash_one(&*name), |&i| i == id) {
            e.remove();
        }
        self.free.push(id);
    }

    fn name(&self, id: u32) -> &str {
        &self.slots[id as usize].name
    }

    fn bytes(&self) -> usize {
        malloc_size(self.slots.capacity() * size_of::<NsSlot>())
            + self.table.allocation_size()
            + malloc_size(self.free.capacity() * size_of::<u32>())
            + self.name_bytes
    }
}

#[derive(Debug)]
pub struct IndexInner {
    entries: Vec<Entry>,
    /// Records of live entries, and dead space.
    arena: String,
    dead: usize,
    free_head: u32,
    len: usize,
    by_name: HashTable<u32>,
    /// One bucket per VM with a non-empty uniqueID.
    by_uid: HashTable<u32>,
    ns: Namespaces,
    hasher: DefaultHashBuilder,
}

impl Default for IndexInner {
    fn default() -> Self {
        IndexInner {
            entries: Vec::new(),
            arena: String::new(),
            dead: 0,
            free_head: NIL,
            len: 0,
            by_name: HashTable::new(),
            by_uid: HashTable::new(),
            ns: Namespaces::default(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl IndexInner {
    fn view(&self, slot: u32) -> VmRef<'_> {
        let e = self.entries[slot as usize];
        let (name, unique_id, _) = record(&self.arena, e.off);
        VmRef {
            namespace: self.ns.name(e.ns_id()),
            name,
            unique_id,
            deleting: e.deleting(),
            priority: e.priority,
        }
    }

    fn find_name(&self, namespace: &str, name: &str) -> Option<u32> {
        let ns = self.ns.lookup(&self.hasher, namespace)?;
        let (entries, arena) = (&self.entries, &self.arena);
        self.by_name
            .find(name_hash(&self.hasher, ns, name), |&s| {
                let e = entries[s as usize];
                e.ns_id() == ns && record(arena, e.off).0 == name
            })
            .copied()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<VmRef<'_>> {
        self.find_name(namespace, name).map(|s| self.view(s))
    }

    /// The VM whose `status.uniqueID` is `uid`, when exactly one has it.
    pub fn by_unique_id(&self, uid: &str) -> Option<VmRef<'_>> {
        if uid.is_empty() {
            return None;
        }
        let (entries, arena) = (&self.entries, &self.arena);
        let mut found = None;
        for &s in self.by_uid.iter_hash(uid_hash(&self.hasher, uid)) {
            if record(arena, entries[s as usize].off).1 == uid {
                if found.is_some() {
                    return None;
                }
                found = Some(s);
            }
        }
        found.map(|s| self.view(s))
    }

    /// Append a record; returns its offset. Compacts first when the arena would outgrow `u32`.
    fn push_record(&mut self, name: &str, uid: &str) -> u32 {
        let need = name.len() + uid.len() + 12;
        if self.arena.len() + need > u32::MAX as usize {
            self.compact();
            assert!(
                self.arena.len() + need <= u32::MAX as usize,
                "index strings exceed 4 GiB"
            );
        }
        if let Some(n) = grow_by_half(self.arena.len(), self.arena.capacity(), need) {
            self.arena.reserve_exact(n);
        }
        let off = self.arena.len() as u32;
        push_len(&mut self.arena, name.len());
        push_len(&mut self.arena, uid.len());
        self.arena.push_str(name);
        self.arena.push_str(uid);
        off
    }

    fn link_uid(&mut self, slot: u32, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let (entries, arena, hasher) = (&self.entries, &self.arena, &self.hasher);
        self.by_uid.insert_unique(uid_hash(hasher, uid), slot, |&s| {
            uid_hash(hasher, record(arena, entries[s as usize].off).1)
        });
    }

    fn unlink_uid(&mut self, slot: u32, uid_h: u64) {
        if let Ok(e) = self.by_uid.find_entry(uid_h, |&s| s == slot) {
            e.remove();
        }
    }

    pub fn upsert(&mut self, namespace: &str, name: &str, unique_id: &str, deleting: bool, priority: i32) {
        let flag = if deleting { DELETING } else { 0 };
        if let Some(slot) = self.find_name(namespace, name) {
            let e = self.entries[slot as usize];
            let (_, old_uid, rec_len) = record(&self.arena, e.off);
            if old_uid != unique_id {
                if !old_uid.is_empty() {
                    let h = uid_hash(&self.hasher, old_uid);
                    self.unlink_uid(slot, h);
                }
                self.dead += rec_len;
                let off = self.push_record(name, unique_id);
                self.entries[slot as usize].off = off;
                self.link_uid(slot, unique_id);
            }
            let e = &mut self.entries[slot as usize];
            e.ns = e.ns_id() | flag;
            e.priority = priority;
            self.maybe_compact();
            return;
        }
        let ns = self.ns.acquire(&self.hasher, namespace);
        let off = self.push_record(name, unique_id);
        let entry = Entry {
            off,
            ns: ns | flag,
            priority,
        };
        let slot = if self.free_head != NIL {
            let s = self.free_head;
            self.free_head = self.entries[s as usize].off;
            self.entries[s as usize] = entry;
            s
        } else {
            let s = u32::try_from(self.entries.len())
                .ok()
                .filter(|&s| s != NIL)
                .expect("more than 2^32 VMs in the index");
            if let Some(n) = grow_by_half(self.entries.len(), self.entries.capacity(), 1) {
                self.entries.reserve_exact(n);
            }
            self.entries.push(entry);
            s
        };
        self.len += 1;
        let (entries, arena, hasher) = (&self.entries, &self.arena, &self.hasher);
        self.by_name.insert_unique(name_hash(hasher, ns, name), slot, |&s| {
            let e = entries[s as usize];
            name_hash(hasher, e.ns_id(), record(arena, e.off).0)
        });
        self.link_uid(slot, unique_id);
    }

    pub fn delete(&mut self, namespace: &str, name: &str) -> bool {
        let Some(slot) = self.find_name(namespace, name) else {
            return false;
        };
        let e = self.entries[slot as usize];
        let (_, uid, rec_len) = record(&self.arena, e.off);
        let name_h = name_hash(&self.hasher, e.ns_id(), name);
        if !uid.is_empty() {
            let h = uid_hash(&self.hasher, uid);
            self.unlink_uid(slot, h);
        }
        if let Ok(b) = self.by_name.find_entry(name_h, |&s| s == slot) {
            b.remove();
        }
        self.ns.release(&self.hasher, e.ns_id());
        self.dead += rec_len;
        self.entries[slot as usize] = Entry {
            off: self.free_head,
            ns: VACANT,
            priority: 0,
        };
        self.free_head = slot;
        self.len -= 1;
        self.maybe_compact();
        true
    }

    fn maybe_compact(&mut self) {
        if self.dead >= COMPACT_MIN_DEAD && self.dead * 2 > self.arena.len() {
            self.compact();
        }
    }

    /// Rewrite the arena with the live records only (slots and hash tables are unaffected).
    fn compact(&mut self) {
        let mut arena = String::with_capacity(self.arena.len() - self.dead);
        for e in self.entries.iter_mut().filter(|e| !e.is_vacant()) {
            let (_, _, rec_len) = record(&self.arena, e.off);
            let start = e.off as usize;
            e.off = arena.len() as u32;
            arena.push_str(&self.arena[start..start + rec_len]);
        }
        self.arena = arena;
        self.dead = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every indexed VM as (namespace, name), in slot order (what a relist diffs against).
    pub fn keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.len);
        for slot in 0..self.entries.len() as u32 {
            if !self.entries[slot as usize].is_vacant() {
                let v = self.view(slot);
                out.push((v.namespace.to_owned(), v.name.to_owned()));
            }
        }
        out
    }

    /// Forget every VM and give the memory back.
    pub fn clear(&mut self) {
        let hasher = self.hasher.clone();
        *self = IndexInner {
            hasher,
            ..IndexInner::default()
        };
    }

    /// Heap bytes held: slab, arena (dead space included), both tables, namespaces. Allocation
    /// sizes follow glibc (8-byte header, 16-byte granularity) like the fingerprint cache's.
    pub fn bytes(&self) -> usize {
        malloc_size(self.entries.capacity() * size_of::<Entry>())
            + malloc_size(self.arena.capacity())
            + self.by_name.allocation_size()
            + self.by_uid.allocation_size()
            + self.ns.bytes()
    }

    /// Check every internal invariant (tests).
    #[cfg(test)]
    fn check(&self) {
        let live: Vec<u32> = (0..self.entries.len() as u32)
            .filter(|&s| !self.entries[s as usize].is_vacant())
            .collect();
        assert_eq!(live.len(), self.len);
        assert_eq!(self.by_name.len(), self.len);
        let mut vacant = 0;
        let mut s = self.free_head;
        while s != NIL {
            assert!(self.entries[s as usize].is_vacant());
            vacant += 1;
            s = self.entries[s as usize].off;
        }
        assert_eq!(vacant + self.len, self.entries.len());
        let mut live_bytes = 0;
        let mut with_uid = 0;
        let mut refs = vec![0u32; self.ns.slots.len()];
        for &s in &live {
            let v = self.view(s);
            let e = self.entries[s as usize];
            refs[e.ns_id() as usize] += 1;
            live_bytes += record(&self.arena, e.off).2;
            assert_eq!(self.find_name(v.namespace, v.name), Some(s));
            if !v.unique_id.is_empty() {
                with_uid += 1;
                let h = uid_hash(&self.hasher, v.unique_id);
                assert!(self.by_uid.find(h, |&x| x == s).is_some());
            }
        }
        assert_eq!(self.by_uid.len(), with_uid);
        assert_eq!(live_bytes + self.dead, self.arena.len());
        for (id, slot) in self.ns.slots.iter().enumerate() {
            assert_eq!(slot.refs, refs[id], "namespace {id}");
            assert_eq!(slot.refs == 0, self.ns.free.contains(&(id as u32)));
        }
        assert_eq!(self.ns.table.len(), self.ns.slots.len() - self.ns.free.len());
    }
}

/// Thread-safe index handle (shared between the Python `Index` and every `Decider`).
#[derive(Debug, Default)]
pub struct Index {
    inner: RwLock<IndexInner>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn read(&self) -> RwLockReadGuard<'_, IndexInner> {
        self.inner.read()
    }

    pub fn upsert(&self, namespace: &str, name: &str, unique_id: &str, deleting: bool, priority: i32) {
        self.inner
            .write()
            .upsert(namespace, name, unique_id, deleting, priority);
    }

    pub fn delete(&self, namespace: &str, name: &str) -> bool {
        self.inner.write().delete(namespace, name)
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<VmState> {
        self.inner.read().get(namespace, name).map(|v| VmState {
            unique_id: v.unique_id.into(),
            deleting: v.deleting,
            priority: v.priority,
        })
    }

    pub fn by_unique_id(&self, uid: &str) -> Option<(String, String)> {
        self.inner
            .read()
            .by_unique_id(uid)
            .map(|v| (v.namespace.to_owned(), v.name.to_owned()))
    }

    pub fn keys(&self) -> Vec<(String, String)> {
        self.read().keys()
    }

    pub fn clear(&self) {
        self.inner.write().clear();
    }

    pub fn len(&self) -> usize {
        self.inner.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.read().is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.inner.read().bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[test]
    fn entry_is_small() {
        assert_eq!(size_of::<Entry>(), 12);
    }

    #[test]
    fn unique_id_lookup() {
        let ix = Index::new();
        ix.upsert("ns", "a", "vm-1", false, 1);
        ix.upsert("ns", "b", "", false, 1);
        assert_eq!(ix.by_unique_id("vm-1"), Some(("ns".into(), "a".into())));
        assert_eq!(ix.by_unique_id(""), None);
        // two claimants: ambiguous
        ix.upsert("ns", "b", "vm-1", false, 1);
        assert_eq!(ix.by_unique_id("vm-1"), None);
        ix.upsert("ns", "b", "vm-2", true, 97);
        assert_eq!(ix.by_unique_id("vm-1"), Some(("ns".into(), "a".into())));
        assert_eq!(ix.get("ns", "b").map(|s| (s.deleting, s.priority)), Some((true, 97)));
        assert!(ix.delete("ns", "a"));
        assert!(!ix.delete("ns", "a"));
        assert_eq!(ix.by_unique_id("vm-1"), None);
        assert_eq!(ix.len(), 1);
        assert!(ix.bytes() > 0);
        ix.clear();
        assert!(ix.is_empty());
        ix.read().check();
    }

    #[test]
    fn lengths_round_trip() {
        for v in [0, 1, 63, 64, 4095, 4096, 1 << 20, u32::MAX as usize] {
            let mut s = String::new();
            push_len(&mut s, v);
            assert!(s.is_ascii());
            let mut pos = 0;
            assert_eq!(read_len(s.as_bytes(), &mut pos), v);
            assert_eq!(pos, s.len());
        }
    }

    #[test]
    fn overwrite_delete_and_slot_reuse() {
        let mut ix = IndexInner::default();
        ix.upsert("ns", "a", "vm-1", false, 0);
        ix.upsert("ns", "b", "vm-2", false, 0);
        let arena = ix.arena.len();
        // same uniqueID: flags change in place, no new record
        ix.upsert("ns", "a", "vm-1", true, 5);
        assert_eq!(ix.arena.len(), arena);
        let a = ix.get("ns", "a").unwrap();
        assert_eq!((a.unique_id, a.deleting, a.priority), ("vm-1", true, 5));
        ix.upsert("ns", "a", "vm-1", false, -3);
        assert_eq!(ix.get("ns", "a").map(|v| (v.deleting, v.priority)), Some((false, -3)));
        // a new uniqueID moves the uid lookup
        ix.upsert("ns", "a", "vm-9", false, 0);
        assert_eq!(ix.by_unique_id("vm-1"), None);
        assert_eq!(ix.by_unique_id("vm-9").map(|v| v.name), Some("a"));
        assert!(ix.dead > 0);
        ix.check();
        // a deleted slot is reused by the next insert
        let slots = ix.entries.len();
        assert!(ix.delete("ns", "a"));
        assert!(ix.get("ns", "a").is_none());
        ix.upsert("other", "c", "vm-3", false, 1);
        assert_eq!(ix.entries.len(), slots);
        assert_eq!(
            ix.by_unique_id("vm-3").map(|v| (v.namespace, v.name)),
            Some(("other", "c"))
        );
        assert_eq!(ix.by_unique_id("vm-2").map(|v| v.name), Some("b"));
        ix.check();
        // empty uniqueID: not in the uid table, and back again
        ix.upsert("ns", "b", "", false, 0);
        assert_eq!(ix.by_unique_id("vm-2"), None);
        assert_eq!(ix.by_uid.len(), 1);
        ix.upsert("ns", "b", "vm-2", false, 0);
        assert_eq!(ix.by_unique_id("vm-2").map(|v| v.name), Some("b"));
        ix.check();
    }

    #[test]
    fn same_name_in_two_namespaces_and_odd_strings() {
        let mut ix = IndexInner::default();
        let long = "x".repeat(5000);
        ix.upsert("ns1", "vm", "u1", false, 0);
        ix.upsert("ns2", "vm", "u2", false, 0);
        ix.upsert("ns1", &long, "ünïcödé-🙂", false, 0);
        ix.upsert("", "", "", false, 0);
        assert_eq!(ix.get("ns1", "vm").map(|v| v.unique_id), Some("u1"));
        assert_eq!(ix.get("ns2", "vm").map(|v| v.unique_id), Some("u2"));
        assert_eq!(ix.get("ns3", "vm"), None);
        assert_eq!(ix.by_unique_id("ünïcödé-🙂").map(|v| v.name.len()), Some(5000));
        assert_eq!(ix.get("", "").map(|v| v.namespace), Some(""));
        assert_eq!(ix.len(), 4);
        ix.check();
    }

    #[test]
    fn namespaces_are_interned_and_freed() {
        let mut ix = IndexInner::default();
        for i in 0..100 {
            ix.upsert(["a", "b"][i % 2], &format!("vm-{i}"), &format!("u-{i}"), false, 0);
        }
        assert_eq!(ix.ns.slots.len(), 2);
        assert_eq!(ix.ns.slots.iter().map(|s| s.refs).collect::<Vec<_>>(), [50, 50]);
        for i in (0..100).step_by(2) {
            assert!(ix.delete("a", &format!("vm-{i}")));
        }
        ix.check();
        assert_eq!(ix.ns.lookup(&ix.hasher, "a"), None);
        assert_eq!(ix.ns.free, [0]);
        // the freed id is reused by the next namespace
        ix.upsert("c", "vm", "u", false, 0);
        assert_eq!(ix.ns.lookup(&ix.hasher, "c"), Some(0));
        assert_eq!(ix.get("b", "vm-1").map(|v| v.namespace), Some("b"));
        ix.check();
    }

    #[test]
    fn compaction_reclaims_dead_records() {
        let mut ix = IndexInner::default();
        for round in 0..50 {
            for i in 0..200 {
                ix.upsert("ns", &format!("vm-{i}"), &format!("uid-{round}-{i}"), false, i);
            }
        }
        ix.check();
        assert!(ix.dead * 2 <= ix.arena.len() || ix.dead < COMPACT_MIN_DEAD);
        let live: usize = (0..200).map(|i| format!("vm-{i}uid-49-{i}").len() + 2).sum();
        assert!(ix.arena.len() < 3 * live, "{} vs {live}", ix.arena.len());
        for i in 0..200 {
            assert_eq!(ix.by_unique_id(&format!("uid-49-{i}")).map(|v| v.priority), Some(i));
        }
        for i in 0..200 {
            assert!(ix.delete("ns", &format!("vm-{i}")));
        }
        ix.check();
        assert!(ix.arena.len() < COMPACT_MIN_DEAD);
        ix.clear();
        assert_eq!(ix.bytes(), 0);
    }

    /// Random operations against a plain map model (a tiny LCG keeps it deterministic).
    #[test]
    fn matches_a_map_model() {
        let mut ix = IndexInner::default();
        let mut model: HashMap<(String, String), (String, bool, i32)> = HashMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for step in 0..20_000 {
            let ns = format!("ns-{}", next(5));
            let name = format!("vm-{}", next(300));
            let uid = match next(4) {
                0 => String::new(),
                _ => format!("vm-{}", next(300)),
            };
            match next(10) {
                0..=5 => {
                    let (deleting, priority) = (next(2) == 0, next(100) as i32 - 50);
                    ix.upsert(&ns, &name, &uid, deleting, priority);
                    model.insert((ns.clone(), name.clone()), (uid, deleting, priority));
                }
                6..=8 => assert_eq!(
                    ix.delete(&ns, &name),
                    model.remove(&(ns.clone(), name.clone())).is_some()
                ),
                _ => {
                    let claimants: Vec<_> = model.iter().filter(|(_, v)| !uid.is_empty() && v.0 == uid).collect();
                    let want = match claimants.as_slice() {
                        [(k, _)] => Some((k.0.as_str(), k.1.as_str())),
                        _ => None,
                    };
                    assert_eq!(ix.by_unique_id(&uid).map(|v| (v.namespace, v.name)), want);
                }
            }
            let got = ix
                .get(&ns, &name)
                .map(|v| (v.unique_id.to_owned(), v.deleting, v.priority));
            assert_eq!(got.as_ref(), model.get(&(ns.clone(), name.clone())));
            assert_eq!(ix.len(), model.len());
            if step % 1000 == 0 {
                ix.check();
            }
        }
        ix.check();
    }

    #[test]
    fn keys_lists_live_vms_only() {
        let ix = Index::new();
        ix.upsert("a", "one", "vm-1", false, 1);
        ix.upsert("b", "two", "", true, 2);
        ix.upsert("a", "three", "vm-3", false, 3);
        assert!(ix.delete("a", "one"));
        let mut keys = ix.keys();
        keys.sort();
        assert_eq!(keys, vec![("a".into(), "three".into()), ("b".into(), "two".into())]);
        ix.upsert("c", "four", "", false, 0); // reuses the vacant slot
        assert_eq!(ix.keys().len(), 3);
        ix.clear();
        assert!(ix.keys().is_empty());
    }

    /// Readers never see a torn state while a writer churns uniqueIDs, deletes and re-inserts.
    #[test]
    fn concurrent_readers() {
        let ix = Arc::new(Index::new());
        for i in 0..500 {
            ix.upsert("ns", &format!("vm-{i}"), &format!("u-{i}"), false, 0);
        }
        let writer = {
            let ix = ix.clone();
            std::thread::spawn(move || {
                for round in 0..40 {
                    for i in 0..500 {
                        let name = format!("vm-{i}");
                        if (i + round) % 7 == 0 {
                            ix.delete("ns", &name);
                        } else {
                            // the uniqueID always encodes the name, so readers can check pairs
                            ix.upsert("ns", &name, &format!("u-{i}"), round % 2 == 0, round);
                        }
                    }
                }
            })
        };
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let ix = ix.clone();
                std::thread::spawn(move || {
                    let mut hits = 0;
                    for _ in 0..40 {
                        for i in 0..500 {
                            let g = ix.read();
                            if let Some(v) = g.by_unique_id(&format!("u-{i}")) {
                                assert_eq!(v.name, format!("vm-{i}"));
                                assert_eq!(g.get("ns", v.name), Some(v));
                                hits += 1;
                            }
                        }
                    }
                    hits
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        ix.read().check();
    }
}

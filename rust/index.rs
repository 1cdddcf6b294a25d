// SPDX-License-Identifier: Apache-2.0
//! The uniqueID index: Kubernetes VirtualMachines by (namespace, name) and by `status.uniqueID`.
//!
//! Written from Python (the Kubernetes watch), read by the batch decision without the GIL.
//! One `RwLock` guards both maps so they never disagree; the decision holds the read lock for
//! one batch (microseconds), writers hold the write lock for one upsert.

use hashbrown::{Equivalent, HashMap};
use parking_lot::{RwLock, RwLockReadGuard};
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsName {
    pub namespace: Box<str>,
    pub name: Box<str>,
}

impl Hash for NsName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ns_name(&self.namespace, &self.name, state);
    }
}

fn hash_ns_name<H: Hasher>(ns: &str, name: &str, state: &mut H) {
    state.write(ns.as_bytes());
    state.write_u8(0xff);
    state.write(name.as_bytes());
}

/// Borrowed lookup key, so `get` does not allocate.
struct NsNameRef<'a>(&'a str, &'a str);

impl Hash for NsNameRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ns_name(self.0, self.1, state);
    }
}

impl Equivalent<NsName> for NsNameRef<'_> {
    fn equivalent(&self, key: &NsName) -> bool {
        &*key.namespace == self.0 && &*key.name == self.1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmState {
    pub unique_id: Box<str>,
    pub deleting: bool,
    pub priority: i32,
}

#[derive(Debug, Default)]
pub struct IndexInner {
    by_name: HashMap<NsName, VmState>,
    /// uniqueID → every VM that claims it (normally one).
    by_uid: HashMap<Box<str>, Vec<NsName>>,
}

impl IndexInner {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&VmState> {
        self.by_name.get(&NsNameRef(namespace, name))
    }

    /// The VM whose `status.uniqueID` is `uid`, when exactly one has it.
    pub fn by_unique_id(&self, uid: &str) -> Option<(&NsName, &VmState)> {
        match self.by_uid.get(uid).map(Vec::as_slice) {
            Some([one]) => self.by_name.get_key_value(one),
            _ => None,
        }
    }

    fn unlink_uid(&mut self, key: &NsName, uid: &str) {
        if uid.is_empty() {
            return;
        }
        if let Some(v) = self.by_uid.get_mut(uid) {
            v.retain(|k| k != key);
            if v.is_empty() {
                self.by_uid.remove(uid);
            }
        }
    }

    pub fn upsert(&mut self, namespace: &str, name: &str, state: VmState) {
        let key = NsName {
            namespace: namespace.into(),
            name: name.into(),
        };
        let old_uid = self.by_name.get(&key).map(|s| s.unique_id.clone());
        if let Some(old) = &old_uid {
            if **old != *state.unique_id {
                self.unlink_uid(&key, old);
            }
        }
        if !state.unique_id.is_empty() && old_uid.as_deref() != Some(&*state.unique_id) {
            self.by_uid
                .entry(state.unique_id.clone())
                .or_default()
                .push(key.clone());
        }
        self.by_name.insert(key, state);
    }

    pub fn delete(&mut self, namespace: &str, name: &str) -> bool {
        let Some((key, state)) = self.by_name.remove_entry(&NsNameRef(namespace, name)) else {
            return false;
        };
        self.unlink_uid(&key, &state.unique_id);
        true
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
        self.by_uid.clear();
    }

    pub fn bytes(&self) -> usize {
        let str_heap = |s: &str| if s.is_empty() { 0 } else { (s.len() + 8 + 15) & !15 };
        let mut total = self.by_name.capacity() * (std::mem::size_of::<(NsName, VmState)>() + 1)
            + self.by_uid.capacity() * (std::mem::size_of::<(Box<str>, Vec<NsName>)>() + 1);
        for (k, v) in &self.by_name {
            total += str_heap(&k.namespace) + str_heap(&k.name) + str_heap(&v.unique_id);
        }
        for (k, v) in &self.by_uid {
            total += str_heap(k) + v.capacity() * std::mem::size_of::<NsName>() + 16;
            for n in v {
                total += str_heap(&n.namespace) + str_heap(&n.name);
            }
        }
        total
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
        self.inner.write().upsert(
            namespace,
            name,
            VmState {
                unique_id: unique_id.into(),
                deleting,
                priority,
            },
        );
    }

    pub fn delete(&self, namespace: &str, name: &str) -> bool {
        self.inner.write().delete(namespace, name)
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<VmState> {
        self.inner.read().get(namespace, name).cloned()
    }

    pub fn by_unique_id(&self, uid: &str) -> Option<(String, String)> {
        self.inner
            .read()
            .by_unique_id(uid)
            .map(|(k, _)| (k.namespace.to_string(), k.name.to_string()))
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
    }
}

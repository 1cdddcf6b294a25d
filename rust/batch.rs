// SPDX-License-Identifier: Apache-2.0
//! The per-response decision (spec section 3, steps A–F, with the fixes of 7.2).
//!
//! A. Coalesce per MoRef in order of first appearance: the first kind wins, change sets are
//!    appended. A `leave` cancels what came before it in the batch; an update after a `leave`
//!    (re-enter) starts from an evicted cache entry.
//! B. Fingerprint each change (decode.rs/value.rs); removals and nil values are fingerprints.
//! C. Compare with the per-VM cache; no change → skipped `unchanged`.
//! D. Namespace/name: from this update's extraConfig, else the name remembered for the VM.
//!    Known name → `Index.get`, verified iff its uniqueID == MoRef; otherwise (unknown, or not
//!    in the index) `Index.by_unique_id(MoRef)` → verified.
//! E. Deleting → evict the cache entry, skipped `deleting`.
//! F. `enter` of a verified VM seen for the first time (no cache entry) → skipped `verified_enter`.
//!    A verified VM that re-enters (a new watcher after a restart, a lost session) with a changed
//!    fingerprint changed while no watcher saw it: it signals, or that change would be lost.
//!    Name still unknown → `Pending` (step G is the caller's), unless the VM is in the negative
//!    cache (known not to be managed) → skipped `unmanaged`. Otherwise a `Signal`.
//!
//! Delivery (durable.rs): each signal carries the digest of the VM's state; once its request is
//! delivered, `delivered` records that digest. A first sighting with a record (a checkpoint loaded
//! after a restart or failover, or a VM evicted from the cache) is compared with it instead of
//! step F: equal → skipped `delivered`; different → a change, signalled even for a verified VM. A
//! re-enter with unchanged fingerprints whose request was never delivered (the watcher ended between
//! decision and queue) signals again, reason `undelivered`.
//!
//! `leave` evicts the VM (fingerprints, remembered name, negative flag). With `signal_on_leave`
//! a VM that is in the index (and not deleting) gets a `Signal` with reason `left`; every other
//! leave is counted as skipped `left`.

use crate::cache::{CacheStats, FpCache, Props, MAX_PATHS};
use crate::decode::UpdateSet;
use crate::decode::{decode, decode_strict, BadUpdate, DecodeOptions, Decoded, Missing, ObjectUpdate, SoapFault};
use crate::decode::{KIND_ENTER, KIND_LEAVE};
use crate::durable::{self, Durable, FIRST_PENDING, UNDELIVERED};
use crate::errors::{Result, VmwatchError};
use crate::filter::{parse_namespaced_name, Filter, EXTRA_CONFIG_KEYED_PREFIX, EXTRA_CONFIG_PATH};
use crate::index::{Index, IndexInner};
use hashbrown::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// A property path as signals carry it: shared with the path table, not copied per signal.
pub type PathName = Arc<str>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Changed,
    Entered,
    Left,
    Undelivered,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Changed => "changed",
            Reason::Entered => "entered",
            Reason::Left => "left",
            Reason::Undelivered => "undelivered",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub moref: String,
    pub kind: u8,
    pub namespace: String,
    pub name: String,
    pub verified: bool,
    pub deleting: bool,
    pub priority: i32,
    /// Sorted.
    pub changed: Vec<PathName>,
    pub reason: Reason,
    /// The digest of the state this signal is for: pass it to `Decider::delivered` once delivered.
    pub digest: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub moref: String,
    pub kind: u8,
    pub changed: Vec<PathName>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    pub unchanged: u32,
    pub deleting: u32,
    pub verified_enter: u32,
    pub unmanaged: u32,
    pub left: u32,
    pub delivered: u32,
}

impl Skipped {
    pub fn items(&self) -> [(&'static str, u32); 6] {
        [
            ("unchanged", self.unchanged),
            ("deleting", self.deleting),
            ("verified_enter", self.verified_enter),
            ("unmanaged", self.unmanaged),
            ("left", self.left),
            ("delivered", self.delivered),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub version: Option<String>,
    pub truncated: bool,
    pub objects: usize,
    /// Object updates by kind: `[enter, modify, leave]` (indexed by `KIND_*`).
    pub kinds: [usize; 3],
    pub changes: usize,
    pub signals: Vec<Signal>,
    pub pending: Vec<Pending>,
    pub skipped: Skipped,
    pub missing: Vec<Missing>,
    /// Object updates the decoder skipped (decode.rs); their VMs are forgotten by the cache.
    pub bad: Vec<BadUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Batch(Batch),
    Fault(SoapFault),
}

/// Property paths as small integers (bits of the cache masks).
#[derive(Debug, Default)]
struct PathTable {
    names: Vec<PathName>,
    /// `durable::path_key` of each name: digests do not depend on the order paths were interned in.
    keys: Vec<u64>,
    ids: HashMap<PathName, u32>,
    /// Ids in the order of their names: `names_of` lists a mask sorted without sorting strings.
    by_name: Vec<u32>,
    extra_config_mask: u64,
}

impl PathTable {
    fn intern(&mut self, path: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(path) {
            return Some(id);
        }
        if self.names.len() >= MAX_PATHS {
            return None;
        }
        let id = self.names.len() as u32;
        let name: PathName = path.into();
        self.names.push(name.clone());
        self.keys.push(durable::path_key(path));
        self.ids.insert(name, id);
        let at = self.by_name.partition_point(|&i| *self.names[i as usize] < *path);
        self.by_name.insert(at, id);
        if path == EXTRA_CONFIG_PATH || path.starts_with(EXTRA_CONFIG_KEYED_PREFIX) {
            self.extra_config_mask |= 1u64 << id;
        }
        Some(id)
    }

    /// The names of the paths in `mask`, appended in sorted order.
    fn names_of(&self, mask: u64, out: &mut Vec<PathName>) {
        if mask == 0 {
            return;
        }
        out.reserve(mask.count_ones() as usize);
        for &id in &self.by_name {
            if mask & (1u64 << id) != 0 {
                out.push(self.names[id as usize].clone());
            }
        }
    }
}

/// Configuration of a [`Decider`].
#[derive(Debug, Clone)]
pub struct DeciderConfig {
    pub watched_paths: Vec<String>,
    pub filter: Filter,
    pub cache_max_entries: usize,
    pub cache_ttl_s: f64,
    pub signal_on_leave: bool,
}

/// What the index says about a VM.
struct Lookup {
    name: Option<(String, String)>,
    found: bool,
    verified: bool,
    deleting: bool,
    priority: i32,
}

fn lookup(ix: &IndexInner, moref: &str, name: Option<(String, String)>) -> Lookup {
    if let Some((ns, n)) = &name {
        if let Some(st) = ix.get(ns, n) {
            return Lookup {
                found: true,
                verified: st.unique_id == moref,
                deleting: st.deleting,
                priority: st.priority,
                name,
            };
        }
    }
    if let Some(st) = ix.by_unique_id(moref) {
        return Lookup {
            name: Some((st.namespace.to_owned(), st.name.to_owned())),
            found: true,
            verified: true,
            deleting: st.deleting,
            priority: st.priority,
        };
    }
    Lookup {
        name,
        found: false,
        verified: false,
        deleting: false,
        priority: 0,
    }
}

fn split_name(s: &str) -> Option<(String, String)> {
    parse_namespaced_name(s).map(|(a, b)| (a.to_owned(), b.to_owned()))
}

/// The stateful decision core behind `vmwatch._vmwatch.Decider` (no PyO3 types).
pub struct Decider {
    filter: Filter,
    paths: PathTable,
    cache: FpCache,
    durable: Durable,
    signal_on_leave: bool,
    epoch: Instant,
    props: Props,
}

impl Decider {
    pub fn new(cfg: DeciderConfig) -> Result<Self> {
        if cfg.cache_max_entries == 0 {
            return Err(VmwatchError::Config("cache_max_entries must be at least 1".into()));
        }
        if !cfg.cache_ttl_s.is_finite() || cfg.cache_ttl_s < 0.0 {
            return Err(VmwatchError::Config("cache_ttl_s must be a finite number >= 0".into()));
        }
        let mut paths = PathTable::default();
        for p in &cfg.watched_paths {
            if paths.intern(p).is_none() {
                return Err(VmwatchError::Config(format!(
                    "at most {MAX_PATHS} watched paths are supported"
                )));
            }
        }
        let ttl_ds = (cfg.cache_ttl_s * 10.0).ceil().min(u32::MAX as f64) as u32;
        Ok(Decider {
            filter: cfg.filter,
            paths,
            cache: FpCache::new(cfg.cache_max_entries, ttl_ds),
            // records outlive cache entries (eviction, expiry) but not the VMs: bounded all the same
            durable: Durable::new(cfg.cache_max_entries.saturating_mul(4).max(100_000)),
            signal_on_leave: cfg.signal_on_leave,
            epoch: Instant::now(),
            props: Props::default(),
        })
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    fn now(&self) -> u32 {
        (self.epoch.elapsed().as_millis() / 100).min(u32::MAX as u128) as u32
    }

    /// Decode and decide one response body.
    pub fn decide(&mut self, body: &[u8], index: &Index) -> Result<Outcome> {
        match decode(body, &self.filter, DecodeOptions { kept_keys: false })? {
            Decoded::Fault(f) => Ok(Outcome::Fault(f)),
            Decoded::Update(set) => Ok(Outcome::Batch(self.decide_set(set, index))),
        }
    }

    /// Decide an already decoded update set.
    pub fn decide_set(&mut self, set: UpdateSet, index: &Index) -> Batch {
        // A skipped (bad) object update may have carried a change: forget its VM (the cache entry, and
        // what was delivered), so that its next good update (or one later in this batch) signals.
        for b in &set.bad {
            if let Some(moref) = &b.moref {
                self.forget(moref);
            }
        }
        let now = self.now();
        let ix = index.read();
        let mut kinds = [0usize; 3];
        for u in &set.objects {
            kinds[usize::from(u.kind.min(2))] += 1;
        }
        let mut batch = Batch {
            changes: set.changes(),
            objects: set.objects.len(),
            kinds,
            version: set.version,
            truncated: set.truncated,
            missing: set.missing,
            bad: set.bad,
            ..Batch::default()
        };
        // Step A: coalesce per MoRef, in order of first appearance.
        let mut order: Vec<&str> = Vec::new();
        let mut groups: HashMap<&str, Vec<&ObjectUpdate>> = HashMap::with_capacity(set.objects.len());
        for u in &set.objects {
            groups
                .entry(u.moref.as_str())
                .or_insert_with(|| {
                    order.push(u.moref.as_str());
                    Vec::new()
                })
                .push(u);
        }
        for moref in order {
            let updates = &groups[moref];
            self.decide_object(moref, updates, &ix, now, &mut batch);
        }
        batch
    }

    fn decide_object(&mut self, moref: &str, updates: &[&ObjectUpdate], ix: &IndexInner, now: u32, out: &mut Batch) {
        let mut kind: Option<u8> = None;
        let mut evict = false;
        let mut first_change = 0usize; // index into `updates` after the last leave
        for (i, u) in updates.iter().enumerate() {
            if u.kind == KIND_LEAVE {
                kind = Some(KIND_LEAVE);
                evict = true;
                first_change = i + 1;
            } else if kind.is_none() || kind == Some(KIND_LEAVE) {
                kind = Some(u.kind);
            }
        }
        let kind = kind.unwrap_or(KIND_LEAVE);
        let key = durable::moref_key(moref);
        if evict {
            let remembered = self.cache.peek(moref, now).and_then(|s| self.cache.name(s));
            self.cache.remove(moref);
            self.durable.remove(key);
            if kind == KIND_LEAVE {
                if self.signal_on_leave {
                    let l = lookup(ix, moref, remembered.as_deref().and_then(split_name));
                    if l.found && !l.deleting {
                        let (namespace, name) = l.name.unwrap_or_default();
                        out.signals.push(Signal {
                            moref: moref.to_owned(),
                            kind: KIND_LEAVE,
                            namespace,
                            name,
                            verified: l.verified,
                            deleting: false,
                            priority: l.priority,
                            changed: Vec::new(),
                            reason: Reason::Left,
                            digest: UNDELIVERED,
                        });
                        return;
                    }
                }
                out.skipped.left += 1;
                return;
            }
        }
        // Step B: props and the name carried by extraConfig (the last extraConfig change wins).
        self.props.clear();
        let mut overflow: Vec<PathName> = Vec::new();
        let mut name_in_update: Option<Option<(String, String)>> = None;
        for u in &updates[first_change..] {
            for c in &u.changes {
                if let Some(n) = &c.name {
                    name_in_update = Some(n.clone());
                }
                let Some(fp) = c.fp else { continue };
                match self.paths.intern(&c.path) {
                    Some(bit) => self.props.set(bit, fp),
                    // beyond the path table: never cached, always a change
                    None => overflow.push(c.path.clone()),
                }
            }
        }
        // Step C.
        let up = self.cache.update(moref, &self.props, now);
        let slot = up.slot;
        if up.changed & self.paths.extra_config_mask != 0 || matches!(name_in_update, Some(Some(_))) {
            self.cache.set_negative(slot, false);
        }
        // The name key is not fingerprinted (the operator writes it), but a VM that had no name (not
        // managed, or not yet fetched) and gains one now maps to a Kubernetes object that never heard
        // of it. (A name that differs from the one the index gave is not a gain: that would flip-flop.)
        let mut name_gained = false;
        let name: Option<(String, String)> = match &name_in_update {
            Some(n) => {
                let s = n.as_ref().map(|(a, b)| format!("{a}/{b}"));
                name_gained = s.is_some() && !up.new && !self.cache.has_name(slot);
                self.cache.set_name(slot, s.as_deref());
                n.clone()
            }
            None => self.cache.name(slot).as_deref().and_then(split_name),
        };
        // Delivery: a first sighting is compared with what was delivered (if known), and a re-enter
        // with nothing new is signalled again if its request never got out.
        self.durable.sighted(key);
        let unchanged = up.changed == 0 && overflow.is_empty() && !name_gained;
        let mut digest = UNDELIVERED;
        let mut away = false; // changed while no watcher of ours saw it: signal even if verified
        let mut undelivered = false;
        if up.new || (kind == KIND_ENTER && unchanged) {
            digest = self.digest(slot);
            match self.durable.get(key) {
                Some(d) if d == digest && overflow.is_empty() => {
                    if up.new {
                        out.skipped.delivered += 1;
                    } else {
                        out.skipped.unchanged += 1;
                    }
                    return;
                }
                Some(_) if up.new => away = true,
                Some(_) => undelivered = true,
                None => {}
            }
        }
        if !up.new && unchanged && !undelivered {
            out.skipped.unchanged += 1;
            return;
        }
        if digest == UNDELIVERED {
            digest = self.digest(slot);
        }
        let mut changed = Vec::new();
        self.paths.names_of(up.changed, &mut changed); // sorted
        let gained_path = name_gained && up.changed & self.paths.extra_config_mask == 0;
        if gained_path || !overflow.is_empty() {
            if gained_path {
                changed.push(EXTRA_CONFIG_PATH.into());
            }
            changed.extend(overflow);
            changed.sort_unstable();
            changed.dedup();
        }
        // Step D.
        let had_name = name.is_some();
        let l = lookup(ix, moref, name.clone());
        if l.found && l.name != name {
            let s = l.name.as_ref().map(|(a, b)| format!("{a}/{b}"));
            self.cache.set_name(slot, s.as_deref());
        }
        // Step E.
        if l.deleting {
            self.cache.remove(moref);
            self.durable.remove(key);
            out.skipped.deleting += 1;
            return;
        }
        // Step F: only a first sighting nothing is known about; the controller's own start covers it.
        if kind == KIND_ENTER && l.verified && up.new && !away {
            self.durable.deliver(key, digest);
            out.skipped.verified_enter += 1;
            return;
        }
        match l.name {
            None => {
                debug_assert!(!had_name);
                if self.cache.is_negative(slot) {
                    self.durable.remove(key);
                    out.skipped.unmanaged += 1;
                } else {
                    if up.new && kind == KIND_ENTER {
                        self.durable.first_pending(key); // resolve() applies step F as without records
                    } else {
                        self.durable.pending(key);
                    }
                    out.pending.push(Pending {
                        moref: moref.to_owned(),
                        kind,
                        changed,
                    });
                }
            }
            Some((namespace, name)) => {
                self.durable.pending(key);
                out.signals.push(Signal {
                    moref: moref.to_owned(),
                    kind,
                    namespace,
                    name,
                    verified: l.verified,
                    deleting: false,
                    priority: l.priority,
                    changed,
                    reason: if undelivered {
                        Reason::Undelivered
                    } else if kind == KIND_ENTER && !away {
                        Reason::Entered
                    } else {
                        Reason::Changed
                    },
                    digest,
                })
            }
        }
    }

    /// The digest of the VM's cached state (durable.rs).
    fn digest(&self, slot: u32) -> u64 {
        let keys = &self.paths.keys;
        durable::digest(self.cache.fingerprints(slot).map(|(bit, fp)| (keys[bit as usize], fp)))
    }

    /// Finish a `Pending` after the name fetch (step G): steps D–F and H. An empty namespace or
    /// name records the VM as not managed (negative cache) and returns `None`.
    pub fn resolve(
        &mut self,
        index: &Index,
        moref: &str,
        kind: u8,
        changed: Vec<PathName>,
        namespace: &str,
        name: &str,
    ) -> Option<Signal> {
        let now = self.now();
        let slot = match self.cache.lookup(moref, now) {
            Some(s) => s,
            None => self.cache.update(moref, &Props::default(), now).slot,
        };
        let key = durable::moref_key(moref);
        let valid = !namespace.is_empty() && !name.is_empty() && !namespace.contains('/') && !name.contains('/');
        if !valid {
            self.cache.set_negative(slot, true);
            self.durable.remove(key);
            return None;
        }
        self.cache.set_negative(slot, false);
        let ix = index.read();
        let l = lookup(&ix, moref, Some((namespace.to_owned(), name.to_owned())));
        let (ns, n) = l.name.clone().unwrap_or_default();
        self.cache.set_name(slot, Some(&format!("{ns}/{n}")));
        if l.deleting {
            self.cache.remove(moref);
            self.durable.remove(key);
            return None;
        }
        let digest = self.digest(slot);
        // step F, unless a record says what was delivered differs (or never got out)
        let record = self.durable.get(key);
        if kind == KIND_ENTER && l.verified && record.map_or(true, |d| d == digest || d == FIRST_PENDING) {
            self.durable.deliver(key, digest);
            return None;
        }
        self.durable.pending(key);
        Some(Signal {
            moref: moref.to_owned(),
            kind,
            namespace: ns,
            name: n,
            verified: l.verified,
            deleting: false,
            priority: l.priority,
            changed,
            reason: match kind {
                KIND_ENTER => Reason::Entered,
                KIND_LEAVE => Reason::Left,
                _ => Reason::Changed,
            },
            digest,
        })
    }

    /// Forget what was seen of a VM (a failure between decision and queue): its next sighting
    /// counts as a change, and a checkpoint says its request is still owed.
    pub fn forget(&mut self, moref: &str) {
        self.cache.remove(moref);
        self.durable.undeliver(durable::moref_key(moref));
    }

    /// The request for the state `digest` (from its `Signal`) was delivered.
    pub fn delivered(&mut self, moref: &str, digest: u64) {
        if digest != UNDELIVERED {
            self.durable.deliver(durable::moref_key(moref), digest);
        }
    }

    /// Merge a checkpoint's records (see durable.rs); returns how many.
    pub fn load_checkpoint(&mut self, blob: &[u8]) -> Result<usize> {
        self.durable.load(blob)
    }

    /// The checkpoint: every delivery record, sorted, 16 bytes each.
    pub fn checkpoint(&self) -> Vec<u8> {
        self.durable.encode()
    }

    /// The first complete initial sync after a load is over: drop records of VMs it did not see.
    pub fn end_initial_sync(&mut self) -> usize {
        self.durable.end_initial_sync()
    }

    /// Delivery records held, and their heap bytes.
    pub fn records(&self) -> (usize, usize) {
        (self.durable.len(), self.durable.bytes())
    }

    pub fn purge(&mut self) {
        self.cache.clear();
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The remembered `"ns/name"` of a VM (tests).
    pub fn remembered_name(&self, moref: &str) -> Option<String> {
        let now = self.now();
        self.cache.peek(moref, now).and_then(|s| self.cache.name(s))
    }
}

/// One object update as `vmwatch decode` prints it (stateless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSummary {
    pub moref: String,
    pub obj_type: String,
    pub kind: u8,
    pub props: Vec<String>,
    pub extra_config_keys: Option<Vec<String>>,
    pub namespaced_name: Option<String>,
}

/// Stateless decode for the CLI: one summary per object update, in document order.
pub fn summarize(body: &[u8], filter: &Filter) -> Result<(Option<String>, bool, Vec<UpdateSummary>)> {
    let set = match decode_strict(body, filter, DecodeOptions { kept_keys: true })? {
        Decoded::Update(set) => set,
        Decoded::Fault(f) => {
            return Err(VmwatchError::decode(
                "soap_fault",
                format!("SOAP fault {}: {}", f.fault_type, f.message),
                0,
            ))
        }
    };
    let mut out = Vec::with_capacity(set.objects.len());
    for u in set.objects {
        let mut props: Vec<String> = u.changes.iter().map(|c| c.path.to_string()).collect();
        props.sort_unstable();
        props.dedup();
        let mut keys: Option<Vec<String>> = None;
        let mut name: Option<String> = None;
        for c in u.changes {
            if let Some(k) = c.kept_keys {
                let all = keys.get_or_insert_with(Vec::new);
                all.extend(k);
            }
            if let Some(Some((a, b))) = c.name {
                name = Some(format!("{a}/{b}"));
            }
        }
        if let Some(k) = keys.as_mut() {
            k.sort_unstable();
            k.dedup();
        }
        out.push(UpdateSummary {
            moref: u.moref,
            obj_type: u.obj_type,
            kind: u.kind,
            props,
            extra_config_keys: keys,
            namespaced_name: name,
        });
    }
    Ok((set.version, set.truncated, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_lists_a_mask_in_name_order_whatever_the_interning_order() {
        let mut t = PathTable::default();
        let ids: Vec<u32> = [
            "summary.runtime.powerState",
            "config.extraConfig",
            "snapshot",
            "config.annotation",
        ]
        .iter()
        .map(|p| t.intern(p).unwrap())
        .collect();
        assert_eq!(t.intern("snapshot"), Some(ids[2]), "interned once");
        let mut out = Vec::new();
        t.names_of(u64::MAX >> (64 - ids.len()), &mut out);
        let names: Vec<&str> = out.iter().map(|p| &**p).collect();
        assert_eq!(
            names,
            [
                "config.annotation",
                "config.extraConfig",
                "snapshot",
                "summary.runtime.powerState"
            ]
        );
        out.clear();
        t.names_of((1 << ids[0]) | (1 << ids[3]), &mut out);
        assert_eq!(
            out,
            vec![PathName::from("config.annotation"), "summary.runtime.powerState".into()]
        );
        assert!(Arc::ptr_eq(&out[0], &t.names[ids[3] as usize]), "shared, not copied");
    }
}

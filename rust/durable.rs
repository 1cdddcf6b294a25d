// SPDX-License-Identifier: Apache-2.0
//! What was handed on, per VM: the digest of the state whose request was delivered.
//!
//! The fingerprint cache says what vmwatch has *seen*; this says what it has *delivered* (the request
//! for that state left the work queue, or needed no request). The two differ between a decision and
//! the delivery of its request: a watcher restart (lost session, lost name fetch) or a process restart
//! (kill -9, failover to another replica) in that window must not turn a seen-but-undelivered change
//! into an "unchanged" re-enter (issue 11, A1 and A2).
//!
//! Records are `(xxh3-64 of the MoRef value, digest)`, 16 bytes; [`UNDELIVERED`] (0) marks a VM whose
//! request is still on its way, and never equals a [`digest`]. The checkpoint is these records, sorted,
//! little-endian: a new Lease holder loads it before its first wait, so a first sighting whose digest
//! differs from its record is a change (signalled whether verified or not), and one that matches needs
//! nothing. Records of VMs not sighted by the first complete initial sync after a load are dropped
//! (the VM no longer exists, or is no longer watched).
//!
//! Memory: one `hashbrown` bucket of 16 bytes plus a control byte per VM (~20–37 bytes/VM with the
//! table's load factor), capped at `max_records`.

use crate::errors::{Result, VmwatchError};
use hashbrown::{HashMap, HashSet};
use xxhash_rust::xxh3::xxh3_64;

/// Bytes per checkpoint record.
pub const RECORD: usize = 16;
/// A VM whose request has not been delivered yet.
pub const UNDELIVERED: u64 = 0;
/// A VM sighted for the first time whose name fetch is still owed: nothing was delivered and nothing is owed
/// beyond that fetch (the reference's step F still applies to it). Never written to a checkpoint.
pub const FIRST_PENDING: u64 = 1;

/// The record key of a MoRef value.
pub fn moref_key(moref: &str) -> u64 {
    xxh3_64(moref.as_bytes())
}

/// The hash of a property path, the same in every process whatever the watched paths' order.
pub fn path_key(path: &str) -> u64 {
    xxh3_64(path.as_bytes())
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finalizer: every input bit reaches every output bit
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The digest of a VM's state from its non-null `(path_key, fingerprint)` pairs, in any order.
/// Never one of the markers ([`UNDELIVERED`], [`FIRST_PENDING`]).
pub fn digest(pairs: impl Iterator<Item = (u64, u64)>) -> u64 {
    let d = pairs.fold(0u64, |acc, (p, fp)| acc.wrapping_add(mix(p ^ fp.rotate_left(29))));
    if d <= FIRST_PENDING {
        d + 2
    } else {
        d
    }
}

#[derive(Debug)]
pub struct Durable {
    records: HashMap<u64, u64>,
    /// Keys loaded from a checkpoint and not sighted since; dropped at the end of the initial sync.
    unsighted: HashSet<u64>,
    max_records: usize,
    refused: u64,
}

impl Durable {
    pub fn new(max_records: usize) -> Self {
        Durable {
            records: HashMap::new(),
            unsighted: HashSet::new(),
            max_records: max_records.max(1),
            refused: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, key: u64) -> Option<u64> {
        self.records.get(&key).copied()
    }

    /// The VM was seen by the current watcher: its record (if loaded) is not stale.
    pub fn sighted(&mut self, key: u64) {
        if !self.unsighted.is_empty() {
            self.unsighted.remove(&key);
        }
    }

    fn insert(&mut self, key: u64, value: u64) {
        if let Some(v) = self.records.get_mut(&key) {
            *v = value;
        } else if self.records.len() < self.max_records {
            self.records.insert(key, value);
        } else {
            self.refused += 1;
        }
    }

    /// The request for state `digest` was delivered (or none was needed).
    pub fn deliver(&mut self, key: u64, digest: u64) {
        self.insert(key, digest);
    }

    /// A request is on its way; until it is delivered the VM counts as changed. An existing record
    /// keeps its digest: it is still what was delivered last, and differs from the state now.
    pub fn pending(&mut self, key: u64) {
        if !self.records.contains_key(&key) {
            self.insert(key, UNDELIVERED);
        }
    }

    /// A first sighting waits for its name fetch (see [`FIRST_PENDING`]).
    pub fn first_pending(&mut self, key: u64) {
        if !self.records.contains_key(&key) {
            self.insert(key, FIRST_PENDING);
        }
    }

    /// Whatever was delivered, the VM must be signalled again (a failure between decision and queue).
    pub fn undeliver(&mut self, key: u64) {
        if let Some(v) = self.records.get_mut(&key) {
            *v = UNDELIVERED;
        }
    }

    /// The VM is gone (leave, deleting) or not ours to track (not managed).
    pub fn remove(&mut self, key: u64) {
        self.records.remove(&key);
        self.unsighted.remove(&key);
    }

    pub fn clear(&mut self) {
        self.records = HashMap::new();
        self.unsighted = HashSet::new();
    }

    /// Merge a checkpoint (records overwrite: they are what the last holder delivered). Returns the
    /// number of records. A length that is not a multiple of [`RECORD`] is an error and loads nothing.
    pub fn load(&mut self, blob: &[u8]) -> Result<usize> {
        if blob.len() % RECORD != 0 {
            return Err(VmwatchError::Config(format!(
                "checkpoint of {} bytes is not a whole number of {RECORD}-byte records",
                blob.len()
            )));
        }
        let n = blob.len() / RECORD;
        self.records
            .reserve(n.min(self.max_records.saturating_sub(self.records.len())));
        for rec in blob.chunks_exact(RECORD) {
            let key = u64::from_le_bytes(rec[..8].try_into().unwrap_or_default());
            let value = u64::from_le_bytes(rec[8..].try_into().unwrap_or_default());
            self.insert(key, value);
            if self.records.contains_key(&key) {
                self.unsighted.insert(key);
            }
        }
        Ok(n)
    }

    /// Every record, sorted by key, as the checkpoint's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut recs: Vec<(u64, u64)> = self
            .records
            .iter()
            .filter(|&(_, &v)| v != FIRST_PENDING)
            .map(|(&k, &v)| (k, v))
            .collect();
        recs.sort_unstable();
        let mut out = Vec::with_capacity(recs.len() * RECORD);
        for (k, v) in recs {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The first complete initial sync after a load has sighted every VM still watched: drop the
    /// records of the others. Returns how many were dropped.
    pub fn end_initial_sync(&mut self) -> usize {
        let n = self.unsighted.len();
        for key in self.unsighted.drain() {
            self.records.remove(&key);
        }
        self.unsighted = HashSet::new();
        if n > 0 {
            self.records.shrink_to_fit();
        }
        n
    }

    /// Records refused because `max_records` was reached.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Heap bytes of the table (buckets and control bytes) and the pending sighting set.
    pub fn bytes(&self) -> usize {
        self.records.allocation_size() + self.unsighted.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_free_and_never_undelivered() {
        let a = digest([(1, 10), (2, 20), (3, 30)].into_iter());
        let b = digest([(3, 30), (1, 10), (2, 20)].into_iter());
        assert_eq!(a, b);
        assert_ne!(a, digest([(1, 10), (2, 21), (3, 30)].into_iter()));
        // the same fingerprint under another path is another state
        assert_ne!(
            digest([(1, 10), (2, 20)].into_iter()),
            digest([(1, 20), (2, 10)].into_iter())
        );
        assert!(digest(std::iter::empty()) > FIRST_PENDING);
    }

    #[test]
    fn round_trip_and_prune() {
        let mut d = Durable::new(100);
        d.deliver(1, 11);
        d.pending(2);
        d.deliver(3, 33);
        d.undeliver(3);
        d.first_pending(4); // not written
        let blob = d.encode();
        assert_eq!(blob.len(), 3 * RECORD);
        let mut e = Durable::new(100);
        assert_eq!(e.load(&blob).unwrap(), 3);
        assert_eq!(
            (e.get(1), e.get(2), e.get(3)),
            (Some(11), Some(UNDELIVERED), Some(UNDELIVERED))
        );
        e.sighted(1);
        assert_eq!(e.end_initial_sync(), 2);
        assert_eq!((e.get(1), e.get(2)), (Some(11), None));
        // a later sync prunes nothing
        assert_eq!(e.end_initial_sync(), 0);
        assert!(e.load(&blob[..RECORD + 1]).is_err());
    }

    #[test]
    fn pending_keeps_the_last_delivered_digest() {
        let mut d = Durable::new(10);
        d.deliver(7, 70);
        d.pending(7);
        assert_eq!(d.get(7), Some(70));
        d.remove(7);
        d.pending(7);
        assert_eq!(d.get(7), Some(UNDELIVERED));
    }

    #[test]
    fn bounded() {
        let mut d = Durable::new(2);
        for k in 0..5 {
            d.deliver(k, 1);
        }
        assert_eq!((d.len(), d.refused()), (2, 3));
    }
}

// SPDX-License-Identifier: Apache-2.0
//! Fuzz the SOAP decoder and the batch decision: any input must yield a batch (its undecodable
//! object updates listed in `bad`), a fault or a typed DecodeError; never a panic, a hang (libFuzzer `-timeout`) or unbounded memory
//! (`-rss_limit_mb`). Seeds: tests/data (see fuzz/smoke.sh).
#![no_main]

use _vmwatch::batch::{Decider, DeciderConfig, Outcome};
use _vmwatch::decode::{decode, DecodeOptions, Decoded};
use _vmwatch::errors::VmwatchError;
use _vmwatch::filter::{Filter, DEFAULT_NAME_KEY};
use _vmwatch::index::Index;
use libfuzzer_sys::fuzz_target;

const PATHS: &[&str] = &["config.extraConfig", "config.hardware.device", "summary.runtime.powerState", "snapshot"];

fuzz_target!(|data: &[u8]| {
    let filter = Filter::new(Some(["govcsim", DEFAULT_NAME_KEY]), DEFAULT_NAME_KEY);
    let decoded = decode(data, &filter, DecodeOptions { kept_keys: true });
    match &decoded {
        Ok(Decoded::Update(set)) => {
            assert!(set.objects.iter().all(|o| !o.moref.is_empty()));
            // a skipped object update says where, and quotes little of the input
            assert!(set.bad.iter().all(|b| b.offset as usize <= data.len() && b.message.len() <= 1024));
        }
        Ok(Decoded::Fault(_)) => {}
        Err(VmwatchError::Decode(e)) => assert!(e.offset as usize <= data.len()),
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
    let ix = Index::new();
    ix.upsert("ns", "a", "vm-82", false, 1);
    let mut d = Decider::new(DeciderConfig {
        watched_paths: PATHS.iter().map(|s| s.to_string()).collect(),
        filter,
        cache_max_entries: 8,
        cache_ttl_s: 60.0,
        signal_on_leave: true,
    })
    .unwrap();
    // twice: the second pass exercises the warm-cache path
    for _ in 0..2 {
        match d.decide(data, &ix) {
            Ok(Outcome::Batch(b)) => assert!(b.signals.len() + b.pending.len() <= b.objects),
            Ok(Outcome::Fault(_)) | Err(VmwatchError::Decode(_)) => {}
            Err(other) => panic!("unexpected error kind: {other:?}"),
        }
    }
});

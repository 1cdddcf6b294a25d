// SPDX-License-Identifier: Apache-2.0
//! Decoder and decision on responses captured from vcsim (tests/data, see benches/capture.py)
//! and on hand-made bodies in real vCenter's style.

use _vmwatch::batch::{Decider, DeciderConfig, Outcome, Reason};
use _vmwatch::decode::{decode, decode_strict, DecodeOptions, Decoded, KIND_ENTER, KIND_LEAVE, KIND_MODIFY};
use _vmwatch::errors::VmwatchError;
use _vmwatch::filter::{Filter, DEFAULT_NAME_KEY};
use _vmwatch::index::Index;

const WATCHED: &[&str] = &[
    "config.annotation",
    "config.changeTrackingEnabled",
    "config.cpuAllocation",
    "config.cpuHotAddEnabled",
    "config.extraConfig",
    "config.flags.vvtdEnabled",
    "config.hardware.autoCoresPerSocket",
    "config.hardware.device",
    "config.hardware.memoryMB",
    "config.hardware.numCoresPerSocket",
    "config.hardware.numCPU",
    "config.hardware.simultaneousThreads",
    "config.keyId",
    "config.latencySensitivity",
    "config.memoryAllocation",
    "config.memoryHotAddEnabled",
    "config.memoryReservationLockedToMax",
    "config.nestedHVEnabled",
    "config.numaInfo",
    "config.vPMCEnabled",
    "guestHeartbeatStatus",
    "rootSnapshot",
    "snapshot",
    "summary.config.name",
    "summary.guest",
    "summary.overallStatus",
    "summary.runtime.connectionState",
    "summary.runtime.host",
    "summary.runtime.powerState",
    "resourcePool",
    "parent",
];

/// A few of the default ignored keys (the full list is Python's; the core takes it as input).
const IGNORED: &[&str] = &[
    "govcsim",
    "vmservice.namespacedName",
    "vmware.tools.internalversion",
    "numa.autosize.cookie",
];

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn filter() -> Filter {
    Filter::new(Some(IGNORED.iter().copied().chain(["ignoredKey1"])), DEFAULT_NAME_KEY)
}

fn decider(signal_on_leave: bool) -> Decider {
    Decider::new(DeciderConfig {
        watched_paths: WATCHED.iter().map(|s| s.to_string()).collect(),
        filter: filter(),
        cache_max_entries: 25_000,
        cache_ttl_s: 86_400.0,
        signal_on_leave,
    })
    .unwrap()
}

fn batch(d: &mut Decider, ix: &Index, name: &str) -> _vmwatch::batch::Batch {
    match d.decide(&data(name), ix).unwrap() {
        Outcome::Batch(b) => b,
        Outcome::Fault(f) => panic!("{name}: unexpected fault {f:?}"),
    }
}

fn decode_update(name: &str) -> _vmwatch::decode::UpdateSet {
    match decode(&data(name), &filter(), DecodeOptions { kept_keys: true }).unwrap() {
        Decoded::Update(u) => u,
        Decoded::Fault(f) => panic!("{f:?}"),
    }
}

#[test]
fn initial_sync_has_every_default_path() {
    let set = decode_update("initial-sync.xml");
    assert_eq!(set.version.as_deref(), Some("-"));
    assert!(!set.truncated);
    assert_eq!(set.objects.len(), 4);
    for o in &set.objects {
        assert_eq!(o.kind, KIND_ENTER);
        assert_eq!(o.obj_type, "VirtualMachine");
        let mut paths: Vec<&str> = o.changes.iter().map(|c| &*c.path).collect();
        paths.sort_unstable();
        let mut want: Vec<&str> = WATCHED.to_vec();
        want.sort_unstable();
        assert_eq!(paths, want, "{}", o.moref);
    }
    let named: Vec<_> = set
        .objects
        .iter()
        .filter_map(|o| {
            o.changes
                .iter()
                .find_map(|c| c.name.clone().flatten())
                .map(|n| (o.moref.clone(), n))
        })
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].1, ("my-namespace-1".to_owned(), "my-name-1".to_owned()));
}

#[test]
fn lifecycle_sequence() {
    let ix = Index::new();
    let mut d = decider(false);
    let b = batch(&mut d, &ix, "initial-sync.xml");
    assert_eq!((b.objects, b.changes), (4, 124));
    assert_eq!(b.signals.len(), 1);
    let s = &b.signals[0];
    assert_eq!(
        (s.namespace.as_str(), s.name.as_str(), s.kind),
        ("my-namespace-1", "my-name-1", KIND_ENTER)
    );
    assert_eq!(s.reason, Reason::Entered);
    assert!(!s.verified);
    assert_eq!(s.changed.len(), 31);
    assert!(s.changed.windows(2).all(|w| w[0] < w[1]), "changed paths are sorted");
    let vm = s.moref.clone();
    assert_eq!(b.pending.len(), 3, "VMs without a name need a fetch");

    let b = batch(&mut d, &ix, "extraconfig-modify.xml");
    assert_eq!(b.signals.len(), 1);
    assert_eq!(names(&b.signals[0].changed), ["config.extraConfig"]);
    assert_eq!(b.signals[0].kind, KIND_MODIFY);

    let b = batch(&mut d, &ix, "extraconfig-ignored-only.xml");
    assert!(b.signals.is_empty() && b.pending.is_empty());
    assert_eq!(b.skipped.unchanged, 1);

    let b = batch(&mut d, &ix, "extraconfig-remove.xml");
    assert_eq!(b.signals.len(), 1, "a removed key is a change");

    let b = batch(&mut d, &ix, "power-on.xml");
    assert_eq!(b.signals.len(), 1);
    assert!(names(&b.signals[0].changed).contains(&"summary.runtime.powerState"));

    let b = batch(&mut d, &ix, "snapshot.xml");
    assert_eq!(names(&b.signals[0].changed), ["rootSnapshot", "snapshot"]);

    // resending the same snapshot body is not a change
    let b = batch(&mut d, &ix, "snapshot.xml");
    assert_eq!(b.skipped.unchanged, 1);

    let b = batch(&mut d, &ix, "destroy.xml");
    assert_eq!(b.objects, 1);
    assert_eq!(b.skipped.left, 1);
    assert!(b.signals.is_empty());

    let b = batch(&mut d, &ix, "heartbeat.xml");
    assert_eq!(b.version, None);
    assert_eq!(b.objects, 0);

    // the remembered name lets a later change signal without a fetch
    assert_eq!(d.remembered_name(&vm).as_deref(), Some("my-namespace-1/my-name-1"));
}

#[test]
fn verified_enter_is_skipped_and_deleting_evicts() {
    let ix = Index::new();
    let set = decode_update("initial-sync.xml");
    let named = set
        .objects
        .iter()
        .find(|o| o.changes.iter().any(|c| matches!(c.name, Some(Some(_)))))
        .unwrap();
    ix.upsert("my-namespace-1", "my-name-1", &named.moref, false, 7);
    let other = set.objects.iter().find(|o| o.moref != named.moref).unwrap();
    ix.upsert("ns-x", "by-uid", &other.moref, false, 99);
    let mut d = decider(false);
    let b = batch(&mut d, &ix, "initial-sync.xml");
    assert_eq!(b.skipped.verified_enter, 2);
    assert_eq!(b.pending.len(), 2);
    // a modify for a verified VM signals, with the index's priority
    let b = batch(&mut d, &ix, "extraconfig-modify.xml");
    assert_eq!(b.signals.len(), 1);
    assert!(b.signals[0].verified);
    assert_eq!(b.signals[0].priority, 7);
    // deleting: skipped and evicted, so the same body is a first sighting again
    ix.upsert("my-namespace-1", "my-name-1", &named.moref, true, 97);
    let b = batch(&mut d, &ix, "power-on.xml");
    assert_eq!(b.skipped.deleting, 1);
    let b = batch(&mut d, &ix, "power-on.xml");
    assert_eq!(b.skipped.deleting, 1);
    // a uniqueID that does not match the MoRef is not verified
    ix.upsert("my-namespace-1", "my-name-1", "vm-someone-else", false, 1);
    let b = batch(&mut d, &ix, "initial-sync.xml");
    let s = b.signals.iter().find(|s| s.moref == named.moref).unwrap();
    assert!(!s.verified);
}

#[test]
fn leave_signals_only_when_asked_and_indexed() {
    let ix = Index::new();
    let mut d = decider(true);
    batch(&mut d, &ix, "initial-sync.xml");
    let b = batch(&mut d, &ix, "destroy.xml");
    assert_eq!((b.signals.len(), b.skipped.left), (0, 1), "not in the index");
    let set = decode_update("destroy.xml");
    let gone = &set.objects[0].moref;
    ix.upsert("ns", "gone", gone, false, 1);
    let b = batch(&mut d, &ix, "destroy.xml");
    assert_eq!(b.signals.len(), 1);
    assert_eq!(b.signals[0].reason, Reason::Left);
    assert_eq!(b.signals[0].kind, KIND_LEAVE);
}

#[test]
fn negative_cache_and_resolve() {
    let ix = Index::new();
    let mut d = decider(false);
    let b = batch(&mut d, &ix, "initial-sync.xml");
    let p = b.pending[0].clone();
    assert!(d.resolve(&ix, &p.moref, p.kind, p.changed.clone(), "", "").is_none());
    // a later power-on style change of an unmanaged VM: skipped as unmanaged
    let body = String::from_utf8(data("power-on.xml")).unwrap();
    let named = b.signals[0].moref.clone();
    let body = body.replace(&format!(">{named}<"), &format!(">{}<", p.moref));
    let b = match d.decide(body.as_bytes(), &ix).unwrap() {
        Outcome::Batch(b) => b,
        Outcome::Fault(_) => unreachable!(),
    };
    assert_eq!(b.skipped.unmanaged, 1);
    assert!(b.pending.is_empty());
    // resolve with a name signals
    let s = d
        .resolve(&ix, &p.moref, KIND_MODIFY, vec!["x".into()], "ns", "n")
        .unwrap();
    assert_eq!(
        (s.namespace.as_str(), s.name.as_str(), s.reason),
        ("ns", "n", Reason::Changed)
    );
}

#[test]
fn faults_are_results() {
    let f = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
    let opts = DecodeOptions { kept_keys: false };
    for (file, want) in [
        ("fault-not-authenticated.xml", "NotAuthenticated"),
        ("fault-request-canceled.xml", "RequestCanceled"),
        ("handmade-fault-invalid-version.xml", "InvalidCollectorVersion"),
    ] {
        match decode(&data(file), &f, opts).unwrap() {
            Decoded::Fault(fault) => assert_eq!(fault.fault_type, want, "{file}"),
            other => panic!("{file}: {other:?}"),
        }
    }
    match decode(&data("handmade-fault-invalid-version.xml"), &f, opts).unwrap() {
        Decoded::Fault(fault) => assert_eq!(fault.message, "The specified version is invalid & out of date."),
        _ => unreachable!(),
    }
}

#[test]
fn truncated_page() {
    let set = decode_update("truncated.xml");
    assert!(set.truncated);
    assert_eq!(set.objects.len(), 2);
}

#[test]
fn handmade_bodies_do_not_depend_on_bytes() {
    let a = decode_update("handmade-vcenter.xml");
    let b = decode_update("handmade-prefixes.xml");
    assert_eq!(a.version.as_deref(), Some("1_42"));
    let (oa, ob) = (&a.objects[0], &b.objects[0]);
    assert_eq!(oa.changes.len(), ob.changes.len());
    for (ca, cb) in oa.changes.iter().zip(&ob.changes) {
        assert_eq!(ca.path, cb.path);
        assert_eq!(ca.fp, cb.fp, "{}", ca.path);
        assert_eq!(ca.name, cb.name, "{}", ca.path);
    }
    let ec = &oa.changes[0];
    assert_eq!(ec.name, Some(Some(("team-a".to_owned(), "web&0".to_owned()))));
    assert_eq!(
        ec.kept_keys.as_deref().unwrap(),
        [
            "ethernet0.pciSlotNumber",
            "guestinfo.empty",
            "guestinfo.userdata",
            "sched.mem.min",
            "svga.present"
        ]
    );
    assert_eq!(
        a.missing,
        vec![
            (
                "vm-1001".to_owned(),
                "config.numaInfo".to_owned(),
                "NoPermission".to_owned()
            ),
            ("vm-1002".to_owned(), String::new(), "ManagedObjectNotFound".to_owned()),
        ]
    );
    // keyId: xsi:nil in one, no <val> in the other: both the null fingerprint
    let key_id = oa.changes.iter().find(|c| &*c.path == "config.keyId").unwrap();
    assert_eq!(key_id.fp, Some(_vmwatch::value::NULL_FP));
    // and a decider sees the second body as unchanged once the first one's signals were delivered
    let ix = Index::new();
    let mut d = decider(false);
    let first = match d.decide(&data("handmade-vcenter.xml"), &ix).unwrap() {
        Outcome::Batch(b) => b,
        Outcome::Fault(_) => unreachable!(),
    };
    assert_eq!(first.signals.len(), 1);
    for s in &first.signals {
        d.delivered(&s.moref, s.digest);
    }
    match d.decide(&data("handmade-prefixes.xml"), &ix).unwrap() {
        Outcome::Batch(b) => assert_eq!(b.skipped.unchanged, 1),
        Outcome::Fault(_) => unreachable!(),
    }
}

/// Strict: a bad object update is the error too (as `vmwatch decode` reports it).
fn decode_err(body: &[u8]) -> Box<_vmwatch::errors::DecodeErrorInfo> {
    match decode_strict(body, &filter(), DecodeOptions { kept_keys: false }) {
        Err(VmwatchError::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn malformed_input_is_a_typed_error() {
    let e = decode_err(&data("handmade-dtd.xml"));
    assert_eq!(e.kind, "dtd_forbidden");
    assert_eq!(e.offset, 22);
    let body = String::from_utf8(data("power-on.xml")).unwrap();
    let deep = body.replacen("</val>", &format!("{}</val>", "<a>".repeat(10_000)), 1);
    let e = decode_err(deep.as_bytes());
    assert_eq!(e.kind, "too_deep");
    assert_eq!(decode_err(b"").kind, "not_soap");
    assert_eq!(decode_err(b"<html><body>502</body></html>").kind, "not_soap");
    let full = data("initial-sync.xml");
    let cut = decode_err(&full[..full.len() / 2]);
    assert_eq!(cut.kind, "xml_syntax");
    assert!(cut.moref.is_some(), "errors say which object was being decoded");
    let e = decode_err(body.replace("<kind>modify</kind>", "<kind>bogus</kind>").as_bytes());
    assert_eq!(e.kind, "invalid_value");
    let e = decode_err(body.replacen("<op>assign</op>", "<op>&undefined;</op>", 1).as_bytes());
    assert_eq!(e.kind, "unknown_entity");
    let e = decode_err(body.replacen("</val>", "</wrong>", 1).as_bytes());
    assert_eq!(e.kind, "xml_syntax");
    assert!(e.path.is_some());
}

#[test]
fn every_prefix_of_a_capture_fails_cleanly() {
    // no panic and a typed error for every truncation point of a real body
    let full = data("power-on.xml");
    for n in 0..full.len() {
        let r = decode(&full[..n], &filter(), DecodeOptions { kept_keys: true });
        assert!(matches!(r, Err(VmwatchError::Decode(_))), "prefix {n} decoded: {r:?}");
    }
}

fn names(changed: &[std::sync::Arc<str>]) -> Vec<&str> {
    changed.iter().map(|p| &**p).collect()
}

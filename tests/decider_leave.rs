// SPDX-License-Identifier: Apache-2.0
//! `leave` evicts the VM's fingerprint cache entry (spec decisions: "evict on leave"): a VM that
//! leaves scope and re-enters later with the very same properties is a first sighting again, in
//! its own later response (not coalesced with the leave in one batch).

use _vmwatch::batch::{Batch, Decider, DeciderConfig, Outcome, Reason};
use _vmwatch::decode::KIND_ENTER;
use _vmwatch::filter::{Filter, DEFAULT_NAME_KEY};
use _vmwatch::index::Index;

const VM: &str = "vm-42";

fn decider() -> Decider {
    Decider::new(DeciderConfig {
        watched_paths: vec!["config.extraConfig".into(), "summary.runtime.powerState".into()],
        filter: Filter::new(Some(["vmservice.namespacedName"]), DEFAULT_NAME_KEY),
        cache_max_entries: 100,
        cache_ttl_s: 86_400.0,
        signal_on_leave: false,
    })
    .unwrap()
}

/// A WaitForUpdatesEx response with one object update of `VM`; `enter` carries the same two
/// properties every time (the VM named ns-1/vm-1, powered off).
fn body(version: u32, kind: &str) -> Vec<u8> {
    let changes = if kind == "leave" {
        String::new()
    } else {
        concat!(
            "<changeSet><name>config.extraConfig</name><op>assign</op>",
            "<val xsi:type=\"ArrayOfOptionValue\"><OptionValue xsi:type=\"OptionValue\">",
            "<key>vmservice.namespacedName</key><value xsi:type=\"xsd:string\">ns-1/vm-1</value>",
            "</OptionValue><OptionValue xsi:type=\"OptionValue\">",
            "<key>guestinfo.userdata</key><value xsi:type=\"xsd:string\">e30=</value>",
            "</OptionValue></val></changeSet>",
            "<changeSet><name>summary.runtime.powerState</name><op>assign</op>",
            "<val xsi:type=\"VirtualMachinePowerState\">poweredOff</val></changeSet>",
        )
        .to_owned()
    };
    format!(
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"",
            " xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">",
            "<soapenv:Body><WaitForUpdatesExResponse xmlns=\"urn:vim25\"><returnval>",
            "<version>{version}</version><filterSet><filter type=\"PropertyFilter\">f-1</filter>",
            "<objectSet><kind>{kind}</kind><obj type=\"VirtualMachine\">{vm}</obj>{changes}</objectSet>",
            "</filterSet></returnval></WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>",
        ),
        version = version,
        kind = kind,
        vm = VM,
        changes = changes,
    )
    .into_bytes()
}

fn decide(d: &mut Decider, ix: &Index, version: u32, kind: &str) -> Batch {
    match d.decide(&body(version, kind), ix).unwrap() {
        Outcome::Batch(b) => b,
        Outcome::Fault(f) => panic!("unexpected fault {f:?}"),
    }
}

#[test]
fn an_unverified_vm_re_entering_after_a_leave_signals_as_entered() {
    let ix = Index::new();
    ix.upsert("ns-1", "vm-1", "", false, 0); // a Kubernetes object, not verified (no uniqueID yet)
    let mut d = decider();

    let b = decide(&mut d, &ix, 1, "enter");
    assert_eq!(b.signals.len(), 1, "{b:?}");
    assert_eq!(b.signals[0].reason, Reason::Entered);
    assert_eq!(d.cache_stats().items, 1);

    // the same props again: nothing changed
    let b = decide(&mut d, &ix, 2, "modify");
    assert!(b.signals.is_empty(), "{b:?}");
    assert_eq!(b.skipped.unchanged, 1);

    let b = decide(&mut d, &ix, 3, "leave");
    assert!(b.signals.is_empty() && b.pending.is_empty(), "{b:?}");
    assert_eq!(b.skipped.left, 1);
    assert_eq!(d.cache_stats().items, 0, "leave must evict the fingerprint cache entry");
    assert_eq!(d.remembered_name(VM), None, "leave must forget the remembered name");

    // re-enter with the very same props: a first sighting, not "unchanged"
    let b = decide(&mut d, &ix, 4, "enter");
    assert_eq!(b.skipped.unchanged, 0, "{b:?}");
    assert_eq!(b.signals.len(), 1, "{b:?}");
    let s = &b.signals[0];
    assert_eq!((s.moref.as_str(), s.kind, s.reason), (VM, KIND_ENTER, Reason::Entered));
    assert_eq!(
        (s.namespace.as_str(), s.name.as_str(), s.verified),
        ("ns-1", "vm-1", false)
    );
    let changed: Vec<&str> = s.changed.iter().map(|p| &**p).collect();
    assert_eq!(changed, ["config.extraConfig", "summary.runtime.powerState"], "sorted");
}

#[test]
fn a_verified_vm_re_entering_after_a_leave_is_a_verified_first_sighting() {
    let ix = Index::new();
    ix.upsert("ns-1", "vm-1", VM, false, 0);
    let mut d = decider();

    let b = decide(&mut d, &ix, 1, "enter");
    assert_eq!((b.signals.len(), b.skipped.verified_enter), (0, 1), "{b:?}");
    let b = decide(&mut d, &ix, 2, "leave");
    assert_eq!(b.skipped.left, 1, "{b:?}");
    assert_eq!(d.cache_stats().items, 0, "leave must evict the fingerprint cache entry");

    // without the eviction this would be "unchanged" (same fingerprints as the cached entry)
    let b = decide(&mut d, &ix, 3, "enter");
    assert_eq!((b.skipped.verified_enter, b.skipped.unchanged), (1, 0), "{b:?}");
    assert!(b.signals.is_empty(), "{b:?}");
    assert_eq!(d.cache_stats().items, 1);
}

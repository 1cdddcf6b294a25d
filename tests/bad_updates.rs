// SPDX-License-Identifier: Apache-2.0
//! A bad object update (spec 7.2 #3, issue 11 A5): the decider keeps the rest of the response and
//! forgets the bad VM, so its next good update signals even when it carries nothing new.

use _vmwatch::batch::{Batch, Decider, DeciderConfig, Outcome};
use _vmwatch::filter::{Filter, DEFAULT_NAME_KEY};
use _vmwatch::index::Index;

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

fn body(object_sets: &str) -> Vec<u8> {
    format!(
        "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsi=\"{XSI}\"><S:Body>\
         <R:WaitForUpdatesExResponse xmlns:R=\"urn:vim25\"><returnval><version>1</version><filterSet>\
         {object_sets}</filterSet></returnval></R:WaitForUpdatesExResponse></S:Body></S:Envelope>"
    )
    .into_bytes()
}

fn obj(moref: &str, state: &str, op: &str) -> String {
    format!(
        "<objectSet><kind>modify</kind><obj type=\"VirtualMachine\">{moref}</obj><changeSet>\
         <name>summary.runtime.powerState</name><op>{op}</op><val>{state}</val></changeSet></objectSet>"
    )
}

fn decide(d: &mut Decider, ix: &Index, b: &[u8]) -> Batch {
    match d.decide(b, ix).unwrap() {
        Outcome::Batch(b) => b,
        Outcome::Fault(f) => panic!("{f:?}"),
    }
}

fn signalled(b: &Batch) -> Vec<&str> {
    b.signals.iter().map(|s| s.moref.as_str()).collect()
}

#[test]
fn a_bad_update_is_reported_and_its_vm_forgotten() {
    let ix = Index::new();
    ix.upsert("ns", "a", "vm-1", false, 0);
    ix.upsert("ns", "b", "vm-2", false, 0);
    let mut d = Decider::new(DeciderConfig {
        watched_paths: vec!["summary.runtime.powerState".into()],
        filter: Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY),
        cache_max_entries: 100,
        cache_ttl_s: 3600.0,
        signal_on_leave: false,
    })
    .unwrap();
    let first = decide(
        &mut d,
        &ix,
        &body(&(obj("vm-1", "off", "assign") + &obj("vm-2", "off", "assign"))),
    );
    assert_eq!(signalled(&first), ["vm-1", "vm-2"]);
    // vm-1's update is undecodable: vm-2's still signals
    let second = decide(
        &mut d,
        &ix,
        &body(&(obj("vm-1", "on", "bogus") + &obj("vm-2", "on", "assign"))),
    );
    assert_eq!(signalled(&second), ["vm-2"]);
    assert_eq!((second.objects, second.bad.len()), (1, 1));
    assert_eq!(second.bad[0].moref.as_deref(), Some("vm-1"));
    // the next update of vm-1 carries the value the cache held before the bad one: it still signals,
    // because the bad update may have carried a change
    let third = decide(
        &mut d,
        &ix,
        &body(&(obj("vm-1", "off", "assign") + &obj("vm-2", "on", "assign"))),
    );
    assert_eq!(signalled(&third), ["vm-1"]);
    assert_eq!(third.skipped.unchanged, 1);
    assert!(third.bad.is_empty());
}

#[test]
fn a_bad_update_after_a_delivered_request_is_still_owed() {
    // what was delivered is forgotten too: the bad update may have carried a change the controller never saw,
    // so even an update back to the delivered state signals (a duplicate is cheaper than a lost change)
    let ix = Index::new();
    ix.upsert("ns", "a", "vm-1", false, 0);
    let mut d = Decider::new(DeciderConfig {
        watched_paths: vec!["summary.runtime.powerState".into()],
        filter: Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY),
        cache_max_entries: 100,
        cache_ttl_s: 3600.0,
        signal_on_leave: false,
    })
    .unwrap();
    let first = decide(&mut d, &ix, &body(&obj("vm-1", "off", "assign")));
    let [s] = &first.signals[..] else { panic!("{first:?}") };
    d.delivered("vm-1", s.digest);
    let second = decide(&mut d, &ix, &body(&obj("vm-1", "on", "bogus")));
    assert_eq!((second.signals.len(), second.bad.len()), (0, 1));
    let third = decide(&mut d, &ix, &body(&obj("vm-1", "off", "assign")));
    assert_eq!(signalled(&third), ["vm-1"]);
}

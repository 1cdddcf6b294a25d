// SPDX-License-Identifier: Apache-2.0
//! Criterion bench of decode + decide on recorded responses (benches/data/*.xml.gz from
//! `benches/capture.py bench`, falling back to tests/data), asserting correctness once first.
//!
//!     cargo bench --bench decode
//!
//! Each iteration uses a fresh Decider (cold cache: every VM is a first sighting, the most work).
//!
//! `VMWATCH_DECODE_ONCE=<file.xml[.gz]> [VMWATCH_DECODE_RUNS=n]` instead decides that payload n
//! times (default 1; 0 only loads it) and exits, for instruction counts that do not depend on the
//! machine's load (benches/README.md):
//!
//!     valgrind --tool=callgrind $(cargo bench --bench decode --no-run 2>&1 | grep -o 'target/[^)]*')

use _vmwatch::batch::{Decider, DeciderConfig, Outcome};
use _vmwatch::filter::{Filter, DEFAULT_NAME_KEY};
use _vmwatch::index::Index;
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use std::io::Read;
use std::path::{Path, PathBuf};

const PATHS: &str = "config.annotation config.changeTrackingEnabled config.cpuAllocation config.cpuHotAddEnabled \
config.extraConfig config.flags.vvtdEnabled config.hardware.autoCoresPerSocket config.hardware.device \
config.hardware.memoryMB config.hardware.numCoresPerSocket config.hardware.numCPU \
config.hardware.simultaneousThreads config.keyId config.latencySensitivity config.memoryAllocation \
config.memoryHotAddEnabled config.memoryReservationLockedToMax config.nestedHVEnabled config.numaInfo \
config.vPMCEnabled guestHeartbeatStatus rootSnapshot snapshot summary.config.name summary.guest \
summary.overallStatus summary.runtime.connectionState summary.runtime.host summary.runtime.powerState \
resourcePool parent";

const IGNORED: &[&str] = &[
    "govcsim",
    "vmservice.namespacedName",
    "vmware.tools.internalversion",
    "vmware.tools.requiredversion",
    "guestinfo.vmtools.buildNumber",
];

fn read_payload(p: &Path) -> Vec<u8> {
    let raw = std::fs::read(p).unwrap();
    if p.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
        out
    } else {
        raw
    }
}

fn payloads() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("benches/data"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".xml.gz"))
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        files.push(root.join("tests/data/initial-sync.xml"));
        files.push(root.join("tests/data/power-on.xml"));
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let body = read_payload(&p);
            let name = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".gz")
                .to_owned();
            (name, body)
        })
        .collect()
}

fn decider() -> Decider {
    Decider::new(DeciderConfig {
        watched_paths: PATHS.split_whitespace().map(str::to_owned).collect(),
        filter: Filter::new(Some(IGNORED.iter().copied()), DEFAULT_NAME_KEY),
        cache_max_entries: 25_000,
        cache_ttl_s: 86_400.0,
        signal_on_leave: false,
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let ix = Index::new();
    let mut g = c.benchmark_group("decode+decide");
    g.sample_size(20);
    for (name, body) in payloads() {
        // correctness once, before timing
        match decider().decide(&body, &ix).unwrap() {
            Outcome::Batch(b) => {
                assert!(b.objects > 0, "{name}: no objects");
                assert_eq!(
                    b.signals.len() + b.pending.len(),
                    b.objects.min(b.signals.len() + b.pending.len())
                );
            }
            Outcome::Fault(f) => panic!("{name}: fault {f:?}"),
        }
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(&name, |b| {
            b.iter_batched(decider, |mut d| d.decide(&body, &ix).unwrap(), BatchSize::LargeInput)
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Some(path) = std::env::var_os("VMWATCH_DECODE_ONCE") {
        let body = read_payload(Path::new(&path));
        let runs: usize = std::env::var("VMWATCH_DECODE_RUNS").map_or(1, |n| n.parse().unwrap());
        let ix = Index::new();
        for _ in 0..runs {
            std::hint::black_box(decider().decide(&body, &ix).unwrap());
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

// SPDX-License-Identifier: Apache-2.0
//! vmwatch's Rust core. This file only declares the modules and registers the Python bindings;
//! the logic lives in modules free of PyO3 types (decode, value, filter, cache, index, batch,
//! errors), and `py_*.rs` convert.

pub mod batch;
pub mod cache;
pub mod decode;
pub mod durable;
pub mod errors;
pub mod filter;
pub mod index;
pub mod scan;
pub mod tagmemo;
pub mod value;
pub mod workspace;
pub mod xml;

mod py_core;
mod py_errors;
mod py_types;

use pyo3::prelude::*;

/// Cargo's version in PEP 440 form (`0.2.0-alpha.1` → `0.2.0a1`).
fn pep440(v: &str) -> String {
    v.replace("-alpha.", "a")
        .replace("-beta.", "b")
        .replace("-rc.", "rc")
        .replace("-dev.", ".dev")
}

#[pymodule]
fn _vmwatch(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", pep440(env!("CARGO_PKG_VERSION")))?;
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    m.add(
        "build_info",
        format!(
            "profile={profile} pyo3=0.30.1 xml=own-tokenizer scan={:?} hash=xxh3-64",
            scan::Backend::detect()
        )
        .to_lowercase(),
    )?;
    m.add("KIND_ENTER", decode::KIND_ENTER)?;
    m.add("KIND_MODIFY", decode::KIND_MODIFY)?;
    m.add("KIND_LEAVE", decode::KIND_LEAVE)?;
    py_errors::register(m)?;
    m.add_class::<py_types::PyFault>()?;
    m.add_class::<py_types::PySignal>()?;
    m.add_class::<py_types::PyPending>()?;
    m.add_class::<py_types::PyBatch>()?;
    m.add_class::<py_core::PyIndex>()?;
    m.add_class::<py_core::PyDecider>()?;
    m.add_function(wrap_pyfunction!(py_core::decode, m)?)?;
    m.add_function(wrap_pyfunction!(py_core::parse_namespaced_name, m)?)?;
    Ok(())
}

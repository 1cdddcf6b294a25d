// SPDX-License-Identifier: Apache-2.0
//! `Index`, `Decider`, `decode` and `parse_namespaced_name` for Python. Thin: argument
//! conversion, GIL release, panic guard; the logic is in batch.rs, index.rs, decode.rs.

use crate::batch::{self, DeciderConfig, Outcome};
use crate::errors::VmwatchError;
use crate::filter::{parse_namespaced_name as parse_nn, Filter};
use crate::index::Index;
use crate::py_errors::guard;
use crate::py_types::{PyBatch, PyFault, PySignal};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::sync::Arc;

fn strings(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<pyo3::types::PyString>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "expected an iterable of str, not a str",
        ));
    }
    obj.try_iter()?.map(|x| x?.extract::<String>()).collect()
}

#[pyclass(module = "vmwatch._vmwatch", name = "Index", frozen)]
pub struct PyIndex {
    pub inner: Arc<Index>,
}

#[pymethods]
impl PyIndex {
    #[new]
    fn new() -> Self {
        PyIndex {
            inner: Arc::new(Index::new()),
        }
    }

    #[pyo3(signature = (namespace, name, *, unique_id, deleting, priority))]
    fn upsert(
        &self,
        py: Python<'_>,
        namespace: &str,
        name: &str,
        unique_id: &str,
        deleting: bool,
        priority: i32,
    ) -> PyResult<()> {
        // guarded: the index's only panics are its capacity limits (2^32 VMs, 4 GiB of names)
        py.detach(|| {
            guard(|| {
                self.inner.upsert(namespace, name, unique_id, deleting, priority);
                Ok(())
            })
        })?;
        Ok(())
    }

    fn delete(&self, py: Python<'_>, namespace: &str, name: &str) -> bool {
        py.detach(|| self.inner.delete(namespace, name))
    }

    fn get(&self, namespace: &str, name: &str) -> Option<(String, bool, i32)> {
        self.inner
            .get(namespace, name)
            .map(|s| (s.unique_id.into_string(), s.deleting, s.priority))
    }

    fn by_unique_id(&self, unique_id: &str) -> Option<(String, String)> {
        self.inner.by_unique_id(unique_id)
    }

    fn clear(&self, py: Python<'_>) {
        py.detach(|| self.inner.clear());
    }

    /// Every indexed VM as (namespace, name).
    fn keys(&self, py: Python<'_>) -> Vec<(String, String)> {
        py.detach(|| self.inner.keys())
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn bytes(&self) -> usize {
        self.inner.bytes()
    }
}

#[pyclass(module = "vmwatch._vmwatch", name = "Decider", frozen)]
pub struct PyDecider {
    core: Mutex<batch::Decider>,
    index: Arc<Index>,
}

#[pymethods]
impl PyDecider {
    #[new]
    #[pyo3(signature = (
        *,
        index,
        watched_paths,
        ignored_keys,
        name_key = "vmservice.namespacedName",
        cache_max_entries = 25000,
        cache_ttl_s = 86400.0,
        signal_on_leave = false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: &Bound<'_, PyIndex>,
        watched_paths: &Bound<'_, PyAny>,
        ignored_keys: &Bound<'_, PyAny>,
        name_key: &str,
        cache_max_entries: usize,
        cache_ttl_s: f64,
        signal_on_leave: bool,
    ) -> PyResult<Self> {
        let cfg = DeciderConfig {
            watched_paths: strings(watched_paths)?,
            filter: Filter::new(Some(strings(ignored_keys)?), name_key),
            cache_max_entries,
            cache_ttl_s,
            signal_on_leave,
        };
        Ok(PyDecider {
            core: Mutex::new(batch::Decider::new(cfg)?),
            index: index.get().inner.clone(),
        })
    }

    /// Decode one raw WaitForUpdatesEx response body and decide (GIL released).
    fn decide(&self, py: Python<'_>, body: &[u8]) -> PyResult<Py<PyAny>> {
        let out = py.detach(|| {
            let r = guard(|| self.core.lock().decide(body, &self.index));
            if matches!(r, Err(VmwatchError::Internal(_))) {
                // the cache may be half-updated: start over rather than trust it
                self.core.lock().purge();
            }
            r
        })?;
        Ok(match out {
            Outcome::Batch(b) => Py::new(py, PyBatch::new(py, b)?)?.into_any(),
            Outcome::Fault(f) => Py::new(py, PyFault::from(f))?.into_any(),
        })
    }

    #[pyo3(signature = (moref, kind, changed, namespace, name))]
    fn resolve(
        &self,
        py: Python<'_>,
        moref: &str,
        kind: u8,
        changed: &Bound<'_, PyAny>,
        namespace: &str,
        name: &str,
    ) -> PyResult<Option<PySignal>> {
        if kind > crate::decode::KIND_LEAVE {
            return Err(pyo3::exceptions::PyValueError::new_err(format!("invalid kind {kind}")));
        }
        let changed = strings(changed)?;
        let out = py.detach(|| {
            guard(|| {
                Ok(self.core.lock().resolve(
                    &self.index,
                    moref,
                    kind,
                    changed.into_iter().map(Into::into).collect(),
                    namespace,
                    name,
                ))
            })
        })?;
        Ok(out.map(PySignal::from))
    }

    fn forget(&self, py: Python<'_>, moref: &str) {
        py.detach(|| self.core.lock().forget(moref));
    }

    fn delivered(&self, py: Python<'_>, moref: &str, digest: u64) {
        py.detach(|| self.core.lock().delivered(moref, digest));
    }

    fn load_checkpoint(&self, py: Python<'_>, blob: &[u8]) -> PyResult<usize> {
        Ok(py.detach(|| self.core.lock().load_checkpoint(blob))?)
    }

    fn checkpoint<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let blob = py.detach(|| self.core.lock().checkpoint());
        PyBytes::new(py, &blob)
    }

    fn end_initial_sync(&self, py: Python<'_>) -> usize {
        py.detach(|| self.core.lock().end_initial_sync())
    }

    fn purge(&self, py: Python<'_>) {
        py.detach(|| self.core.lock().purge());
    }

    fn cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, (records, records_bytes)) = {
            let core = self.core.lock();
            (core.cache_stats(), core.records())
        };
        let d = PyDict::new(py);
        for (k, v) in [
            ("added", s.added),
            ("evicted", s.evicted),
            ("expired", s.expired),
            ("hits", s.hits),
            ("misses", s.misses),
            ("items", s.items),
            ("bytes", s.bytes),
            ("negative", s.negative),
            ("records", records as u64),
            ("records_bytes", records_bytes as u64),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}

type UpdateTuple = (String, String, u8, Py<PyTuple>, Option<Py<PyTuple>>, Option<String>);

/// Stateless decode for `vmwatch decode` (see the stub).
#[pyfunction]
#[pyo3(signature = (body, *, ignored_keys = None, name_key = "vmservice.namespacedName"))]
pub fn decode<'py>(
    py: Python<'py>,
    body: &[u8],
    ignored_keys: Option<&Bound<'py, PyAny>>,
    name_key: &str,
) -> PyResult<(Option<String>, bool, Bound<'py, PyList>)> {
    let ignored = ignored_keys.map(strings).transpose()?;
    let filter = Filter::new(ignored, name_key);
    let (version, truncated, updates) = py.detach(|| guard(|| batch::summarize(body, &filter)))?;
    let mut items: Vec<UpdateTuple> = Vec::with_capacity(updates.len());
    for u in updates {
        items.push((
            u.moref,
            u.obj_type,
            u.kind,
            PyTuple::new(py, &u.props)?.unbind(),
            u.extra_config_keys
                .map(|k| PyTuple::new(py, &k))
                .transpose()?
                .map(Bound::unbind),
            u.namespaced_name,
        ));
    }
    Ok((version, truncated, PyList::new(py, items)?))
}

/// `'ns/name'` → `(ns, name)`; anything else → None.
#[pyfunction]
pub fn parse_namespaced_name(value: &str) -> Option<(String, String)> {
    parse_nn(value).map(|(a, b)| (a.to_owned(), b.to_owned()))
}

// SPDX-License-Identifier: Apache-2.0
//! Result classes crossing the boundary: small, frozen, built once per batch.

use crate::batch::{Batch, Pending, Signal};
use crate::decode::SoapFault;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

#[pyclass(module = "vmwatch._vmwatch", name = "Fault", frozen)]
pub struct PyFault {
    #[pyo3(get)]
    fault_type: String,
    #[pyo3(get)]
    message: String,
}

#[pymethods]
impl PyFault {
    fn __repr__(&self) -> String {
        format!(
            "Fault(fault_type={}, message={})",
            py_str(&self.fault_type),
            py_str(&self.message)
        )
    }
}

impl From<SoapFault> for PyFault {
    fn from(f: SoapFault) -> Self {
        PyFault {
            fault_type: f.fault_type,
            message: f.message,
        }
    }
}

#[pyclass(module = "vmwatch._vmwatch", name = "Signal", frozen)]
pub struct PySignal(pub Signal);

#[pymethods]
impl PySignal {
    #[getter]
    fn moref(&self) -> &str {
        &self.0.moref
    }
    #[getter]
    fn kind(&self) -> u8 {
        self.0.kind
    }
    #[getter]
    fn namespace(&self) -> &str {
        &self.0.namespace
    }
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }
    #[getter]
    fn verified(&self) -> bool {
        self.0.verified
    }
    #[getter]
    fn deleting(&self) -> bool {
        self.0.deleting
    }
    #[getter]
    fn priority(&self) -> i32 {
        self.0.priority
    }
    #[getter]
    fn changed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.changed)
    }
    #[getter]
    fn reason(&self) -> &'static str {
        self.0.reason.as_str()
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PySignal>().is_ok_and(|o| o.get().0 == self.0)
    }
    fn __hash__(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(format!("{:?}", self.0).as_bytes())
    }
    fn __repr__(&self) -> String {
        let s = &self.0;
        format!(
            "Signal(moref={}, kind={}, namespace={}, name={}, verified={}, deleting={}, priority={}, changed={}, reason={})",
            py_str(&s.moref),
            s.kind,
            py_str(&s.namespace),
            py_str(&s.name),
            py_bool(s.verified),
            py_bool(s.deleting),
            s.priority,
            py_strs(&s.changed),
            py_str(s.reason.as_str())
        )
    }
}

/// Python-style repr of a str list, an optional str and a str.
fn py_strs(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| py_str(s)).collect();
    format!("({}{})", items.join(", "), if items.len() == 1 { "," } else { "" })
}

fn py_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn py_opt(s: &Option<String>) -> String {
    s.as_deref().map_or_else(|| "None".to_owned(), py_str)
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

#[pyclass(module = "vmwatch._vmwatch", name = "Pending", frozen)]
pub struct PyPending(pub Pending);

#[pymethods]
impl PyPending {
    #[getter]
    fn moref(&self) -> &str {
        &self.0.moref
    }
    #[getter]
    fn kind(&self) -> u8 {
        self.0.kind
    }
    #[getter]
    fn changed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.0.changed)
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyPending>().is_ok_and(|o| o.get().0 == self.0)
    }
    fn __hash__(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(format!("{:?}", self.0).as_bytes())
    }
    fn __repr__(&self) -> String {
        format!(
            "Pending(moref={:?}, kind={}, changed={:?})",
            self.0.moref, self.0.kind, self.0.changed
        )
    }
}

#[pyclass(module = "vmwatch._vmwatch", name = "Batch", frozen)]
pub struct PyBatch {
    #[pyo3(get)]
    version: Option<String>,
    #[pyo3(get)]
    truncated: bool,
    #[pyo3(get)]
    objects: usize,
    #[pyo3(get)]
    changes: usize,
    signals: Vec<Py<PySignal>>,
    pending: Vec<Py<PyPending>>,
    skipped: [(&'static str, u32); 5],
    missing: Vec<(String, String, String)>,
}

impl PyBatch {
    pub fn new(py: Python<'_>, b: Batch) -> PyResult<Self> {
        Ok(PyBatch {
            signals: b
                .signals
                .into_iter()
                .map(|s| Py::new(py, PySignal(s)))
                .collect::<PyResult<_>>()?,
            pending: b
                .pending
                .into_iter()
                .map(|p| Py::new(py, PyPending(p)))
                .collect::<PyResult<_>>()?,
            skipped: b.skipped.items(),
            version: b.version,
            truncated: b.truncated,
            objects: b.objects,
            changes: b.changes,
            missing: b.missing,
        })
    }
}

#[pymethods]
impl PyBatch {
    #[getter]
    fn signals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.signals.iter().map(|s| s.clone_ref(py)))
    }
    #[getter]
    fn pending<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.pending.iter().map(|s| s.clone_ref(py)))
    }
    #[getter]
    fn skipped<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.skipped {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
    #[getter]
    fn missing<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.missing)
    }
    fn __repr__(&self) -> String {
        format!(
            "Batch(version={}, truncated={}, objects={}, changes={}, signals={}, pending={}, skipped={{{}}}, missing={})",
            py_opt(&self.version),
            py_bool(self.truncated),
            self.objects,
            self.changes,
            self.signals.len(),
            self.pending.len(),
            self.skipped.iter().map(|(k, v)| format!("'{k}': {v}")).collect::<Vec<_>>().join(", "),
            self.missing.len()
        )
    }
}

// SPDX-License-Identifier: Apache-2.0
//! Result classes crossing the boundary: small, frozen, built once per batch.

use crate::batch::{Batch, PathName, Pending, Signal};
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

/// Changed property paths; Python sees a tuple of str.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Paths(Vec<PathName>);

impl<'py> IntoPyObject<'py> for &Paths {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.0.iter().map(|s| &**s))
    }
}

#[pyclass(module = "vmwatch._vmwatch", name = "Signal", frozen, eq, hash, get_all)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PySignal {
    moref: String,
    kind: u8,
    namespace: String,
    name: String,
    verified: bool,
    deleting: bool,
    priority: i32,
    changed: Paths,
    reason: &'static str,
    digest: u64,
}

impl From<Signal> for PySignal {
    fn from(s: Signal) -> Self {
        PySignal {
            moref: s.moref,
            kind: s.kind,
            namespace: s.namespace,
            name: s.name,
            verified: s.verified,
            deleting: s.deleting,
            priority: s.priority,
            changed: Paths(s.changed),
            reason: s.reason.as_str(),
            digest: s.digest,
        }
    }
}

#[pymethods]
impl PySignal {
    fn __repr__(&self) -> String {
        format!(
            "Signal(moref={}, kind={}, namespace={}, name={}, verified={}, deleting={}, priority={}, changed={}, reason={}, digest={})",
            py_str(&self.moref),
            self.kind,
            py_str(&self.namespace),
            py_str(&self.name),
            py_bool(self.verified),
            py_bool(self.deleting),
            self.priority,
            py_strs(&self.changed.0),
            py_str(self.reason),
            self.digest
        )
    }
}

/// Python-style repr of a str list, an optional str and a str.
fn py_strs(v: &[PathName]) -> String {
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

#[pyclass(module = "vmwatch._vmwatch", name = "Pending", frozen, eq, hash, get_all)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PyPending {
    moref: String,
    kind: u8,
    changed: Paths,
}

impl From<Pending> for PyPending {
    fn from(p: Pending) -> Self {
        PyPending {
            moref: p.moref,
            kind: p.kind,
            changed: Paths(p.changed),
        }
    }
}

#[pymethods]
impl PyPending {
    fn __repr__(&self) -> String {
        format!(
            "Pending(moref={:?}, kind={}, changed={:?})",
            self.moref, self.kind, self.changed.0
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
    kinds: (usize, usize, usize),
    #[pyo3(get)]
    changes: usize,
    signals: Vec<Py<PySignal>>,
    pending: Vec<Py<PyPending>>,
    skipped: [(&'static str, u32); 6],
    missing: Vec<(String, String, String)>,
    bad: Vec<(Option<String>, u64, &'static str, String)>,
}

impl PyBatch {
    pub fn new(py: Python<'_>, b: Batch) -> PyResult<Self> {
        Ok(PyBatch {
            signals: b
                .signals
                .into_iter()
                .map(|s| Py::new(py, PySignal::from(s)))
                .collect::<PyResult<_>>()?,
            pending: b
                .pending
                .into_iter()
                .map(|p| Py::new(py, PyPending::from(p)))
                .collect::<PyResult<_>>()?,
            skipped: b.skipped.items(),
            version: b.version,
            truncated: b.truncated,
            objects: b.objects,
            kinds: (b.kinds[0], b.kinds[1], b.kinds[2]),
            changes: b.changes,
            missing: b.missing,
            bad: b
                .bad
                .into_iter()
                .map(|u| (u.moref, u.offset, u.error_type, u.message))
                .collect(),
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
    /// Object updates skipped as undecodable: `(moref or None, offset, type, message)` each.
    #[getter]
    fn bad<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.bad)
    }
    fn __repr__(&self) -> String {
        format!(
            "Batch(version={}, truncated={}, objects={}, changes={}, signals={}, pending={}, skipped={{{}}}, missing={}, bad={})",
            py_opt(&self.version),
            py_bool(self.truncated),
            self.objects,
            self.changes,
            self.signals.len(),
            self.pending.len(),
            self.skipped.iter().map(|(k, v)| format!("'{k}': {v}")).collect::<Vec<_>>().join(", "),
            self.missing.len(),
            self.bad.len()
        )
    }
}

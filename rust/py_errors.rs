// SPDX-License-Identifier: Apache-2.0
//! Python exceptions and the single place where `VmwatchError` becomes a `PyErr`.

use crate::errors::VmwatchError;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `DecodeError` needs two bases (`VmwatchError`, `ValueError`) and a method, which PyO3's
/// `create_exception!` cannot express, so the hierarchy is defined in Python at import time.
const EXCEPTIONS_PY: &std::ffi::CStr = cr#"
class VmwatchError(Exception):
    """Base of every error raised by the extension."""


class DecodeError(VmwatchError, ValueError):
    """A response body that is not a well-formed WaitForUpdatesEx response.

    `offset` is the byte offset in the body where decoding failed.
    """

    def __init__(self, message, offset=0, errors=()):
        super().__init__(message)
        self.offset = offset
        self._errors = tuple(errors)

    def errors(self):
        """One record per problem: {'type': slug, 'loc': (moref, path), 'msg': str, 'offset': int}."""
        return [dict(e) for e in self._errors]


class VmwatchInternalError(VmwatchError, RuntimeError):
    """A bug in vmwatch (for example a Rust panic that was caught): please report it."""


for _c in (VmwatchError, DecodeError, VmwatchInternalError):
    _c.__module__ = 'vmwatch._vmwatch'
del _c
"#;

struct Exceptions {
    base: Py<PyType>,
    decode: Py<PyType>,
    internal: Py<PyType>,
}

static EXCEPTIONS: PyOnceLock<Exceptions> = PyOnceLock::new();

fn exceptions(py: Python<'_>) -> PyResult<&Exceptions> {
    EXCEPTIONS.get_or_try_init(py, || {
        let globals = PyDict::new(py);
        globals.set_item("__name__", "vmwatch._vmwatch")?;
        py.run(EXCEPTIONS_PY, Some(&globals), None)?;
        let get =
            |n: &str| -> PyResult<Py<PyType>> { Ok(globals.get_item(n)?.expect(n).cast_into::<PyType>()?.unbind()) };
        Ok(Exceptions {
            base: get("VmwatchError")?,
            decode: get("DecodeError")?,
            internal: get("VmwatchInternalError")?,
        })
    })
}

/// Add the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let e = exceptions(py)?;
    m.add("VmwatchError", e.base.bind(py))?;
    m.add("DecodeError", e.decode.bind(py))?;
    m.add("VmwatchInternalError", e.internal.bind(py))?;
    Ok(())
}

fn convert(py: Python<'_>, err: VmwatchError) -> PyResult<PyErr> {
    let e = exceptions(py)?;
    Ok(match err {
        VmwatchError::Decode(info) => {
            let record = PyDict::new(py);
            record.set_item("type", info.kind)?;
            record.set_item("loc", PyTuple::new(py, [info.moref.as_deref(), info.path.as_deref()])?)?;
            record.set_item("msg", &info.msg)?;
            record.set_item("offset", info.offset)?;
            let message = VmwatchError::Decode(info.clone()).to_string();
            let errors = PyList::new(py, [record])?;
            let value = e.decode.bind(py).call1((message, info.offset, errors))?;
            PyErr::from_value(value)
        }
        VmwatchError::Config(msg) => PyValueError::new_err(msg),
        VmwatchError::Internal(msg) => PyErr::from_value(e.internal.bind(py).call1((msg,))?),
    })
}

impl From<VmwatchError> for PyErr {
    fn from(err: VmwatchError) -> PyErr {
        Python::attach(|py| convert(py, err).unwrap_or_else(|e| e))
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Run `f`, turning a panic into `VmwatchError::Internal` (never into a PanicException).
pub fn guard<T>(f: impl FnOnce() -> Result<T, VmwatchError>) -> Result<T, VmwatchError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(VmwatchError::Internal(format!(
            "panic in the Rust core: {} (please report this bug)",
            panic_message(&*p)
        ))),
    }
}

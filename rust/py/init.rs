//! The `__init__` of mapped classes, as a method descriptor of the declarative base.
//!
//! Building objects is on the insert path (a graph of 22,000 objects spends about a third of
//! its client time in constructors). A Python `__init__` that forwards its keywords to
//! `MapperCore.init_instance` costs a Python frame per object; a `method_descriptor` (what
//! CPython makes of a C method of a type) is called by `type.__call__` without one, and
//! without a bound method object either. Its C function sets the keyword arguments through
//! the class's `MapperCore` and leaves every other case to the Python `__init__` it was made
//! with: positional arguments (that function raises the TypeError), mappers still to
//! configure, a class without a mapper.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use super::interned::MAPPER_CORE;
use super::mapper::MapperCore;

/// What the descriptor's function reads: the list of mappers not configured yet (the Python
/// list `retort.mapping._unconfigured`, which is only ever changed in place), and the Python
/// `__init__` for everything but the usual case.
struct InitContext {
    unconfigured: Py<PyList>,
    fallback: Py<PyAny>,
}

static CONTEXT: OnceLock<InitContext> = OnceLock::new();

/// The method definition behind the descriptor: CPython keeps a pointer to it for the life of
/// the descriptor, so it lives as long as the process (made once).
static METHOD: OnceLock<usize> = OnceLock::new();

fn method_def() -> *mut ffi::PyMethodDef {
    *METHOD.get_or_init(|| {
        let def = Box::new(ffi::PyMethodDef {
            ml_name: c"__init__".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionWithKeywords: mapped_init,
            },
            ml_flags: ffi::METH_VARARGS | ffi::METH_KEYWORDS,
            ml_doc: c"Set the mapped attributes given as keyword arguments.".as_ptr(),
        });
        Box::into_raw(def) as usize
    }) as *mut ffi::PyMethodDef
}

/// The `__init__` descriptor for `base` (the declarative base class): keyword arguments go
/// to the instance's `MapperCore.init_instance`; anything else to `fallback(self, *args,
/// **kwargs)`. `unconfigured` is the list of mappers still to configure. Made once per
/// process.
#[pyfunction]
pub fn mapped_init_descriptor<'py>(
    base: &Bound<'py, PyType>,
    unconfigured: &Bound<'py, PyList>,
    fallback: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = base.py();
    CONTEXT
        .set(InitContext {
            unconfigured: unconfigured.clone().unbind(),
            fallback: fallback.clone().unbind(),
        })
        .map_err(|_| PyRuntimeError::new_err("the mapped __init__ is made once per process"))?;
    // Safety: `base` is a live type object and the method definition lives for the rest of
    // the process; PyDescr_NewMethod returns a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(base.as_type_ptr(), method_def()))
    }
}

/// The C function of the descriptor (METH_VARARGS | METH_KEYWORDS): `slf` is the instance
/// (CPython checked it is one of the base class), `args` a tuple, `kwargs` a dict or NULL.
unsafe extern "C" fn mapped_init(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // Safety: CPython calls this holding the GIL (the thread is attached).
    let py = unsafe { Python::assume_attached() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // Safety: the three pointers are borrowed from the caller for the call's duration.
        let instance = unsafe { Bound::from_borrowed_ptr(py, slf) };
        let args = unsafe { Bound::from_borrowed_ptr(py, args).cast_into_unchecked::<PyTuple>() };
        let kwargs = (!kwargs.is_null()).then(|| unsafe {
            Bound::from_borrowed_ptr(py, kwargs).cast_into_unchecked::<PyDict>()
        });
        init(&instance, &args, kwargs.as_ref())
    }));
    let failed = match outcome {
        Ok(Ok(())) => {
            // Safety: Py_None is immortal in spirit; the caller takes a new reference.
            return unsafe { ffi::Py_NewRef(ffi::Py_None()) };
        }
        Ok(Err(err)) => err,
        Err(_) => PanicException::new_err("retort's mapped __init__ panicked"),
    };
    failed.restore(py);
    std::ptr::null_mut()
}

fn init(
    instance: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let py = instance.py();
    let Some(context) = CONTEXT.get() else {
        return Err(PyRuntimeError::new_err(
            "retort's mapped __init__ is not set up",
        ));
    };
    if args.is_empty() && context.unconfigured.bind(py).is_empty() {
        if let Ok(core) = instance.get_type().getattr(MAPPER_CORE.get(py)) {
            if let Ok(core) = core.cast::<MapperCore>() {
                return core.get().init_instance(instance, kwargs);
            }
        }
    }
    let mut call_args = Vec::with_capacity(args.len() + 1);
    call_args.push(instance.clone());
    call_args.extend(args.iter());
    context
        .fallback
        .bind(py)
        .call(PyTuple::new(py, call_args)?, kwargs)?;
    Ok(())
}

//! Whether an object of the identity map is still alive, without a weak reference per object.
//!
//! The identity map must not keep clean objects alive. A weak reference per object would say
//! when one is gone, at 80 bytes each (a third of what retort adds to a loaded row). Instead,
//! a mapped class gets a finalizer: `tp_finalize`, the slot behind `__del__`, which CPython
//! calls once before freeing an object, both when its reference count reaches zero and when
//! the collector finds it in an unreachable cycle (there after clearing weak references). The
//! finalizer looks the object's address up in a registry of the objects identity maps point
//! to (object address to state) and clears the state's `owner`, the address it vouches for.
//! An identity-map entry holds the state strongly and a plain pointer to the object, which it
//! follows only while the state's `owner` is that pointer. The registry is keyed by address rather than reached through the object's
//! `__dict__`, so that a copy of an object (which shares its state) going, or a cleared or
//! replaced `__dict__`, does not matter.
//!
//! The address is only trusted when CPython is sure to call the finalizer:
//! - the object's class is exactly the mapped class, and that class still has the finalizer
//!   (assigning `__del__` to a class later replaces it: entries of that class then count as
//!   gone, and new ones use weak references);
//! - a class given the finalizer also gets its own `tp_free` (which frees as CPython's does),
//!   so CPython refuses `obj.__class__ = C` for any class C without it ("deallocator
//!   differs"): an object cannot move to a class whose instances die unnoticed;
//! - a reference count of zero (an object whose deallocation CPython deferred) counts as gone.
//!
//! Classes that define `__del__` themselves, and objects of unmapped subclasses, keep weak
//! references.

use std::collections::HashMap;
use std::os::raw::c_void;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, OnceLock};

use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyType, PyWeakrefMethods, PyWeakrefReference};
use pyo3::PyTraverseError;

use super::state::{untrack, InstanceState};

/// The states of the objects identity maps point to: object address to state address. A
/// state leaves it when it is freed (`InstanceState`'s `Drop` calls `forget`), so every state
/// address here is live. Locked only around map operations on plain numbers: no Python code
/// runs (and no object is freed) while it is held, so a finalizer never finds it held by its
/// own thread.
static REGISTRY: Mutex<Option<HashMap<usize, usize, ahash::RandomState>>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<HashMap<usize, usize, ahash::RandomState>>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Register `state` as the state of the object at `addr`. A state registered there before
/// (the object's earlier state) no longer vouches for it.
fn register(addr: usize, state: &InstanceState) {
    if state.owner() == addr {
        return;
    }
    let me = state as *const InstanceState as usize;
    let mut guard = registry();
    let old = guard.get_or_insert_with(HashMap::default).insert(addr, me);
    if let Some(old) = old.filter(|&o| o != me) {
        // Safety: registered states are live (they leave the registry when freed).
        unsafe { (*(old as *const InstanceState)).set_owner(0) };
    }
    state.set_owner(addr);
}

/// Called when a state is freed: it leaves the registry.
pub fn forget(state: &InstanceState) {
    let addr = state.owner();
    if addr == 0 {
        return;
    }
    let me = state as *const InstanceState as usize;
    let mut guard = registry();
    if let Some(reg) = guard.as_mut() {
        if reg.get(&addr) == Some(&me) {
            reg.remove(&addr);
        }
    }
}

/// The finalizer of mapped classes: the state registered for the object stops vouching for it.
unsafe extern "C" fn finalize(obj: *mut ffi::PyObject) {
    let mut guard = registry();
    if let Some(state) = guard.as_mut().and_then(|r| r.remove(&(obj as usize))) {
        // Safety: registered states are live (they leave the registry when freed).
        (*(state as *const InstanceState)).set_owner(0);
    }
}

/// `tp_free` of mapped classes: CPython's, under another address (see the module comment).
unsafe extern "C" fn free(obj: *mut c_void) {
    ffi::PyObject_GC_Del(obj);
}

/// The address of `finalize` as installed in type slots: taken once, so that comparisons
/// with slots are of the same value (a function's address may differ between code units).
static FINALIZE: OnceLock<usize> = OnceLock::new();

fn finalize_addr() -> usize {
    *FINALIZE.get_or_init(|| finalize as ffi::destructor as usize)
}

fn has_finalizer(tp: *mut ffi::PyTypeObject) -> bool {
    // Safety: `tp` is a live type object.
    let slot = unsafe { (*tp).tp_finalize };
    slot.is_some_and(|f| f as usize == finalize_addr())
}

/// Marks (in a class's own `__dict__`) a class given the finalizer: one that lost it since
/// (a `__del__` assigned) never gets it back, as the ends of its objects that died meanwhile
/// went unnoticed.
const ADOPTED: &str = "_retort_finalizer";

/// Give a mapped class the finalizer, unless it has a finalizer of its own (`__del__`), is not
/// a heap type of the collector, or lost the finalizer earlier. Whether it has it now.
#[pyfunction]
pub fn adopt_class(cls: &Bound<'_, PyType>) -> PyResult<bool> {
    let tp = cls.as_type_ptr();
    if has_finalizer(tp) {
        return Ok(true);
    }
    let own = cls.getattr(intern!(cls.py(), "__dict__"))?;
    if own.contains(ADOPTED)? {
        return Ok(false);
    }
    // Safety: `tp` is a live type object; the GIL is held, so no one else changes its slots.
    unsafe {
        let flags = (*tp).tp_flags;
        let heap_gc = flags & ffi::Py_TPFLAGS_HEAPTYPE != 0 && flags & ffi::Py_TPFLAGS_HAVE_GC != 0;
        let gc_del = ffi::PyObject_GC_Del as ffi::freefunc as usize;
        let plain_free = (*tp).tp_free.is_some_and(|f| f as usize == gc_del);
        if !heap_gc || (*tp).tp_finalize.is_some() || !plain_free || (*tp).tp_weaklistoffset == 0 {
            return Ok(false);
        }
    }
    cls.setattr(ADOPTED, true)?;
    // Safety: as above; the address was taken from a function of this signature.
    unsafe {
        (*tp).tp_finalize = Some(std::mem::transmute::<usize, ffi::destructor>(
            finalize_addr(),
        ));
        (*tp).tp_free = Some(free);
    }
    Ok(true)
}

/// How an identity-map entry refers to its object.
pub enum ObjRef {
    /// A plain pointer, for objects of a class with the finalizer.
    Raw(RawObj),
    /// A weak reference, for any other object.
    Weak(Py<PyWeakrefReference>),
}

/// A pointer to an object, valid while its state is not flagged dead (see the module comment).
pub struct RawObj(NonNull<ffi::PyObject>);

// Safety: the pointer is only followed with the interpreter attached (all access to the
// identity map is), and the liveness rules above say when it may be.
unsafe impl Send for RawObj {}
unsafe impl Sync for RawObj {}

impl ObjRef {
    pub fn new(obj: &Bound<'_, PyAny>, state: &InstanceState) -> PyResult<Self> {
        let py = obj.py();
        let class = state.mapper.get().class_.bind(py);
        if obj.get_type().is(class) && has_finalizer(class.as_type_ptr()) {
            if let Some(ptr) =
                NonNull::new(obj.as_ptr()).filter(|p| InstanceState::can_own(p.as_ptr() as usize))
            {
                register(ptr.as_ptr() as usize, state);
                return Ok(ObjRef::Raw(RawObj(ptr)));
            }
        }
        let weak = PyWeakrefReference::new(obj)?;
        // A weak reference without a callback refers to nothing strongly, so it is in no
        // reference cycle: out of the collector's lists, a large load adds one tracked object
        // fewer per row.
        untrack(weak.as_any());
        Ok(ObjRef::Weak(weak.unbind()))
    }

    /// The object, if it is alive. `state` is the entry's state.
    pub fn get<'py>(&self, py: Python<'py>, state: &InstanceState) -> Option<Bound<'py, PyAny>> {
        match self {
            ObjRef::Weak(w) => w.bind(py).upgrade(),
            ObjRef::Raw(p) => {
                let p = p.0.as_ptr();
                if state.owner() != p as usize
                    || !has_finalizer(state.mapper.get().class_.bind(py).as_type_ptr())
                {
                    return None;
                }
                // Safety: the state still vouches for the object at this address and its class
                // still has the finalizer, so the object has not been finalized, hence not
                // freed; a count of zero means CPython deferred its deallocation (the
                // trashcan): gone all the same.
                unsafe {
                    if ffi::Py_REFCNT(p) <= 0 {
                        return None;
                    }
                    Some(Bound::from_borrowed_ptr(py, p))
                }
            }
        }
    }

    /// Visit what the entry holds strongly (a weak reference; a plain pointer holds nothing).
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            ObjRef::Weak(w) => visit.call(w),
            ObjRef::Raw(_) => Ok(()),
        }
    }
}

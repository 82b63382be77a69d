//! Attribute caching (MPI-3.1 §6.7): keyvals and the attributes set with them on
//! communicators and on datatypes. The copy and delete callbacks are the application's and
//! may call MPI, so they always run without the state lock (`call_around`).

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicI32, Ordering};

use kawarimi_runtime::error::ErrorClass;

use crate::abi::{self, MPI_Comm, MPI_Datatype, MPI_Win};
use crate::api::p2p::TAG_UB;
use crate::export::call_around;
use crate::mem::out;
use crate::state::{fail, AttrObject, Attrs, CopyKind, Keyval, Res, State};

/// The values behind the predefined attributes (§8.1.2); `MPI_Comm_get_attr` hands out their
/// addresses, so they live in statics.
static ATTR_TAG_UB: AtomicI32 = AtomicI32::new(TAG_UB);
static ATTR_HOST: AtomicI32 = AtomicI32::new(abi::MPI_PROC_NULL);
static ATTR_IO: AtomicI32 = AtomicI32::new(abi::MPI_ANY_SOURCE);
static ATTR_WTIME_IS_GLOBAL: AtomicI32 = AtomicI32::new(0);
static ATTR_APPNUM: AtomicI32 = AtomicI32::new(0);
static ATTR_UNIVERSE_SIZE: AtomicI32 = AtomicI32::new(1);
static ATTR_LASTUSEDCODE: AtomicI32 = AtomicI32::new(abi::MPI_ERR_LASTCODE);

/// Records the largest error code in use, for the `MPI_LASTUSEDCODE` attribute (§8.5).
pub fn set_last_used_code(code: c_int) {
    ATTR_LASTUSEDCODE.fetch_max(code, Ordering::Relaxed);
}

/// First keyval handed to the application; below it are the predefined ones.
const FIRST_USER_KEYVAL: i32 = 1000;

/// What attributes are cached on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttrOwner {
    Comm(MPI_Comm),
    Datatype(MPI_Datatype),
    Win(MPI_Win),
}

impl AttrOwner {
    fn object(self) -> AttrObject {
        match self {
            AttrOwner::Comm(_) => AttrObject::Comm,
            AttrOwner::Datatype(_) => AttrObject::Datatype,
            AttrOwner::Win(_) => AttrObject::Win,
        }
    }

    /// The handle the callbacks receive (every kind is a pointer to an opaque object).
    pub(crate) fn handle(self) -> *mut c_void {
        match self {
            AttrOwner::Comm(h) | AttrOwner::Datatype(h) | AttrOwner::Win(h) => h,
        }
    }

    /// The communicator whose error handler takes a failure (§8.3): `None`, the world's,
    /// for a datatype or a window.
    fn comm(self) -> Option<MPI_Comm> {
        match self {
            AttrOwner::Comm(h) => Some(h),
            AttrOwner::Datatype(_) | AttrOwner::Win(_) => None,
        }
    }

    fn what(self) -> &'static str {
        match self {
            AttrOwner::Comm(_) => "communicator",
            AttrOwner::Datatype(_) => "datatype",
            AttrOwner::Win(_) => "window",
        }
    }

    /// Its attributes, the owner checked to exist.
    pub(crate) fn attrs(self, s: &mut State) -> Res<&mut Attrs> {
        match self {
            AttrOwner::Comm(h) => {
                let i = s.comm_index(h)?;
                Ok(&mut s.comms.get_mut(i).expect("checked").attrs)
            }
            AttrOwner::Datatype(h) => {
                s.datatype(h)?;
                Ok(s.type_attrs.entry(h as usize).or_default())
            }
            AttrOwner::Win(h) => crate::api::rma::win_attrs(s, h),
        }
    }

    /// User keyval `keyval`, refused when it is not one of this kind of object.
    fn keyval(self, s: &State, keyval: c_int) -> Res<Keyval> {
        match s.keyvals.get(&keyval) {
            Some(kv) if kv.object == self.object() => Ok(*kv),
            Some(_) => fail(ErrorClass::Keyval, format!("keyval {keyval} is not a {} keyval", self.what())),
            None => fail(ErrorClass::Keyval, format!("keyval {keyval} does not exist or is predefined")),
        }
    }
}

/// An attribute with its keyval, taken under the lock for a callback run outside it.
pub(crate) type AttrCall = (i32, usize, Keyval);

/// The attributes of `owner` with their keyvals, oldest first.
pub(crate) fn attrs_with_keyvals(s: &mut State, owner: AttrOwner) -> Res<Vec<AttrCall>> {
    let attrs: Vec<(i32, usize)> = owner.attrs(s)?.iter().collect();
    Ok(attrs.into_iter().filter_map(|(k, v)| Some((k, v, s.keyvals.get(&k).copied()?))).collect())
}

/// Runs the copy callbacks of `attrs`, set on `parent`, for a duplicate of it (§6.7.2):
/// the attributes the duplicate gets.
pub(crate) fn copy_attrs(parent: AttrOwner, attrs: Vec<AttrCall>) -> Res<Vec<(i32, usize)>> {
    let mut copies = Vec::new();
    for (k, v, kv) in attrs {
        if let Some(c) = copy_attr(parent.handle(), k, v, kv)? {
            copies.push((k, c));
        }
    }
    Ok(copies)
}

/// Runs the delete callbacks of `attrs`, set on `owner`, newest first.
pub(crate) fn delete_attrs(owner: AttrOwner, attrs: Vec<AttrCall>) -> Res<()> {
    attrs.into_iter().rev().try_for_each(|(k, v, kv)| delete_attr(owner.handle(), k, v, kv))
}

/// Runs the copy callback of attribute `k` (value `v`) of `parent`; `None` if it is not
/// copied.
fn copy_attr(parent: *mut c_void, k: i32, v: usize, kv: Keyval) -> Res<Option<usize>> {
    match kv.copy_kind {
        CopyKind::Null => Ok(None),
        CopyKind::Dup => Ok(Some(v)),
        CopyKind::User => {
            let f = kv.copy.expect("user copy kind has a function");
            let mut new_val: usize = 0;
            let mut flag: c_int = 0;
            // SAFETY: the application's copy callback (§6.7.2, §6.7.4) with the arguments it
            // expects; the output pointers are locals that outlive the call. No lock is
            // held, so it may call MPI.
            let rc = unsafe {
                f(
                    parent,
                    k,
                    kv.extra_state as *mut c_void,
                    v as *mut c_void,
                    &mut new_val as *mut usize as *mut c_void,
                    &mut flag,
                )
            };
            if rc != abi::MPI_SUCCESS {
                return fail(ErrorClass::Other, format!("attribute copy callback of keyval {k} returned {rc}"));
            }
            Ok((flag != 0).then_some(new_val))
        }
    }
}

/// Runs the delete callback of attribute `k` (value `v`) of the object `h` (§6.7.2). Called
/// without the state lock: the callback may call MPI.
pub(crate) fn delete_attr(h: *mut c_void, k: i32, v: usize, kv: Keyval) -> Res<()> {
    if let Some(f) = kv.delete {
        // SAFETY: the application's delete callback with the arguments §6.7.2 specifies.
        let rc = unsafe { f(h, k, v as *mut c_void, kv.extra_state as *mut c_void) };
        if rc != abi::MPI_SUCCESS {
            return fail(ErrorClass::Other, format!("attribute delete callback of keyval {k} returned {rc}"));
        }
    }
    Ok(())
}

fn predefined_attr(k: c_int) -> Option<&'static AtomicI32> {
    Some(match k {
        _ if k == abi::MPI_TAG_UB => &ATTR_TAG_UB,
        _ if k == abi::MPI_HOST => &ATTR_HOST,
        _ if k == abi::MPI_IO => &ATTR_IO,
        _ if k == abi::MPI_WTIME_IS_GLOBAL => &ATTR_WTIME_IS_GLOBAL,
        _ if k == abi::MPI_APPNUM => &ATTR_APPNUM,
        _ if k == abi::MPI_UNIVERSE_SIZE => &ATTR_UNIVERSE_SIZE,
        _ if k == abi::MPI_LASTUSEDCODE => &ATTR_LASTUSEDCODE,
        _ => return None,
    })
}

/// `MPI_Comm_create_keyval`, `MPI_Type_create_keyval`: the predefined callbacks
/// (`MPI_*_NULL_COPY_FN`, `MPI_*_DUP_FN`, `MPI_*_NULL_DELETE_FN`) are recognised by address
/// and run here.
pub(crate) fn keyval_create(
    s: &mut State,
    object: AttrObject,
    copy: Option<abi::MPI_Comm_copy_attr_function>,
    delete: Option<abi::MPI_Comm_delete_attr_function>,
    keyval: *mut c_int,
    extra_state: *mut c_void,
) -> Res<()> {
    use abi::PredefCallback as P;
    let p = abi::predefined();
    let copy_addr = copy.map_or(0, |f| f as usize);
    let copy_kind = match p.callback(copy_addr) {
        _ if copy_addr == 0 => CopyKind::Null,
        Some(P::CommNullCopyFn | P::NullCopyFn | P::TypeNullCopyFn | P::WinNullCopyFn) => CopyKind::Null,
        Some(P::CommDupFn | P::DupFn | P::TypeDupFn | P::WinDupFn) => CopyKind::Dup,
        _ => CopyKind::User,
    };
    let delete_addr = delete.map_or(0, |f| f as usize);
    let delete = match p.callback(delete_addr) {
        Some(P::CommNullDeleteFn | P::NullDeleteFn | P::TypeNullDeleteFn | P::WinNullDeleteFn) => None,
        _ => delete,
    };
    if s.next_keyval < FIRST_USER_KEYVAL {
        s.next_keyval = FIRST_USER_KEYVAL;
    }
    let k = s.next_keyval;
    s.next_keyval += 1;
    s.keyvals.insert(k, Keyval { object, copy, delete, extra_state: extra_state as usize, copy_kind });
    // SAFETY: caller's output argument.
    unsafe { out(keyval, k) }
}

/// `MPI_Comm_free_keyval`, `MPI_Type_free_keyval`. Attributes already set keep their
/// callbacks until deleted (§6.7.2), so the keyval entry stays; only the caller's handle is
/// reset.
pub(crate) fn free_keyval(s: &State, object: AttrObject, keyval: *mut c_int) -> Res<()> {
    if keyval.is_null() {
        return fail(ErrorClass::Arg, "NULL keyval pointer");
    }
    // SAFETY: non-null in/out argument.
    let k = unsafe { *keyval };
    if !s.keyvals.get(&k).is_some_and(|kv| kv.object == object) {
        return fail(ErrorClass::Keyval, format!("keyval {k} does not exist"));
    }
    // SAFETY: as above.
    unsafe { *keyval = abi::MPI_KEYVAL_INVALID };
    Ok(())
}

/// `MPI_Comm_set_attr`, `MPI_Type_set_attr`: a value already there is deleted first, by its
/// callback, and the new one is the newest attribute.
pub(crate) fn set_attr(name: &'static str, owner: AttrOwner, keyval: c_int, value: usize) -> c_int {
    call_around(
        name,
        owner.comm(),
        |s| {
            let kv = owner.keyval(s, keyval)?;
            Ok(owner.attrs(s)?.get(keyval).map(|old| (old, kv)))
        },
        |old| old.map_or(Ok(()), |(v, kv)| delete_attr(owner.handle(), keyval, v, kv)),
        |s, ()| {
            owner.attrs(s)?.insert(keyval, value);
            Ok(())
        },
    )
}

/// `MPI_Comm_get_attr`, `MPI_Type_get_attr`.
///
/// # Safety
/// `attribute_val` must be writable as a `void*`, `flag` as an int.
pub(crate) unsafe fn get_attr(
    s: &mut State,
    owner: AttrOwner,
    keyval: c_int,
    attribute_val: *mut c_void,
    flag: *mut c_int,
) -> Res<()> {
    if let (AttrOwner::Comm(h), Some(a)) = (owner, predefined_attr(keyval)) {
        s.comm_index(h)?;
        if keyval == abi::MPI_UNIVERSE_SIZE {
            ATTR_UNIVERSE_SIZE.store(s.world()?.proc.size as i32, Ordering::Relaxed);
        }
        // SAFETY: caller's output arguments; predefined attributes are pointers to int.
        unsafe {
            out(attribute_val as *mut *const AtomicI32, a as *const AtomicI32)?;
            return out(flag, 1);
        }
    }
    let v = owner.attrs(s)?.get(keyval);
    // A keyval that was never created (MPI_KEYVAL_INVALID among them) is an error, as in Open
    // MPI; one freed while still attached still finds its attribute (§6.7.2).
    if v.is_none() && !s.keyvals.contains_key(&keyval) {
        return fail(ErrorClass::Keyval, format!("keyval {keyval} does not exist"));
    }
    // SAFETY: caller's output arguments.
    unsafe {
        out(flag, v.is_some() as c_int)?;
        if let Some(v) = v {
            out(attribute_val as *mut usize, v)?;
        }
    }
    Ok(())
}

/// `MPI_Comm_delete_attr`, `MPI_Type_delete_attr`: the callback runs, then the attribute
/// goes.
pub(crate) fn del_attr(name: &'static str, owner: AttrOwner, keyval: c_int) -> c_int {
    call_around(
        name,
        owner.comm(),
        |s| {
            let Some(v) = owner.attrs(s)?.get(keyval) else {
                return fail(ErrorClass::Keyval, format!("attribute {keyval} is not set on this {}", owner.what()));
            };
            Ok((v, s.keyvals.get(&keyval).copied()))
        },
        |(v, kv)| kv.map_or(Ok(()), |kv| delete_attr(owner.handle(), keyval, v, kv)),
        |s, ()| {
            owner.attrs(s)?.remove(keyval);
            Ok(())
        },
    )
}

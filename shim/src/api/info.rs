//! Info objects (MPI-3.1 chapter 9), and the calls that take them but need nothing from them.
//!
//! kawarimi honours no info keys yet; the objects still hold what the application puts in
//! them, so programs (and libraries such as mpi4py) that build, copy and read infos work.

use std::ffi::{c_char, c_int, CStr};

use kawarimi_runtime::error::ErrorClass;

use crate::abi::{self, MPI_Comm, MPI_Info};
use crate::export::call;
use crate::mem::{c_string, out};
use crate::state::{decode, fail, Kind, Res, State};

/// Reads a NUL-terminated key or value, checking its length against the standard's limit
/// (`MPI_ERR_INFO_KEY` or `MPI_ERR_INFO_VALUE`, as Open MPI answers).
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string.
unsafe fn c_text(p: *const c_char, text: Text) -> Res<String> {
    let (max, what, class) = match text {
        Text::Key => (abi::MPI_MAX_INFO_KEY, "key", ErrorClass::InfoKey),
        Text::Value => (abi::MPI_MAX_INFO_VAL, "value", ErrorClass::InfoValue),
    };
    if p.is_null() {
        return fail(class, format!("NULL {what}"));
    }
    // SAFETY: per the contract.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    if s.is_empty() || s.len() > max as usize {
        return fail(class, format!("{what} of {} characters (1..={max} allowed)", s.len()));
    }
    Ok(s)
}

/// What [`c_text`] reads.
enum Text {
    Key,
    Value,
}

fn pairs_mut(s: &mut State, info: MPI_Info) -> Res<&mut Vec<(String, String)>> {
    let i = s.info_index(info)?;
    Ok(s.infos.get_mut(i).expect("checked"))
}

mpi_fn! {
    fn Info_create(info: *mut MPI_Info) -> c_int {
        call("MPI_Info_create", None, |s| {
            let h = s.new_info(Vec::new())?;
            // SAFETY: caller's output argument.
            unsafe { out(info, h) }
        })
    }

    fn Info_dup(info: MPI_Info, newinfo: *mut MPI_Info) -> c_int {
        call("MPI_Info_dup", None, |s| {
            let pairs = s.info_pairs(info)?;
            let h = s.new_info(pairs)?;
            // SAFETY: caller's output argument.
            unsafe { out(newinfo, h) }
        })
    }

    fn Info_free(info: *mut MPI_Info) -> c_int {
        call("MPI_Info_free", None, |s| {
            if info.is_null() {
                return fail(ErrorClass::Arg, "NULL info pointer");
            }
            // SAFETY: non-null in/out argument.
            let h = unsafe { *info };
            let i = s.info_index(h)?;
            s.infos.remove(i);
            debug_assert!(decode(h as usize, Kind::Info).is_some());
            // SAFETY: as above.
            unsafe { *info = abi::predefined().info_handle(abi::PredefInfo::InfoNull) as MPI_Info };
            Ok(())
        })
    }

    fn Info_set(info: MPI_Info, key: *const c_char, value: *const c_char) -> c_int {
        call("MPI_Info_set", None, |s| {
            // SAFETY: NUL-terminated strings (§9).
            let (k, v) = unsafe { (c_text(key, Text::Key)?, c_text(value, Text::Value)?) };
            let pairs = pairs_mut(s, info)?;
            match pairs.iter_mut().find(|(pk, _)| *pk == k) {
                Some(p) => p.1 = v,
                None => pairs.push((k, v)),
            }
            Ok(())
        })
    }

    fn Info_delete(info: MPI_Info, key: *const c_char) -> c_int {
        call("MPI_Info_delete", None, |s| {
            // SAFETY: a NUL-terminated string (§9).
            let k = unsafe { c_text(key, Text::Key)? };
            let pairs = pairs_mut(s, info)?;
            let Some(pos) = pairs.iter().position(|(pk, _)| *pk == k) else {
                return fail(ErrorClass::InfoNokey, format!("info has no key {k:?}"));
            };
            pairs.remove(pos);
            Ok(())
        })
    }

    fn Info_get(info: MPI_Info, key: *const c_char, valuelen: c_int, value: *mut c_char, flag: *mut c_int) -> c_int {
        call("MPI_Info_get", None, |s| {
            // SAFETY: a NUL-terminated string (§9).
            let k = unsafe { c_text(key, Text::Key)? };
            let found = s.info_pairs(info)?.into_iter().find(|(pk, _)| *pk == k);
            // SAFETY: caller's output arguments; `value` has `valuelen + 1` bytes (§9).
            unsafe {
                out(flag, found.is_some() as c_int)?;
                if let Some((_, v)) = found {
                    c_string(value, valuelen.max(0) as usize + 1, &v)?;
                }
            }
            Ok(())
        })
    }

    fn Info_get_valuelen(info: MPI_Info, key: *const c_char, valuelen: *mut c_int, flag: *mut c_int) -> c_int {
        call("MPI_Info_get_valuelen", None, |s| {
            // SAFETY: a NUL-terminated string (§9).
            let k = unsafe { c_text(key, Text::Key)? };
            let found = s.info_pairs(info)?.into_iter().find(|(pk, _)| *pk == k);
            // SAFETY: caller's output arguments.
            unsafe {
                out(flag, found.is_some() as c_int)?;
                if let Some((_, v)) = found {
                    out(valuelen, v.len() as c_int)?;
                }
            }
            Ok(())
        })
    }

    fn Info_get_nkeys(info: MPI_Info, nkeys: *mut c_int) -> c_int {
        call("MPI_Info_get_nkeys", None, |s| {
            let n = s.info_pairs(info)?.len();
            // SAFETY: caller's output argument.
            unsafe { out(nkeys, n as c_int) }
        })
    }

    fn Info_get_nthkey(info: MPI_Info, n: c_int, key: *mut c_char) -> c_int {
        call("MPI_Info_get_nthkey", None, |s| {
            let pairs = s.info_pairs(info)?;
            let Some((k, _)) = usize::try_from(n).ok().and_then(|n| pairs.get(n)) else {
                return fail(ErrorClass::InfoKey, format!("info has {} keys, no key {n}", pairs.len()));
            };
            // SAFETY: `key` has MPI_MAX_INFO_KEY + 1 bytes (§9).
            unsafe { c_string(key, abi::MPI_MAX_INFO_KEY as usize + 1, k)? };
            Ok(())
        })
    }

    fn Comm_set_info(comm: MPI_Comm, info: MPI_Info) -> c_int {
        call("MPI_Comm_set_info", Some(comm), |s| {
            s.comm_index(comm)?;
            // No hint changes kawarimi's behaviour; the info is checked and otherwise ignored,
            // as §6.4.4 allows.
            s.info_pairs(info).map(|_| ())
        })
    }

    fn Comm_get_info(comm: MPI_Comm, info_used: *mut MPI_Info) -> c_int {
        call("MPI_Comm_get_info", Some(comm), |s| {
            s.comm_index(comm)?;
            let h = s.new_info(Vec::new())?;
            // SAFETY: caller's output argument.
            unsafe { out(info_used, h) }
        })
    }
}

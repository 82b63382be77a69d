//! Derived datatypes, addresses and packing (MPI-3.1 chapter 4).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;

use kawarimi_runtime::datatype::{Combiner, Datatype, Distribution, Order};
use kawarimi_runtime::error::ErrorClass;

use crate::abi::{self, MPI_Aint, MPI_Comm, MPI_Count, MPI_Datatype};
use crate::api::attr::{
    attrs_with_keyvals, copy_attrs, del_attr, delete_attrs, free_keyval, get_attr, keyval_create, set_attr, AttrOwner,
};
use crate::export::{call, call_around, datatype_query};
use crate::mem::{c_array, c_array_mut, c_string, out, user_bytes, user_bytes_mut};
use crate::state::{decode, fail, AttrObject, Kind, Res, State};

fn new_type(s: &mut State, newtype: *mut MPI_Datatype, make: impl FnOnce(&mut State) -> Res<Datatype>) -> Res<()> {
    let dt = make(s)?;
    let h = s.new_datatype(dt)?;
    // SAFETY: caller's output argument.
    unsafe { out(newtype, h) }
}

fn len(n: c_int) -> Res<usize> {
    usize::try_from(n).or_else(|_| fail(ErrorClass::Count, format!("count {n} is negative")))
}

/// # Safety
/// `p` must point to `n` values.
unsafe fn aints(p: *const MPI_Aint, n: c_int) -> Res<Vec<isize>> {
    // SAFETY: per the contract.
    Ok(unsafe { c_array(p, len(n)?)? }.to_vec())
}

/// # Safety
/// `p` must point to `n` values.
unsafe fn ints<'a>(p: *const c_int, n: c_int) -> Res<&'a [c_int]> {
    // SAFETY: per the contract.
    unsafe { c_array(p, len(n)?) }
}

fn combiner_code(c: Combiner) -> c_int {
    match c {
        Combiner::Named => abi::MPI_COMBINER_NAMED,
        Combiner::Dup => abi::MPI_COMBINER_DUP,
        Combiner::Contiguous => abi::MPI_COMBINER_CONTIGUOUS,
        Combiner::Vector => abi::MPI_COMBINER_VECTOR,
        Combiner::Hvector => abi::MPI_COMBINER_HVECTOR,
        Combiner::Indexed => abi::MPI_COMBINER_INDEXED,
        Combiner::Hindexed => abi::MPI_COMBINER_HINDEXED,
        Combiner::IndexedBlock => abi::MPI_COMBINER_INDEXED_BLOCK,
        Combiner::HindexedBlock => abi::MPI_COMBINER_HINDEXED_BLOCK,
        Combiner::Struct => abi::MPI_COMBINER_STRUCT,
        Combiner::Subarray => abi::MPI_COMBINER_SUBARRAY,
        Combiner::Resized => abi::MPI_COMBINER_RESIZED,
        Combiner::F90Integer => abi::MPI_COMBINER_F90_INTEGER,
        Combiner::F90Real => abi::MPI_COMBINER_F90_REAL,
        Combiner::F90Complex => abi::MPI_COMBINER_F90_COMPLEX,
        Combiner::Darray => abi::MPI_COMBINER_DARRAY,
    }
}

fn extent_of(dt: &Datatype, true_extent: bool) -> (isize, isize) {
    if true_extent {
        (dt.true_lb(), dt.true_extent())
    } else {
        (dt.lb(), dt.extent())
    }
}

mpi_fn! {
    fn Type_contiguous(count: c_int, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_contiguous", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            Ok(Datatype::contiguous(count, &old)?)
        }))
    }

    fn Type_vector(count: c_int, blocklength: c_int, stride: c_int, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_vector", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            Ok(Datatype::vector(count, blocklength, stride, &old)?)
        }))
    }

    fn Type_create_hvector(count: c_int, blocklength: c_int, stride: MPI_Aint, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_hvector", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            Ok(Datatype::hvector(count, blocklength, stride, &old)?)
        }))
    }

    fn Type_hvector(count: c_int, blocklength: c_int, stride: MPI_Aint, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        // SAFETY: MPI-1 name of MPI_Type_create_hvector, same contract.
        unsafe { Type_create_hvector(count, blocklength, stride, oldtype, newtype) }
    }

    fn Type_indexed(count: c_int, array_of_blocklengths: *const c_int, array_of_displacements: *const c_int, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_indexed", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            // SAFETY: `count` entries each (§4.1.4).
            let (b, d) = unsafe { (ints(array_of_blocklengths, count)?, ints(array_of_displacements, count)?) };
            Ok(Datatype::indexed(b, d, &old)?)
        }))
    }

    fn Type_create_hindexed(count: c_int, array_of_blocklengths: *const c_int, array_of_displacements: *const MPI_Aint, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_hindexed", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            // SAFETY: `count` entries each (§4.1.5).
            let (b, d) = unsafe { (ints(array_of_blocklengths, count)?, aints(array_of_displacements, count)?) };
            Ok(Datatype::hindexed(b, &d, &old)?)
        }))
    }

    fn Type_hindexed(count: c_int, array_of_blocklengths: *const c_int, array_of_displacements: *const MPI_Aint, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        // SAFETY: MPI-1 name of MPI_Type_create_hindexed, same contract.
        unsafe { Type_create_hindexed(count, array_of_blocklengths, array_of_displacements, oldtype, newtype) }
    }

    fn Type_create_indexed_block(count: c_int, blocklength: c_int, array_of_displacements: *const c_int, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_indexed_block", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            // SAFETY: `count` entries (§4.1.6).
            let d = unsafe { ints(array_of_displacements, count)? };
            Ok(Datatype::indexed_block(blocklength, d, &old)?)
        }))
    }

    fn Type_create_hindexed_block(count: c_int, blocklength: c_int, array_of_displacements: *const MPI_Aint, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_hindexed_block", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            // SAFETY: `count` entries (§4.1.7).
            let d = unsafe { aints(array_of_displacements, count)? };
            Ok(Datatype::hindexed_block(blocklength, &d, &old)?)
        }))
    }

    fn Type_create_struct(count: c_int, array_of_blocklengths: *const c_int, array_of_displacements: *const MPI_Aint, array_of_types: *const MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_struct", None, |s| new_type(s, newtype, |s| {
            // SAFETY: `count` entries each (§4.1.2).
            let (b, d, t) = unsafe { (ints(array_of_blocklengths, count)?, aints(array_of_displacements, count)?, c_array(array_of_types, len(count)?)?) };
            let types = t.iter().map(|&h| s.datatype(h)).collect::<Res<Vec<Arc<Datatype>>>>()?;
            let refs: Vec<&Datatype> = types.iter().map(|a| &**a).collect();
            Ok(Datatype::create_struct(b, &d, &refs)?)
        }))
    }

    fn Type_struct(count: c_int, array_of_blocklengths: *const c_int, array_of_displacements: *const MPI_Aint, array_of_types: *const MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        // SAFETY: MPI-1 name of MPI_Type_create_struct, same contract.
        unsafe { Type_create_struct(count, array_of_blocklengths, array_of_displacements, array_of_types, newtype) }
    }

    fn Type_create_subarray(ndims: c_int, array_of_sizes: *const c_int, array_of_subsizes: *const c_int, array_of_starts: *const c_int, order: c_int, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_subarray", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            // SAFETY: `ndims` entries each (§4.1.3).
            let (sz, sub, st) = unsafe { (ints(array_of_sizes, ndims)?, ints(array_of_subsizes, ndims)?, ints(array_of_starts, ndims)?) };
            Ok(Datatype::create_subarray(ndims, sz, sub, st, array_order(order)?, &old)?)
        }))
    }

    fn Type_create_darray(size: c_int, rank: c_int, ndims: c_int, array_of_gsizes: *const c_int, array_of_distribs: *const c_int, array_of_dargs: *const c_int, array_of_psizes: *const c_int, order: c_int, oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_darray", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            // SAFETY: `ndims` entries each (§4.1.4).
            let (g, dist, darg, p) = unsafe {
                (ints(array_of_gsizes, ndims)?, ints(array_of_distribs, ndims)?, ints(array_of_dargs, ndims)?, ints(array_of_psizes, ndims)?)
            };
            let distribs = dist
                .iter()
                .map(|&d| match d {
                    abi::MPI_DISTRIBUTE_BLOCK => Ok(Distribution::Block),
                    abi::MPI_DISTRIBUTE_CYCLIC => Ok(Distribution::Cyclic),
                    abi::MPI_DISTRIBUTE_NONE => Ok(Distribution::None),
                    _ => fail(ErrorClass::Arg, format!("distribution {d} is not MPI_DISTRIBUTE_BLOCK, _CYCLIC or _NONE")),
                })
                .collect::<Res<Vec<_>>>()?;
            let dargs: Vec<Option<i32>> = darg.iter().map(|&a| (a != abi::MPI_DISTRIBUTE_DFLT_DARG).then_some(a)).collect();
            let ord = array_order(order)?;
            let mut contents: Vec<i64> = vec![size.into(), rank.into(), ndims.into()];
            for v in [g, dist, darg, p] {
                contents.extend(v.iter().map(|&x| i64::from(x)));
            }
            contents.push(order.into());
            Ok(Datatype::create_darray(size, rank, g, &distribs, &dargs, p, ord, &old, contents)?)
        }))
    }

    fn Type_create_resized(oldtype: MPI_Datatype, lb: MPI_Aint, extent: MPI_Aint, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_resized", None, |s| new_type(s, newtype, |s| {
            let old = s.datatype(oldtype)?;
            Ok(Datatype::create_resized(&old, lb, extent)?)
        }))
    }

    fn Type_dup(oldtype: MPI_Datatype, newtype: *mut MPI_Datatype) -> c_int {
        // The attributes are copied by their callbacks, outside the lock (§6.7.4).
        let old = AttrOwner::Datatype(oldtype);
        call_around(
            "MPI_Type_dup",
            None,
            |s| {
                let dt = Datatype::dup(&*s.datatype(oldtype)?)?;
                Ok((s.new_datatype(dt)?, attrs_with_keyvals(s, old)?))
            },
            |(h, attrs)| Ok((h, copy_attrs(old, attrs)?)),
            |s, (h, copies)| {
                AttrOwner::Datatype(h).attrs(s)?.extend(copies);
                // SAFETY: caller's output argument.
                unsafe { out(newtype, h) }
            },
        )
    }

    fn Type_commit(datatype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_commit", None, |s| {
            if datatype.is_null() {
                return fail(ErrorClass::Arg, "NULL datatype pointer");
            }
            // SAFETY: non-null in/out argument.
            let h = unsafe { *datatype } as usize;
            match decode(h, Kind::Datatype) {
                Some(i) => match s.datatypes.get_mut(i) {
                    Some(dt) => {
                        Arc::make_mut(dt).commit();
                        Ok(())
                    }
                    None => fail(ErrorClass::Type, "datatype was freed"),
                },
                // Predefined datatypes are committed already; committing them is harmless.
                None => s.datatype(h as MPI_Datatype).map(|_| ()),
            }
        })
    }

    fn Type_free(datatype: *mut MPI_Datatype) -> c_int {
        call_around(
            "MPI_Type_free",
            None,
            |s| {
                if datatype.is_null() {
                    return fail(ErrorClass::Arg, "NULL datatype pointer");
                }
                // SAFETY: non-null in/out argument.
                let h = unsafe { *datatype };
                if s.datatype(h).is_ok_and(|d| d.is_f90()) {
                    return fail(ErrorClass::Type, "a datatype from MPI_Type_create_f90_* is predefined and cannot be freed");
                }
                match decode(h as usize, Kind::Datatype) {
                    Some(i) if s.datatypes.get(i).is_some() => Ok((h, attrs_with_keyvals(s, AttrOwner::Datatype(h))?)),
                    Some(_) => fail(ErrorClass::Type, "datatype was already freed"),
                    None => fail(ErrorClass::Type, "predefined datatypes cannot be freed"),
                }
            },
            // The delete callbacks run while the datatype still exists: they may use it.
            |(h, attrs)| delete_attrs(AttrOwner::Datatype(h), attrs).map(|()| h),
            |s, h| {
                let i = decode(h as usize, Kind::Datatype).expect("checked");
                // Communication in progress keeps its own reference (an Arc), as §4.1.9
                // requires. What the shim kept by handle goes: the handle may be reused.
                s.datatypes.remove(i);
                s.type_attrs.remove(&(h as usize));
                s.type_names.remove(&(h as usize));
                // SAFETY: as above.
                unsafe { *datatype = abi::predefined().datatype_handle(abi::PredefDatatype::DatatypeNull) as MPI_Datatype };
                Ok(())
            },
        )
    }

    fn Type_create_keyval(type_copy_attr_fn: Option<abi::MPI_Type_copy_attr_function>, type_delete_attr_fn: Option<abi::MPI_Type_delete_attr_function>, type_keyval: *mut c_int, extra_state: *mut c_void) -> c_int {
        call("MPI_Type_create_keyval", None, |s| keyval_create(s, AttrObject::Datatype, type_copy_attr_fn, type_delete_attr_fn, type_keyval, extra_state))
    }

    fn Type_free_keyval(type_keyval: *mut c_int) -> c_int {
        call("MPI_Type_free_keyval", None, |s| free_keyval(s, AttrObject::Datatype, type_keyval))
    }

    fn Type_set_attr(datatype: MPI_Datatype, type_keyval: c_int, attribute_val: *mut c_void) -> c_int {
        set_attr("MPI_Type_set_attr", AttrOwner::Datatype(datatype), type_keyval, attribute_val as usize)
    }

    fn Type_get_attr(datatype: MPI_Datatype, type_keyval: c_int, attribute_val: *mut c_void, flag: *mut c_int) -> c_int {
        // SAFETY: §6.7.4's output arguments.
        call("MPI_Type_get_attr", None, |s| unsafe { get_attr(s, AttrOwner::Datatype(datatype), type_keyval, attribute_val, flag) })
    }

    fn Type_delete_attr(datatype: MPI_Datatype, type_keyval: c_int) -> c_int {
        del_attr("MPI_Type_delete_attr", AttrOwner::Datatype(datatype), type_keyval)
    }

    fn Type_size(datatype: MPI_Datatype, size: *mut c_int) -> c_int {
        datatype_query("MPI_Type_size", datatype, |dt| {
            let n = dt.size();
            let n = c_int::try_from(n).unwrap_or(abi::MPI_UNDEFINED);
            // SAFETY: caller's output argument.
            unsafe { out(size, n) }
        })
    }

    fn Type_size_x(datatype: MPI_Datatype, size: *mut MPI_Count) -> c_int {
        datatype_query("MPI_Type_size_x", datatype, |dt| {
            let n = dt.size();
            // SAFETY: caller's output argument.
            unsafe { out(size, n as MPI_Count) }
        })
    }

    fn Type_get_extent(datatype: MPI_Datatype, lb: *mut MPI_Aint, extent: *mut MPI_Aint) -> c_int {
        datatype_query("MPI_Type_get_extent", datatype, |dt| {
            let (l, e) = extent_of(dt, false);
            // SAFETY: caller's output arguments.
            unsafe { out(lb, l)?; out(extent, e) }
        })
    }

    fn Type_get_extent_x(datatype: MPI_Datatype, lb: *mut MPI_Count, extent: *mut MPI_Count) -> c_int {
        datatype_query("MPI_Type_get_extent_x", datatype, |dt| {
            let (l, e) = extent_of(dt, false);
            // SAFETY: caller's output arguments.
            unsafe { out(lb, l as MPI_Count)?; out(extent, e as MPI_Count) }
        })
    }

    fn Type_get_true_extent(datatype: MPI_Datatype, true_lb: *mut MPI_Aint, true_extent: *mut MPI_Aint) -> c_int {
        datatype_query("MPI_Type_get_true_extent", datatype, |dt| {
            let (l, e) = extent_of(dt, true);
            // SAFETY: caller's output arguments.
            unsafe { out(true_lb, l)?; out(true_extent, e) }
        })
    }

    fn Type_get_true_extent_x(datatype: MPI_Datatype, true_lb: *mut MPI_Count, true_extent: *mut MPI_Count) -> c_int {
        datatype_query("MPI_Type_get_true_extent_x", datatype, |dt| {
            let (l, e) = extent_of(dt, true);
            // SAFETY: caller's output arguments.
            unsafe { out(true_lb, l as MPI_Count)?; out(true_extent, e as MPI_Count) }
        })
    }

    fn Type_extent(datatype: MPI_Datatype, extent: *mut MPI_Aint) -> c_int {
        datatype_query("MPI_Type_extent", datatype, |dt| {
            let (_, e) = extent_of(dt, false);
            // SAFETY: caller's output argument.
            unsafe { out(extent, e) }
        })
    }

    fn Type_lb(datatype: MPI_Datatype, displacement: *mut MPI_Aint) -> c_int {
        datatype_query("MPI_Type_lb", datatype, |dt| {
            let (l, _) = extent_of(dt, false);
            // SAFETY: caller's output argument.
            unsafe { out(displacement, l) }
        })
    }

    fn Type_ub(datatype: MPI_Datatype, displacement: *mut MPI_Aint) -> c_int {
        datatype_query("MPI_Type_ub", datatype, |dt| {
            let (l, e) = extent_of(dt, false);
            // SAFETY: caller's output argument.
            unsafe { out(displacement, l + e) }
        })
    }

    fn Get_address(location: *const c_void, address: *mut MPI_Aint) -> c_int {
        call("MPI_Get_address", None, |_| {
            // SAFETY: caller's output argument; the address itself is never dereferenced.
            unsafe { out(address, location as MPI_Aint) }
        })
    }

    fn Address(location: *const c_void, address: *mut MPI_Aint) -> c_int {
        // SAFETY: MPI-1 name of MPI_Get_address, same contract.
        unsafe { Get_address(location, address) }
    }

    fn Type_set_name(datatype: MPI_Datatype, type_name: *const c_char) -> c_int {
        call("MPI_Type_set_name", None, |s| {
            s.datatype(datatype)?;
            if type_name.is_null() {
                return fail(ErrorClass::Arg, "NULL name");
            }
            // SAFETY: a NUL-terminated string (§6.8).
            let name = unsafe { CStr::from_ptr(type_name) }.to_string_lossy();
            let max = abi::MPI_MAX_OBJECT_NAME as usize - 1;
            s.type_names.insert(datatype as usize, name.chars().take(max).collect());
            Ok(())
        })
    }

    fn Type_get_name(datatype: MPI_Datatype, type_name: *mut c_char, resultlen: *mut c_int) -> c_int {
        call("MPI_Type_get_name", None, |s| {
            let dt = s.datatype(datatype)?;
            let name = s.type_names.get(&(datatype as usize)).cloned().or_else(|| dt.name().map(str::to_string)).unwrap_or_default();
            // SAFETY: the buffer has MPI_MAX_OBJECT_NAME bytes (§6.8).
            let n = unsafe { c_string(type_name, abi::MPI_MAX_OBJECT_NAME as usize, &name)? };
            // SAFETY: caller's output argument.
            unsafe { out(resultlen, n) }
        })
    }

    fn Type_get_envelope(datatype: MPI_Datatype, num_integers: *mut c_int, num_addresses: *mut c_int, num_datatypes: *mut c_int, combiner: *mut c_int) -> c_int {
        call("MPI_Type_get_envelope", None, |s| {
            let dt = s.datatype(datatype)?;
            let (ni, na, nd, c) = match dt.recipe() {
                None => (0, 0, 0, abi::MPI_COMBINER_NAMED),
                Some(r) => (r.integers.len(), r.addresses.len(), r.types.len(), combiner_code(r.combiner)),
            };
            // SAFETY: caller's output arguments.
            unsafe {
                out(num_integers, ni as c_int)?;
                out(num_addresses, na as c_int)?;
                out(num_datatypes, nd as c_int)?;
                out(combiner, c)
            }
        })
    }

    fn Type_get_contents(datatype: MPI_Datatype, max_integers: c_int, max_addresses: c_int, max_datatypes: c_int, array_of_integers: *mut c_int, array_of_addresses: *mut MPI_Aint, array_of_datatypes: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_get_contents", None, |s| {
            let dt = s.datatype(datatype)?;
            let Some(r) = dt.recipe().cloned() else {
                return fail(ErrorClass::Type, "MPI_Type_get_contents of a predefined datatype");
            };
            if (max_integers as usize) < r.integers.len() || (max_addresses as usize) < r.addresses.len() || (max_datatypes as usize) < r.types.len() {
                return fail(ErrorClass::Arg, "arrays smaller than MPI_Type_get_envelope's counts");
            }
            // SAFETY: arrays of at least the envelope's counts (checked above), §4.1.13.
            let (ints, addrs, types) = unsafe {
                (
                    c_array_mut(array_of_integers, r.integers.len())?,
                    c_array_mut(array_of_addresses, r.addresses.len())?,
                    c_array_mut(array_of_datatypes, r.types.len())?,
                )
            };
            for (o, &v) in ints.iter_mut().zip(&r.integers) {
                *o = c_int::try_from(v).or_else(|_| fail(ErrorClass::Arg, format!("{v} does not fit an int")))?;
            }
            addrs.copy_from_slice(&r.addresses);
            for (o, t) in types.iter_mut().zip(r.types) {
                // A predefined constituent is returned as itself; a derived one as a new
                // handle, which the application frees (§4.1.13).
                let predef = t.name().and_then(abi::PredefDatatype::from_mpi_name).filter(|_| t.recipe().is_none());
                *o = match predef {
                    Some(p) => abi::predefined().datatype_handle(p) as MPI_Datatype,
                    None => s.new_datatype(t)?,
                };
            }
            Ok(())
        })
    }

    fn Pack_size(incount: c_int, datatype: MPI_Datatype, comm: MPI_Comm, size: *mut c_int) -> c_int {
        call("MPI_Pack_size", Some(comm), |s| {
            s.comm_index(comm)?;
            let n = len(incount)? * s.datatype(datatype)?.size();
            let n = c_int::try_from(n).or_else(|_| fail(ErrorClass::Count, format!("{n} bytes do not fit an int")))?;
            // SAFETY: caller's output argument.
            unsafe { out(size, n) }
        })
    }

    fn Pack(inbuf: *const c_void, incount: c_int, datatype: MPI_Datatype, outbuf: *mut c_void, outsize: c_int, position: *mut c_int, comm: MPI_Comm) -> c_int {
        call("MPI_Pack", Some(comm), |s| {
            s.comm_index(comm)?;
            let (outsize, pos) = (len(outsize)? as MPI_Aint, read_position(position)?);
            // SAFETY: the caller's buffers (§4.2).
            let end = unsafe { pack(s, inbuf, incount, datatype, outbuf, outsize, pos, false)? };
            // SAFETY: checked non-null by read_position.
            unsafe { *position = end as c_int };
            Ok(())
        })
    }

    fn Unpack(inbuf: *const c_void, insize: c_int, position: *mut c_int, outbuf: *mut c_void, outcount: c_int, datatype: MPI_Datatype, comm: MPI_Comm) -> c_int {
        call("MPI_Unpack", Some(comm), |s| {
            s.comm_index(comm)?;
            let (insize, pos) = (len(insize)? as MPI_Aint, read_position(position)?);
            // SAFETY: the caller's buffers (§4.2).
            let end = unsafe { unpack(s, inbuf, insize, pos, outbuf, outcount, datatype, false)? };
            // SAFETY: checked non-null by read_position.
            unsafe { *position = end as c_int };
            Ok(())
        })
    }

    fn Pack_external_size(datarep: *const c_char, incount: c_int, datatype: MPI_Datatype, size: *mut MPI_Aint) -> c_int {
        call("MPI_Pack_external_size", None, |s| {
            check_external32(datarep)?;
            let n = len(incount)? * s.datatype(datatype)?.size();
            // SAFETY: caller's output argument.
            unsafe { out(size, n as MPI_Aint) }
        })
    }

    fn Pack_external(datarep: *const c_char, inbuf: *const c_void, incount: c_int, datatype: MPI_Datatype, outbuf: *mut c_void, outsize: MPI_Aint, position: *mut MPI_Aint) -> c_int {
        call("MPI_Pack_external", None, |s| {
            check_external32(datarep)?;
            let pos = read_position(position)?;
            // SAFETY: the caller's buffers (§13.5.2).
            let end = unsafe { pack(s, inbuf, incount, datatype, outbuf, outsize, pos, true)? };
            // SAFETY: checked non-null by read_position.
            unsafe { *position = end };
            Ok(())
        })
    }

    fn Unpack_external(datarep: *const c_char, inbuf: *const c_void, insize: MPI_Aint, position: *mut MPI_Aint, outbuf: *mut c_void, outcount: c_int, datatype: MPI_Datatype) -> c_int {
        call("MPI_Unpack_external", None, |s| {
            check_external32(datarep)?;
            let pos = read_position(position)?;
            // SAFETY: the caller's buffers (§13.5.2).
            let end = unsafe { unpack(s, inbuf, insize, pos, outbuf, outcount, datatype, true)? };
            // SAFETY: checked non-null by read_position.
            unsafe { *position = end };
            Ok(())
        })
    }
}

/// The in/out position argument of the pack calls (an `int` or an `MPI_Aint`), read.
fn read_position<T: Copy + TryInto<MPI_Aint>>(position: *mut T) -> Res<MPI_Aint> {
    if position.is_null() {
        return fail(ErrorClass::Arg, "NULL position");
    }
    // SAFETY: non-null in/out argument.
    let p = unsafe { *position };
    p.try_into().or_else(|_| fail(ErrorClass::Arg, "position does not fit an address"))
}

/// The data representation of the external pack calls: §13.5.2 defines only "external32",
/// and Open MPI 4.1 packs external32 whatever name it is given, so kawarimi does too (a
/// program that passes another name keeps working); only a missing name is refused.
fn check_external32(datarep: *const c_char) -> Res<()> {
    if datarep.is_null() {
        return fail(ErrorClass::Arg, "NULL data representation");
    }
    Ok(())
}

/// `MPI_Pack` and `MPI_Pack_external` (`external`): packs `incount` elements at `inbuf` into
/// `outbuf` (of `outsize` bytes) at `pos`; returns the position after them.
///
/// # Safety
/// `inbuf` must hold the elements, `outbuf` `outsize` writable bytes.
#[allow(clippy::too_many_arguments)]
unsafe fn pack(
    s: &mut State,
    inbuf: *const c_void,
    incount: c_int,
    datatype: MPI_Datatype,
    outbuf: *mut c_void,
    outsize: MPI_Aint,
    pos: MPI_Aint,
    external: bool,
) -> Res<MPI_Aint> {
    let dt = s.datatype(datatype)?;
    let count = len(incount)?;
    let need = (count * dt.size()) as MPI_Aint;
    if pos < 0 || pos + need > outsize {
        return fail(ErrorClass::Truncate, format!("packing {need} bytes at {pos} overflows a buffer of {outsize}"));
    }
    let (lo, hi) = dt.span(count);
    // SAFETY: the caller's input data, `count` elements of `dt`.
    let src = unsafe { user_bytes(inbuf, lo, hi)? };
    let mut packed = Vec::with_capacity(need as usize);
    dt.pack(src, (-lo) as usize, count, &mut packed);
    if external {
        dt.swap_external32(&mut packed);
    }
    // SAFETY: the caller's output buffer of `outsize` bytes; the range was checked.
    let dst = unsafe { user_bytes_mut(outbuf, pos, pos + need)? };
    dst.copy_from_slice(&packed);
    Ok(pos + need)
}

/// `MPI_Unpack` and `MPI_Unpack_external` (`external`): unpacks `outcount` elements from
/// `inbuf` (of `insize` bytes) at `pos`; returns the position after them.
///
/// # Safety
/// `inbuf` must hold `insize` readable bytes, `outbuf` the elements.
#[allow(clippy::too_many_arguments)]
unsafe fn unpack(
    s: &mut State,
    inbuf: *const c_void,
    insize: MPI_Aint,
    pos: MPI_Aint,
    outbuf: *mut c_void,
    outcount: c_int,
    datatype: MPI_Datatype,
    external: bool,
) -> Res<MPI_Aint> {
    let dt = s.datatype(datatype)?;
    let count = len(outcount)?;
    let need = (count * dt.size()) as MPI_Aint;
    if pos < 0 || pos + need > insize {
        return fail(ErrorClass::Truncate, format!("unpacking {need} bytes at {pos} reads past a buffer of {insize}"));
    }
    // SAFETY: the caller's packed input, range checked above.
    let src = unsafe { user_bytes(inbuf, pos, pos + need)? };
    let mut native;
    let src = if external {
        native = src.to_vec();
        dt.swap_external32(&mut native);
        &native[..]
    } else {
        src
    };
    let (lo, hi) = dt.span(count);
    // SAFETY: the caller's output, `count` elements of `dt`.
    let dst = unsafe { user_bytes_mut(outbuf, lo, hi)? };
    dt.unpack(src, dst, (-lo) as usize, count)?;
    Ok(pos + need)
}

fn array_order(order: c_int) -> Res<Order> {
    match order {
        abi::MPI_ORDER_C => Ok(Order::C),
        abi::MPI_ORDER_FORTRAN => Ok(Order::Fortran),
        _ => fail(ErrorClass::Arg, format!("order {order} is neither MPI_ORDER_C nor MPI_ORDER_FORTRAN")),
    }
}

/// `MPI_Type_create_f90_*` (§17.1.9): the predefined type `base` for the parameters `ints`,
/// one handle per distinct request (the standard lets repeated calls return the same type).
fn f90_type(
    s: &mut State,
    combiner: Combiner,
    base: Option<abi::PredefDatatype>,
    ints: Vec<i64>,
    newtype: *mut MPI_Datatype,
) -> Res<()> {
    let Some(base) = base else {
        return fail(ErrorClass::Arg, format!("no Fortran type has the precision and range {ints:?}"));
    };
    let key = (combiner_code(combiner), ints.clone());
    let h = match s.f90_types.get(&key) {
        Some(&h) => h as MPI_Datatype,
        None => {
            // Open MPI's MPI_LONG_DOUBLE_COMPLEX (ompi_mpi_ldblcplex) has the layout of the C
            // long double complex, which kawarimi's type table carries.
            let layout = if base == abi::PredefDatatype::LongDoubleComplexLegacy {
                abi::PredefDatatype::CLongDoubleComplex
            } else {
                base
            };
            let b = s.datatype(abi::predefined().datatype_handle(layout) as MPI_Datatype)?;
            if b.size() == 0 {
                return fail(ErrorClass::Arg, format!("{} is not available in this build", base.mpi_name()));
            }
            let h = s.new_datatype(Datatype::f90(&b, combiner, ints)?)?;
            s.f90_types.insert(key, h as usize);
            // Named as Open MPI names them.
            s.type_names.insert(h as usize, format!("COMBINER {}", base.mpi_name()));
            h
        }
    };
    // SAFETY: caller's output argument.
    unsafe { out(newtype, h) }
}

/// `p` and `r` of `MPI_Type_create_f90_real/complex`, with `MPI_UNDEFINED` as "any" (0).
fn precision_range(p: c_int, r: c_int) -> Res<(c_int, c_int)> {
    if p == abi::MPI_UNDEFINED && r == abi::MPI_UNDEFINED {
        return fail(ErrorClass::Arg, "precision and range are both MPI_UNDEFINED");
    }
    let any = |x: c_int| if x == abi::MPI_UNDEFINED { 0 } else { x };
    Ok((any(p), any(r)))
}

/// The C `<float.h>` limits Open MPI selects the floating types by: (digits, max exponent)
/// of float, double and long double on x86-64.
const FLOAT_LIMITS: [(c_int, c_int); 3] = [(6, 38), (15, 308), (18, 4932)];

/// Which of float, double or long double (0, 1, 2) holds `p` digits and exponents up to `r`.
fn float_class(p: c_int, r: c_int) -> Option<usize> {
    FLOAT_LIMITS.iter().position(|&(digits, exp)| p <= digits && r <= exp)
}

mpi_fn! {
    fn Type_create_f90_integer(r: c_int, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_f90_integer", None, |s| {
            use abi::PredefDatatype as P;
            // Open MPI 4.1's choice by decimal range (Debian's build answers BYTE, SHORT, INT
            // and LONG for r = 2, 4, 9, 18), and long long up to 38 digits where the Fortran
            // compiler has INTEGER*16.
            let base = match r {
                ..=2 => Some(P::Byte),
                3..=4 => Some(P::Short),
                5..=9 => Some(P::Int),
                10..=18 => Some(P::Long),
                19..=38 => Some(P::LongLongInt).filter(|_| s.datatype(abi::predefined().datatype_handle(P::Integer16) as MPI_Datatype).is_ok_and(|d| d.size() > 0)),
                _ => None,
            };
            f90_type(s, Combiner::F90Integer, base, vec![r.into()], newtype)
        })
    }

    fn Type_create_f90_real(p: c_int, r: c_int, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_f90_real", None, |s| {
            use abi::PredefDatatype as P;
            let (pp, rr) = precision_range(p, r)?;
            let base = float_class(pp, rr).map(|c| [P::Float, P::Double, P::LongDouble][c]);
            f90_type(s, Combiner::F90Real, base, vec![p.into(), r.into()], newtype)
        })
    }

    fn Type_create_f90_complex(p: c_int, r: c_int, newtype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_create_f90_complex", None, |s| {
            use abi::PredefDatatype as P;
            let (pp, rr) = precision_range(p, r)?;
            let base = float_class(pp, rr).map(|c| [P::Complex, P::DoubleComplex, P::LongDoubleComplexLegacy][c]);
            f90_type(s, Combiner::F90Complex, base, vec![p.into(), r.into()], newtype)
        })
    }

    fn Type_match_size(typeclass: c_int, size: c_int, datatype: *mut MPI_Datatype) -> c_int {
        call("MPI_Type_match_size", None, |s| {
            use abi::PredefDatatype as P;
            s.world()?;
            // What Debian's Open MPI 4.1 answers (measured): the Fortran types by size.
            let t = match (typeclass, size) {
                (abi::MPI_TYPECLASS_INTEGER, 1) => P::Integer1,
                (abi::MPI_TYPECLASS_INTEGER, 2) => P::Integer2,
                (abi::MPI_TYPECLASS_INTEGER, 4) => P::Integer,
                (abi::MPI_TYPECLASS_INTEGER, 8) => P::Integer8,
                (abi::MPI_TYPECLASS_REAL, 4) => P::Real,
                (abi::MPI_TYPECLASS_REAL, 8) => P::Real8,
                (abi::MPI_TYPECLASS_REAL, 16) => P::Real16,
                (abi::MPI_TYPECLASS_COMPLEX, 8) => P::Complex,
                (abi::MPI_TYPECLASS_COMPLEX, 16) => P::Complex16,
                (abi::MPI_TYPECLASS_COMPLEX, 32) => P::Complex32,
                _ => return fail(ErrorClass::Arg, format!("no Fortran type of class {typeclass} has {size} bytes")),
            };
            // SAFETY: caller's output argument.
            unsafe { out(datatype, abi::predefined().datatype_handle(t) as MPI_Datatype) }
        })
    }
}

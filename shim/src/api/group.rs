//! Groups (MPI-3.1 §6.3).

use std::ffi::c_int;

use kawarimi_runtime::comm::Group;
use kawarimi_runtime::error::ErrorClass;

use crate::abi::{self, MPI_Group};
use crate::api::comm::{comparison, group_null};
use crate::export::call;
use crate::mem::{c_array, c_array_mut, out};
use crate::state::{decode, fail, Kind};

fn group_op(
    group1: MPI_Group,
    group2: MPI_Group,
    newgroup: *mut MPI_Group,
    name: &'static str,
    f: fn(&Group, &Group) -> kawarimi_runtime::error::MpiResult<Group>,
) -> c_int {
    call(name, None, |s| {
        let (a, b) = (s.group(group1)?, s.group(group2)?);
        let g = s.new_group(f(&a, &b)?)?;
        // SAFETY: caller's output argument.
        unsafe { out(newgroup, g) }
    })
}

mpi_fn! {
    fn Group_size(group: MPI_Group, size: *mut c_int) -> c_int {
        call("MPI_Group_size", None, |s| {
            let n = s.group(group)?.size();
            // SAFETY: caller's output argument.
            unsafe { out(size, n) }
        })
    }

    fn Group_rank(group: MPI_Group, rank: *mut c_int) -> c_int {
        call("MPI_Group_rank", None, |s| {
            let g = s.group(group)?;
            let me = s.world()?.proc.rank;
            // SAFETY: caller's output argument.
            unsafe { out(rank, g.rank_of(me).unwrap_or(abi::MPI_UNDEFINED)) }
        })
    }

    fn Group_free(group: *mut MPI_Group) -> c_int {
        call("MPI_Group_free", None, |s| {
            if group.is_null() {
                return fail(ErrorClass::Arg, "NULL group pointer");
            }
            // SAFETY: non-null in/out argument.
            let h = unsafe { *group } as usize;
            if let Some(i) = decode(h, Kind::Group) {
                if s.groups.remove(i).is_none() {
                    return fail(ErrorClass::Group, "group was already freed");
                }
            } else if abi::predefined().group(h) != Some(abi::PredefGroup::Empty) {
                return fail(ErrorClass::Group, format!("{h:#x} is not a group"));
            }
            // SAFETY: as above.
            unsafe { *group = group_null() };
            Ok(())
        })
    }

    fn Group_incl(group: MPI_Group, n: c_int, ranks: *const c_int, newgroup: *mut MPI_Group) -> c_int {
        call("MPI_Group_incl", None, |s| {
            let g = s.group(group)?;
            // SAFETY: `n` ranks (§6.3.2).
            let r = unsafe { c_array(ranks, n.max(0) as usize)? };
            let h = s.new_group(g.incl(r)?)?;
            // SAFETY: caller's output argument.
            unsafe { out(newgroup, h) }
        })
    }

    fn Group_excl(group: MPI_Group, n: c_int, ranks: *const c_int, newgroup: *mut MPI_Group) -> c_int {
        call("MPI_Group_excl", None, |s| {
            let g = s.group(group)?;
            // SAFETY: `n` ranks (§6.3.2).
            let r = unsafe { c_array(ranks, n.max(0) as usize)? };
            let h = s.new_group(g.excl(r)?)?;
            // SAFETY: caller's output argument.
            unsafe { out(newgroup, h) }
        })
    }

    fn Group_range_incl(group: MPI_Group, n: c_int, ranges: *const [c_int; 3], newgroup: *mut MPI_Group) -> c_int {
        call("MPI_Group_range_incl", None, |s| {
            let g = s.group(group)?;
            // SAFETY: `n` triplets (§6.3.2).
            let r = unsafe { c_array(ranges, n.max(0) as usize)? };
            let ranks = g.expand_ranges(r)?;
            let h = s.new_group(g.incl(&ranks)?)?;
            // SAFETY: caller's output argument.
            unsafe { out(newgroup, h) }
        })
    }

    fn Group_range_excl(group: MPI_Group, n: c_int, ranges: *const [c_int; 3], newgroup: *mut MPI_Group) -> c_int {
        call("MPI_Group_range_excl", None, |s| {
            let g = s.group(group)?;
            // SAFETY: `n` triplets (§6.3.2).
            let r = unsafe { c_array(ranges, n.max(0) as usize)? };
            let ranks = g.expand_ranges(r)?;
            let h = s.new_group(g.excl(&ranks)?)?;
            // SAFETY: caller's output argument.
            unsafe { out(newgroup, h) }
        })
    }

    fn Group_union(group1: MPI_Group, group2: MPI_Group, newgroup: *mut MPI_Group) -> c_int {
        group_op(group1, group2, newgroup, "MPI_Group_union", Group::union)
    }

    fn Group_intersection(group1: MPI_Group, group2: MPI_Group, newgroup: *mut MPI_Group) -> c_int {
        group_op(group1, group2, newgroup, "MPI_Group_intersection", Group::intersection)
    }

    fn Group_difference(group1: MPI_Group, group2: MPI_Group, newgroup: *mut MPI_Group) -> c_int {
        group_op(group1, group2, newgroup, "MPI_Group_difference", Group::difference)
    }

    fn Group_translate_ranks(group1: MPI_Group, n: c_int, ranks1: *const c_int, group2: MPI_Group, ranks2: *mut c_int) -> c_int {
        call("MPI_Group_translate_ranks", None, |s| {
            let (a, b) = (s.group(group1)?, s.group(group2)?);
            // SAFETY: `n` ranks in, `n` out (§6.3.1).
            let (r1, r2) = unsafe { (c_array(ranks1, n.max(0) as usize)?, c_array_mut(ranks2, n.max(0) as usize)?) };
            // MPI_PROC_NULL translates to itself (§6.3.1).
            let real: Vec<i32> = r1.iter().copied().filter(|&r| r != abi::MPI_PROC_NULL).collect();
            let mut translated = a.translate(&real, &b)?.into_iter();
            for (o, &r) in r2.iter_mut().zip(r1) {
                *o = if r == abi::MPI_PROC_NULL {
                    abi::MPI_PROC_NULL
                } else {
                    translated.next().expect("one per rank").unwrap_or(abi::MPI_UNDEFINED)
                };
            }
            Ok(())
        })
    }

    fn Group_compare(group1: MPI_Group, group2: MPI_Group, result: *mut c_int) -> c_int {
        call("MPI_Group_compare", None, |s| {
            let (a, b) = (s.group(group1)?, s.group(group2)?);
            // SAFETY: caller's output argument.
            unsafe { out(result, comparison(a.compare(&b))) }
        })
    }
}

//! Communicators and their attributes (MPI-3.1 chapter 6). Groups are in `group.rs`,
//! Cartesian topologies in `topo.rs`.

use std::ffi::{c_char, c_int, c_void, CStr};

use kawarimi_runtime::comm::{Comm, Comparison};
use kawarimi_runtime::construct::{self, Steps};
use kawarimi_runtime::error::{ErrorClass, MpiResult};
use kawarimi_runtime::world::UNDEFINED_COLOR;

use crate::abi::{self, MPI_Comm, MPI_Group, MPI_Info, MPI_Request};
use crate::api::attr::{
    attrs_with_keyvals, copy_attrs, del_attr, delete_attrs, free_keyval, get_attr, keyval_create, set_attr, AttrOwner,
};
use crate::api::p2p::comm_of;
use crate::export::{call, call_around, call_constructing, call_constructing_around};
use crate::mem::{c_string, out};
use crate::state::{fail, AttrObject, RequestEntry, Res, State, SELF_INDEX, WORLD_INDEX};

fn comm_null() -> MPI_Comm {
    abi::predefined().comm_handle(abi::PredefComm::CommNull) as MPI_Comm
}

pub(crate) fn group_null() -> MPI_Group {
    abi::predefined().group_handle(abi::PredefGroup::GroupNull) as MPI_Group
}

/// Stores a new communicator made from `parent`, with its error handler (§8.3.1), and
/// returns its handle. Attributes are not copied (see [`dup_call`]).
pub(crate) fn add_comm(s: &mut State, parent: MPI_Comm, comm: Option<Comm>) -> Res<MPI_Comm> {
    let Some(comm) = comm else { return Ok(comm_null()) };
    let parent_i = s.comm_index(parent)?;
    let handler = s.comms.get(parent_i).expect("checked").handler;
    s.new_comm(comm, handler)
}

/// Stores `comm` made from `parent` ([`add_comm`]) and writes its handle to `newcomm`.
pub(crate) fn new_comm_out(s: &mut State, parent: MPI_Comm, comm: Option<Comm>, newcomm: *mut MPI_Comm) -> Res<()> {
    let h = add_comm(s, parent, comm)?;
    // SAFETY: the caller's output argument.
    unsafe { out(newcomm, h) }
}

/// `MPI_Comm_dup` and its variants: `make` creates the new communicator under the lock; the
/// attributes of `comm` are then copied by their copy callbacks, which run without the lock
/// because they may call MPI (§6.7.2), and stored on the new communicator.
///
/// `check` looks at the arguments under the lock; `make` runs under it too in a program with
/// one thread in MPI, and without it at `MPI_THREAD_MULTIPLE` (see
/// [`crate::export::call_constructing_around`]).
fn dup_call(
    name: &'static str,
    comm: MPI_Comm,
    newcomm: *mut MPI_Comm,
    check: impl FnOnce(&mut State) -> Res<()>,
    make: impl FnOnce(&mut dyn Steps, &Comm) -> MpiResult<Comm>,
) -> c_int {
    call_constructing_around(
        name,
        Some(comm),
        |s| {
            check(s)?;
            let (c, _) = comm_of(s, comm)?;
            Ok((c, attrs_with_keyvals(s, AttrOwner::Comm(comm))?))
        },
        |st, (c, attrs)| Ok((make(st, &c)?, attrs)),
        |(d, attrs)| Ok((d, copy_attrs(AttrOwner::Comm(comm), attrs)?)),
        |s, (d, copies)| {
            let h = add_comm(s, comm, Some(d))?;
            let i = s.comm_index(h)?;
            s.comms.get_mut(i).expect("just added").attrs.extend(copies);
            // SAFETY: caller's output argument.
            unsafe { out(newcomm, h) }
        },
    )
}

/// `MPI_Comm_free` (§6.4.3), also the end of `MPI_Comm_disconnect`.
fn free_comm(name: &'static str, comm: *mut MPI_Comm) -> c_int {
    call_around(
        name,
        None,
        |s| {
            if comm.is_null() {
                return fail(ErrorClass::Arg, "NULL communicator pointer");
            }
            // SAFETY: non-null in/out argument.
            let h = unsafe { *comm };
            let i = s.comm_index(h)?;
            if i == WORLD_INDEX || i == SELF_INDEX {
                return fail(ErrorClass::Comm, "MPI_COMM_WORLD and MPI_COMM_SELF cannot be freed");
            }
            Ok((h, attrs_with_keyvals(s, AttrOwner::Comm(h))?))
        },
        // The callbacks run while the communicator still exists: they may use it.
        |(h, attrs)| delete_attrs(AttrOwner::Comm(h), attrs).map(|()| h),
        |s, h| {
            let i = s.comm_index(h)?;
            s.comms.remove(i);
            // SAFETY: as above.
            unsafe { *comm = comm_null() };
            Ok(())
        },
    )
}

pub(crate) fn comparison(c: Comparison) -> c_int {
    match c {
        Comparison::Ident => abi::MPI_IDENT,
        Comparison::Congruent => abi::MPI_CONGRUENT,
        Comparison::Similar => abi::MPI_SIMILAR,
        Comparison::Unequal => abi::MPI_UNEQUAL,
    }
}

mpi_fn! {
    fn Comm_rank(comm: MPI_Comm, rank: *mut c_int) -> c_int {
        call("MPI_Comm_rank", Some(comm), |s| {
            let r = s.comm_entry(comm)?.comm.rank;
            // SAFETY: caller's output argument.
            unsafe { out(rank, r) }
        })
    }

    fn Comm_size(comm: MPI_Comm, size: *mut c_int) -> c_int {
        call("MPI_Comm_size", Some(comm), |s| {
            let n = s.comm_entry(comm)?.comm.size();
            // SAFETY: caller's output argument.
            unsafe { out(size, n) }
        })
    }

    fn Comm_dup(comm: MPI_Comm, newcomm: *mut MPI_Comm) -> c_int {
        dup_call("MPI_Comm_dup", comm, newcomm, |_| Ok(()), construct::comm_dup)
    }

    fn Comm_idup(comm: MPI_Comm, newcomm: *mut MPI_Comm, request: *mut MPI_Request) -> c_int {
        // The context id is agreed in the background; the attributes are copied now, by
        // their callbacks outside the lock, and attached when the communicator is made.
        call_around(
            "MPI_Comm_idup",
            Some(comm),
            |s| {
                if newcomm.is_null() || request.is_null() {
                    return fail(ErrorClass::Arg, "NULL newcomm or request pointer");
                }
                let (c, handler) = comm_of(s, comm)?;
                let attrs = attrs_with_keyvals(s, AttrOwner::Comm(comm))?;
                let id = s.world()?.comm_idup_start(&c)?;
                Ok((c, handler, id, attrs))
            },
            |(c, handler, id, attrs)| Ok((c, handler, id, copy_attrs(AttrOwner::Comm(comm), attrs)?)),
            |s, (c, handler, id, copies)| {
                let target = newcomm as usize;
                let parent = c.clone();
                let finish = move |s: &mut State, bufs: Vec<Vec<u8>>| -> Res<()> {
                    let d = kawarimi_runtime::world::World::comm_idup_finish(&parent, &bufs)?;
                    let h = s.new_comm(d, handler)?;
                    let i = s.comm_index(h)?;
                    s.comms.get_mut(i).expect("just added").attrs.extend(copies);
                    // SAFETY: the application's `newcomm`, which MPI lets it read only once the
                    // request has completed (§6.4.2); it is written exactly then.
                    unsafe { out(target as *mut MPI_Comm, h) }
                };
                let entry = RequestEntry::collective(id, c, handler, Box::new(finish));
                let h = s.new_request(entry)?;
                // SAFETY: non-null output argument (checked above).
                unsafe { out(request, h) }
            },
        )
    }

    fn Comm_dup_with_info(comm: MPI_Comm, info: MPI_Info, newcomm: *mut MPI_Comm) -> c_int {
        dup_call(
            "MPI_Comm_dup_with_info",
            comm,
            newcomm,
            |s| {
            // The hints are checked and, like Open MPI, MPI_INFO_NULL taken as none; kawarimi
            // has no communicator hints to apply.
            if abi::predefined().info(info as usize) != Some(abi::PredefInfo::InfoNull) {
                s.info_pairs(info)?;
            }
            Ok(())
            },
            construct::comm_dup,
        )
    }

    fn Comm_split(comm: MPI_Comm, color: c_int, key: c_int, newcomm: *mut MPI_Comm) -> c_int {
        let color = if color == abi::MPI_UNDEFINED { UNDEFINED_COLOR } else { color };
        call_constructing(
            "MPI_Comm_split",
            Some(comm),
            |s| Ok(comm_of(s, comm)?.0),
            |st, c| construct::comm_split(st, &c, color, key),
            |s, n| new_comm_out(s, comm, n, newcomm),
        )
    }

    fn Comm_split_type(comm: MPI_Comm, split_type: c_int, key: c_int, _info: MPI_Info, newcomm: *mut MPI_Comm) -> c_int {
        let participate = split_type != abi::MPI_UNDEFINED;
        call_constructing(
            "MPI_Comm_split_type",
            Some(comm),
            |s| {
                let (c, _) = comm_of(s, comm)?;
                if participate && split_type != abi::MPI_COMM_TYPE_SHARED {
                    return fail(ErrorClass::Arg, format!("split type {split_type} is not supported (MPI_COMM_TYPE_SHARED is)"));
                }
                Ok(c)
            },
            |st, c| construct::comm_split_shared(st, &c, key, participate),
            |s, n| new_comm_out(s, comm, n, newcomm),
        )
    }

    fn Comm_create(comm: MPI_Comm, group: MPI_Group, newcomm: *mut MPI_Comm) -> c_int {
        call_constructing(
            "MPI_Comm_create",
            Some(comm),
            |s| Ok((comm_of(s, comm)?.0, s.group(group)?)),
            |st, (c, g)| construct::comm_create(st, &c, &g),
            |s, n| new_comm_out(s, comm, n, newcomm),
        )
    }

    fn Comm_create_group(comm: MPI_Comm, group: MPI_Group, tag: c_int, newcomm: *mut MPI_Comm) -> c_int {
        call_constructing(
            "MPI_Comm_create_group",
            Some(comm),
            |s| {
                let (c, _) = comm_of(s, comm)?;
                let g = s.group(group)?;
                if tag < 0 {
                    return fail(ErrorClass::Tag, format!("tag {tag} is negative"));
                }
                Ok((c, g))
            },
            |st, (c, g)| construct::comm_create_group(st, &c, &g, tag),
            |s, n| new_comm_out(s, comm, Some(n), newcomm),
        )
    }

    fn Comm_free(comm: *mut MPI_Comm) -> c_int {
        free_comm("MPI_Comm_free", comm)
    }

    fn Comm_disconnect(comm: *mut MPI_Comm) -> c_int {
        // §10.5.4: every member waits until all have called it (as Open MPI does, a barrier;
        // the program has completed its communication on `comm` by then, as before
        // MPI_Finalize), then the communicator is freed. Not MPI_COMM_WORLD or MPI_COMM_SELF.
        let h = if comm.is_null() { comm_null() } else {
            // SAFETY: non-null in/out argument.
            unsafe { *comm }
        };
        let rc = call("MPI_Comm_disconnect", Some(h), |s| {
            if comm.is_null() {
                return fail(ErrorClass::Arg, "NULL communicator pointer");
            }
            let i = s.comm_index(h)?;
            if i == WORLD_INDEX || i == SELF_INDEX {
                return fail(ErrorClass::Comm, "MPI_COMM_WORLD and MPI_COMM_SELF cannot be disconnected");
            }
            Ok(())
        });
        if rc != abi::MPI_SUCCESS {
            return rc;
        }
        let rc = crate::api::coll::barrier_call("MPI_Comm_disconnect", h);
        if rc != abi::MPI_SUCCESS {
            return rc;
        }
        free_comm("MPI_Comm_disconnect", comm)
    }

    fn Comm_compare(comm1: MPI_Comm, comm2: MPI_Comm, result: *mut c_int) -> c_int {
        call("MPI_Comm_compare", Some(comm1), |s| {
            let (i1, i2) = (s.comm_index(comm1)?, s.comm_index(comm2)?);
            let (a, b) = (&s.comms.get(i1).expect("checked").comm, &s.comms.get(i2).expect("checked").comm);
            let r = if i1 == i2 {
                abi::MPI_IDENT
            } else {
                match (&a.inter, &b.inter) {
                    (None, None) => match a.group.compare(&b.group) {
                        Comparison::Ident => abi::MPI_CONGRUENT,
                        other => comparison(other),
                    },
                    // Inter-communicators compare both their groups (§6.6.1).
                    (Some(x), Some(y)) => match (a.group.compare(&b.group), x.remote.compare(&y.remote)) {
                        (Comparison::Ident, Comparison::Ident) => abi::MPI_CONGRUENT,
                        (Comparison::Unequal, _) | (_, Comparison::Unequal) => abi::MPI_UNEQUAL,
                        _ => abi::MPI_SIMILAR,
                    },
                    _ => abi::MPI_UNEQUAL,
                }
            };
            // SAFETY: caller's output argument.
            unsafe { out(result, r) }
        })
    }

    fn Comm_get_parent(parent: *mut MPI_Comm) -> c_int {
        call("MPI_Comm_get_parent", None, |s| {
            s.world()?;
            // No process of a kawarimi job was started by MPI_Comm_spawn (§10.3.2).
            // SAFETY: caller's output argument.
            unsafe { out(parent, comm_null()) }
        })
    }

    fn Comm_test_inter(comm: MPI_Comm, flag: *mut c_int) -> c_int {
        call("MPI_Comm_test_inter", Some(comm), |s| {
            let inter = s.comm_entry(comm)?.comm.is_inter();
            // SAFETY: caller's output argument.
            unsafe { out(flag, c_int::from(inter)) }
        })
    }

    fn Comm_remote_size(comm: MPI_Comm, size: *mut c_int) -> c_int {
        call("MPI_Comm_remote_size", Some(comm), |s| {
            let c = &s.comm_entry(comm)?.comm;
            let Some(inter) = &c.inter else {
                return fail(ErrorClass::Comm, "MPI_Comm_remote_size needs an inter-communicator");
            };
            let n = inter.remote.size();
            // SAFETY: caller's output argument.
            unsafe { out(size, n) }
        })
    }

    fn Comm_remote_group(comm: MPI_Comm, group: *mut MPI_Group) -> c_int {
        call("MPI_Comm_remote_group", Some(comm), |s| {
            let c = &s.comm_entry(comm)?.comm;
            let Some(inter) = &c.inter else {
                return fail(ErrorClass::Comm, "MPI_Comm_remote_group needs an inter-communicator");
            };
            let g = (*inter.remote).clone();
            let h = s.new_group(g)?;
            // SAFETY: caller's output argument.
            unsafe { out(group, h) }
        })
    }

    fn Intercomm_create(local_comm: MPI_Comm, local_leader: c_int, peer_comm: MPI_Comm, remote_leader: c_int, tag: c_int, newintercomm: *mut MPI_Comm) -> c_int {
        call_constructing(
            "MPI_Intercomm_create",
            Some(local_comm),
            |s| {
                let (local, _) = comm_of(s, local_comm)?;
                // The peer communicator is significant only at the local leader (§6.6.2).
                let peer = if local.rank == local_leader { Some(comm_of(s, peer_comm)?.0) } else { None };
                if peer.is_some() && tag < 0 {
                    return fail(ErrorClass::Tag, format!("tag {tag} is negative"));
                }
                let peer = peer.unwrap_or_else(|| local.clone());
                Ok((local, peer))
            },
            |st, (local, peer)| construct::intercomm_create(st, &local, local_leader, &peer, remote_leader, tag),
            |s, n| new_comm_out(s, local_comm, Some(n), newintercomm),
        )
    }

    fn Intercomm_merge(intercomm: MPI_Comm, high: c_int, newintracomm: *mut MPI_Comm) -> c_int {
        call_constructing(
            "MPI_Intercomm_merge",
            Some(intercomm),
            |s| Ok(comm_of(s, intercomm)?.0),
            |st, c| construct::intercomm_merge(st, &c, high != 0),
            |s, n| new_comm_out(s, intercomm, Some(n), newintracomm),
        )
    }

    fn Comm_group(comm: MPI_Comm, group: *mut MPI_Group) -> c_int {
        call("MPI_Comm_group", Some(comm), |s| {
            let g = (*s.comm_entry(comm)?.comm.group).clone();
            let h = s.new_group(g)?;
            // SAFETY: caller's output argument.
            unsafe { out(group, h) }
        })
    }

    fn Comm_set_name(comm: MPI_Comm, comm_name: *const c_char) -> c_int {
        call("MPI_Comm_set_name", Some(comm), |s| {
            if comm_name.is_null() {
                return fail(ErrorClass::Arg, "NULL name");
            }
            // SAFETY: a NUL-terminated string (§6.8).
            let name = unsafe { CStr::from_ptr(comm_name) }.to_string_lossy();
            let max = abi::MPI_MAX_OBJECT_NAME as usize - 1;
            let i = s.comm_index(comm)?;
            s.comms.get_mut(i).expect("checked").name = name.chars().take(max).collect();
            Ok(())
        })
    }

    fn Comm_get_name(comm: MPI_Comm, comm_name: *mut c_char, resultlen: *mut c_int) -> c_int {
        call("MPI_Comm_get_name", Some(comm), |s| {
            let name = s.comm_entry(comm)?.name.clone();
            // SAFETY: the buffer has MPI_MAX_OBJECT_NAME bytes (§6.8).
            let n = unsafe { c_string(comm_name, abi::MPI_MAX_OBJECT_NAME as usize, &name)? };
            // SAFETY: caller's output argument.
            unsafe { out(resultlen, n) }
        })
    }

    fn Comm_create_keyval(comm_copy_attr_fn: Option<abi::MPI_Comm_copy_attr_function>, comm_delete_attr_fn: Option<abi::MPI_Comm_delete_attr_function>, comm_keyval: *mut c_int, extra_state: *mut c_void) -> c_int {
        call("MPI_Comm_create_keyval", None, |s| keyval_create(s, AttrObject::Comm, comm_copy_attr_fn, comm_delete_attr_fn, comm_keyval, extra_state))
    }

    fn Keyval_create(copy_fn: Option<abi::MPI_Copy_function>, delete_fn: Option<abi::MPI_Delete_function>, keyval: *mut c_int, extra_state: *mut c_void) -> c_int {
        call("MPI_Keyval_create", None, |s| keyval_create(s, AttrObject::Comm, copy_fn, delete_fn, keyval, extra_state))
    }

    fn Comm_free_keyval(comm_keyval: *mut c_int) -> c_int {
        call("MPI_Comm_free_keyval", None, |s| free_keyval(s, AttrObject::Comm, comm_keyval))
    }

    fn Keyval_free(keyval: *mut c_int) -> c_int {
        // SAFETY: MPI-1 name of MPI_Comm_free_keyval, same contract.
        unsafe { Comm_free_keyval(keyval) }
    }

    fn Comm_set_attr(comm: MPI_Comm, comm_keyval: c_int, attribute_val: *mut c_void) -> c_int {
        set_attr("MPI_Comm_set_attr", AttrOwner::Comm(comm), comm_keyval, attribute_val as usize)
    }

    fn Attr_put(comm: MPI_Comm, keyval: c_int, attribute_val: *mut c_void) -> c_int {
        set_attr("MPI_Attr_put", AttrOwner::Comm(comm), keyval, attribute_val as usize)
    }

    fn Comm_get_attr(comm: MPI_Comm, comm_keyval: c_int, attribute_val: *mut c_void, flag: *mut c_int) -> c_int {
        // SAFETY: §6.7.2's output arguments.
        call("MPI_Comm_get_attr", Some(comm), |s| unsafe { get_attr(s, AttrOwner::Comm(comm), comm_keyval, attribute_val, flag) })
    }

    fn Attr_get(comm: MPI_Comm, keyval: c_int, attribute_val: *mut c_void, flag: *mut c_int) -> c_int {
        // SAFETY: §6.7.2's output arguments.
        call("MPI_Attr_get", Some(comm), |s| unsafe { get_attr(s, AttrOwner::Comm(comm), keyval, attribute_val, flag) })
    }

    fn Comm_delete_attr(comm: MPI_Comm, comm_keyval: c_int) -> c_int {
        del_attr("MPI_Comm_delete_attr", AttrOwner::Comm(comm), comm_keyval)
    }

    fn Attr_delete(comm: MPI_Comm, keyval: c_int) -> c_int {
        del_attr("MPI_Attr_delete", AttrOwner::Comm(comm), keyval)
    }

}

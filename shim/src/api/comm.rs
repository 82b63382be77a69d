//! Communicators and their attributes (MPI-3.1 chapter 6). Groups are in `group.rs`,
//! Cartesian topologies in `topo.rs`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicI32, Ordering};

use kawarimi_runtime::comm::{Comm, Comparison};
use kawarimi_runtime::error::ErrorClass;
use kawarimi_runtime::world::UNDEFINED_COLOR;

use crate::abi::{self, MPI_Comm, MPI_Group, MPI_Info, MPI_Request};
use crate::api::p2p::{comm_of, TAG_UB};
use crate::export::{call, call_around};
use crate::mem::{c_string, out};
use crate::state::{fail, CopyKind, Keyval, RequestEntry, Res, State, SELF_INDEX, WORLD_INDEX};

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

/// An attribute with its keyval, taken under the lock for a callback run outside it.
type AttrCall = (i32, usize, Keyval);

fn attrs_with_keyvals(s: &State, comm: MPI_Comm) -> Res<Vec<AttrCall>> {
    let attrs = &s.comm_entry(comm)?.attrs;
    Ok(attrs.iter().filter_map(|(k, v)| Some((k, v, s.keyvals.get(&k).copied()?))).collect())
}

/// `MPI_Comm_dup` and its variants: `make` creates the new communicator under the lock; the
/// attributes of `comm` are then copied by their copy callbacks, which run without the lock
/// because they may call MPI (§6.7.2), and stored on the new communicator.
fn dup_call(
    name: &'static str,
    comm: MPI_Comm,
    newcomm: *mut MPI_Comm,
    make: impl FnOnce(&mut State) -> Res<Comm>,
) -> c_int {
    call_around(
        name,
        Some(comm),
        |s| {
            let d = make(s)?;
            let h = add_comm(s, comm, Some(d))?;
            Ok((h, attrs_with_keyvals(s, comm)?))
        },
        |(h, attrs)| {
            let mut copies = Vec::new();
            for (k, v, kv) in attrs {
                if let Some(c) = copy_attr(comm, k, v, kv)? {
                    copies.push((k, c));
                }
            }
            Ok((h, copies))
        },
        |s, (h, copies)| {
            let i = s.comm_index(h)?;
            s.comms.get_mut(i).expect("checked").attrs.extend(copies);
            // SAFETY: caller's output argument.
            unsafe { out(newcomm, h) }
        },
    )
}

/// Runs the copy callback of attribute `k` (value `v`) of `parent`; `None` if it is not
/// copied.
fn copy_attr(parent: MPI_Comm, k: i32, v: usize, kv: Keyval) -> Res<Option<usize>> {
    match kv.copy_kind {
        CopyKind::Null => Ok(None),
        CopyKind::Dup => Ok(Some(v)),
        CopyKind::User => {
            let f = kv.copy.expect("user copy kind has a function");
            let mut new_val: usize = 0;
            let mut flag: c_int = 0;
            // SAFETY: the application's copy callback (§6.7.2) with the arguments it
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

/// Runs the delete callback of attribute `k` (value `v`) of communicator `h` (§6.7.2). Called
/// without the state lock: the callback may call MPI.
pub(crate) fn delete_attr(h: MPI_Comm, k: i32, v: usize, kv: Keyval) -> Res<()> {
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

pub(crate) fn comparison(c: Comparison) -> c_int {
    match c {
        Comparison::Ident => abi::MPI_IDENT,
        Comparison::Congruent => abi::MPI_CONGRUENT,
        Comparison::Similar => abi::MPI_SIMILAR,
        Comparison::Unequal => abi::MPI_UNEQUAL,
    }
}

fn keyval_create(
    s: &mut State,
    copy: Option<abi::MPI_Comm_copy_attr_function>,
    delete: Option<abi::MPI_Comm_delete_attr_function>,
    keyval: *mut c_int,
    extra_state: *mut c_void,
) -> Res<()> {
    let p = abi::predefined();
    let copy_addr = copy.map_or(0, |f| f as usize);
    let copy_kind = match p.callback(copy_addr) {
        _ if copy_addr == 0 => CopyKind::Null,
        Some(abi::PredefCallback::CommNullCopyFn | abi::PredefCallback::NullCopyFn) => CopyKind::Null,
        Some(abi::PredefCallback::CommDupFn | abi::PredefCallback::DupFn) => CopyKind::Dup,
        _ => CopyKind::User,
    };
    let delete_addr = delete.map_or(0, |f| f as usize);
    let delete = match p.callback(delete_addr) {
        Some(abi::PredefCallback::CommNullDeleteFn | abi::PredefCallback::NullDeleteFn) => None,
        _ => delete,
    };
    if s.next_keyval < FIRST_USER_KEYVAL {
        s.next_keyval = FIRST_USER_KEYVAL;
    }
    let k = s.next_keyval;
    s.next_keyval += 1;
    s.keyvals.insert(k, Keyval { copy, delete, extra_state: extra_state as usize, copy_kind });
    // SAFETY: caller's output argument.
    unsafe { out(keyval, k) }
}

/// `MPI_Comm_set_attr`: a value already there is deleted first, by its callback.
fn set_attr(name: &'static str, comm: MPI_Comm, keyval: c_int, value: usize) -> c_int {
    call_around(
        name,
        Some(comm),
        |s| {
            let Some(kv) = s.keyvals.get(&keyval).copied() else {
                return fail(ErrorClass::Keyval, format!("keyval {keyval} does not exist or is predefined"));
            };
            Ok(s.comm_entry(comm)?.attrs.get(keyval).map(|old| (old, kv)))
        },
        |old| old.map_or(Ok(()), |(v, kv)| delete_attr(comm, keyval, v, kv)),
        |s, ()| {
            let i = s.comm_index(comm)?;
            s.comms.get_mut(i).expect("checked").attrs.insert(keyval, value);
            Ok(())
        },
    )
}

/// # Safety
/// `attribute_val` must be writable as a `void*`, `flag` as an int.
unsafe fn get_attr(
    s: &mut State,
    comm: MPI_Comm,
    keyval: c_int,
    attribute_val: *mut c_void,
    flag: *mut c_int,
) -> Res<()> {
    if let Some(a) = predefined_attr(keyval) {
        if keyval == abi::MPI_UNIVERSE_SIZE {
            ATTR_UNIVERSE_SIZE.store(s.world()?.proc.size as i32, Ordering::Relaxed);
        }
        // SAFETY: caller's output arguments; predefined attributes are pointers to int.
        unsafe {
            out(attribute_val as *mut *const AtomicI32, a as *const AtomicI32)?;
            return out(flag, 1);
        }
    }
    let v = s.comm_entry(comm)?.attrs.get(keyval);
    // SAFETY: caller's output arguments.
    unsafe {
        out(flag, v.is_some() as c_int)?;
        if let Some(v) = v {
            out(attribute_val as *mut usize, v)?;
        }
    }
    Ok(())
}

/// `MPI_Comm_delete_attr`: the callback runs, then the attribute goes.
fn del_attr(name: &'static str, comm: MPI_Comm, keyval: c_int) -> c_int {
    call_around(
        name,
        Some(comm),
        |s| {
            let Some(v) = s.comm_entry(comm)?.attrs.get(keyval) else {
                return fail(ErrorClass::Keyval, format!("attribute {keyval} is not set on this communicator"));
            };
            Ok((v, s.keyvals.get(&keyval).copied()))
        },
        |(v, kv)| kv.map_or(Ok(()), |kv| delete_attr(comm, keyval, v, kv)),
        |s, ()| {
            let i = s.comm_index(comm)?;
            s.comms.get_mut(i).expect("checked").attrs.remove(keyval);
            Ok(())
        },
    )
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
        dup_call("MPI_Comm_dup", comm, newcomm, |s| {
            let (c, _) = comm_of(s, comm)?;
            Ok(s.world()?.comm_dup(&c)?)
        })
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
                let attrs = attrs_with_keyvals(s, comm)?;
                let (id, slot) = s.world()?.comm_idup_start(&c)?;
                Ok((c, handler, id, slot, attrs))
            },
            |(c, handler, id, slot, attrs)| {
                let mut copies = Vec::new();
                for (k, v, kv) in attrs {
                    if let Some(x) = copy_attr(comm, k, v, kv)? {
                        copies.push((k, x));
                    }
                }
                Ok((c, handler, id, slot, copies))
            },
            |s, (c, handler, id, slot, copies)| {
                let target = newcomm as usize;
                let parent = c.clone();
                let finish = move |s: &mut State, bufs: Vec<Vec<u8>>| -> Res<()> {
                    let d = s.world()?.comm_idup_finish(&parent, &bufs, slot)?;
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
        dup_call("MPI_Comm_dup_with_info", comm, newcomm, |s| {
            // The hints are checked and, like Open MPI, MPI_INFO_NULL taken as none; kawarimi
            // has no communicator hints to apply.
            if abi::predefined().info(info as usize) != Some(abi::PredefInfo::InfoNull) {
                s.info_pairs(info)?;
            }
            let (c, _) = comm_of(s, comm)?;
            Ok(s.world()?.comm_dup(&c)?)
        })
    }

    fn Comm_split(comm: MPI_Comm, color: c_int, key: c_int, newcomm: *mut MPI_Comm) -> c_int {
        call("MPI_Comm_split", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let color = if color == abi::MPI_UNDEFINED { UNDEFINED_COLOR } else { color };
            let n = s.world()?.comm_split(&c, color, key)?;
            let h = add_comm(s, comm, n)?;
            // SAFETY: caller's output argument.
            unsafe { out(newcomm, h) }
        })
    }

    fn Comm_split_type(comm: MPI_Comm, split_type: c_int, key: c_int, _info: MPI_Info, newcomm: *mut MPI_Comm) -> c_int {
        call("MPI_Comm_split_type", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let participate = split_type != abi::MPI_UNDEFINED;
            if participate && split_type != abi::MPI_COMM_TYPE_SHARED {
                return fail(ErrorClass::Arg, format!("split type {split_type} is not supported (MPI_COMM_TYPE_SHARED is)"));
            }
            let n = s.world()?.comm_split_shared(&c, key, participate)?;
            let h = add_comm(s, comm, n)?;
            // SAFETY: caller's output argument.
            unsafe { out(newcomm, h) }
        })
    }

    fn Comm_create(comm: MPI_Comm, group: MPI_Group, newcomm: *mut MPI_Comm) -> c_int {
        call("MPI_Comm_create", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let g = s.group(group)?;
            let n = s.world()?.comm_create(&c, &g)?;
            let h = add_comm(s, comm, n)?;
            // SAFETY: caller's output argument.
            unsafe { out(newcomm, h) }
        })
    }

    fn Comm_create_group(comm: MPI_Comm, group: MPI_Group, tag: c_int, newcomm: *mut MPI_Comm) -> c_int {
        call("MPI_Comm_create_group", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let g = s.group(group)?;
            if tag < 0 {
                return fail(ErrorClass::Tag, format!("tag {tag} is negative"));
            }
            let n = s.world()?.comm_create_group(&c, &g, tag)?;
            let h = add_comm(s, comm, Some(n))?;
            // SAFETY: caller's output argument.
            unsafe { out(newcomm, h) }
        })
    }

    fn Comm_free(comm: *mut MPI_Comm) -> c_int {
        call_around(
            "MPI_Comm_free",
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
                Ok((h, attrs_with_keyvals(s, h)?))
            },
            // The callbacks run while the communicator still exists: they may use it.
            |(h, attrs)| attrs.into_iter().try_for_each(|(k, v, kv)| delete_attr(h, k, v, kv)).map(|()| h),
            |s, h| {
                let i = s.comm_index(h)?;
                s.comms.remove(i);
                // SAFETY: as above.
                unsafe { *comm = comm_null() };
                Ok(())
            },
        )
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
        call("MPI_Intercomm_create", Some(local_comm), |s| {
            let (local, _) = comm_of(s, local_comm)?;
            // The peer communicator is significant only at the local leader (§6.6.2).
            let peer = if local.rank == local_leader { Some(comm_of(s, peer_comm)?.0) } else { None };
            if peer.is_some() && tag < 0 {
                return fail(ErrorClass::Tag, format!("tag {tag} is negative"));
            }
            let peer = peer.unwrap_or_else(|| local.clone());
            let n = s.world()?.intercomm_create(&local, local_leader, &peer, remote_leader, tag)?;
            let h = add_comm(s, local_comm, Some(n))?;
            // SAFETY: caller's output argument.
            unsafe { out(newintercomm, h) }
        })
    }

    fn Intercomm_merge(intercomm: MPI_Comm, high: c_int, newintracomm: *mut MPI_Comm) -> c_int {
        call("MPI_Intercomm_merge", Some(intercomm), |s| {
            let (c, _) = comm_of(s, intercomm)?;
            let n = s.world()?.intercomm_merge(&c, high != 0)?;
            let h = add_comm(s, intercomm, Some(n))?;
            // SAFETY: caller's output argument.
            unsafe { out(newintracomm, h) }
        })
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
        call("MPI_Comm_create_keyval", None, |s| keyval_create(s, comm_copy_attr_fn, comm_delete_attr_fn, comm_keyval, extra_state))
    }

    fn Keyval_create(copy_fn: Option<abi::MPI_Copy_function>, delete_fn: Option<abi::MPI_Delete_function>, keyval: *mut c_int, extra_state: *mut c_void) -> c_int {
        call("MPI_Keyval_create", None, |s| keyval_create(s, copy_fn, delete_fn, keyval, extra_state))
    }

    fn Comm_free_keyval(comm_keyval: *mut c_int) -> c_int {
        call("MPI_Comm_free_keyval", None, |s| {
            if comm_keyval.is_null() {
                return fail(ErrorClass::Arg, "NULL keyval pointer");
            }
            // SAFETY: non-null in/out argument.
            let k = unsafe { *comm_keyval };
            // Attributes already set keep their callbacks until deleted (§6.7.2), so the
            // keyval entry stays; only the caller's handle is reset.
            if !s.keyvals.contains_key(&k) {
                return fail(ErrorClass::Keyval, format!("keyval {k} does not exist"));
            }
            // SAFETY: as above.
            unsafe { *comm_keyval = abi::MPI_KEYVAL_INVALID };
            Ok(())
        })
    }

    fn Keyval_free(keyval: *mut c_int) -> c_int {
        // SAFETY: MPI-1 name of MPI_Comm_free_keyval, same contract.
        unsafe { Comm_free_keyval(keyval) }
    }

    fn Comm_set_attr(comm: MPI_Comm, comm_keyval: c_int, attribute_val: *mut c_void) -> c_int {
        set_attr("MPI_Comm_set_attr", comm, comm_keyval, attribute_val as usize)
    }

    fn Attr_put(comm: MPI_Comm, keyval: c_int, attribute_val: *mut c_void) -> c_int {
        set_attr("MPI_Attr_put", comm, keyval, attribute_val as usize)
    }

    fn Comm_get_attr(comm: MPI_Comm, comm_keyval: c_int, attribute_val: *mut c_void, flag: *mut c_int) -> c_int {
        // SAFETY: §6.7.2's output arguments.
        call("MPI_Comm_get_attr", Some(comm), |s| unsafe { get_attr(s, comm, comm_keyval, attribute_val, flag) })
    }

    fn Attr_get(comm: MPI_Comm, keyval: c_int, attribute_val: *mut c_void, flag: *mut c_int) -> c_int {
        // SAFETY: §6.7.2's output arguments.
        call("MPI_Attr_get", Some(comm), |s| unsafe { get_attr(s, comm, keyval, attribute_val, flag) })
    }

    fn Comm_delete_attr(comm: MPI_Comm, comm_keyval: c_int) -> c_int {
        del_attr("MPI_Comm_delete_attr", comm, comm_keyval)
    }

    fn Attr_delete(comm: MPI_Comm, keyval: c_int) -> c_int {
        del_attr("MPI_Attr_delete", comm, keyval)
    }

}

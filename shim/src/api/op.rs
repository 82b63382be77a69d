//! Reduction operations (MPI-3.1 §5.9): the ops the collectives apply ([`ShimReducer`],
//! predefined or the application's own), and the user-defined ops.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::sync::Arc;

use kawarimi_runtime::coll::Reducer;
use kawarimi_runtime::datatype::{Datatype, Primitive};
use kawarimi_runtime::error::{ErrorClass, MpiResult};
use kawarimi_runtime::op;

use crate::abi::{self, MPI_Datatype, MPI_Op};
use crate::export::call;
use crate::mem::out;
use crate::state::{encode, fail, Kind, OpEntry, Res, State, UserOp};

/// Applies an MPI op to packed elements of one datatype.
pub(crate) struct ShimReducer {
    op: OpEntry,
    /// The primitive of a predefined op's operands.
    prim: Primitive,
    dt: Arc<Datatype>,
    dt_handle: MPI_Datatype,
}

impl ShimReducer {
    pub(crate) fn new(s: &mut State, op_h: MPI_Op, dt_h: MPI_Datatype) -> Res<ShimReducer> {
        let op = s.op(op_h)?;
        let dt = s.datatype(dt_h)?;
        let prim = dt.primitives().unwrap_or(Primitive::Byte);
        if let OpEntry::Predefined(p) = op {
            if dt.primitives().is_none() {
                return fail(ErrorClass::Op, format!("{} needs a datatype of one predefined type", p.name()));
            }
            op::check(p, prim)?;
        }
        Ok(ShimReducer { op, prim, dt, dt_handle: dt_h })
    }
}

// SAFETY: the datatype handle is only an address handed back to the user function as its
// datatype argument, never dereferenced here; every use happens under the shim's state lock,
// one thread at a time.
unsafe impl Send for ShimReducer {}
// SAFETY: as above; the reducer is never mutated.
unsafe impl Sync for ShimReducer {}

impl Reducer for ShimReducer {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        match self.op {
            OpEntry::Predefined(p) => op::apply(p, self.prim, input, inout),
            OpEntry::User(u) => call_user_op(u, &self.dt, self.dt_handle, input, inout),
        }
    }
    fn commutative(&self) -> bool {
        match self.op {
            OpEntry::Predefined(p) => p.is_commutative(),
            OpEntry::User(u) => u.commutative,
        }
    }
    fn elem_bytes(&self) -> usize {
        self.dt.size()
    }
}

thread_local! {
    /// While this thread runs a user function (the state locked, inside an MPI call): the
    /// datatype handle it was given and what it stands for.
    static USER_OP_DATATYPE: RefCell<Option<(usize, Arc<Datatype>)>> = const { RefCell::new(None) };
}

/// Inside a user function (and only there, `None` elsewhere): datatype `h` for the queries
/// the function may make about its operands (§5.9.5 passes it the datatype, and reading its
/// size or extent is how a function written for several types finds its elements). Its own
/// datatype and the predefined ones are known without the state, which the running call
/// holds; any other is refused.
pub(crate) fn datatype_in_user_op(h: MPI_Datatype) -> Option<Res<Arc<Datatype>>> {
    let own =
        USER_OP_DATATYPE.with(|c| c.borrow().as_ref().map(|(own_h, dt)| (*own_h == h as usize).then(|| dt.clone())))?;
    Some(match (own, abi::predefined().datatype(h as usize)) {
        (Some(dt), _) => Ok(dt),
        (None, Some(pd)) => crate::state::build_predef_datatype(pd).map(Arc::new),
        (None, None) => {
            fail(ErrorClass::Type, format!("{:#x} is not the user function's datatype or a predefined one", h as usize))
        }
    })
}

/// Runs a user function (§5.9.5) on packed operands, with `dt_handle` and `dt` known as its
/// datatype meanwhile (see [`datatype_in_user_op`]).
/// `MPI_Op_create`, and its Fortran binding (`fortran`: see [`UserOp::fortran`]).
pub(crate) fn create_op(
    name: &'static str,
    function: Option<abi::MPI_User_function>,
    commutative: bool,
    fortran: bool,
    op: *mut MPI_Op,
) -> c_int {
    call(name, None, |s| {
        let Some(function) = function else { return fail(ErrorClass::Arg, "NULL user function") };
        let entry = OpEntry::User(UserOp { function, commutative, fortran });
        let i = s.ops.insert(entry).ok_or_else(|| crate::state::table_full("ops"))?;
        // SAFETY: caller's output argument.
        unsafe { out(op, encode(Kind::Op, i) as MPI_Op) }
    })
}

fn call_user_op(
    u: UserOp,
    dt: &Arc<Datatype>,
    dt_handle: MPI_Datatype,
    input: &[u8],
    inout: &mut [u8],
) -> MpiResult<()> {
    let outer = USER_OP_DATATYPE.with(|c| c.replace(Some((dt_handle as usize, dt.clone()))));
    let r = run_user_op(u, dt, dt_handle, input, inout);
    USER_OP_DATATYPE.with(|c| *c.borrow_mut() = outer);
    r
}

/// [`call_user_op`]'s work: the operands are laid out in the datatype's memory form first,
/// since that is what the function reads.
fn run_user_op(u: UserOp, dt: &Datatype, dt_handle: MPI_Datatype, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    let size = dt.size();
    if size == 0 {
        return Ok(());
    }
    let count = input.len() / size;
    let mut len = count as c_int;
    let mut h = dt_handle;
    // SAFETY: converting a handle reads no memory.
    let mut fortran_h = unsafe { crate::api::fortran::Type_c2f(dt_handle) };
    // The datatype argument as the function takes it: a Fortran one reads an INTEGER there.
    let h: *mut MPI_Datatype = if u.fortran { (&mut fortran_h as *mut abi::MPI_Fint).cast() } else { &mut h };
    if dt.is_contiguous() {
        // SAFETY: the user function reads `len` elements of `dt` at `input` and updates as
        // many at `inout`; both slices hold exactly that many packed (= memory-form) elements.
        unsafe { (u.function)(input.as_ptr() as *mut c_void, inout.as_mut_ptr() as *mut c_void, &mut len, h) };
        return Ok(());
    }
    let (lo, hi) = dt.span(count);
    let origin = (-lo) as usize;
    let mut a = vec![0u8; (hi - lo) as usize];
    let mut b = vec![0u8; (hi - lo) as usize];
    dt.unpack(input, &mut a, origin, count)?;
    dt.unpack(inout, &mut b, origin, count)?;
    // SAFETY: `a` and `b` each hold `count` elements of `dt` in memory form, addressed from
    // `origin`, as the function expects.
    unsafe {
        (u.function)(a.as_mut_ptr().add(origin) as *mut c_void, b.as_mut_ptr().add(origin) as *mut c_void, &mut len, h)
    };
    let mut packed = Vec::with_capacity(inout.len());
    dt.pack(&b, origin, count, &mut packed);
    inout.copy_from_slice(&packed);
    Ok(())
}

mpi_fn! {
    fn Op_create(function: Option<abi::MPI_User_function>, commute: c_int, op: *mut MPI_Op) -> c_int {
        create_op("MPI_Op_create", function, commute != 0, false, op)
    }

    fn Op_free(op: *mut MPI_Op) -> c_int {
        call("MPI_Op_free", None, |s| {
            if op.is_null() {
                return fail(ErrorClass::Arg, "NULL op pointer");
            }
            // SAFETY: non-null in/out argument.
            let h = unsafe { *op } as usize;
            match crate::state::decode(h, Kind::Op) {
                Some(i) if s.ops.remove(i).is_some() => {
                    // SAFETY: as above.
                    unsafe { *op = abi::predefined().op_handle(abi::PredefOp::OpNull) as MPI_Op };
                    Ok(())
                }
                _ => fail(ErrorClass::Op, "only user-defined ops can be freed"),
            }
        })
    }

    fn Op_commutative(op: MPI_Op, commute: *mut c_int) -> c_int {
        call("MPI_Op_commutative", None, |s| {
            let c = match s.op(op)? {
                OpEntry::Predefined(p) => p.is_commutative(),
                OpEntry::User(u) => u.commutative,
            };
            // SAFETY: caller's output argument.
            unsafe { out(commute, c as c_int) }
        })
    }
}

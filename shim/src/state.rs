//! The shim's process-wide state: the runtime's [`World`] and kawarimi's handle tables.
//!
//! # Handle model
//! kawarimi owns every communicator, group, request, datatype, op and error handler a program
//! creates. Such a handle, as the program sees it, is a *tagged non-pointer*: the top 16 bits
//! are `0x4B57` ("KW"), which no user-space address on x86-64 has (addresses are canonical,
//! below 2^47), bits 40..48 name the kind and the low 40 bits index the kind's table. So a
//! kawarimi handle can never be mistaken for one of Open MPI's predefined objects, whose
//! addresses [`crate::abi::predefined`] recognises, and a handle of the wrong kind is caught.

use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::sync::Arc;

use kawarimi_runtime::comm::{Comm, Group};
use kawarimi_runtime::core::ReqId;
use kawarimi_runtime::datatype::Datatype;
use kawarimi_runtime::error::ErrorClass;
use kawarimi_runtime::op::PredefinedOp;
use kawarimi_runtime::world::World;
use parking_lot::Mutex;

use crate::abi::{self, MPI_Fint, PredefDatatype};

const TAG: usize = 0x4B57 << 48;
const TAG_MASK: usize = 0xFFFF << 48;
const KIND_SHIFT: u32 = 40;
const INDEX_MASK: usize = (1 << KIND_SHIFT) - 1;

/// The kinds of kawarimi-owned handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    Comm = 1,
    Datatype = 2,
    Request = 3,
    Op = 4,
    Group = 5,
    Errhandler = 6,
    Info = 7,
    Message = 8,
    Win = 9,
}

pub fn encode(kind: Kind, index: usize) -> usize {
    debug_assert!(index <= INDEX_MASK);
    TAG | ((kind as usize) << KIND_SHIFT) | index
}

/// The table index of a kawarimi handle of `kind`, or `None` if `h` is not one.
pub fn decode(h: usize, kind: Kind) -> Option<usize> {
    if h & TAG_MASK != TAG || (h >> KIND_SHIFT) & 0xFF != kind as usize {
        return None;
    }
    Some(h & INDEX_MASK)
}

/// First Fortran value of a kawarimi-created handle.
pub const FORTRAN_BASE: c_int = 1 << 20;

/// `c2f`: the Fortran integer of a C handle of one kind, or -1 for a value that is no handle
/// of that kind (the standard leaves it undefined; -1 is no valid handle, so a later use fails
/// clearly).
pub fn c2f(addr: usize, kind: Option<Kind>, predefined_f: impl Fn(usize) -> Option<c_int>) -> MPI_Fint {
    if let Some(i) = kind.and_then(|k| decode(addr, k)) {
        return c_int::try_from(i).ok().and_then(|i| i.checked_add(FORTRAN_BASE)).unwrap_or(-1);
    }
    predefined_f(addr).unwrap_or(-1)
}

/// `f2c`: the C handle of a Fortran integer of one kind; the kind's null handle for a value
/// that is none.
pub fn f2c(f: MPI_Fint, kind: Option<Kind>, predefined_c: impl Fn(c_int) -> Option<usize>, null: usize) -> *mut c_void {
    let addr = match kind {
        Some(k) if f >= FORTRAN_BASE => encode(k, (f - FORTRAN_BASE) as usize),
        _ => predefined_c(f).unwrap_or(null),
    };
    addr as *mut c_void
}

/// `MPI_Comm_c2f`, which the error handlers of Fortran programs need as well.
pub fn comm_c2f(handle: abi::MPI_Comm) -> MPI_Fint {
    let p = abi::predefined();
    c2f(handle as usize, Some(Kind::Comm), |a| p.comm(a).and_then(abi::PredefComm::fortran_handle))
}

/// `MPI_Win_c2f`, which the window error handlers of Fortran programs need as well.
pub fn win_c2f(handle: abi::MPI_Win) -> MPI_Fint {
    let p = abi::predefined();
    c2f(handle as usize, Some(Kind::Win), |a| p.win(a).and_then(abi::PredefWin::fortran_handle))
}

/// A slab of handle objects: stable indices, reused after free.
#[derive(Debug)]
pub struct Table<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { slots: Vec::new(), free: Vec::new() }
    }
}

/// Most live objects of one kind: far beyond any sane program, and a clear error instead of
/// memory exhaustion for a program that leaks requests in a loop.
pub const TABLE_LIMIT: usize = 1 << 26;

impl<T> Table<T> {
    pub fn insert(&mut self, v: T) -> Option<usize> {
        if let Some(i) = self.free.pop() {
            self.slots[i] = Some(v);
            return Some(i);
        }
        if self.slots.len() >= TABLE_LIMIT {
            return None;
        }
        self.slots.push(Some(v));
        Some(self.slots.len() - 1)
    }
    pub fn get(&self, i: usize) -> Option<&T> {
        self.slots.get(i).and_then(Option::as_ref)
    }
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.slots.get_mut(i)?.take();
        if v.is_some() {
            self.free.push(i);
        }
        v
    }
    pub fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// How errors raised on an object are handled (MPI-3.1 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Fatal,
    Return,
    /// A user function made with `MPI_Comm_create_errhandler`, as its table index.
    User(usize),
}

/// A communicator and what the shim keeps with it.
#[derive(Debug)]
pub struct CommEntry {
    pub comm: Arc<Comm>,
    pub handler: Handler,
    pub name: String,
    /// Cached attributes.
    pub attrs: Attrs,
}

/// The attributes cached on a communicator or a datatype, keyval → the `void*` value, in the
/// order they were set: `MPI_Finalize` deletes those of `MPI_COMM_SELF` newest first
/// (§8.7.1), and setting an attribute again makes it the newest.
#[derive(Debug, Default)]
pub struct Attrs(Vec<(i32, usize)>);

impl Attrs {
    pub fn get(&self, keyval: i32) -> Option<usize> {
        self.0.iter().find(|(k, _)| *k == keyval).map(|&(_, v)| v)
    }

    pub fn insert(&mut self, keyval: i32, value: usize) {
        self.remove(keyval);
        self.0.push((keyval, value));
    }

    pub fn remove(&mut self, keyval: i32) -> Option<usize> {
        let i = self.0.iter().position(|(k, _)| *k == keyval)?;
        Some(self.0.remove(i).1)
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, usize)> + '_ {
        self.0.iter().copied()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl Extend<(i32, usize)> for Attrs {
    fn extend<I: IntoIterator<Item = (i32, usize)>>(&mut self, items: I) {
        for (k, v) in items {
            self.insert(k, v);
        }
    }
}

/// An error class or code added with `MPI_Add_error_class`/`MPI_Add_error_code`.
#[derive(Debug, Clone)]
pub struct UserError {
    pub class: std::ffi::c_int,
    pub string: Option<String>,
}

/// A user-defined reduction.
#[derive(Debug, Clone, Copy)]
pub struct UserOp {
    pub function: abi::MPI_User_function,
    pub commutative: bool,
    /// Made from Fortran (`MPI_OP_CREATE`): the function takes the datatype as a Fortran
    /// `INTEGER` handle, by reference, where a C one takes a pointer to an `MPI_Datatype`.
    pub fortran: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum OpEntry {
    Predefined(PredefinedOp),
    User(UserOp),
}

/// A keyval made with `MPI_Comm_create_keyval` (or its MPI-1 name) or
/// `MPI_Type_create_keyval`.
#[derive(Debug, Clone, Copy)]
pub struct Keyval {
    /// What its attributes may be set on.
    pub object: AttrObject,
    /// Copy and delete callbacks: a datatype's have the same C signature as a
    /// communicator's (`MPI_Datatype` and `MPI_Comm` are both pointers to opaque objects).
    pub copy: Option<abi::MPI_Comm_copy_attr_function>,
    pub delete: Option<abi::MPI_Comm_delete_attr_function>,
    pub extra_state: usize,
    /// `MPI_COMM_DUP_FN` / `MPI_COMM_NULL_COPY_FN` are recognised by address and run here.
    pub copy_kind: CopyKind,
}

/// The kind of object a keyval's attributes go on (§6.7.2, §6.7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrObject {
    Comm,
    Datatype,
    Win,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Null,
    Dup,
    User,
}

/// A user error handler: a C function, or a Fortran subroutine (made by the Fortran
/// `MPI_COMM_CREATE_ERRHANDLER`), which takes its communicator as a Fortran handle.
#[derive(Debug, Clone, Copy)]
pub enum ErrhandlerFn {
    C(abi::MPI_Comm_errhandler_function),
    /// `SUBROUTINE HANDLER(COMM, ERROR_CODE)`, both `INTEGER` by reference.
    Fortran(unsafe extern "C" fn(*mut abi::MPI_Fint, *mut abi::MPI_Fint)),
    /// `SUBROUTINE HANDLER(WIN, ERROR_CODE)` (made by `MPI_WIN_CREATE_ERRHANDLER`), which takes
    /// its window as a Fortran handle.
    FortranWin(unsafe extern "C" fn(*mut abi::MPI_Fint, *mut abi::MPI_Fint)),
}

/// What a nonblocking collective does with its schedule's buffers when it completes:
/// unpack them into the application's buffers (or, for `MPI_Comm_idup`, make the
/// communicator).
pub type CollFinishFn = Box<dyn FnOnce(&mut State, Vec<Vec<u8>>) -> Res<()> + Send>;
pub struct CollFinish(pub CollFinishFn);

impl std::fmt::Debug for CollFinish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CollFinish")
    }
}

/// What `MPI_Start` starts again, for a persistent request.
#[derive(Debug, Clone)]
pub enum Persistent {
    /// A send or receive (§3.9).
    Transfer(Transfer),
    /// A collective (MPI-4.0 §6.12; Open MPI 4.1's `MPIX_*_init`).
    Collective(crate::api::coll::PersistentColl),
}

/// The arguments of a persistent send or receive (§3.9), kept to be posted by each
/// `MPI_Start`. The datatype is kept itself, not its handle (and the request keeps its
/// communicator): the program may free either after the `*_init` call.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// `None` for a receive.
    pub send_mode: Option<Mode>,
    pub buf: usize,
    pub count: c_int,
    pub datatype: Arc<Datatype>,
    /// Destination or source.
    pub peer: c_int,
    pub tag: c_int,
}

/// Send modes of §3.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standard,
    Synchronous,
    Buffered,
    Ready,
}

/// The runtime's application request, finished by the shim's collective finishers and
/// restarted from the arguments the program gave its `*_init` call.
pub type Request = kawarimi_runtime::request::Request<CollFinish, Persistent>;

/// A request in the handle table: the runtime's request and the handler its errors go to.
#[derive(Debug)]
pub struct RequestEntry {
    pub req: Request,
    pub handler: Handler,
}

impl RequestEntry {
    /// The request of a nonblocking collective (or `MPI_Comm_idup`): the engine's request
    /// `id`, finished by `finish`.
    pub fn collective(id: ReqId, comm: Arc<Comm>, handler: Handler, finish: CollFinishFn) -> RequestEntry {
        RequestEntry { req: Request::collective(id, comm, CollFinish(finish)), handler }
    }
}

/// Everything the shim keeps between calls.
#[derive(Default)]
pub struct State {
    pub world: Option<World>,
    pub initialized: bool,
    pub finalized: bool,
    pub thread_level: i32,
    pub comms: Table<CommEntry>,
    pub datatypes: Table<Arc<Datatype>>,
    pub requests: Table<RequestEntry>,
    pub ops: Table<OpEntry>,
    pub groups: Table<Arc<Group>>,
    pub errhandlers: Table<ErrhandlerFn>,
    /// Messages taken by matched probes (§3.8.2): the runtime's message and its communicator.
    pub messages: Table<(u64, Arc<Comm>, Handler)>,
    /// Generalized requests (§12.2), by their engine request.
    pub greqs: BTreeMap<kawarimi_runtime::core::ReqId, crate::api::greq::Greq>,
    /// The generalized request the last completion completed, whose query function the
    /// caller runs on the status it writes ([`crate::api::greq::query_into`]).
    pub completed_greq: Option<crate::api::greq::Greq>,
    /// One-sided windows (§11).
    pub windows: Table<crate::api::rma::WinEntry>,
    /// Info objects (§9): ordered (key, value) pairs.
    pub infos: Table<Vec<(String, String)>>,
    /// Names given with `MPI_Type_set_name`, by datatype handle.
    pub type_names: BTreeMap<usize, String>,
    /// Types made by `MPI_Type_create_f90_*`, by (combiner, parameters).
    pub f90_types: BTreeMap<(std::ffi::c_int, Vec<i64>), usize>,
    pub keyvals: BTreeMap<i32, Keyval>,
    pub next_keyval: i32,
    /// Attributes cached on datatypes, by datatype handle (predefined ones too).
    pub type_attrs: BTreeMap<usize, Attrs>,
    /// Predefined datatypes, built on first use, by `PredefDatatype::index()`.
    pub predef_types: Vec<Option<Arc<Datatype>>>,
    /// The handle of the predefined datatype looked up last, and which it is: a program's
    /// calls mostly use one or two types, and finding a handle among the predefined ones is
    /// a binary search (see [`State::datatype`]).
    pub last_predef_datatype: Option<(usize, PredefDatatype)>,
    /// `MPI_Buffer_attach`'s buffer and the buffered sends in flight.
    pub bsend_buffer: Option<kawarimi_runtime::bsend::BsendBuffer>,
    pub main_thread: Option<std::thread::ThreadId>,
    /// Error classes and codes added by the application (§8.5): code `MPI_ERR_LASTCODE + 1 + i`
    /// is entry `i`, holding its class and its string.
    pub user_errors: Vec<UserError>,
}

pub static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Table indices of the two predefined communicators.
pub const WORLD_INDEX: usize = 0;
pub const SELF_INDEX: usize = 1;

/// An error with the class the application sees and the object whose handler decides.
#[derive(Debug)]
pub struct Fail {
    pub class: ErrorClass,
    pub detail: String,
    pub handler: Handler,
}

pub type Res<T> = Result<T, Fail>;

pub fn fail<T>(class: ErrorClass, detail: impl Into<String>) -> Res<T> {
    Err(Fail { class, detail: detail.into(), handler: Handler::Fatal })
}

impl From<kawarimi_runtime::error::MpiError> for Fail {
    fn from(e: kawarimi_runtime::error::MpiError) -> Fail {
        Fail { class: e.class, detail: e.detail, handler: Handler::Fatal }
    }
}

impl State {
    pub fn world(&mut self) -> Res<&mut World> {
        match self.world.as_mut() {
            Some(w) => Ok(w),
            None if self.finalized => fail(ErrorClass::Other, "called after MPI_Finalize"),
            None => fail(ErrorClass::Other, "called before MPI_Init"),
        }
    }

    /// The table index of communicator handle `h`.
    pub fn comm_index(&self, h: abi::MPI_Comm) -> Res<usize> {
        let addr = h as usize;
        let index = match abi::predefined().comm(addr) {
            Some(abi::PredefComm::World) => WORLD_INDEX,
            Some(abi::PredefComm::SelfComm) => SELF_INDEX,
            Some(abi::PredefComm::CommNull) => return fail(ErrorClass::Comm, "MPI_COMM_NULL is not a communicator"),
            None => decode(addr, Kind::Comm).ok_or_else(|| Fail {
                class: ErrorClass::Comm,
                detail: format!("{addr:#x} is not a communicator handle"),
                handler: Handler::Fatal,
            })?,
        };
        match self.comms.get(index) {
            Some(_) => Ok(index),
            None => fail(ErrorClass::Comm, format!("communicator {addr:#x} was freed")),
        }
    }

    pub fn comm_entry(&self, h: abi::MPI_Comm) -> Res<&CommEntry> {
        let i = self.comm_index(h)?;
        Ok(self.comms.get(i).expect("checked by comm_index"))
    }

    /// The handle a program sees for table index `i`.
    pub fn comm_handle(&self, i: usize) -> abi::MPI_Comm {
        let p = abi::predefined();
        let addr = match i {
            WORLD_INDEX => p.comm_handle(abi::PredefComm::World),
            SELF_INDEX => p.comm_handle(abi::PredefComm::SelfComm),
            _ => encode(Kind::Comm, i),
        };
        addr as abi::MPI_Comm
    }

    /// The datatype behind handle `h`.
    pub fn datatype(&mut self, h: abi::MPI_Datatype) -> Res<Arc<Datatype>> {
        let addr = h as usize;
        if let Some(i) = decode(addr, Kind::Datatype) {
            return self.datatypes.get(i).cloned().ok_or_else(|| Fail {
                class: ErrorClass::Type,
                detail: format!("datatype {addr:#x} was freed"),
                handler: Handler::Fatal,
            });
        }
        let pd = match self.last_predef_datatype {
            Some((last, pd)) if last == addr => pd,
            _ => {
                let Some(pd) = abi::predefined().datatype(addr) else {
                    return fail(ErrorClass::Type, format!("{addr:#x} is not a datatype handle"));
                };
                self.last_predef_datatype = Some((addr, pd));
                pd
            }
        };
        self.predef_datatype(pd)
    }

    pub fn predef_datatype(&mut self, pd: PredefDatatype) -> Res<Arc<Datatype>> {
        if self.predef_types.is_empty() {
            self.predef_types = vec![None; PredefDatatype::ALL.len()];
        }
        if let Some(dt) = &self.predef_types[pd.index()] {
            return Ok(dt.clone());
        }
        let dt = Arc::new(build_predef_datatype(pd)?);
        self.predef_types[pd.index()] = Some(dt.clone());
        Ok(dt)
    }

    pub fn new_datatype(&mut self, dt: Datatype) -> Res<abi::MPI_Datatype> {
        let i = self.datatypes.insert(Arc::new(dt)).ok_or_else(|| table_full("datatypes"))?;
        Ok(encode(Kind::Datatype, i) as abi::MPI_Datatype)
    }

    pub fn op(&self, h: abi::MPI_Op) -> Res<OpEntry> {
        let addr = h as usize;
        if let Some(i) = decode(addr, Kind::Op) {
            return self.ops.get(i).copied().ok_or_else(|| Fail {
                class: ErrorClass::Op,
                detail: format!("op {addr:#x} was freed"),
                handler: Handler::Fatal,
            });
        }
        use abi::PredefOp as P;
        use PredefinedOp as O;
        let op = match abi::predefined().op(addr) {
            Some(P::Max) => O::Max,
            Some(P::Min) => O::Min,
            Some(P::Sum) => O::Sum,
            Some(P::Prod) => O::Prod,
            Some(P::Land) => O::Land,
            Some(P::Band) => O::Band,
            Some(P::Lor) => O::Lor,
            Some(P::Bor) => O::Bor,
            Some(P::Lxor) => O::Lxor,
            Some(P::Bxor) => O::Bxor,
            Some(P::Maxloc) => O::Maxloc,
            Some(P::Minloc) => O::Minloc,
            Some(P::Replace) => O::Replace,
            Some(P::NoOp) => O::NoOp,
            Some(P::OpNull) => return fail(ErrorClass::Op, "MPI_OP_NULL is not an operation"),
            None => return fail(ErrorClass::Op, format!("{addr:#x} is not an op handle")),
        };
        Ok(OpEntry::Predefined(op))
    }

    pub fn group(&self, h: abi::MPI_Group) -> Res<Arc<Group>> {
        let addr = h as usize;
        if let Some(i) = decode(addr, Kind::Group) {
            return self.groups.get(i).cloned().ok_or_else(|| Fail {
                class: ErrorClass::Group,
                detail: format!("group {addr:#x} was freed"),
                handler: Handler::Fatal,
            });
        }
        match abi::predefined().group(addr) {
            Some(abi::PredefGroup::Empty) => Ok(Arc::new(Group::empty())),
            Some(abi::PredefGroup::GroupNull) => fail(ErrorClass::Group, "MPI_GROUP_NULL is not a group"),
            None => fail(ErrorClass::Group, format!("{addr:#x} is not a group handle")),
        }
    }

    pub fn new_group(&mut self, g: Group) -> Res<abi::MPI_Group> {
        if g.size() == 0 {
            return Ok(abi::predefined().group_handle(abi::PredefGroup::Empty) as abi::MPI_Group);
        }
        let i = self.groups.insert(Arc::new(g)).ok_or_else(|| table_full("groups"))?;
        Ok(encode(Kind::Group, i) as abi::MPI_Group)
    }

    /// Adds a communicator; its handler starts as its parent's (§8.3.1).
    pub fn new_comm(&mut self, comm: Comm, handler: Handler) -> Res<abi::MPI_Comm> {
        let entry = CommEntry { comm: Arc::new(comm), handler, name: String::new(), attrs: Attrs::default() };
        let i = self.comms.insert(entry).ok_or_else(|| table_full("communicators"))?;
        Ok(self.comm_handle(i))
    }

    pub fn new_request(&mut self, r: RequestEntry) -> Res<abi::MPI_Request> {
        let i = self.requests.insert(r).ok_or_else(|| table_full("requests"))?;
        Ok(encode(Kind::Request, i) as abi::MPI_Request)
    }

    pub fn request_index(&self, h: abi::MPI_Request) -> Res<Option<usize>> {
        let addr = h as usize;
        if addr == abi::predefined().request_null() {
            return Ok(None);
        }
        match decode(addr, Kind::Request) {
            Some(i) if self.requests.get(i).is_some() => Ok(Some(i)),
            Some(_) => fail(ErrorClass::Request, format!("request {addr:#x} was already completed or freed")),
            None => fail(ErrorClass::Request, format!("{addr:#x} is not a request handle")),
        }
    }
}

impl State {
    /// The index of info handle `h` in the info table.
    pub fn info_index(&self, h: abi::MPI_Info) -> Res<usize> {
        let addr = h as usize;
        match decode(addr, Kind::Info) {
            Some(i) if self.infos.get(i).is_some() => Ok(i),
            Some(_) => fail(ErrorClass::Info, format!("info {addr:#x} was freed")),
            None if abi::predefined().info(addr).is_some() => {
                fail(ErrorClass::Info, "MPI_INFO_NULL or MPI_INFO_ENV cannot be used here")
            }
            None => fail(ErrorClass::Info, format!("{addr:#x} is not an info handle")),
        }
    }

    /// The pairs of info `h`; `MPI_INFO_ENV` has none, `MPI_INFO_NULL` is an error.
    pub fn info_pairs(&self, h: abi::MPI_Info) -> Res<Vec<(String, String)>> {
        if abi::predefined().info(h as usize) == Some(abi::PredefInfo::Env) {
            return Ok(Vec::new());
        }
        let i = self.info_index(h)?;
        Ok(self.infos.get(i).expect("checked").clone())
    }

    /// The hints of an info argument that may be `MPI_INFO_NULL` (no hints), as the window
    /// constructors take it (§11.2).
    pub fn hints(&self, h: abi::MPI_Info) -> Res<Vec<(String, String)>> {
        if abi::predefined().info(h as usize) == Some(abi::PredefInfo::InfoNull) {
            return Ok(Vec::new());
        }
        self.info_pairs(h)
    }

    pub fn new_info(&mut self, pairs: Vec<(String, String)>) -> Res<abi::MPI_Info> {
        let i = self.infos.insert(pairs).ok_or_else(|| table_full("info objects"))?;
        Ok(encode(Kind::Info, i) as abi::MPI_Info)
    }
}

/// The object a predefined datatype handle stands for.
pub fn build_predef_datatype(pd: PredefDatatype) -> Res<Datatype> {
    match pd.layout() {
        abi::PredefLayout::Prim(p) => Ok(Datatype::predefined_named(p, pd.mpi_name())?),
        abi::PredefLayout::Special(abi::SpecialDatatype::Null) => {
            fail(ErrorClass::Type, "MPI_DATATYPE_NULL is not a datatype")
        }
        abi::PredefLayout::Special(s) => {
            fail(ErrorClass::Type, format!("{} ({s:?}) is not supported by kawarimi", pd.mpi_name()))
        }
    }
}

pub fn table_full(what: &str) -> Fail {
    Fail {
        class: ErrorClass::NoMem,
        detail: format!("more than {TABLE_LIMIT} live {what}: is the program leaking them?"),
        handler: Handler::Fatal,
    }
}

pub fn request_null() -> abi::MPI_Request {
    abi::predefined().request_null() as abi::MPI_Request
}

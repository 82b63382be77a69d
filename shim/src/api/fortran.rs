//! Handle conversions between C and Fortran (MPI-3.1 §17.2.4), which Open MPI's Fortran
//! bindings (`libmpi_mpifh`) call around every `PMPI_*` call they make.
//!
//! A Fortran handle is an `INTEGER`. Open MPI's predefined objects keep the values its
//! `mpif-handles.h` gives them (taken from that header at build time, never guessed).
//! Handles kawarimi creates get [`crate::state::FORTRAN_BASE`] plus their table index, well above every
//! predefined value, so the two never collide.

use std::ffi::c_int;

use crate::abi::{self, MPI_Fint, MPI_Status};
use crate::state::{c2f, comm_c2f, f2c, Kind};

// One c2f/f2c pair per handle kind, each written out so that build.rs sees `fn Name(`.
mpi_fn! {
    fn Comm_c2f(handle: abi::MPI_Comm) -> MPI_Fint {
        comm_c2f(handle)
    }

    fn Comm_f2c(f: MPI_Fint) -> abi::MPI_Comm {
        let p = abi::predefined();
        f2c(f, Some(Kind::Comm), |f| abi::PredefComm::from_fortran(f).map(|v| p.comm_handle(v)), p.comm_handle(abi::PredefComm::CommNull)) as abi::MPI_Comm
    }

    fn Type_c2f(handle: abi::MPI_Datatype) -> MPI_Fint {
        let p = abi::predefined();
        c2f(handle as usize, Some(Kind::Datatype), |a| p.datatype(a).and_then(abi::PredefDatatype::fortran_handle))
    }

    fn Type_f2c(f: MPI_Fint) -> abi::MPI_Datatype {
        let p = abi::predefined();
        f2c(f, Some(Kind::Datatype), |f| abi::PredefDatatype::from_fortran(f).map(|v| p.datatype_handle(v)), p.datatype_handle(abi::PredefDatatype::DatatypeNull)) as abi::MPI_Datatype
    }

    fn Group_c2f(handle: abi::MPI_Group) -> MPI_Fint {
        let p = abi::predefined();
        c2f(handle as usize, Some(Kind::Group), |a| p.group(a).and_then(abi::PredefGroup::fortran_handle))
    }

    fn Group_f2c(f: MPI_Fint) -> abi::MPI_Group {
        let p = abi::predefined();
        f2c(f, Some(Kind::Group), |f| abi::PredefGroup::from_fortran(f).map(|v| p.group_handle(v)), p.group_handle(abi::PredefGroup::GroupNull)) as abi::MPI_Group
    }

    fn Win_c2f(handle: abi::MPI_Win) -> MPI_Fint {
        crate::state::win_c2f(handle)
    }

    fn Win_f2c(f: MPI_Fint) -> abi::MPI_Win {
        let p = abi::predefined();
        f2c(f, Some(Kind::Win), |f| abi::PredefWin::from_fortran(f).map(|v| p.win_handle(v)), p.win_handle(abi::PredefWin::WinNull)) as abi::MPI_Win
    }

    fn Request_c2f(handle: abi::MPI_Request) -> MPI_Fint {
        let p = abi::predefined();
        c2f(handle as usize, Some(Kind::Request), |a| p.request(a).and_then(abi::PredefRequest::fortran_handle))
    }

    fn Request_f2c(f: MPI_Fint) -> abi::MPI_Request {
        let p = abi::predefined();
        f2c(f, Some(Kind::Request), |f| abi::PredefRequest::from_fortran(f).map(|v| p.request_handle(v)), p.request_handle(abi::PredefRequest::RequestNull)) as abi::MPI_Request
    }

    fn Op_c2f(handle: abi::MPI_Op) -> MPI_Fint {
        let p = abi::predefined();
        c2f(handle as usize, Some(Kind::Op), |a| p.op(a).and_then(abi::PredefOp::fortran_handle))
    }

    fn Op_f2c(f: MPI_Fint) -> abi::MPI_Op {
        let p = abi::predefined();
        f2c(f, Some(Kind::Op), |f| abi::PredefOp::from_fortran(f).map(|v| p.op_handle(v)), p.op_handle(abi::PredefOp::OpNull)) as abi::MPI_Op
    }

    fn Errhandler_c2f(handle: abi::MPI_Errhandler) -> MPI_Fint {
        let p = abi::predefined();
        c2f(handle as usize, Some(Kind::Errhandler), |a| p.errhandler(a).and_then(abi::PredefErrhandler::fortran_handle))
    }

    fn Errhandler_f2c(f: MPI_Fint) -> abi::MPI_Errhandler {
        let p = abi::predefined();
        f2c(f, Some(Kind::Errhandler), |f| abi::PredefErrhandler::from_fortran(f).map(|v| p.errhandler_handle(v)), p.errhandler_handle(abi::PredefErrhandler::ErrhandlerNull)) as abi::MPI_Errhandler
    }

    fn Info_c2f(handle: abi::MPI_Info) -> MPI_Fint {
        let p = abi::predefined();
        c2f(handle as usize, Some(Kind::Info), |a| p.info(a).and_then(abi::PredefInfo::fortran_handle))
    }

    fn Info_f2c(f: MPI_Fint) -> abi::MPI_Info {
        let p = abi::predefined();
        f2c(f, Some(Kind::Info), |f| abi::PredefInfo::from_fortran(f).map(|v| p.info_handle(v)), p.info_handle(abi::PredefInfo::InfoNull)) as abi::MPI_Info
    }

    fn File_c2f(handle: abi::MPI_File) -> MPI_Fint {
        let p = abi::predefined();
        c2f(handle as usize, None, |a| p.file(a).and_then(abi::PredefFile::fortran_handle))
    }

    fn File_f2c(f: MPI_Fint) -> abi::MPI_File {
        let p = abi::predefined();
        f2c(f, None, |f| abi::PredefFile::from_fortran(f).map(|v| p.file_handle(v)), p.file_handle(abi::PredefFile::FileNull)) as abi::MPI_File
    }

    fn Message_c2f(handle: abi::MPI_Message) -> MPI_Fint {
        let p = abi::predefined();
        c2f(handle as usize, Some(Kind::Message), |a| p.message(a).and_then(abi::PredefMessage::fortran_handle))
    }

    fn Message_f2c(f: MPI_Fint) -> abi::MPI_Message {
        let p = abi::predefined();
        f2c(f, Some(Kind::Message), |f| abi::PredefMessage::from_fortran(f).map(|v| p.message_handle(v)), p.message_handle(abi::PredefMessage::MessageNull)) as abi::MPI_Message
    }
}

/// Ints in a Fortran status: Open MPI's Fortran status is the C struct viewed as ints.
pub(crate) const STATUS_INTS: usize = std::mem::size_of::<MPI_Status>() / std::mem::size_of::<c_int>();

mpi_fn! {
    fn Status_c2f(c_status: *const MPI_Status, f_status: *mut MPI_Fint) -> c_int {
        if c_status.is_null() || f_status.is_null() || c_status as usize == abi::MPI_STATUS_IGNORE {
            return abi::MPI_ERR_ARG;
        }
        // SAFETY: both point to a status: a C one of STATUS_INTS ints' size, and a Fortran
        // INTEGER array of MPI_STATUS_SIZE (= STATUS_INTS in Open MPI) elements.
        unsafe { std::ptr::copy_nonoverlapping(c_status as *const c_int, f_status, STATUS_INTS) };
        abi::MPI_SUCCESS
    }

    fn Status_f2c(f_status: *const MPI_Fint, c_status: *mut MPI_Status) -> c_int {
        if c_status.is_null() || f_status.is_null() {
            return abi::MPI_ERR_ARG;
        }
        // SAFETY: as in MPI_Status_c2f, the other way round.
        unsafe { std::ptr::copy_nonoverlapping(f_status, c_status as *mut c_int, STATUS_INTS) };
        abi::MPI_SUCCESS
    }
}

const _: () = assert!(STATUS_INTS * std::mem::size_of::<c_int>() == std::mem::size_of::<MPI_Status>());

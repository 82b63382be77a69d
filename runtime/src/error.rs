//! Error classes of the MPI standard (MPI-3.1 §8.4), as the runtime speaks them.
//!
//! The runtime never uses MPI error *numbers*: those belong to the ABI of the MPI library the
//! application was built against and live only in the shim, which maps each class to its code.

use std::fmt;

/// An MPI error class, plus the detail that makes the message useful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Buffer,
    Count,
    Type,
    Tag,
    Comm,
    Rank,
    Request,
    Root,
    Group,
    Op,
    Topology,
    Dims,
    Arg,
    Unknown,
    Truncate,
    Other,
    Intern,
    InStatus,
    Pending,
    Keyval,
    NoMem,
    Base,
    Unsupported,
    /// One-sided communication (§11): an invalid window, a displacement, size or lock type,
    /// an operation outside the target's window, one outside an access epoch.
    Win,
    Disp,
    Size,
    Locktype,
    RmaRange,
    RmaSync,
    RmaFlavor,
    RmaShared,
    RmaAttach,
    /// Info objects (§9): an invalid info, a key or value too long or empty, a key not there.
    Info,
    InfoKey,
    InfoValue,
    InfoNokey,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 36] = [
        ErrorClass::Buffer,
        ErrorClass::Count,
        ErrorClass::Type,
        ErrorClass::Tag,
        ErrorClass::Comm,
        ErrorClass::Rank,
        ErrorClass::Request,
        ErrorClass::Root,
        ErrorClass::Group,
        ErrorClass::Op,
        ErrorClass::Topology,
        ErrorClass::Dims,
        ErrorClass::Arg,
        ErrorClass::Unknown,
        ErrorClass::Truncate,
        ErrorClass::Other,
        ErrorClass::Intern,
        ErrorClass::InStatus,
        ErrorClass::Pending,
        ErrorClass::Keyval,
        ErrorClass::NoMem,
        ErrorClass::Base,
        ErrorClass::Unsupported,
        ErrorClass::Win,
        ErrorClass::Disp,
        ErrorClass::Size,
        ErrorClass::Locktype,
        ErrorClass::RmaRange,
        ErrorClass::RmaSync,
        ErrorClass::RmaFlavor,
        ErrorClass::RmaShared,
        ErrorClass::RmaAttach,
        ErrorClass::Info,
        ErrorClass::InfoKey,
        ErrorClass::InfoValue,
        ErrorClass::InfoNokey,
    ];

    /// The class of a standard name ([`ErrorClass::name`]), for errors that travel between
    /// processes.
    pub fn from_name(name: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The standard's name for the class, as `MPI_Error_string` prints it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Buffer => "MPI_ERR_BUFFER",
            ErrorClass::Count => "MPI_ERR_COUNT",
            ErrorClass::Type => "MPI_ERR_TYPE",
            ErrorClass::Tag => "MPI_ERR_TAG",
            ErrorClass::Comm => "MPI_ERR_COMM",
            ErrorClass::Rank => "MPI_ERR_RANK",
            ErrorClass::Request => "MPI_ERR_REQUEST",
            ErrorClass::Root => "MPI_ERR_ROOT",
            ErrorClass::Group => "MPI_ERR_GROUP",
            ErrorClass::Op => "MPI_ERR_OP",
            ErrorClass::Topology => "MPI_ERR_TOPOLOGY",
            ErrorClass::Dims => "MPI_ERR_DIMS",
            ErrorClass::Arg => "MPI_ERR_ARG",
            ErrorClass::Unknown => "MPI_ERR_UNKNOWN",
            ErrorClass::Truncate => "MPI_ERR_TRUNCATE",
            ErrorClass::Other => "MPI_ERR_OTHER",
            ErrorClass::Intern => "MPI_ERR_INTERN",
            ErrorClass::InStatus => "MPI_ERR_IN_STATUS",
            ErrorClass::Pending => "MPI_ERR_PENDING",
            ErrorClass::Keyval => "MPI_ERR_KEYVAL",
            ErrorClass::NoMem => "MPI_ERR_NO_MEM",
            ErrorClass::Base => "MPI_ERR_BASE",
            ErrorClass::Unsupported => "MPI_ERR_UNSUPPORTED_OPERATION",
            ErrorClass::Win => "MPI_ERR_WIN",
            ErrorClass::Disp => "MPI_ERR_DISP",
            ErrorClass::Size => "MPI_ERR_SIZE",
            ErrorClass::Locktype => "MPI_ERR_LOCKTYPE",
            ErrorClass::RmaRange => "MPI_ERR_RMA_RANGE",
            ErrorClass::RmaSync => "MPI_ERR_RMA_SYNC",
            ErrorClass::RmaFlavor => "MPI_ERR_RMA_FLAVOR",
            ErrorClass::RmaShared => "MPI_ERR_RMA_SHARED",
            ErrorClass::RmaAttach => "MPI_ERR_RMA_ATTACH",
            ErrorClass::Info => "MPI_ERR_INFO",
            ErrorClass::InfoKey => "MPI_ERR_INFO_KEY",
            ErrorClass::InfoValue => "MPI_ERR_INFO_VALUE",
            ErrorClass::InfoNokey => "MPI_ERR_INFO_NOKEY",
        }
    }
}

/// An error raised by the runtime: the class the application sees and why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiError {
    pub class: ErrorClass,
    pub detail: String,
}

impl MpiError {
    pub fn new(class: ErrorClass, detail: impl Into<String>) -> Self {
        MpiError { class, detail: detail.into() }
    }
}

impl fmt::Display for MpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.name(), self.detail)
    }
}

impl std::error::Error for MpiError {}

pub type MpiResult<T> = Result<T, MpiError>;

/// Shorthand for building an [`MpiError`] in a `return Err(...)`.
pub fn err<T>(class: ErrorClass, detail: impl Into<String>) -> MpiResult<T> {
    Err(MpiError::new(class, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_travels_by_its_name() {
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::from_name(c.name()), Some(c), "{c:?}");
        }
        let names: std::collections::BTreeSet<_> = ErrorClass::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ErrorClass::ALL.len(), "names are distinct");
        assert_eq!(ErrorClass::from_name("MPI_ERR_NOT_A_CLASS"), None);
    }
}

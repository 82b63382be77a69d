//! Wire-up: a key/value exchange between the ranks of a job, used to publish and look up
//! endpoint addresses at start and again after every resume.
//!
//! [`Pmix`] rides on the launcher's PMIx server (Open MPI's `mpirun`/`orted`, Slurm's
//! `srun --mpi=pmix`) through a small C glue (`csrc/pmix_glue.c`) over Debian's `libpmix`.
//! It lets a rank wire up without initialising the MPI library. `libpmix` is linked
//! normally (not `dlopen`ed): Debian's Open MPI depends on it, so it is present wherever
//! `mpirun` is. The PMIx server only serves processes of its own job (clients authenticate
//! to it with the launcher's credentials, by default the same uid), which is why the job
//! secret may be distributed through it.
//!
//! [`Singleton`] is the size-1 job started without a launcher.
//!
//! Keep the launcher's own out-of-band traffic off IPoIB as well (for Open MPI,
//! `--mca oob_tcp_if_include <ethernet if>`): its daemons' connections must survive an HCA
//! hot-unplug, exactly like kawarimi's.

use std::collections::HashMap;
use std::time::Duration;

use crate::{TransportError, TransportResult};

/// A key/value exchange among the ranks of one job.
///
/// Protocol: every rank `put`s its keys, `commit`s, and calls `fence`; after the fence every
/// rank can `get` every other rank's keys.
pub trait Bootstrap: Send {
    fn rank(&self) -> u32;
    fn size(&self) -> u32;
    /// Rank on this node, when the launcher says.
    fn local_rank(&self) -> Option<u32> {
        None
    }
    /// Number of this job's ranks on this node, when the launcher says.
    fn local_size(&self) -> Option<u32> {
        None
    }
    fn put(&mut self, key: &str, value: &[u8]) -> TransportResult<()>;
    fn commit(&mut self) -> TransportResult<()>;
    /// Collective: returns when every rank has committed, or fails after `timeout`.
    fn fence(&mut self, timeout: Duration) -> TransportResult<()>;
    fn get(&mut self, rank: u32, key: &str) -> TransportResult<Vec<u8>>;
}

/// Whether the environment looks like a PMIx client's (a launcher with a PMIx server started
/// this process): `PMIX_RANK` or any `PMIX_SERVER_URI*` variable.
pub fn pmix_available() -> bool {
    std::env::var_os("PMIX_RANK").is_some()
        || std::env::vars_os().any(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("PMIX_SERVER_URI")))
}

/// PMIx when available, else a [`Singleton`].
pub fn from_env() -> TransportResult<Box<dyn Bootstrap>> {
    if pmix_available() {
        Ok(Box::new(Pmix::init()?))
    } else {
        Ok(Box::new(Singleton::new()))
    }
}

/// A job of one rank: `put` stores locally, `fence` returns at once.
#[derive(Debug, Default)]
pub struct Singleton {
    kv: HashMap<String, Vec<u8>>,
}

impl Singleton {
    pub fn new() -> Singleton {
        Singleton::default()
    }
}

impl Bootstrap for Singleton {
    fn rank(&self) -> u32 {
        0
    }
    fn size(&self) -> u32 {
        1
    }
    fn local_rank(&self) -> Option<u32> {
        Some(0)
    }
    fn local_size(&self) -> Option<u32> {
        Some(1)
    }
    fn put(&mut self, key: &str, value: &[u8]) -> TransportResult<()> {
        self.kv.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn commit(&mut self) -> TransportResult<()> {
        Ok(())
    }
    fn fence(&mut self, _timeout: Duration) -> TransportResult<()> {
        Ok(())
    }
    fn get(&mut self, rank: u32, key: &str) -> TransportResult<Vec<u8>> {
        if rank != 0 {
            return Err(TransportError::Bootstrap(format!("singleton job has no rank {rank}")));
        }
        self.kv.get(key).cloned().ok_or_else(|| TransportError::Bootstrap(format!("key {key:?} of rank 0 not found")))
    }
}

/// Most bytes in a PMIx key (PMIX_MAX_KEYLEN).
pub const PMIX_MAX_KEYLEN: usize = 511;

#[cfg(not(kw_no_pmix))]
mod ffi {
    use std::os::raw::{c_char, c_int, c_void};
    extern "C" {
        pub fn kw_pmix_error_string(status: c_int) -> *const c_char;
        pub fn kw_pmix_init(
            nspace_out: *mut c_char,
            nspace_cap: usize,
            rank: *mut u32,
            size: *mut u32,
            local_rank: *mut u32,
            local_size: *mut u32,
        ) -> c_int;
        pub fn kw_pmix_put(key: *const c_char, bytes: *const u8, len: usize) -> c_int;
        pub fn kw_pmix_commit() -> c_int;
        pub fn kw_pmix_fence(timeout_s: c_int) -> c_int;
        pub fn kw_pmix_get(
            rank: u32,
            key: *const c_char,
            timeout_s: c_int,
            out: *mut *mut u8,
            len: *mut usize,
        ) -> c_int;
        pub fn kw_pmix_free(p: *mut c_void);
        pub fn kw_pmix_finalize() -> c_int;
        pub fn kw_pmix_abort(status: c_int, msg: *const c_char) -> c_int;
    }
}

/// A PMIx client of the launcher's server. Finalized on drop.
#[derive(Debug)]
pub struct Pmix {
    nspace: String,
    rank: u32,
    size: u32,
    local_rank: Option<u32>,
    local_size: Option<u32>,
}

#[cfg(not(kw_no_pmix))]
fn pmix_err(what: &str, status: std::os::raw::c_int) -> TransportError {
    // SAFETY: PMIx_Error_string returns a pointer to a static, NUL-terminated string for
    // any status (an "UNKNOWN" string for unknown ones); we check for NULL anyway.
    let name = unsafe {
        let p = ffi::kw_pmix_error_string(status);
        if p.is_null() {
            String::from("?")
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    TransportError::Bootstrap(format!("PMIx {what} failed: {name} ({status})"))
}

#[cfg(not(kw_no_pmix))]
fn c_key(key: &str) -> TransportResult<std::ffi::CString> {
    if key.is_empty() || key.len() > PMIX_MAX_KEYLEN {
        return Err(TransportError::Bootstrap(format!(
            "PMIx key must be 1..={PMIX_MAX_KEYLEN} bytes, got {}",
            key.len()
        )));
    }
    std::ffi::CString::new(key).map_err(|_| TransportError::Bootstrap(format!("PMIx key {key:?} contains NUL")))
}

fn timeout_secs(t: Duration) -> i32 {
    // PMIx timeouts are whole seconds and 0 means "forever": round up, at least 1.
    t.as_millis().div_ceil(1000).clamp(1, i32::MAX as u128) as i32
}

impl Pmix {
    /// Connects to the launcher's PMIx server. Fails with a clear `Bootstrap` error when
    /// this process was not started by a PMIx-enabled launcher.
    pub fn init() -> TransportResult<Pmix> {
        if !pmix_available() {
            return Err(TransportError::Bootstrap(
                "PMIx is not available: neither PMIX_RANK nor PMIX_SERVER_URI* is set \
                 (not started by mpirun or srun --mpi=pmix)"
                    .into(),
            ));
        }
        Self::init_inner()
    }

    #[cfg(kw_no_pmix)]
    fn init_inner() -> TransportResult<Pmix> {
        Err(TransportError::Bootstrap(
            "this build of kawarimi-transports has no PMIx support (pmix.h was not found)".into(),
        ))
    }

    #[cfg(not(kw_no_pmix))]
    fn init_inner() -> TransportResult<Pmix> {
        let mut ns = [0 as std::os::raw::c_char; 256];
        let (mut rank, mut size, mut lrank, mut lsize) = (0u32, 0u32, u32::MAX, u32::MAX);
        // SAFETY: every pointer is to a live local of the right type; `ns` has the capacity we
        // pass and the glue NUL-terminates within it.
        let rc = unsafe { ffi::kw_pmix_init(ns.as_mut_ptr(), ns.len(), &mut rank, &mut size, &mut lrank, &mut lsize) };
        if rc != 0 {
            return Err(pmix_err("init", rc));
        }
        // SAFETY: `ns` is NUL-terminated by the glue (its last byte is never overwritten).
        let nspace = unsafe { std::ffi::CStr::from_ptr(ns.as_ptr()) }.to_string_lossy().into_owned();
        Ok(Pmix {
            nspace,
            rank,
            size,
            local_rank: (lrank != u32::MAX).then_some(lrank),
            local_size: (lsize != u32::MAX).then_some(lsize),
        })
    }

    /// The job's PMIx namespace.
    pub fn nspace(&self) -> &str {
        &self.nspace
    }
}

/// Asks the launcher's PMIx server to end the whole job with exit status `status` (mpirun
/// then exits with it, as under Open MPI's own `MPI_Abort`), waiting at most `wait` for the
/// server to take the request (a launcher that is gone never answers). Whether it took it;
/// false also when this process did not connect to a PMIx server.
pub fn pmix_abort(status: i32, msg: &str, wait: Duration) -> bool {
    #[cfg(kw_no_pmix)]
    {
        let _ = (status, msg, wait);
        false
    }
    #[cfg(not(kw_no_pmix))]
    {
        let msg = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
        let (tx, rx) = std::sync::mpsc::channel();
        let asked = std::thread::Builder::new().name("kawarimi-pmix-abort".into()).spawn(move || {
            // SAFETY: a NUL-terminated message that lives for the call; the glue checks that
            // PMIx was initialised.
            let rc = unsafe { ffi::kw_pmix_abort(status, msg.as_ptr()) };
            let _ = tx.send(rc == 0);
        });
        asked.is_ok() && rx.recv_timeout(wait).unwrap_or(false)
    }
}

#[cfg(not(kw_no_pmix))]
impl Drop for Pmix {
    fn drop(&mut self) {
        // SAFETY: PMIx was initialised by `init`; the glue ignores a second finalize.
        let rc = unsafe { ffi::kw_pmix_finalize() };
        if rc != 0 {
            tracing::warn!("PMIx finalize failed with status {rc}");
        }
    }
}

#[cfg(not(kw_no_pmix))]
impl Bootstrap for Pmix {
    fn rank(&self) -> u32 {
        self.rank
    }
    fn size(&self) -> u32 {
        self.size
    }
    fn local_rank(&self) -> Option<u32> {
        self.local_rank
    }
    fn local_size(&self) -> Option<u32> {
        self.local_size
    }
    fn put(&mut self, key: &str, value: &[u8]) -> TransportResult<()> {
        let k = c_key(key)?;
        // SAFETY: `k` is a valid C string and `value` a valid slice for the call's duration;
        // PMIx_Put copies the value.
        let rc = unsafe { ffi::kw_pmix_put(k.as_ptr(), value.as_ptr(), value.len()) };
        if rc != 0 {
            return Err(pmix_err(&format!("put {key:?}"), rc));
        }
        Ok(())
    }
    fn commit(&mut self) -> TransportResult<()> {
        // SAFETY: no arguments; PMIx is initialised.
        let rc = unsafe { ffi::kw_pmix_commit() };
        if rc != 0 {
            return Err(pmix_err("commit", rc));
        }
        Ok(())
    }
    fn fence(&mut self, timeout: Duration) -> TransportResult<()> {
        // SAFETY: plain integer argument; PMIx is initialised.
        let rc = unsafe { ffi::kw_pmix_fence(timeout_secs(timeout)) };
        if rc != 0 {
            return Err(pmix_err(
                &format!("fence (timeout {} ms, rank {} of {})", timeout.as_millis(), self.rank, self.size),
                rc,
            ));
        }
        Ok(())
    }
    fn get(&mut self, rank: u32, key: &str) -> TransportResult<Vec<u8>> {
        if rank >= self.size {
            return Err(TransportError::Bootstrap(format!(
                "PMIx get {key:?}: rank {rank} out of range (size {})",
                self.size
            )));
        }
        let k = c_key(key)?;
        let mut p: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: `k` is a valid C string; `p` and `len` are live out-parameters.
        let rc = unsafe { ffi::kw_pmix_get(rank, k.as_ptr(), 30, &mut p, &mut len) };
        if rc != 0 {
            return Err(pmix_err(&format!("get {key:?} of rank {rank}"), rc));
        }
        if p.is_null() {
            return Err(TransportError::Bootstrap(format!("PMIx get {key:?} of rank {rank} returned no data")));
        }
        // SAFETY: on success the glue returns a malloc'd buffer of exactly `len` bytes that
        // we own; we copy it out and free it once with the matching allocator.
        let v = unsafe {
            let v = std::slice::from_raw_parts(p, len).to_vec();
            ffi::kw_pmix_free(p.cast());
            v
        };
        Ok(v)
    }
}

#[cfg(kw_no_pmix)]
impl Bootstrap for Pmix {
    fn rank(&self) -> u32 {
        self.rank
    }
    fn size(&self) -> u32 {
        self.size
    }
    fn put(&mut self, _key: &str, _value: &[u8]) -> TransportResult<()> {
        Err(TransportError::Bootstrap("no PMIx support in this build".into()))
    }
    fn commit(&mut self) -> TransportResult<()> {
        Err(TransportError::Bootstrap("no PMIx support in this build".into()))
    }
    fn fence(&mut self, _timeout: Duration) -> TransportResult<()> {
        Err(TransportError::Bootstrap("no PMIx support in this build".into()))
    }
    fn get(&mut self, _rank: u32, _key: &str) -> TransportResult<Vec<u8>> {
        Err(TransportError::Bootstrap("no PMIx support in this build".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singleton_round_trip() {
        let mut s = Singleton::new();
        assert_eq!((s.rank(), s.size()), (0, 1));
        s.put("addr", b"127.0.0.1:5").unwrap();
        s.commit().unwrap();
        s.fence(Duration::from_millis(1)).unwrap();
        assert_eq!(s.get(0, "addr").unwrap(), b"127.0.0.1:5");
        assert!(s.get(0, "nope").is_err());
        assert!(s.get(1, "addr").is_err());
    }

    #[test]
    fn pmix_init_without_launcher_is_a_clear_error() {
        if pmix_available() {
            return; // running under a launcher: nothing to check here
        }
        let e = Pmix::init().unwrap_err().to_string();
        assert!(e.contains("PMIX_RANK") && e.contains("not available"), "{e}");
    }

    #[test]
    fn timeout_rounding() {
        assert_eq!(timeout_secs(Duration::from_millis(1)), 1);
        assert_eq!(timeout_secs(Duration::from_millis(1001)), 2);
        assert_eq!(timeout_secs(Duration::ZERO), 1);
    }
}

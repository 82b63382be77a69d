//! Test harness for kawarimi's C and Fortran MPI test programs.
//!
//! The programs live in `tests/c/*.c` and `tests/fortran/*.f90`. Each one is
//! self-checking: it prints `FAIL <file>:<line> rank <r>: <what>` and aborts on
//! the first wrong result, and rank 0 prints `OK <name>` at the end. This crate
//! compiles them with the system `mpicc` or `mpif90` (once per source content:
//! the binary name carries a hash of the sources and flags) and runs them under
//! `mpirun`, either natively on Open MPI or with kawarimi preloaded
//! (`LD_PRELOAD`).
//!
//! Environment knobs (all optional):
//! - `KAWARIMI_LIB`: the `libkawarimi.so` to preload (default
//!   `<workspace>/target/release/libkawarimi.so`, or under `$CARGO_TARGET_DIR`
//!   when that is set).
//! - `MPICC`, `MPIF90`, `MPIRUN`: the compiler wrappers and launcher (default:
//!   from `PATH`).
//! - `KAWARIMI_TEST_TIMEOUT`: per-run timeout in seconds (default 120).
//! - `KAWARIMI_TEST_MPIRUN_ARGS`: extra arguments for `mpirun`, split on spaces.
//! - Any `KAWARIMI_*` variable set in the test's environment is forwarded to
//!   the ranks with `mpirun -x` in kawarimi mode.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Flags every C test program is compiled with.
pub const CFLAGS: &[&str] = &["-O2", "-Wall", "-Werror"];

/// Flags every Fortran test program is compiled with: `-cpp` for the `CHECK` macros of
/// `tests/fortran/check.h` (which expand `__FILE__`, hence no line length limit).
pub const FFLAGS: &[&str] = &["-O2", "-Wall", "-Werror", "-cpp", "-ffree-line-length-none"];

/// The language of a test program: where its sources are and how it is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// `tests/c/<name>.c` with `mpicc`; headers `*.h`.
    C,
    /// `tests/fortran/<name>.f90` with `mpif90`; headers (cpp includes) `*.h`.
    Fortran,
    /// `tests/armci/<name>.c` with `mpicc`, linked with Debian's ARMCI-MPI for Open MPI
    /// (`libarmci-mpi-dev`).
    Armci,
    /// `tests/coarray/<name>.f90` with OpenCoarrays' `caf` for Open MPI
    /// (`libcoarrays-openmpi-dev`).
    Coarray,
}

impl Lang {
    /// The folder holding the programs.
    pub fn source_dir(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(match self {
            Lang::C => "c",
            Lang::Fortran => "fortran",
            Lang::Armci => "armci",
            Lang::Coarray => "coarray",
        })
    }

    fn extension(self) -> &'static str {
        match self {
            Lang::C | Lang::Armci => "c",
            Lang::Fortran | Lang::Coarray => "f90",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Lang::C | Lang::Armci => CFLAGS,
            Lang::Fortran | Lang::Coarray => FFLAGS,
        }
    }

    /// What is linked after the program's source.
    fn libraries(self) -> &'static [&'static str] {
        match self {
            Lang::Armci => &["-larmci-openmpi"],
            _ => &[],
        }
    }

    fn is_fortran(self) -> bool {
        matches!(self, Lang::Fortran | Lang::Coarray)
    }

    fn compiler(self) -> Result<PathBuf, String> {
        match self {
            Lang::C => mpicc(),
            Lang::Fortran => mpif90(),
            Lang::Armci if !Path::new("/usr/include/armci.h").exists() => Err(format!(
                "/usr/include/armci.h is missing: run `{INSTALL_SCRIPT}` (Debian package libarmci-mpi-dev)"
            )),
            Lang::Armci => mpicc(),
            Lang::Coarray => find_in_path("caf.openmpi").ok_or_else(|| {
                format!(
                    "`caf.openmpi` not found in PATH: run `{INSTALL_SCRIPT}` (Debian package libcoarrays-openmpi-dev)"
                )
            }),
        }
    }

    /// The folder under the build folder that holds the binaries.
    fn build_subdir(self) -> &'static str {
        match self {
            Lang::C => "kawarimi-c-programs",
            Lang::Fortran => "kawarimi-fortran-programs",
            Lang::Armci => "kawarimi-armci-programs",
            Lang::Coarray => "kawarimi-coarray-programs",
        }
    }
}

/// The rank counts every program is run at.
pub const RANK_COUNTS: &[u32] = &[2, 3, 4];

/// Default timeout for one `mpirun`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The script that installs the system packages the tests need.
pub const INSTALL_SCRIPT: &str = "ci/install-deps";

/// How to run a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain Open MPI.
    Native,
    /// Open MPI's `mpirun` with kawarimi preloaded into every rank, every pair on TCP
    /// (`KAWARIMI_SHM=0`: shared memory is the default between ranks on one host).
    Kawarimi {
        /// Path of `libkawarimi.so`.
        lib: PathBuf,
    },
    /// As `Kawarimi`, with shared memory between the ranks (`KAWARIMI_SHM=1`) and each rank's
    /// report of what carried its data (`KAWARIMI_REPORT=1`), which the checks read.
    KawarimiShm {
        /// Path of `libkawarimi.so`.
        lib: PathBuf,
        /// How large payloads cross (`KAWARIMI_SHM_COPY`): `auto`, or `single` (for every
        /// payload, however small) or `two` forced.
        copy: &'static str,
    },
    /// `kawarimi run` (its own coordinator, then mpirun), with the ranks exchanging their
    /// addresses through that coordinator instead of PMIx (`KAWARIMI_WIREUP=coordinator`).
    KawarimiRun {
        /// Path of the `kawarimi` executable.
        cli: PathBuf,
    },
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Native => write!(f, "native"),
            Mode::Kawarimi { lib } => write!(f, "kawarimi ({})", lib.display()),
            Mode::KawarimiShm { lib, copy } => write!(f, "kawarimi, shared memory, copy {copy} ({})", lib.display()),
            Mode::KawarimiRun { cli } => write!(f, "kawarimi run, coordinator wire-up ({})", cli.display()),
        }
    }
}

/// The workspace root (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The folder holding the C test programs.
pub fn c_source_dir() -> PathBuf {
    Lang::C.source_dir()
}

/// `name` looked up in `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn find_tool(env_var: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os(env_var) {
        let p = PathBuf::from(&explicit);
        if p.is_file() {
            return Ok(p);
        }
        if let Some(found) = find_in_path(&explicit.to_string_lossy()) {
            return Ok(found);
        }
        return Err(format!(
            "{env_var}={} does not name an executable; unset it or run `{INSTALL_SCRIPT}` \
             to install Open MPI (Debian packages openmpi-bin, libopenmpi-dev)",
            p.display()
        ));
    }
    find_in_path(name).ok_or_else(|| {
        format!(
            "`{name}` not found in PATH: run `{INSTALL_SCRIPT}` to install Open MPI \
             (Debian packages openmpi-bin, libopenmpi-dev), or set {env_var}"
        )
    })
}

/// The `mpicc` to compile with (`$MPICC`, else from `PATH`).
pub fn mpicc() -> Result<PathBuf, String> {
    find_tool("MPICC", "mpicc")
}

/// The `mpif90` to compile Fortran with (`$MPIF90`, else from `PATH`; Debian's
/// package `libopenmpi-dev` with `gfortran` installed).
pub fn mpif90() -> Result<PathBuf, String> {
    find_tool("MPIF90", "mpif90")
}

/// The `mpirun` to launch with (`$MPIRUN`, else from `PATH`).
pub fn mpirun() -> Result<PathBuf, String> {
    find_tool("MPIRUN", "mpirun")
}

/// Where `libkawarimi.so` should be: `$KAWARIMI_LIB` if set, else
/// `$CARGO_TARGET_DIR/release/libkawarimi.so` if that variable is set and the
/// file exists, else `<workspace>/target/release/libkawarimi.so`.
pub fn kawarimi_lib_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KAWARIMI_LIB") {
        return PathBuf::from(p);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let p = PathBuf::from(t).join("release").join("libkawarimi.so");
        if p.is_file() {
            return p;
        }
    }
    workspace_root().join("target").join("release").join("libkawarimi.so")
}

/// The kawarimi library, or an error telling how to build it.
pub fn kawarimi_lib() -> Result<PathBuf, String> {
    let p = kawarimi_lib_path();
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "libkawarimi.so not found at {}: run `cargo build --release -p kawarimi-shim` \
             first (ci/test does this), or point KAWARIMI_LIB at the library",
            p.display()
        ))
    }
}

/// 64-bit FNV-1a, stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

static COMPILE_LOCK: Mutex<()> = Mutex::new(());
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Compiles `tests/c/<name>.c` into `build_dir` and returns the binary (see
/// [`compile_lang`]).
pub fn compile(name: &str, build_dir: &Path) -> Result<PathBuf, String> {
    compile_lang(Lang::C, name, build_dir)
}

/// Compiles `tests/fortran/<name>.f90` with `mpif90` into `build_dir` and returns the
/// binary (see [`compile_lang`]).
pub fn compile_fortran(name: &str, build_dir: &Path) -> Result<PathBuf, String> {
    compile_lang(Lang::Fortran, name, build_dir)
}

/// Compiles the program `name` of language `lang` into `build_dir` and returns the binary.
///
/// The binary's name carries a hash of the program's source, the shared
/// headers, the compiler path and the flags, so a program is compiled once
/// per content no matter how many test processes ask for it. Concurrent
/// compiles of the same program (nextest runs each test in its own process)
/// write to private temporary names and rename atomically, so a reader never
/// sees a partial binary.
pub fn compile_lang(lang: Lang, name: &str, build_dir: &Path) -> Result<PathBuf, String> {
    let cc = lang.compiler()?;
    let flags = lang.flags();
    let src_dir = lang.source_dir();
    let src = src_dir.join(format!("{name}.{}", lang.extension()));
    let source = fs::read(&src).map_err(|e| format!("cannot read {lang:?} program {}: {e}", src.display()))?;

    let mut hash = fnv1a(0xcbf2_9ce4_8422_2325, &source);
    let mut headers: Vec<PathBuf> = fs::read_dir(&src_dir)
        .map_err(|e| format!("cannot list {}: {e}", src_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "h"))
        .collect();
    headers.sort();
    for h in &headers {
        hash = fnv1a(hash, h.as_os_str().as_encoded_bytes());
        hash = fnv1a(hash, &fs::read(h).unwrap_or_default());
    }
    hash = fnv1a(hash, cc.as_os_str().as_encoded_bytes());
    for f in flags.iter().chain(lang.libraries()) {
        hash = fnv1a(hash, f.as_bytes());
    }

    let out_dir = build_dir.join(lang.build_subdir());
    fs::create_dir_all(&out_dir).map_err(|e| format!("cannot create build folder {}: {e}", out_dir.display()))?;
    let exe = out_dir.join(format!("{name}-{hash:016x}"));
    if exe.is_file() {
        return Ok(exe);
    }

    // One compile at a time per process: the machine is small.
    let _guard = COMPILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if exe.is_file() {
        return Ok(exe);
    }
    let tmp = out_dir.join(format!(
        ".{name}-{hash:016x}.tmp.{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    // gfortran writes the `.mod` files of a program's modules into the working folder:
    // give it a private one so that nothing lands in the source tree and concurrent
    // compiles never share one.
    let mut cmd = Command::new(&cc);
    let mod_dir = tmp.with_extension("mods");
    if lang.is_fortran() {
        fs::create_dir_all(&mod_dir).map_err(|e| format!("cannot create {}: {e}", mod_dir.display()))?;
        cmd.arg("-J").arg(&mod_dir);
    }
    let output = cmd
        .args(flags)
        .arg("-I")
        .arg(&src_dir)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .args(lang.libraries())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cc.display()));
    if lang.is_fortran() {
        let _ = fs::remove_dir_all(&mod_dir);
    }
    let output = output?;
    if !output.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "compiling {} with {} {} failed ({}):\n{}{}",
            src.display(),
            cc.display(),
            flags.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::rename(&tmp, &exe).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot move {} to {}: {e}", tmp.display(), exe.display())
    })?;
    Ok(exe)
}

/// What one `mpirun` did.
#[derive(Debug)]
pub struct RunOutput {
    /// The program's name (file stem without the hash).
    pub program: String,
    /// The mode it ran in.
    pub mode: Mode,
    /// The number of ranks.
    pub ranks: u32,
    /// The command line, for the report.
    pub command: String,
    /// `mpirun`'s exit status; `None` only when it could not be collected.
    pub status: Option<ExitStatus>,
    /// Whether the harness killed the job because it ran past the timeout.
    pub timed_out: bool,
    /// Wall time from spawn to exit (or to the kill on timeout).
    pub elapsed: Duration,
    /// Everything the job wrote to stdout.
    pub stdout: String,
    /// Everything the job wrote to stderr.
    pub stderr: String,
    /// Remarks from the harness (leftover processes it had to kill, ...).
    pub notes: Vec<String>,
}

impl RunOutput {
    /// Exit status 0 and not timed out.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A human-readable account of the run, output included.
    pub fn report(&self) -> String {
        fn tail(s: &str, max: usize) -> &str {
            if s.len() <= max {
                return s;
            }
            let mut start = s.len() - max;
            while !s.is_char_boundary(start) {
                start += 1;
            }
            &s[start..]
        }
        let status = match (self.timed_out, self.status) {
            (true, _) => {
                format!("TIMED OUT after {:.1} s (the harness killed the whole job)", self.elapsed.as_secs_f64())
            }
            (false, Some(s)) => format!("{s} after {:.1} s", self.elapsed.as_secs_f64()),
            (false, None) => "exit status unknown".to_string(),
        };
        let mut r = format!(
            "program `{}`, mode {}, {} ranks: {status}\ncommand: {}\n",
            self.program, self.mode, self.ranks, self.command
        );
        for n in &self.notes {
            r.push_str(&format!("note: {n}\n"));
        }
        r.push_str(&format!(
            "----- stdout -----\n{}\n----- stderr -----\n{}\n------------------",
            tail(&self.stdout, 16 * 1024),
            tail(&self.stderr, 16 * 1024)
        ));
        r
    }
}

/// The per-run timeout: `$KAWARIMI_TEST_TIMEOUT` seconds, else `default`.
pub fn timeout_or(default: Duration) -> Duration {
    std::env::var("KAWARIMI_TEST_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(default)
}

/// The `mpirun` command line (without the program) for `mode` and `ranks`.
pub fn mpirun_args(mode: &Mode, ranks: u32) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Mode::KawarimiRun { .. } = mode {
        args.push("run".into());
        args.push("-x".into());
        args.push("KAWARIMI_WIREUP=coordinator".into());
    }
    args.extend(["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np"].iter().map(OsString::from));
    args.push(ranks.to_string().into());
    if let Mode::Kawarimi { .. } = mode {
        // Shared memory is the default between ranks on one host: this mode is the TCP one.
        args.extend(["-x", "KAWARIMI_SHM=0"].iter().map(OsString::from));
    }
    if let Mode::KawarimiShm { copy, .. } = mode {
        args.extend(["-x", "KAWARIMI_SHM=1", "-x", "KAWARIMI_REPORT=1"].iter().map(OsString::from));
        args.extend(["-x".into(), format!("KAWARIMI_SHM_COPY={copy}").into()]);
        if *copy == "single" {
            args.extend(["-x", "KAWARIMI_SHM_SINGLE_COPY_MIN_BYTES=1"].iter().map(OsString::from));
        }
    }
    if let Mode::Kawarimi { lib } | Mode::KawarimiShm { lib, .. } = mode {
        let mut preload = OsString::from("LD_PRELOAD=");
        preload.push(lib.as_os_str());
        args.push("-x".into());
        args.push(preload);
        let mut forwarded: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("KAWARIMI_") && k != "KAWARIMI_LIB")
            .filter(|k| !k.starts_with("KAWARIMI_TEST_"))
            .collect();
        forwarded.sort();
        for k in forwarded {
            args.push("-x".into());
            args.push(k.into());
        }
    }
    if let Ok(extra) = std::env::var("KAWARIMI_TEST_MPIRUN_ARGS") {
        args.extend(extra.split_whitespace().map(OsString::from));
    }
    args
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// (pid, parent pid, session id) of every live (non-zombie) process in /proc.
fn process_table() -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp session ..."; comm may contain spaces
        // and parentheses, so parse after the last ')'.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        // zombies are dead already; only their parent can reap them
        if matches!(fields.next(), Some("Z" | "X" | "x")) {
            continue;
        }
        let ppid = fields.next().and_then(|s| s.parse().ok());
        let _pgrp = fields.next();
        let sid = fields.next().and_then(|s| s.parse().ok());
        if let (Some(ppid), Some(sid)) = (ppid, sid) {
            out.push((pid, ppid, sid));
        }
    }
    out
}

/// Every process that descends from `root` or belongs to session `session`
/// (ranks may be reparented to init when mpirun dies, but keep the session).
fn job_processes(root: u32, session: Option<u32>) -> Vec<u32> {
    let table = process_table();
    let mut set: HashSet<u32> = HashSet::new();
    set.insert(root);
    loop {
        let before = set.len();
        for &(pid, ppid, sid) in &table {
            if set.contains(&ppid) || session == Some(sid) {
                set.insert(pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    let me = std::process::id();
    let mut v: Vec<u32> = set.into_iter().filter(|&p| p != me && p > 1).collect();
    v.sort_unstable();
    v
}

/// The live (non-zombie) processes of session `sid`: a job started in a session of its own
/// keeps it in every process, even those re-parented to init when their launcher died.
pub fn session_processes(sid: u32) -> Vec<u32> {
    let me = std::process::id();
    let mut v: Vec<u32> =
        process_table().into_iter().filter(|&(p, _, s)| s == sid && p != me).map(|(p, _, _)| p).collect();
    v.sort_unstable();
    v
}

/// SIGKILL to every process in `pids` (cleaning up after a failed test).
pub fn kill_all(pids: &[u32]) {
    kill_pids("KILL", pids)
}

fn kill_pids(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .args(pids.iter().map(|p| p.to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills the whole job: mpirun, its descendants and everything in its session.
fn kill_job(child: &mut Child, session: Option<u32>) -> Vec<u32> {
    let pids = job_processes(child.id(), session);
    kill_pids("KILL", &pids);
    let _ = child.kill();
    pids
}

/// Runs an already-compiled program under `mpirun`.
///
/// mpirun is started in a session of its own (through `setsid` when it is
/// available) so that on timeout every process of the job can be found and
/// killed, including ranks that Open MPI put in process groups of their own
/// or that were orphaned.
pub fn run(exe: &Path, mode: &Mode, ranks: u32, timeout: Duration) -> RunOutput {
    run_in(exe, &[], None, mode, ranks, timeout)
}

/// [`run`] with arguments for the program and, when given, a working directory for the job.
pub fn run_in(
    exe: &Path,
    exe_args: &[&str],
    dir: Option<&Path>,
    mode: &Mode,
    ranks: u32,
    timeout: Duration,
) -> RunOutput {
    let program = exe
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .map(|f| match f.rsplit_once('-') {
            Some((stem, hash)) if hash.len() == 16 => stem.to_string(),
            _ => f,
        })
        .unwrap_or_default();
    let mut out = RunOutput {
        program,
        mode: mode.clone(),
        ranks,
        command: String::new(),
        status: None,
        timed_out: false,
        elapsed: Duration::ZERO,
        stdout: String::new(),
        stderr: String::new(),
        notes: Vec::new(),
    };
    let launcher = match (mode, mpirun()) {
        (Mode::KawarimiRun { cli }, _) => cli.clone(),
        (_, Ok(l)) => l,
        (_, Err(e)) => {
            out.notes.push(e);
            return out;
        }
    };
    let args = mpirun_args(mode, ranks);
    let setsid = find_in_path("setsid");
    let mut cmd = match &setsid {
        Some(s) => {
            // --wait: should setsid have to fork (it does when started as a
            // process group leader), it still waits and passes the status on.
            let mut c = Command::new(s);
            c.arg("--wait").arg(&launcher);
            c
        }
        None => {
            let mut c = Command::new(&launcher);
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            c
        }
    };
    cmd.args(&args).arg(exe).args(exe_args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    // The harness's own process must never carry kawarimi.
    cmd.env_remove("LD_PRELOAD");
    out.command = std::iter::once(launcher.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .chain(std::iter::once(exe.as_os_str()))
        .chain(exe_args.iter().map(std::ffi::OsStr::new))
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");

    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            out.notes.push(format!("cannot start {}: {e}", launcher.display()));
            return out;
        }
    };
    // With setsid (not a group leader, so it execs directly) mpirun's pid is
    // its session id.
    let session = setsid.as_ref().map(|_| child.id());
    let stdout_rx = child.stdout.take().map(spawn_reader);
    let stderr_rx = child.stderr.take().map(spawn_reader);

    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                out.status = Some(status);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                out.notes.push(format!("waiting for mpirun failed: {e}"));
                break;
            }
        }
        if start.elapsed() >= timeout {
            out.timed_out = true;
            // First ask mpirun to take its job down (it kills and reaps the
            // ranks), then kill whatever is left of the job.
            kill_pids("TERM", &[child.id()]);
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(2) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                thread::sleep(Duration::from_millis(25));
            }
            let killed = kill_job(&mut child, session);
            out.notes.push(format!(
                "timeout of {:.0} s reached: sent SIGTERM to mpirun, then SIGKILL to the job's \
                 remaining processes {killed:?}",
                timeout.as_secs_f64()
            ));
            out.status = child.wait().ok();
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    out.elapsed = start.elapsed();

    // Ranks that outlived mpirun would hold the pipes open (and waste CPU).
    if let Some(sid) = session {
        let left: Vec<u32> = job_processes(child.id(), Some(sid)).into_iter().filter(|&p| p != child.id()).collect();
        if !left.is_empty() {
            kill_pids("KILL", &left);
            out.notes.push(format!("processes still running after mpirun ended were killed: {left:?}"));
        }
    }

    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>, notes: &mut Vec<String>, what: &str| {
        rx.map(|rx| match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => {
                notes.push(format!("{what} was still open 10 s after the job ended"));
                String::new()
            }
        })
        .unwrap_or_default()
    };
    out.stdout = collect(stdout_rx, &mut out.notes, "stdout");
    out.stderr = collect(stderr_rx, &mut out.notes, "stderr");
    out
}

/// The mode the tests ask for, before the library is located.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeKind {
    /// Plain Open MPI.
    Native,
    /// kawarimi preloaded, every pair on TCP.
    Kawarimi,
    /// `kawarimi run` with coordinator wire-up.
    KawarimiRun,
    /// kawarimi preloaded, shared memory between the ranks.
    KawarimiShm,
    /// As `KawarimiShm`, every payload read by single copy from the sender's memory.
    KawarimiShmSingleCopy,
    /// As `KawarimiShm`, every payload through the rings (two copies).
    KawarimiShmTwoCopy,
}

/// Resolves a [`ModeKind`] into a [`Mode`], panicking with instructions when
/// the kawarimi library is missing (the kawarimi tests fail, never skip).
pub fn mode(kind: ModeKind) -> Mode {
    match kind {
        ModeKind::Native => Mode::Native,
        ModeKind::Kawarimi => match kawarimi_lib() {
            Ok(lib) => Mode::Kawarimi { lib },
            Err(e) => panic!("{e}"),
        },
        ModeKind::KawarimiShm | ModeKind::KawarimiShmSingleCopy | ModeKind::KawarimiShmTwoCopy => {
            let copy = match kind {
                ModeKind::KawarimiShmSingleCopy => "single",
                ModeKind::KawarimiShmTwoCopy => "two",
                _ => "auto",
            };
            match kawarimi_lib() {
                Ok(lib) => Mode::KawarimiShm { lib, copy },
                Err(e) => panic!("{e}"),
            }
        }
        ModeKind::KawarimiRun => match kawarimi_lib() {
            Ok(lib) => {
                let cli = lib.with_file_name("kawarimi");
                assert!(
                    cli.exists(),
                    "{} not found: run `cargo build --release -p kawarimi-hooks` first",
                    cli.display()
                );
                Mode::KawarimiRun { cli }
            }
            Err(e) => panic!("{e}"),
        },
    }
}

/// Compiles the C program `name` into `build_dir`, panicking with the compiler
/// output on failure.
pub fn compiled(name: &str, build_dir: &Path) -> PathBuf {
    compiled_lang(Lang::C, name, build_dir)
}

/// Compiles the program `name` of language `lang` into `build_dir`, panicking
/// with the compiler output on failure.
pub fn compiled_lang(lang: Lang, name: &str, build_dir: &Path) -> PathBuf {
    match compile_lang(lang, name, build_dir) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The ranks of a job of `ranks` whose `KAWARIMI_REPORT` line in `output` does not show
/// every peer carried by shared memory (`kawarimi: rank R: ran shm:N,`, N the other ranks).
pub fn ranks_not_on_shm(output: &str, ranks: u32) -> Vec<u32> {
    (0..ranks)
        .filter(|r| {
            let line = format!("kawarimi: rank {r}: ran shm:{},", ranks - 1);
            !output.lines().any(|l| l.starts_with(&line))
        })
        .collect()
}

/// Runs the self-checking C program `name` at every count in [`RANK_COUNTS`]
/// and panics, with the full output, unless each run exits 0 and prints
/// `OK <name>`.
pub fn check_program(name: &str, kind: ModeKind, build_dir: &Path) {
    check_program_lang(Lang::C, name, kind, build_dir)
}

/// [`check_program`] for a program of language `lang`.
pub fn check_program_lang(lang: Lang, name: &str, kind: ModeKind, build_dir: &Path) {
    let mode = mode(kind);
    let exe = compiled_lang(lang, name, build_dir);
    let timeout = timeout_or(DEFAULT_TIMEOUT);
    let mut failures = Vec::new();
    for &ranks in RANK_COUNTS {
        let out = run(&exe, &mode, ranks, timeout);
        let ok_line = format!("OK {name}");
        let printed_ok = out.stdout.lines().any(|l| l.trim_end() == ok_line);
        let carried = match mode {
            Mode::KawarimiShm { .. } => ranks_not_on_shm(&out.combined(), ranks),
            _ => Vec::new(),
        };
        if out.success() && printed_ok && carried.is_empty() {
            eprintln!("{name} [{}] {ranks} ranks: ok in {:.2} s", mode, out.elapsed.as_secs_f64());
        } else {
            let why = if out.timed_out {
                "timed out".to_string()
            } else if !out.success() {
                "non-zero exit".to_string()
            } else if !carried.is_empty() {
                format!("ranks {carried:?} did not report every peer on shared memory (`ran shm:{}`)", ranks - 1)
            } else {
                format!("exit 0 but no `{ok_line}` line on stdout")
            };
            failures.push(format!("FAILED ({why}): {}", out.report()));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} runs of `{name}` failed in mode {mode}:\n\n{}",
            failures.len(),
            RANK_COUNTS.len(),
            failures.join("\n\n")
        );
    }
}

/// Whether `text` has a line that mentions `rank <n>` as a whole number
/// (`rank 3` but not `rank 30`).
pub fn names_rank(text: &str, n: u32) -> bool {
    let needle = format!("rank {n}");
    text.lines().any(|line| {
        line.match_indices(&needle)
            .any(|(i, m)| !line[i + m.len()..].chars().next().is_some_and(|c| c.is_ascii_digit()))
    })
}

/// The kill test: `abort_rank` at `ranks` ranks, where the last rank
/// SIGKILLs itself after about a second. The job must end by itself within
/// `bound`, with a non-zero status; in kawarimi mode the output must also
/// name the dead rank.
pub fn check_abort_rank(kind: ModeKind, build_dir: &Path, ranks: u32, bound: Duration) {
    let mode = mode(kind);
    let exe = compiled("abort_rank", build_dir);
    // Give the harness's own kill some slack past the bound so that a hang
    // is reported as "did not end within the bound" with the output so far.
    let out = run(&exe, &mode, ranks, bound + Duration::from_secs(15));
    let mut problems = Vec::new();
    if out.timed_out || out.elapsed >= bound {
        problems.push(format!("the job did not end within {:.0} s after rank {} died", bound.as_secs_f64(), ranks - 1));
    }
    if out.status.is_some_and(|s| s.success()) {
        problems.push("the job exited with status 0".to_string());
    }
    if out.status.is_none() && !out.timed_out {
        problems.push("no exit status".to_string());
    }
    if kind != ModeKind::Native && !names_rank(&out.combined(), ranks - 1) {
        problems.push(format!("the output does not name the dead rank (no line containing `rank {}`)", ranks - 1));
    }
    if !problems.is_empty() {
        panic!("abort_rank in mode {mode}: {}\n{}", problems.join("; "), out.report());
    }
    eprintln!("abort_rank [{mode}] {ranks} ranks: ended in {:.2} s with {:?}", out.elapsed.as_secs_f64(), out.status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rank_matches_whole_numbers() {
        assert!(names_rank("kawarimi: rank 3 (pid 12, host h) died", 3));
        assert!(names_rank("x\nprocess rank 3 with PID 0", 3));
        assert!(!names_rank("rank 30 died", 3));
        assert!(!names_rank("rank 2 died", 3));
        assert!(names_rank("rank 30 and rank 3.", 3));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(0xcbf2_9ce4_8422_2325, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn mpirun_args_preload_only_in_kawarimi_mode() {
        let native = mpirun_args(&Mode::Native, 3);
        assert!(!native.iter().any(|a| a.to_string_lossy().contains("LD_PRELOAD")));
        let k = mpirun_args(&Mode::Kawarimi { lib: PathBuf::from("/x/libkawarimi.so") }, 4);
        assert!(k.iter().any(|a| a.to_string_lossy() == "LD_PRELOAD=/x/libkawarimi.so"));
        let np = k.iter().position(|a| a == "-np").expect("-np");
        assert_eq!(k[np + 1], "4");
    }
}

pub mod job {
    //! A job started with `kawarimi run --job-name NAME`, for the tests that switch jobs:
    //! its output captured, its coordinator found through its job file, and stopped (so never
    //! left running, or quiesced, by a test that fails half-way).

    use std::ffi::OsStr;
    use std::io::Read;
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::thread;
    use std::time::{Duration, Instant};

    use kawarimi_control::client::CtlClient;
    use kawarimi_control::jobfile::JobFile;
    use kawarimi_control::proto::Reply;
    use kawarimi_transports::auth::JobSecret;

    use crate::kawarimi_lib;

    /// The `kawarimi` executable next to the `libkawarimi.so` under test.
    pub fn cli() -> std::path::PathBuf {
        let lib = kawarimi_lib().unwrap_or_else(|e| panic!("{e}"));
        let cli = lib.with_file_name("kawarimi");
        assert!(cli.exists(), "{} missing: cargo build --release -p kawarimi-hooks", cli.display());
        cli
    }

    fn capture<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    }

    pub struct KawarimiJob {
        pub name: String,
        child: Child,
        out: Option<thread::JoinHandle<String>>,
        err: Option<thread::JoinHandle<String>>,
    }

    impl KawarimiJob {
        /// Starts `kawarimi run --job-name <name> <args…>`; `configure` may set the
        /// environment of `kawarimi run` (and so of mpirun and the ranks).
        pub fn start<S: AsRef<OsStr>>(name: &str, args: &[S], configure: impl FnOnce(&mut Command)) -> KawarimiJob {
            let mut cmd = Command::new(cli());
            cmd.args(["run", "--job-name", name]).args(args).env_remove("LD_PRELOAD");
            configure(&mut cmd);
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start kawarimi run");
            let out = Some(capture(child.stdout.take().expect("piped")));
            let err = Some(capture(child.stderr.take().expect("piped")));
            KawarimiJob { name: name.to_string(), child, out, err }
        }

        /// The pid of `kawarimi run`, which hosts the coordinator.
        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Waits until `ranks` ranks are up with their control threads subscribed; returns a
        /// control client, the ranks' pids by rank, and the coordinator's address.
        pub fn ready(&mut self, ranks: u32, bound: Duration) -> (CtlClient, Vec<u32>, SocketAddr) {
            let deadline = Instant::now() + bound;
            loop {
                if let Ok(jf) = JobFile::find(Some(&self.name)) {
                    let secret = JobSecret::from_hex(&jf.secret).expect("job file secret");
                    if let Ok(mut c) = CtlClient::connect(jf.coordinator, &secret, Duration::from_secs(10)) {
                        if let Ok(st) = c.status() {
                            if st.ranks.len() as u32 == ranks && st.ranks.iter().all(|r| r.subscribed) {
                                let mut rs = st.ranks.clone();
                                rs.sort_by_key(|r| r.rank);
                                return (c, rs.iter().map(|r| r.pid).collect(), jf.coordinator);
                            }
                        }
                    }
                }
                if let Ok(Some(s)) = self.child.try_wait() {
                    let (out, err) = self.output();
                    panic!("job {} ended ({s}) before every rank was up\nstdout:\n{out}\nstderr:\n{err}", self.name);
                }
                assert!(Instant::now() < deadline, "job {} did not come up within {bound:?}", self.name);
                thread::sleep(Duration::from_millis(20));
            }
        }

        /// Everything the job printed so far (once it has ended: all of it).
        pub fn output(&mut self) -> (String, String) {
            let out = self.out.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
            let err = self.err.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
            (out, err)
        }

        /// SIGTERM to `kawarimi run` (it forwards it to mpirun), then SIGKILL after 10 s.
        pub fn stop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                    thread::sleep(Duration::from_millis(50));
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }

        /// Waits for the job to end (stopping it after `bound`, which fails the test);
        /// returns whether it succeeded and what it printed.
        pub fn finish(&mut self, bound: Duration) -> (bool, String, String) {
            let deadline = Instant::now() + bound;
            let status = loop {
                if let Some(s) = self.child.try_wait().expect("wait for kawarimi run") {
                    break Some(s);
                }
                if Instant::now() > deadline {
                    self.stop();
                    break None;
                }
                thread::sleep(Duration::from_millis(50));
            };
            let (out, err) = self.output();
            assert!(status.is_some(), "job {} did not end within {bound:?}\nstdout:\n{out}\nstderr:\n{err}", self.name);
            (status.is_some_and(|s| s.success()), out, err)
        }
    }

    /// One live switch without moving anything: quiesce (the job answers "safe to unplug"),
    /// then resume; panics naming `what` otherwise. Returns the epoch the job resumed in.
    pub fn switch_once(c: &mut CtlClient, what: &str) -> u32 {
        match c.quiesce(Duration::from_secs(30)) {
            Ok(Reply::SafeToUnplug { .. }) => {}
            other => panic!("quiesce ({what}): {other:?}"),
        }
        match c.resume(Duration::from_secs(30), None) {
            Ok(Reply::Resumed { epoch, .. }) => epoch,
            other => panic!("resume ({what}): {other:?}"),
        }
    }

    impl Drop for KawarimiJob {
        fn drop(&mut self) {
            self.stop();
        }
    }
}

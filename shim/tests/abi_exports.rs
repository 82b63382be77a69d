//! The shim's ABI surface against the installed Open MPI:
//! (a) `ompi-4.1-exports.txt` is what `ci/gen-ompi-exports` derives from libmpi.so;
//! (b) the built `libkawarimi.so` exports every listed name as `MPI_X` and `PMPI_X`;
//! (c) the predefined handle tables: distinct addresses, every libmpi handle object
//!     covered, element sizes equal to Open MPI's `MPI_Type_size`, Fortran handles equal to
//!     Open MPI's `MPI_*_c2f` (the last two by compiling and running a C program with
//!     `mpicc` under `mpirun -np 1`).
//!
//! Open MPI is installed in CI by ci/install-deps; when it is absent the tests say so and
//! pass, except with `CI=true`, where its absence is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use kawarimi::abi::*;

const DEFAULT_LIBMPI: &str = "/usr/lib/x86_64-linux-gnu/libmpi.so.40";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns false (after printing why) when Open MPI is not installed; panics under CI.
fn require(what: &str, present: bool) -> bool {
    if !present {
        assert!(!in_ci(), "{what} is required under CI (ci/install-deps installs it)");
        eprintln!("SKIP: {what} is not installed");
    }
    present
}

fn libmpi() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("KAWARIMI_LIBMPI").unwrap_or_else(|_| DEFAULT_LIBMPI.to_string()));
    p.is_file().then_some(p)
}

fn nm_defined_functions(lib: &Path) -> BTreeSet<String> {
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(lib).output().expect("run nm (binutils)");
    assert!(out.status.success(), "nm -D {} failed", lib.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && (f[1] == "T" || f[1] == "W")).then(|| f[2].to_string())
        })
        .collect()
}

fn export_list() -> Vec<String> {
    let text = std::fs::read_to_string(manifest_dir().join("ompi-4.1-exports.txt")).expect("read ompi-4.1-exports.txt");
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

#[test]
fn a_export_list_matches_installed_libmpi() {
    let Some(lib) = libmpi() else {
        require("libmpi.so.40 (Open MPI 4.1)", false);
        return;
    };
    let script = manifest_dir().join("../ci/gen-ompi-exports");
    let out = Command::new("bash").arg(&script).arg(&lib).arg("-").output().expect("run ci/gen-ompi-exports");
    assert!(out.status.success(), "ci/gen-ompi-exports failed: {}", String::from_utf8_lossy(&out.stderr));
    let committed = std::fs::read_to_string(manifest_dir().join("ompi-4.1-exports.txt")).expect("read list");
    let fresh = String::from_utf8(out.stdout).expect("utf-8");
    if fresh != committed {
        let a: BTreeSet<&str> = committed.lines().collect();
        let b: BTreeSet<&str> = fresh.lines().collect();
        panic!(
            "shim/ompi-4.1-exports.txt is stale; run ci/gen-ompi-exports.\n only in committed: {:?}\n only in fresh: {:?}",
            a.difference(&b).collect::<Vec<_>>(),
            b.difference(&a).collect::<Vec<_>>()
        );
    }
    let n = export_list().len();
    assert!(n > 400, "suspiciously short export list ({n})");
}

/// `target/<profile>/libkawarimi.so` (or the copy in `deps/`, next to this test binary,
/// which cargo builds together with the rlib the test links).
fn built_cdylib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    let mut candidates = vec![];
    if deps.file_name().is_some_and(|n| n == "deps") {
        candidates.push(deps.parent().expect("profile dir").join("libkawarimi.so"));
    }
    candidates.push(deps.join("libkawarimi.so"));
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| candidates[0].clone())
}

#[test]
fn b_cdylib_exports_every_listed_name_twice() {
    let so = built_cdylib();
    assert!(
        so.is_file(),
        "{} is missing: build the shared library first (cargo build -p kawarimi-shim, with the same profile and target dir)",
        so.display()
    );
    let syms = nm_defined_functions(&so);
    let mut missing = Vec::new();
    for name in export_list() {
        let p = format!("P{name}");
        for s in [&name, &p] {
            if !syms.contains(s.as_str()) {
                missing.push(s.clone());
            }
        }
    }
    assert!(missing.is_empty(), "{} does not export {} names: {missing:?}", so.display(), missing.len());
}

#[test]
fn c_predefined_datatypes_are_distinct_and_non_null() {
    let p = predefined();
    let mut seen = BTreeMap::new();
    for &d in PredefDatatype::ALL {
        let a = p.datatype_handle(d);
        assert_ne!(a, 0, "{d:?} has a null address");
        if let Some(prev) = seen.insert(a, d) {
            panic!("{d:?} and {prev:?} share address {a:#x}");
        }
        assert_eq!(p.datatype(a), Some(d));
    }
    // Handles of all kinds are distinct objects too.
    let mut all = BTreeSet::new();
    let mut count = 0;
    for &d in PredefDatatype::ALL {
        all.insert(p.datatype_handle(d));
        count += 1;
    }
    for &o in PredefOp::ALL {
        all.insert(p.op_handle(o));
        count += 1;
    }
    for &c in PredefComm::ALL {
        all.insert(p.comm_handle(c));
        count += 1;
    }
    for &g in PredefGroup::ALL {
        all.insert(p.group_handle(g));
        count += 1;
    }
    for &e in PredefErrhandler::ALL {
        all.insert(p.errhandler_handle(e));
        count += 1;
    }
    for &i in PredefInfo::ALL {
        all.insert(p.info_handle(i));
        count += 1;
    }
    for &m in PredefMessage::ALL {
        all.insert(p.message_handle(m));
        count += 1;
    }
    all.insert(p.request_null());
    all.insert(p.win_handle(PredefWin::WinNull));
    all.insert(p.file_handle(PredefFile::FileNull));
    count += 3;
    assert_eq!(all.len(), count, "two predefined handles share an address");
}

/// The `ompi_mpi_*` data objects of libmpi that are not predefined handles.
const NOT_HANDLES: &[&str] = &[
    "ompi_mpi_comm_parent", // a pointer variable (MPI_Comm_get_parent's answer)
    "ompi_mpi_communicators",
    "ompi_mpi_windows",
    "ompi_mpi_dynamics_enabled",
    "ompi_mpi_errcode_lastpredefined",
    "ompi_mpi_errcode_lastused",
    "ompi_mpi_errcode_t_class",
    "ompi_mpi_errcodes",
    "ompi_mpi_event_tick_rate",
    "ompi_mpi_external32_convertor",
    "ompi_mpi_local_convertor",
    "ompi_mpi_f90_complex_hashtable",
    "ompi_mpi_f90_integer_hashtable",
    "ompi_mpi_f90_real_hashtable",
    "ompi_mpi_file_bootstrap_mutex",
    "ompi_mpi_ompio_bootstrap_mutex",
    "ompi_mpi_have_sparse_group_storage",
    "ompi_mpi_keep_fqdn_hostnames",
    "ompi_mpi_main_thread",
    "ompi_mpi_param_check",
    "ompi_mpi_preconnect_mpi",
    "ompi_mpi_show_mca_params",
    "ompi_mpi_show_mca_params_file",
    "ompi_mpi_show_mca_params_string",
    "ompi_mpi_spc_attach_string",
    "ompi_mpi_spc_dump_enabled",
    "ompi_mpi_state",
    "ompi_mpi_thread_multiple",
    "ompi_mpi_thread_provided",
    "ompi_mpi_thread_requested",
    "ompi_mpi_yield_when_idle",
];

fn all_symbols() -> BTreeSet<&'static str> {
    let mut s = BTreeSet::new();
    s.extend(PredefDatatype::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefOp::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefComm::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefGroup::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefRequest::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefErrhandler::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefInfo::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefWin::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefFile::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefMessage::ALL.iter().map(|v| v.symbol()));
    s.extend(PredefCallback::ALL.iter().map(|v| v.symbol()));
    s
}

#[test]
fn c_every_libmpi_handle_object_is_covered() {
    let Some(lib) = libmpi() else {
        require("libmpi.so.40 (Open MPI 4.1)", false);
        return;
    };
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(&lib).output().expect("run nm");
    let ours = all_symbols();
    let mut missing = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 3 || !(f[1] == "D" || f[1] == "B") {
            continue;
        }
        let s = f[2];
        let handle_like = s.starts_with("ompi_mpi_")
            || ["ompi_request_null", "ompi_message_null", "ompi_message_no_proc"].contains(&s);
        // `*_addr`: pointers to the objects kept for the Fortran/C++ bindings.
        if handle_like && !s.ends_with("_addr") && !NOT_HANDLES.contains(&s) && !ours.contains(s) {
            missing.push(s.to_string());
        }
    }
    assert!(missing.is_empty(), "predefined objects of libmpi missing from build.rs PREDEF: {missing:?}");
}

/// Kinds whose predefined objects have an `MPI_<Kind>_c2f`: (C struct type, C handle type,
/// c2f function, symbols with our Fortran value).
type KindRows = Vec<(&'static str, &'static str, &'static str, Vec<(&'static str, Option<i32>)>)>;

fn kinds() -> KindRows {
    macro_rules! rows {
        ($ty:ident) => {
            $ty::ALL.iter().map(|v| (v.symbol(), v.fortran_handle())).collect::<Vec<_>>()
        };
    }
    vec![
        ("ompi_predefined_datatype_t", "MPI_Datatype", "PMPI_Type_c2f", rows!(PredefDatatype)),
        ("ompi_predefined_op_t", "MPI_Op", "PMPI_Op_c2f", rows!(PredefOp)),
        ("ompi_predefined_communicator_t", "MPI_Comm", "PMPI_Comm_c2f", rows!(PredefComm)),
        ("ompi_predefined_group_t", "MPI_Group", "PMPI_Group_c2f", rows!(PredefGroup)),
        ("ompi_predefined_request_t", "MPI_Request", "PMPI_Request_c2f", rows!(PredefRequest)),
        ("ompi_predefined_errhandler_t", "MPI_Errhandler", "PMPI_Errhandler_c2f", rows!(PredefErrhandler)),
        ("ompi_predefined_info_t", "MPI_Info", "PMPI_Info_c2f", rows!(PredefInfo)),
        ("ompi_predefined_win_t", "MPI_Win", "PMPI_Win_c2f", rows!(PredefWin)),
        ("ompi_predefined_file_t", "MPI_File", "PMPI_File_c2f", rows!(PredefFile)),
        ("ompi_predefined_message_t", "MPI_Message", "PMPI_Message_c2f", rows!(PredefMessage)),
    ]
}

/// Per symbol: the Fortran handle Open MPI's c2f gives, and for datatypes
/// (`MPI_Type_size`, extent).
type Report = BTreeMap<String, (i32, Option<(i64, i64)>)>;

/// Compiles and runs (under `mpirun -np 1`) a program printing, for every predefined object,
/// `symbol c2f [size extent]`. Returns None when Open MPI's tools are absent.
fn open_mpi_report() -> Option<Report> {
    let have_mpicc = Command::new("mpicc").arg("--showme:version").output().is_ok_and(|o| o.status.success());
    if !require("mpicc (Open MPI development files)", have_mpicc) {
        return None;
    }
    let mut c = String::from("#include <stdio.h>\n#include <mpi.h>\n");
    let kinds = kinds();
    for (cty, _, _, rows) in &kinds {
        for (sym, _) in rows {
            let _ = writeln!(c, "extern struct {cty} {sym};");
        }
    }
    c.push_str(
        "int main(int argc, char **argv) {\n    int size;\n    MPI_Aint lb, extent;\n    MPI_Init(&argc, &argv);\n",
    );
    // MPI_Type_size(MPI_DATATYPE_NULL) is an error: report it instead of aborting.
    c.push_str("    PMPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);\n");
    for (_, hty, c2f, rows) in &kinds {
        for (sym, _) in rows {
            if *hty == "MPI_Datatype" {
                let _ = writeln!(
                    c,
                    "    if (PMPI_Type_size(({hty})&{sym}, &size) != MPI_SUCCESS) size = -1;\n    if (PMPI_Type_get_extent(({hty})&{sym}, &lb, &extent) != MPI_SUCCESS) extent = -1;\n    printf(\"%s %d %d %ld\\n\", \"{sym}\", (int){c2f}(({hty})&{sym}), size, (long)extent);"
                );
            } else {
                let _ = writeln!(c, "    printf(\"%s %d\\n\", \"{sym}\", (int){c2f}(({hty})&{sym}));");
            }
        }
    }
    c.push_str("    MPI_Finalize();\n    return 0;\n}\n");

    let dir = std::env::temp_dir().join(format!("kawarimi-abi-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("predef_report.c");
    let exe = dir.join("predef_report");
    std::fs::write(&src, c).expect("write C source");
    let cc = Command::new("mpicc").arg(&src).arg("-o").arg(&exe).output().expect("run mpicc");
    assert!(cc.status.success(), "mpicc failed:\n{}", String::from_utf8_lossy(&cc.stderr));
    let run = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "1"])
        .arg(&exe)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("LD_PRELOAD")
        .output()
        .expect("run mpirun");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success(), "mpirun -np 1 failed:\n{}", String::from_utf8_lossy(&run.stderr));
    let mut m = BTreeMap::new();
    for l in String::from_utf8_lossy(&run.stdout).lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 2 {
            let size =
                (f.len() == 4).then(|| (f[2].parse::<i64>().expect("size"), f[3].parse::<i64>().expect("extent")));
            m.insert(f[0].to_string(), (f[1].parse::<i32>().expect("c2f"), size));
        }
    }
    Some(m)
}

#[test]
fn c_sizes_and_fortran_handles_match_open_mpi() {
    let Some(report) = open_mpi_report() else {
        return;
    };
    let mut errors = Vec::new();
    for (_, _, _, rows) in kinds() {
        for (sym, ours) in rows {
            let Some(&(c2f, _)) = report.get(sym) else {
                errors.push(format!("{sym}: not in the C program's output"));
                continue;
            };
            if let Some(f) = ours {
                if f != c2f {
                    errors.push(format!("{sym}: Fortran handle {f} from mpif-handles.h, Open MPI's c2f says {c2f}"));
                }
            }
        }
    }
    for &d in PredefDatatype::ALL {
        let Some(&(_, Some((ompi, extent)))) = report.get(d.symbol()) else {
            continue;
        };
        match d.layout() {
            PredefLayout::Prim(p) => {
                // Primitive::packed_size is the data size (MPI_Type_size: 12 for MPI_DOUBLE_INT),
                // Primitive::size the C object with padding (the extent: 16).
                if p.packed_size() as i64 != ompi {
                    errors.push(format!(
                        "{} ({d:?}): {p:?} packs {} bytes, MPI_Type_size says {ompi}",
                        d.mpi_name(),
                        p.packed_size()
                    ));
                }
                if p.size() as i64 != extent {
                    errors.push(format!(
                        "{} ({d:?}): {p:?} is {} bytes, MPI_Type_get_extent says {extent}",
                        d.mpi_name(),
                        p.size()
                    ));
                }
            }
            PredefLayout::Special(SpecialDatatype::Lb | SpecialDatatype::Ub) => {
                if ompi != 0 {
                    errors.push(format!("{}: MPI_Type_size {ompi}, expected 0", d.mpi_name()));
                }
            }
            PredefLayout::Special(_) => {}
        }
    }
    assert!(errors.is_empty(), "{} mismatches:\n{}", errors.len(), errors.join("\n"));
}

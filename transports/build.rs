//! Compiles `csrc/pmix_glue.c` against Debian's libpmix (pkg-config `pmix`, falling back to the
//! known Debian include directory). libpmix is linked normally: Debian's Open MPI depends on
//! it anyway, so every machine that can run `mpirun` has it. On a machine without the PMIx
//! headers the crate still builds, with the `kw_no_pmix` cfg: `Pmix::init()` then reports that
//! this build has no PMIx support.

use std::path::{Path, PathBuf};
use std::process::Command;

fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config").args(args).arg("pmix").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kw_no_pmix)");
    println!("cargo::rerun-if-changed=csrc/pmix_glue.c");
    println!("cargo::rerun-if-changed=build.rs");

    let mut includes: Vec<PathBuf> = Vec::new();
    let mut lib_dirs: Vec<PathBuf> = Vec::new();
    if let Some(cflags) = pkg_config(&["--cflags"]) {
        includes.extend(cflags.split_whitespace().filter_map(|f| f.strip_prefix("-I")).map(PathBuf::from));
    }
    if let Some(libs) = pkg_config(&["--libs"]) {
        lib_dirs.extend(libs.split_whitespace().filter_map(|f| f.strip_prefix("-L")).map(PathBuf::from));
    }
    for fallback in ["/usr/lib/x86_64-linux-gnu/pmix2/include", "/usr/include/pmix", "/usr/include"] {
        includes.push(PathBuf::from(fallback));
    }
    let have_header = includes.iter().any(|d| Path::new(d).join("pmix.h").exists());
    if !have_header {
        println!("cargo::warning=pmix.h not found: building kawarimi-transports without PMIx support");
        println!("cargo::rustc-cfg=kw_no_pmix");
        return;
    }
    let mut build = cc::Build::new();
    build.file("csrc/pmix_glue.c").warnings(true);
    for inc in &includes {
        if inc.exists() {
            build.include(inc);
        }
    }
    build.compile("kw_pmix_glue");
    for dir in &lib_dirs {
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
    println!("cargo::rustc-link-lib=dylib=pmix");
}

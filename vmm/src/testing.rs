//! For tests (here and in the `kawarimi` CLI's): a real QEMU (Debian's `qemu-system-x86_64`,
//! installed by `ci/install-deps`), started paused with no guest, serving QMP on a socket of
//! its own. Not part of the API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A QEMU with no machine, paused, serving QMP on a socket of its own; killed when dropped.
pub struct Qemu {
    child: Child,
    /// Its own directory (its QMP socket is there), removed when it is dropped.
    pub dir: PathBuf,
}

impl Qemu {
    pub fn start(name: &str) -> Qemu {
        Qemu::start_with(name, &["-machine", "none"])
    }

    /// A paused QEMU with `args` besides the defaults (a machine, devices, `-incoming`).
    pub fn start_with(name: &str, args: &[&str]) -> Qemu {
        let dir = std::env::temp_dir().join(format!("kawarimi-vmm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("qemu-system-x86_64")
            .args(args)
            .args(["-nodefaults", "-display", "none", "-S", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (ci/install-deps installs it)");
        Qemu { child, dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// Kills the QEMU now (a VM that goes away in the middle of a session).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

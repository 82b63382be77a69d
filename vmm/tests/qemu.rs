//! The QMP client against a real QEMU (Debian's `qemu-system-x86_64`, installed by
//! `ci/install-deps`), started with no machine and paused: the greeting and negotiation,
//! typed commands, an event that comes before its command's reply and is kept for the wait,
//! an error reply, and a QEMU that goes away in the middle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kawarimi_vmm::client::{ClientError, QmpClient};
use kawarimi_vmm::plan::Plan;
use kawarimi_vmm::qmp::{CommandFailed, ReplyError};

const T: Duration = Duration::from_secs(20);

/// A QEMU with no machine, paused, serving QMP on a socket of its own; killed when dropped.
struct Qemu {
    child: Child,
    dir: PathBuf,
}

impl Qemu {
    fn start(name: &str) -> Qemu {
        Qemu::start_with(name, &["-machine", "none"])
    }

    /// A paused QEMU with `args` besides the defaults (a machine, devices, `-incoming`).
    fn start_with(name: &str, args: &[&str]) -> Qemu {
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

    fn socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn commands_events_and_errors_against_a_real_qemu() {
    let qemu = Qemu::start("session");
    let mut c = QmpClient::connect(&qemu.socket(), T).unwrap();
    let g = c.greeting().clone();
    assert!(g.version.0 >= 7, "QEMU {:?}", g.version);
    let v = c.execute(&qapi_qmp::query_version {}, T).unwrap();
    assert_eq!((v.qemu.major as u64, v.qemu.minor as u64, v.qemu.micro as u64), g.version);

    let status = c.execute(&qapi_qmp::query_status {}, T).unwrap();
    assert_eq!((status.status, status.running), (qapi_qmp::RunState::prelaunch, false));
    // QEMU sends RESUME before the reply to `cont`: the client keeps it for the wait.
    c.execute(&qapi_qmp::cont {}, T).unwrap();
    let resume = c.wait_event(|e| e.name == "RESUME", "RESUME", T).unwrap();
    assert!(matches!(resume.typed(), Some(qapi_qmp::Event::RESUME { .. })));
    assert!(c.execute(&qapi_qmp::query_status {}, T).unwrap().running);
    c.execute(&qapi_qmp::stop {}, T).unwrap();
    c.wait_event(|e| e.name == "STOP", "STOP", T).unwrap();

    let refused = c.execute(&qapi_qmp::device_del { id: "no-such-hca".into() }, T).unwrap_err();
    let ClientError::Command { source: CommandFailed::Refused { error: ReplyError::Qmp(e), .. }, .. } = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(e.class, "DeviceNotFound", "{refused}");
    assert!(refused.to_string().contains("device_del") && refused.to_string().contains("no-such-hca"), "{refused}");

    // An event nobody waits for yet does not stop the next command.
    c.execute(&qapi_qmp::cont {}, T).unwrap();
    let status = c.execute(&qapi_qmp::query_status {}, T).unwrap();
    assert!(status.running);
    assert!(c.take_events().iter().any(|e| e.name == "RESUME"));

    // No event that never comes is waited for longer than asked.
    let t0 = std::time::Instant::now();
    let e = c.wait_event(|e| e.name == "DEVICE_DELETED", "DEVICE_DELETED", Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, ClientError::TimedOut { .. }) && t0.elapsed() < Duration::from_secs(5), "{e:?}");
}

#[test]
fn a_qemu_that_goes_away_fails_the_call_and_a_missing_socket_is_named() {
    let mut qemu = Qemu::start("gone");
    let mut c = QmpClient::connect(&qemu.socket(), T).unwrap();
    qemu.child.kill().unwrap();
    qemu.child.wait().unwrap();
    let e = c.execute(&qapi_qmp::query_status {}, T).unwrap_err();
    assert!(matches!(e, ClientError::Protocol { .. } | ClientError::Io { .. }), "{e:?}");

    let missing = Path::new("/nonexistent/kawarimi/qmp.sock");
    let e = QmpClient::connect(missing, Duration::from_millis(200)).err().expect("no socket");
    assert!(
        matches!(e, ClientError::Connect { .. }) && e.to_string().contains("/nonexistent/kawarimi/qmp.sock"),
        "{e}"
    );
}

/// A plan is checked against the live VMs before anything is touched: the devices it unplugs
/// must be in the source VM, and the destination must wait for a migration.
#[test]
fn a_plan_is_checked_against_the_live_vms() {
    let src = Qemu::start_with("plan-src", &["-machine", "q35", "-device", "e1000,id=nic0"]);
    let dst = Qemu::start_with("plan-dst", &["-machine", "q35", "-incoming", "defer"]);
    let not_incoming = Qemu::start_with("plan-plain", &["-machine", "q35"]);
    let plan = |unplug: &str, dst_sock: &Path| {
        let text = format!(
            "[[vm]]\nname = \"node-a\"\nqmp = {:?}\nunplug = [{unplug:?}]\n[vm.destination]\nqmp = {:?}\nuri = \"tcp:127.0.0.1:4444\"\n",
            src.socket(),
            dst_sock
        );
        Plan::parse(&text, "plan.toml").unwrap()
    };
    let found = plan("nic0", &dst.socket()).check("plan.toml", T).unwrap();
    assert_eq!(found[0].devices, vec!["nic0".to_string()]);
    assert_eq!(found[0].source.1, "prelaunch");

    let e = plan("hca9", &dst.socket()).check("plan.toml", T).unwrap_err().to_string();
    assert!(e.contains("VM node-a") && e.contains("\"hca9\"") && e.contains("nic0"), "{e}");
    let e = plan("nic0", &not_incoming.socket()).check("plan.toml", T).unwrap_err().to_string();
    assert!(e.contains("not waiting for a migration") && e.contains("prelaunch"), "{e}");
    let e = plan("nic0", Path::new("/nonexistent/dst.qmp")).check("plan.toml", Duration::from_millis(200)).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("destination") && e.contains("/nonexistent/dst.qmp"), "{e}");
}

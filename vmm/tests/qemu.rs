//! The QMP client against a real QEMU (Debian's `qemu-system-x86_64`, installed by
//! `ci/install-deps`), started with no machine and paused: the greeting and negotiation,
//! typed commands, an event that comes before its command's reply and is kept for the wait,
//! an error reply, and a QEMU that goes away in the middle.

use std::path::Path;
use std::time::Duration;

use kawarimi_vmm::client::{ClientError, QmpClient};
use kawarimi_vmm::plan::Plan;
use kawarimi_vmm::qmp::{CommandFailed, ReplyError};
use kawarimi_vmm::testing::Qemu;

const T: Duration = Duration::from_secs(20);

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
    qemu.kill();
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

/// A device whose unplug completes at once without a guest (USB) is unplugged and its
/// DEVICE_DELETED awaited; one whose unplug needs the guest (PCIe behind a root port, no guest
/// running) times out naming the device; a plugged device appears among the VM's.
#[test]
fn devices_are_unplugged_and_plugged() {
    use kawarimi_vmm::devices::{plug, unplug};
    use kawarimi_vmm::plan::{user_devices, PlugDevice};
    let qemu = Qemu::start_with(
        "devices",
        &[
            "-machine",
            "q35",
            "-device",
            "qemu-xhci,id=xhci",
            "-device",
            "usb-kbd,id=kbd0",
            "-device",
            "pcie-root-port,id=rp1,chassis=1",
            "-device",
            "e1000e,id=nic1,bus=rp1",
        ],
    );
    let mut c = QmpClient::connect(&qemu.socket(), T).unwrap();
    let took = unplug(&mut c, "kbd0", T).unwrap();
    assert!(took < T, "{took:?}");
    assert!(!user_devices(&mut c, T).unwrap().contains(&"kbd0".to_string()));

    let kbd = PlugDevice { driver: "usb-kbd".into(), id: "kbd1".into(), host: None, bus: None };
    plug(&mut c, &kbd, T).unwrap();
    assert!(user_devices(&mut c, T).unwrap().contains(&"kbd1".to_string()));

    let e = unplug(&mut c, "nic1", Duration::from_millis(500)).unwrap_err();
    assert!(matches!(&e, ClientError::TimedOut { what, .. } if what.contains("nic1")), "{e}");
    let e = unplug(&mut c, "hca0", T).unwrap_err();
    assert!(e.to_string().contains("DeviceNotFound"), "{e}");
}

/// A real live migration between two QEMUs on this host: the destination listens, the source
/// sends, progress is read until it completes; the destination then holds the VM (in the state
/// the source had) and the source has stopped. A destination that is not listening makes the
/// migration fail with QEMU's reason.
#[test]
fn a_vm_migrates_between_two_qemus() {
    use kawarimi_vmm::migration::{listen, start, wait, MigrationError};
    let args = ["-machine", "q35", "-m", "64"];
    let src = Qemu::start_with("mig-src", &args);
    let dst = Qemu::start_with("mig-dst", &["-machine", "q35", "-m", "64", "-incoming", "defer"]);
    let uri = format!("unix:{}", dst.dir.join("migration.sock").display());
    let mut s = QmpClient::connect(&src.socket(), T).unwrap();
    let mut d = QmpClient::connect(&dst.socket(), T).unwrap();
    listen(&mut d, &uri, T).unwrap();
    start(&mut s, &uri, T).unwrap();
    let mut readings = 0;
    let done = wait(&mut s, Duration::from_secs(60), Duration::from_millis(50), |_| {
        readings += 1;
        true
    })
    .unwrap();
    assert!(done.total_bytes >= 64 << 20 && done.remaining_bytes == 0, "{done:?}");
    assert!(readings >= 1);
    let src_state = s.execute(&qapi_qmp::query_status {}, T).unwrap().status;
    assert_eq!(src_state, qapi_qmp::RunState::postmigrate);
    // The destination has the VM once its side has finished loading it.
    let t0 = std::time::Instant::now();
    let dst_state = loop {
        let st = d.execute(&qapi_qmp::query_status {}, T).unwrap().status;
        if st != qapi_qmp::RunState::inmigrate || t0.elapsed() > T {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // QEMU carries the source's run state over: it was never started (prelaunch).
    assert_eq!(dst_state, qapi_qmp::RunState::prelaunch);

    // Nobody listens at this URI: QEMU's reason comes back.
    let src2 = Qemu::start_with("mig-src2", &args);
    let mut s2 = QmpClient::connect(&src2.socket(), T).unwrap();
    let nowhere = format!("unix:{}", src2.dir.join("nobody.sock").display());
    let e = start(&mut s2, &nowhere, T)
        .map_err(MigrationError::from)
        .and_then(|()| wait(&mut s2, Duration::from_secs(20), Duration::from_millis(50), |_| true).map(drop));
    let e = e.unwrap_err().to_string();
    assert!(e.contains("nobody.sock") || e.contains("failed"), "{e}");
}

//! `kawarimi vmm migrate`'s orchestration against real QEMUs on this host: two source VMs
//! (no guest, paused) each with a USB device standing in for a passthrough HCA (its unplug
//! completes without a guest), two destination QEMUs waiting for them. The job is a recorder
//! of the switches asked of it (the whole command with a real MPI job is tested in the CLI's
//! tests). Real live migrations, real unplugs and plugs; faults made for real: a device the
//! "guest" never releases, a destination that is not listening, a migration slowed down and
//! interrupted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kawarimi_vmm::client::QmpClient;
use kawarimi_vmm::migrate::{carry_out, state_file, Action, Job, Options, Order, Record, Switched};
use kawarimi_vmm::plan::{user_devices, Plan};
use kawarimi_vmm::testing::Qemu;

const T: Duration = Duration::from_secs(20);

/// Records the switches asked of it.
#[derive(Default)]
struct Recorder {
    calls: Vec<&'static str>,
}

impl Recorder {
    fn switched(&mut self, which: &'static str) -> Result<Switched, String> {
        self.calls.push(which);
        Ok(Switched { epoch: self.calls.len() as u64, ranks: 4, total_ms: 2.0, slowest_rank_ms: 1.5 })
    }
}

impl Job for Recorder {
    fn quiesce(&mut self) -> Result<Switched, String> {
        self.switched("quiesce")
    }
    fn resume(&mut self) -> Result<Switched, String> {
        self.switched("resume")
    }
}

/// A source VM with `hca0` (and `extra` devices) and its destination, which has no `hca0`.
struct Pair {
    name: &'static str,
    src: Qemu,
    dst: Qemu,
}

const MACHINE: [&str; 6] = ["-machine", "q35", "-m", "64", "-device", "qemu-xhci,id=xhci"];

/// `slow`: the VM's memory holds 16 MiB of random bytes (a paused VM with no guest has only
/// zero pages, which QEMU sends in a few hundred KiB) and its migration is limited to 1 MiB/s,
/// so it takes about 16 s: long enough to fail or interrupt it half-way.
fn pair(name: &'static str, extra: &[&str], incoming: bool, slow: bool) -> Pair {
    let loader = format!("loader,file={},addr=0x1000000,force-raw=on", random_file().display());
    let mut src_args: Vec<&str> = MACHINE.to_vec();
    src_args.extend(["-device", "usb-kbd,id=hca0"]);
    src_args.extend(extra);
    let mut dst_args: Vec<&str> = MACHINE.to_vec();
    if incoming {
        dst_args.extend(["-incoming", "defer"]);
    }
    if slow {
        src_args.extend(["-device", &loader]);
        dst_args.extend(["-device", &loader]);
    }
    let p = Pair {
        name,
        src: Qemu::start_with(&format!("mv-{name}-src"), &src_args),
        dst: Qemu::start_with(&format!("mv-{name}-dst"), &dst_args),
    };
    if slow {
        let mut c = QmpClient::connect(&p.src.socket(), T).unwrap();
        let params = qapi_qmp::MigrateSetParameters { max_bandwidth: Some(1 << 20), ..Default::default() };
        c.execute(&qapi_qmp::migrate_set_parameters(params), T).unwrap();
    }
    p
}

/// 16 MiB of random bytes, made once per test process.
fn random_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("kawarimi-vmm-random-{}.bin", std::process::id()));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes: Vec<u8> = (0..16 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&path, bytes).unwrap();
        path
    })
    .clone()
}

/// The plan for `pairs`: each unplugs `unplug` (and says how to plug `hca0` back), and plugs
/// `hca0` on its destination.
fn plan_of(pairs: &[(&Pair, &[&str])]) -> Plan {
    let mut text = String::new();
    for (p, unplug) in pairs {
        let list: Vec<String> = unplug.iter().map(|d| format!("{d:?}")).collect();
        text += &format!(
            "[[vm]]\nname = {:?}\nqmp = {:?}\nunplug = [{}]\n\
             {}\
             [vm.destination]\nqmp = {:?}\nuri = \"unix:{}\"\n\
             [[vm.destination.plug]]\ndriver = \"usb-kbd\"\nid = \"hca0\"\n",
            p.name,
            p.src.socket().display().to_string(),
            list.join(", "),
            if unplug.contains(&"hca0") { "[[vm.replug]]\ndriver = \"usb-kbd\"\nid = \"hca0\"\n" } else { "" },
            p.dst.socket().display().to_string(),
            p.dst.dir.join("migration.sock").display()
        );
    }
    Plan::parse(&text, "plan.toml").unwrap()
}

fn options<'a>(order: Order, interrupted: &'a AtomicBool, unplug_timeout: Duration) -> Options<'a> {
    Options {
        order,
        qmp_timeout: T,
        unplug_timeout,
        migration_timeout: Duration::from_secs(120),
        progress_every: Duration::from_millis(20),
        interrupted,
        say: &|line| eprintln!("{line}"),
    }
}

fn devices(sock: &std::path::Path) -> Vec<String> {
    let mut c = QmpClient::connect(sock, T).unwrap();
    user_devices(&mut c, T).unwrap()
}

fn run_state(sock: &std::path::Path) -> qapi_qmp::RunState {
    let mut c = QmpClient::connect(sock, T).unwrap();
    c.execute(&qapi_qmp::query_status {}, T).unwrap().status
}

fn phase<'r>(rec: &'r Record, vm: &str, phase: &str) -> &'r kawarimi_vmm::migrate::Phase {
    rec.phases
        .iter()
        .find(|p| p.vm.as_deref() == Some(vm) && p.phase == phase)
        .unwrap_or_else(|| panic!("no {phase} of {vm} in {:#?}", rec.phases))
}

/// Both VMs move, each unplug, migration and plug is in the record, the destinations run the
/// VMs with their own `hca0`, the sources have stopped; the job is switched around the move:
/// twice by default (resumed after the unplug, and again once the destinations have their
/// devices), once with `pause`.
#[test]
fn two_vms_move_together_and_the_job_switches_around_the_move() {
    for order in [Order::Through, Order::Pause] {
        let (a, b) = (pair("a", &[], true, false), pair("b", &[], true, false));
        let plan = plan_of(&[(&a, &["hca0"]), (&b, &["hca0"])]);
        plan.check("plan.toml", T).unwrap();
        let interrupted = AtomicBool::new(false);
        let mut job = Recorder::default();
        let rec = carry_out(&plan, &mut job, &options(order, &interrupted, T), Action::Migrate)
            .unwrap_or_else(|f| panic!("{}", f.0));
        let want: &[&str] = match order {
            Order::Through => &["quiesce", "resume", "quiesce", "resume"],
            Order::Pause => &["quiesce", "resume"],
        };
        assert_eq!(job.calls, want, "{order:?}");
        for p in [&a, &b] {
            let (unplug, mig, plug) =
                (phase(&rec, p.name, "unplug"), phase(&rec, p.name, "migration"), phase(&rec, p.name, "plug"));
            assert!(unplug.ok && mig.ok && plug.ok, "{:#?}", rec.phases);
            assert!(unplug.end_s <= mig.start_s && mig.end_s <= plug.start_s, "{:#?}", rec.phases);
            assert!(devices(&p.dst.socket()).contains(&"hca0".to_string()), "the destination has its device");
            assert_eq!(run_state(&p.src.socket()), qapi_qmp::RunState::postmigrate);
        }
        assert_eq!(rec.moved.len(), 2);
        assert!(rec.moved.iter().all(|m| m.total_bytes >= 64 << 20), "{:?}", rec.moved);
        // The migrations overlap: neither ends before the other starts.
        let (ma, mb) = (phase(&rec, "a", "migration"), phase(&rec, "b", "migration"));
        assert!(ma.start_s < mb.end_s && mb.start_s < ma.end_s, "{:#?}", rec.phases);
        assert!(rec.failure.is_none() && rec.job_stall_s > 0.0 && rec.wall_s >= rec.job_stall_s.min(rec.wall_s));
        if order == Order::Through {
            assert!(rec.job_stall_s < rec.wall_s, "the job ran during the move: {rec:?}");
        }
        let svg = rec.svg();
        assert!(svg.starts_with("<svg") && svg.contains(">a<") && svg.contains(">b<") && svg.contains("migration"));
    }
}

/// A device the guest does not release (a PCIe NIC on a root port, with no guest to answer)
/// times out; the move rolls back: the other VM's unplugged `hca0` is plugged back, no
/// migration starts, and the job resumes on the sources. The failure names the VM and step.
#[test]
fn a_device_the_guest_keeps_rolls_the_move_back() {
    let a = pair("ka", &[], true, false);
    let b =
        pair("kb", &["-device", "pcie-root-port,id=rp1,chassis=1", "-device", "e1000e,id=nic1,bus=rp1"], true, false);
    let plan = plan_of(&[(&a, &["hca0"]), (&b, &["nic1"])]);
    let interrupted = AtomicBool::new(false);
    let mut job = Recorder::default();
    let (f, rec) = *carry_out(
        &plan,
        &mut job,
        &options(Order::Through, &interrupted, Duration::from_millis(500)),
        Action::Migrate,
    )
    .unwrap_err();
    assert_eq!((f.vm.as_deref(), f.step.as_str()), (Some("kb"), "unplug"), "{f}");
    assert!(f.reason.contains("DEVICE_DELETED") && f.reason.contains("nic1"), "{f}");
    assert_eq!(job.calls, ["quiesce", "resume"]);
    assert!(f.rolled_back.iter().any(|n| n.contains("ka: plugged back hca0")), "{f}");
    assert!(devices(&a.src.socket()).contains(&"hca0".to_string()));
    assert!(rec.moved.is_empty() && rec.failure.is_some());
    for p in [&a, &b] {
        assert_eq!(run_state(&p.src.socket()), qapi_qmp::RunState::prelaunch, "no migration started");
    }
}

/// One destination is not waiting for a migration: its VM's migration fails at once, the
/// other VM's (slowed down, still under way) is cancelled, its device is plugged back, the job
/// (already running again over TCP) is switched onto it, and nothing moved.
#[test]
fn a_failed_migration_is_cancelled_everywhere_and_the_devices_come_back() {
    let a = pair("fa", &[], true, true);
    let b = pair("fb", &[], false, false);
    let plan = plan_of(&[(&a, &["hca0"]), (&b, &["hca0"])]);
    let interrupted = AtomicBool::new(false);
    let mut job = Recorder::default();
    let (f, rec) = *carry_out(&plan, &mut job, &options(Order::Through, &interrupted, T), Action::Migrate).unwrap_err();
    assert_eq!((f.vm.as_deref(), f.step.as_str()), (Some("fb"), "migration"), "{f}");
    assert!(f.reason.contains("destination"), "{f}");
    assert!(f.rolled_back.iter().any(|n| n == "fa: migration cancelled"), "{f}");
    for p in [&a, &b] {
        assert!(devices(&p.src.socket()).contains(&"hca0".to_string()), "{}: {f}", p.name);
        assert_ne!(run_state(&p.src.socket()), qapi_qmp::RunState::postmigrate);
    }
    assert_eq!(job.calls, ["quiesce", "resume", "quiesce", "resume"], "{f}");
    assert!(rec.moved.is_empty());
}

/// An interrupt (Ctrl-C) during slow migrations cancels both and rolls back.
#[test]
fn an_interrupt_rolls_the_move_back() {
    let (a, b) = (pair("ia", &[], true, true), pair("ib", &[], true, true));
    let plan = plan_of(&[(&a, &["hca0"]), (&b, &["hca0"])]);
    let interrupted = AtomicBool::new(false);
    let mut job = Recorder::default();
    let (f, _) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(700));
            interrupted.store(true, Ordering::SeqCst);
        });
        *carry_out(&plan, &mut job, &options(Order::Pause, &interrupted, T), Action::Migrate).unwrap_err()
    });
    assert_eq!(f.step, "migration", "{f}");
    assert!(f.reason.contains("interrupted"), "{f}");
    for n in ["ia", "ib"] {
        assert!(f.rolled_back.iter().any(|r| r == &format!("{n}: migration cancelled")), "{f}");
    }
    assert!(f.rolled_back.iter().any(|r| r == "job resumed on the source VMs"), "{f}");
    assert_eq!(job.calls, ["quiesce", "resume"]);
}

/// A checkpoint saves both VMs to files (the job quiesced, the devices unplugged, the sources
/// stopped) and leaves the job quiesced; a restore into two fresh QEMUs loads them, plugs the
/// devices there and resumes the job. A restore whose files are missing names the VM and
/// touches nothing.
#[test]
fn a_checkpoint_saves_the_vms_to_files_and_a_restore_starts_them_again() {
    let (a, b) = (pair("ca", &[], false, true), pair("cb", &[], false, false));
    let (ra, rb) = (pair("ra", &[], true, true), pair("rb", &[], true, false));
    let dir = a.src.dir.join("checkpoint");
    let interrupted = AtomicBool::new(false);
    let o = options(Order::Pause, &interrupted, T);
    let mut job = Recorder::default();
    // The checkpoint: the saved VMs (the plan's destinations are not used).
    let saved = plan_of(&[(&a, &["hca0"]), (&b, &["hca0"])]);
    // Unlimited bandwidth for a file: the slow pair only carries memory worth saving.
    let mut c = QmpClient::connect(&a.src.socket(), T).unwrap();
    let params = qapi_qmp::MigrateSetParameters { max_bandwidth: Some(1 << 30), ..Default::default() };
    c.execute(&qapi_qmp::migrate_set_parameters(params), T).unwrap();
    drop(c);
    let rec = carry_out(&saved, &mut job, &o, Action::Checkpoint(&dir)).unwrap_or_else(|f| panic!("{}", f.0));
    assert_eq!(job.calls, ["quiesce"], "the job stays quiesced");
    assert_eq!(rec.action, "checkpoint");
    for p in [&a, &b] {
        let f = state_file(&dir, p.name);
        assert!(std::fs::metadata(&f).unwrap().len() > 100_000, "{}", f.display());
        assert_eq!(run_state(&p.src.socket()), qapi_qmp::RunState::postmigrate);
        assert!(phase(&rec, p.name, "save").ok);
    }
    assert!(std::fs::metadata(state_file(&dir, "ca")).unwrap().len() > 16 << 20, "the random memory is saved");

    // The restore, into fresh QEMUs: the plan's VMs keep their names, the destinations are new.
    let (ra, rb) = (Pair { name: "ca", ..ra }, Pair { name: "cb", ..rb });
    let restored = plan_of(&[(&ra, &["hca0"]), (&rb, &["hca0"])]);
    let missing = a.src.dir.join("nothing-here");
    let (f, _) = *carry_out(&restored, &mut job, &o, Action::Restore(&missing)).unwrap_err();
    assert_eq!((f.vm.as_deref(), f.step.as_str()), (Some("ca"), "restore"), "{f}");
    assert!(f.reason.contains("missing"), "{f}");
    assert_eq!(job.calls, ["quiesce"], "nothing touched");
    let rec = carry_out(&restored, &mut job, &o, Action::Restore(&dir)).unwrap_or_else(|f| panic!("{}", f.0));
    assert_eq!(job.calls, ["quiesce", "resume"]);
    for v in &restored.vm {
        assert!(phase(&rec, &v.name, "restore").ok && phase(&rec, &v.name, "plug").ok, "{:#?}", rec.phases);
        assert_ne!(run_state(&v.destination.qmp), qapi_qmp::RunState::inmigrate);
        assert!(devices(&v.destination.qmp).contains(&"hca0".to_string()));
    }
}

//! The whole move of a job's VMs (`kawarimi vmm migrate`): the job quiesces and lets go of
//! its devices, every VM's passthrough devices are unplugged, the VMs are live-migrated
//! together, the destinations get the devices that exist there, and the job resumes on
//! whatever networks it then finds.
//!
//! Two orders ([`Order`]):
//! - **through** (the default): the job resumes right after the unplug (over TCP, the only
//!   network left) and computes while the VMs move; only QEMU's stop-and-copy pauses it. Once
//!   the destinations have their devices, a second short switch moves it onto them.
//! - **pause**: the job stays quiesced from before the unplug until after the plug, one
//!   switch in all (the published system's order, for comparison).
//!
//! Every VM's steps run in a thread of their own, so unplugs, migrations and plugs of several
//! VMs overlap; each step has a time limit. A step that fails, or an interrupt
//! ([`Options::interrupted`], set on Ctrl-C), rolls the move back to a running job on the
//! source VMs: migrations still under way are cancelled, the unplugged devices the plan says
//! how to plug back ([`crate::plan::VmPlan::replug`]) are plugged back, and the job resumes.
//! Once a VM's migration has completed it cannot be taken back (its source is stopped and
//! the destination runs it), so a failure after that point finishes the move as far as it can
//! and reports what did not happen.
//!
//! Everything that happens is written down as a [`Record`]: each phase of each VM and of the
//! job, with its start and end, for the timeline (`--json`) and its plot ([`Record::svg`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{ClientError, QmpClient};
use crate::devices;
use crate::migration::{self, MigrationError, Progress};
use crate::plan::{Plan, PlugDevice, VmPlan};

/// When the job runs during the move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Through,
    Pause,
}

/// What a switch of the job reported (`kawarimi ctl quiesce` / `resume`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Switched {
    pub epoch: u64,
    pub ranks: u32,
    /// The whole switch, as the coordinator measured it.
    pub total_ms: f64,
    pub slowest_rank_ms: f64,
}

/// The job whose VMs move: the coordinator's switch commands.
pub trait Job {
    /// Every rank drains and releases its devices ("safe to unplug").
    fn quiesce(&mut self) -> Result<Switched, String>;
    /// Every rank rediscovers its networks, reconnects and runs again.
    fn resume(&mut self) -> Result<Switched, String>;
}

/// The limits and switches of a move.
pub struct Options<'a> {
    pub order: Order,
    /// Each QMP call.
    pub qmp_timeout: Duration,
    /// An unplug, from `device_del` to its `DEVICE_DELETED`.
    pub unplug_timeout: Duration,
    /// A VM's live migration.
    pub migration_timeout: Duration,
    /// How often a migration's progress is read.
    pub progress_every: Duration,
    /// Set (by a signal handler) to stop the move and roll it back.
    pub interrupted: &'a AtomicBool,
    /// Lines for the operator as the move goes.
    pub say: &'a (dyn Fn(&str) + Sync),
}

/// One phase of the move, of one VM or (`vm: None`) of the job.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub vm: Option<String>,
    pub phase: String,
    /// Seconds from the start of the move.
    pub start_s: f64,
    pub end_s: f64,
    pub ok: bool,
    pub detail: String,
}

/// A VM's migration as QEMU reported it at the end.
#[derive(Debug, Clone, Serialize)]
pub struct VmMoved {
    pub vm: String,
    pub transferred_bytes: u64,
    pub total_bytes: u64,
    /// The stop-and-copy pause of the VM.
    pub downtime_ms: Option<u64>,
    pub migration_s: f64,
}

/// Everything a move did.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// `migrate`, `checkpoint` or `restore`.
    pub action: &'static str,
    pub order: Order,
    pub phases: Vec<Phase>,
    pub moved: Vec<VmMoved>,
    /// The job's switches, in order.
    pub switches: Vec<(String, Switched)>,
    /// The time the job did not run: its switches and, in the `through` order, the VMs'
    /// longest stop-and-copy pause; in the `pause` order, from the quiesce to the end of the
    /// resume.
    pub job_stall_s: f64,
    pub wall_s: f64,
    /// Why the move failed, if it did, and what was done to roll it back.
    pub failure: Option<String>,
    pub rolled_back: Vec<String>,
}

/// Why a move failed: the VM and the step, and what the rollback did.
#[derive(Debug, thiserror::Error)]
#[error("{}{step}: {reason}{}", vm.as_ref().map(|v| format!("VM {v}, ")).unwrap_or_default(), if rolled_back.is_empty() { String::new() } else { format!("; rolled back: {}", rolled_back.join("; ")) })]
pub struct Failure {
    pub vm: Option<String>,
    pub step: String,
    pub reason: String,
    pub rolled_back: Vec<String>,
}

impl Failure {
    /// A failure of `step` (of VM `vm`, or of the whole move) that nothing was rolled back for
    /// yet.
    fn of(vm: Option<&str>, step: impl Into<String>, reason: impl Into<String>) -> Failure {
        Failure { vm: vm.map(str::to_string), step: step.into(), reason: reason.into(), rolled_back: Vec::new() }
    }
}

/// The steps the move takes, in order, for `--dry-run`.
pub fn steps(plan: &Plan, order: Order) -> Vec<String> {
    let mut out = vec!["job: quiesce (every rank drains and releases its devices)".to_string()];
    let each = |f: &dyn Fn(&VmPlan) -> String| plan.vm.iter().map(f).collect::<Vec<_>>();
    out.extend(each(&|v| {
        if v.unplug.is_empty() {
            format!("{}: nothing to unplug", v.name)
        } else {
            format!(
                "{}: device_del {} on {}, each until its DEVICE_DELETED",
                v.name,
                v.unplug.join(", "),
                v.qmp.display()
            )
        }
    }));
    if order == Order::Through {
        out.push("job: resume (on the networks left: TCP) and compute during the migrations".into());
    }
    out.extend(each(&|v| {
        format!(
            "{}: migrate-incoming {} on {}, then migrate from {} (all VMs at once), progress until completed",
            v.name,
            v.destination.uri,
            v.destination.qmp.display(),
            v.qmp.display()
        )
    }));
    out.extend(each(&|v| {
        let ids: Vec<&str> = v.destination.plug.iter().map(|d| d.id.as_str()).collect();
        if ids.is_empty() {
            format!("{}: nothing to plug on the destination", v.name)
        } else {
            format!("{}: device_add {} on {}", v.name, ids.join(", "), v.destination.qmp.display())
        }
    }));
    match order {
        Order::Through => out.push("job: quiesce and resume again (onto the destinations' devices)".into()),
        Order::Pause => out.push("job: resume (rediscovers the destinations' networks)".into()),
    }
    out
}

/// The timeline being written: phases as they end, from many threads.
struct Timeline {
    t0: Instant,
    phases: Mutex<Vec<Phase>>,
}

impl Timeline {
    fn at(&self, t: Instant) -> f64 {
        t.duration_since(self.t0).as_secs_f64()
    }

    fn add(&self, vm: Option<&str>, phase: &str, start: Instant, ok: bool, detail: String) {
        let p = Phase {
            vm: vm.map(str::to_string),
            phase: phase.to_string(),
            start_s: self.at(start),
            end_s: self.at(Instant::now()),
            ok,
            detail,
        };
        self.phases.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }
}

/// What one VM's step returned: the VM and the reason, when it failed.
type StepResult<T> = Result<T, (String, String)>;

/// Runs `f` for every VM at once, each in a thread; the results in plan order.
fn each_vm<T: Send>(plan: &Plan, f: impl Fn(&VmPlan) -> StepResult<T> + Sync) -> Vec<StepResult<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = plan.vm.iter().map(|v| s.spawn(|| f(v))).collect();
        handles
            .into_iter()
            .zip(&plan.vm)
            .map(|(h, v)| h.join().unwrap_or_else(|_| Err((v.name.clone(), "its thread panicked".into()))))
            .collect()
    })
}

fn connect(path: &std::path::Path, o: &Options<'_>) -> Result<QmpClient, ClientError> {
    QmpClient::connect(path, o.qmp_timeout)
}

/// What is done with the job's VMs.
#[derive(Clone, Copy, Debug)]
pub enum Action<'p> {
    /// Moves them and the job running in them, as the module docs describe.
    Migrate,
    /// Saves them to files in the directory (`<vm>.vmstate`, QEMU's migration stream): the
    /// job quiesces and lets go of its devices, the VMs' devices are unplugged, and every VM
    /// is migrated into its file at once (its QEMU then stops). The job stays quiesced until a
    /// [`Action::Restore`]. A failure before every file is written rolls back as a migration
    /// does.
    Checkpoint(&'p Path),
    /// Starts the VMs a checkpoint saved in the directory again, in the plan's destination
    /// QEMUs (started with `-incoming defer`, on any host that can read the files), plugs the
    /// devices that exist there, and resumes the job.
    Restore(&'p Path),
}

impl Action<'_> {
    /// Its name, as the command line and the record call it.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Migrate => "migrate",
            Action::Checkpoint(_) => "checkpoint",
            Action::Restore(_) => "restore",
        }
    }
}

/// The file a VM is saved in.
pub fn state_file(dir: &Path, vm: &str) -> PathBuf {
    dir.join(format!("{vm}.vmstate"))
}

/// QEMU's `exec:` URI running `cmd` on `file` (quoted for the shell QEMU runs it with).
fn exec_uri(cmd: &str, file: &Path) -> Result<String, String> {
    let f = file.display().to_string();
    if f.contains('\'') {
        return Err(format!("{f}: a state file's path may not contain a single quote"));
    }
    Ok(format!("exec:{cmd}'{f}'"))
}

/// Carries out `what` on the VMs of `plan` and the job running in them; the record of every
/// phase either way, with the failure if there was one.
pub fn carry_out(
    plan: &Plan,
    job: &mut dyn Job,
    o: &Options<'_>,
    what: Action<'_>,
) -> Result<Record, Box<(Failure, Record)>> {
    let tl = Timeline { t0: Instant::now(), phases: Mutex::new(Vec::new()) };
    let mut m = Move { plan, tl: &tl, o, switches: Vec::new(), unplugged: Vec::new(), moved: Vec::new() };
    let result = match what {
        Action::Migrate => m.run(job),
        Action::Checkpoint(dir) => m.run_checkpoint(job, dir),
        Action::Restore(dir) => m.run_restore(job, dir),
    };
    let wall_s = tl.at(Instant::now());
    let stall = m.job_stall(matches!(what, Action::Migrate) && o.order == Order::Through);
    let (failure, rolled_back) = match &result {
        Ok(()) => (None, Vec::new()),
        Err(f) => (Some(f.to_string()), f.rolled_back.clone()),
    };
    let (moved, switches) = (m.moved, m.switches);
    let mut phases = tl.phases.into_inner().unwrap_or_else(|e| e.into_inner());
    phases.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let record = Record {
        action: what.name(),
        order: o.order,
        phases,
        moved,
        switches,
        job_stall_s: stall,
        wall_s,
        failure,
        rolled_back,
    };
    match result {
        Ok(()) => Ok(record),
        Err(f) => Err(Box::new((f, record))),
    }
}

struct Move<'a> {
    plan: &'a Plan,
    tl: &'a Timeline,
    o: &'a Options<'a>,
    switches: Vec<(String, Switched)>,
    /// Per VM, the devices unplugged so far.
    unplugged: Vec<(String, Vec<String>)>,
    moved: Vec<VmMoved>,
}

impl Move<'_> {
    fn run(&mut self, job: &mut dyn Job) -> Result<(), Failure> {
        let o = self.o;
        self.switch(job, "quiesce")?;
        let mut job_running = false;
        if let Err(f) = self.check_interrupt("after the quiesce").and_then(|()| self.unplug_all()) {
            return Err(self.roll_back(job, f, job_running, false));
        }
        if o.order == Order::Through {
            self.switch(job, "resume")?;
            job_running = true;
        }
        if let Err(f) = self.check_interrupt("after the unplug").and_then(|()| self.migrate_all(None)) {
            return Err(self.roll_back(job, f, job_running, false));
        }
        // Past this point the VMs run on the destinations: a failure is reported, not undone.
        let plugged = self.plug_all();
        if o.order == Order::Through {
            self.switch(job, "quiesce")?;
        }
        self.switch(job, "resume")?;
        plugged
    }

    fn run_checkpoint(&mut self, job: &mut dyn Job, dir: &Path) -> Result<(), Failure> {
        for v in &self.plan.vm {
            exec_uri("cat > ", &state_file(dir, &v.name)).map_err(|reason| Failure::of(None, "checkpoint", reason))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| Failure::of(None, "checkpoint", format!("{}: {e}", dir.display())))?;
        self.switch(job, "quiesce")?;
        let saved = self
            .check_interrupt("after the quiesce")
            .and_then(|()| self.unplug_all())
            .and_then(|()| self.check_interrupt("after the unplug"))
            .and_then(|()| self.migrate_all(Some(dir)));
        saved.map_err(|f| self.roll_back(job, f, false, true))
    }

    fn run_restore(&mut self, job: &mut dyn Job, dir: &Path) -> Result<(), Failure> {
        let (tl, o) = (self.tl, self.o);
        for v in &self.plan.vm {
            let f = state_file(dir, &v.name);
            if !f.is_file() {
                let reason = format!("{} is missing: no checkpoint of this VM in {}", f.display(), dir.display());
                return Err(Failure::of(Some(&v.name), "restore", reason));
            }
        }
        let loaded = each_vm(self.plan, |v| {
            let start = Instant::now();
            let outcome = load_one(v, &state_file(dir, &v.name), o);
            tl.add(Some(&v.name), "restore", start, outcome.is_ok(), outcome.clone().unwrap_or_else(|e| e));
            outcome.map_err(|e| (v.name.clone(), e))
        });
        if let Some((vm, reason)) = loaded.into_iter().find_map(Result::err) {
            // The job's VMs are not all there: it stays quiesced for another try.
            let reason = format!("{reason} (the job stays quiesced)");
            return Err(Failure::of(Some(&vm), "restore", reason));
        }
        let plugged = self.plug_all();
        self.switch(job, "resume")?;
        plugged
    }

    fn switch(&mut self, job: &mut dyn Job, which: &str) -> Result<(), Failure> {
        (self.o.say)(&format!("job: {which}..."));
        let start = Instant::now();
        let got = if which == "quiesce" { job.quiesce() } else { job.resume() };
        match got {
            Ok(s) => {
                let detail = format!(
                    "switch {}, {} ranks, {:.2} ms (slowest rank {:.2} ms)",
                    s.epoch, s.ranks, s.total_ms, s.slowest_rank_ms
                );
                (self.o.say)(&format!("job: {which}d: {detail}"));
                self.tl.add(None, which, start, true, detail);
                self.switches.push((which.to_string(), s));
                Ok(())
            }
            Err(reason) => {
                self.tl.add(None, which, start, false, reason.clone());
                Err(Failure::of(None, format!("job {which}"), reason))
            }
        }
    }

    fn check_interrupt(&self, when: &str) -> Result<(), Failure> {
        if self.o.interrupted.load(Ordering::SeqCst) {
            return Err(Failure::of(None, "interrupt", format!("interrupted {when}")));
        }
        Ok(())
    }

    /// Unplugs every VM's devices, VMs at once; the first failure (by plan order) is returned.
    fn unplug_all(&mut self) -> Result<(), Failure> {
        let (tl, o) = (self.tl, self.o);
        let results = each_vm(self.plan, |v| {
            let start = Instant::now();
            let mut done = Vec::new();
            let outcome = (|| -> Result<(), String> {
                if v.unplug.is_empty() {
                    return Ok(());
                }
                let mut c = connect(&v.qmp, o).map_err(|e| e.to_string())?;
                for id in &v.unplug {
                    (o.say)(&format!("{}: unplugging {id}...", v.name));
                    let took = devices::unplug(&mut c, id, o.unplug_timeout).map_err(|e| e.to_string())?;
                    (o.say)(&format!("{}: {id} unplugged in {:.3} s", v.name, took.as_secs_f64()));
                    done.push(id.clone());
                }
                Ok(())
            })();
            let detail = match &outcome {
                Ok(()) => format!("unplugged: {}", if done.is_empty() { "nothing".into() } else { done.join(", ") }),
                Err(e) => e.clone(),
            };
            tl.add(Some(&v.name), "unplug", start, outcome.is_ok(), detail);
            // What was unplugged counts for the rollback even when a later device failed.
            Ok((done, outcome))
        });
        let mut first = None;
        for (v, r) in self.plan.vm.iter().zip(results) {
            let (done, outcome) = r.unwrap_or_else(|(_, e)| (Vec::new(), Err(e)));
            self.unplugged.push((v.name.clone(), done));
            if let (Err(reason), None) = (outcome, &first) {
                first = Some(Failure::of(Some(&v.name), "unplug", reason));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Migrates every VM at once; on the first failure or an interrupt, stops waiting for the
    /// others (the rollback cancels them).
    ///
    /// `save_in`: a checkpoint, into the VMs' files in that directory (no destination QEMU
    /// takes them); `None`: to the plan's destinations.
    fn migrate_all(&mut self, save_in: Option<&Path>) -> Result<(), Failure> {
        let (tl, o) = (self.tl, self.o);
        let stop = AtomicBool::new(false);
        let results = each_vm(self.plan, |v| {
            let start = Instant::now();
            let outcome = match save_in {
                Some(dir) => {
                    exec_uri("cat > ", &state_file(dir, &v.name)).and_then(|uri| migrate_one(v, None, &uri, o, &stop))
                }
                None => migrate_one(v, Some(&v.destination.qmp), &v.destination.uri, o, &stop),
            };
            if outcome.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            let detail = match &outcome {
                Ok(p) => format!(
                    "{} of {} bytes, downtime {} ms",
                    p.transferred_bytes,
                    p.total_bytes,
                    p.downtime_ms.map_or("?".into(), |d| d.to_string())
                ),
                Err(e) => e.clone(),
            };
            let phase = if save_in.is_some() { "save" } else { "migration" };
            tl.add(Some(&v.name), phase, start, outcome.is_ok(), detail);
            outcome.map(|p| (p, start.elapsed())).map_err(|e| (v.name.clone(), e))
        });
        let mut failures = Vec::new();
        for (v, r) in self.plan.vm.iter().zip(results) {
            match r {
                Ok((p, took)) => self.moved.push(VmMoved {
                    vm: v.name.clone(),
                    transferred_bytes: p.transferred_bytes,
                    total_bytes: p.total_bytes,
                    downtime_ms: p.downtime_ms,
                    migration_s: took.as_secs_f64(),
                }),
                Err((vm, reason)) => failures.push((vm, reason)),
            }
        }
        // The cause, not a VM whose wait was only stopped because of it.
        let cause = failures.iter().position(|(_, r)| r != STOPPED).unwrap_or(0);
        if failures.is_empty() {
            return Ok(());
        }
        let (vm, reason) = failures.swap_remove(cause);
        Err(Failure::of(Some(&vm), "migration", reason))
    }

    /// Plugs the destinations' devices, VMs at once; every failure is reported.
    fn plug_all(&mut self) -> Result<(), Failure> {
        let (tl, o) = (self.tl, self.o);
        let results = each_vm(self.plan, |v| {
            let start = Instant::now();
            let outcome = plug_devices(&v.destination.qmp, &v.destination.plug, o);
            let ids: Vec<&str> = v.destination.plug.iter().map(|d| d.id.as_str()).collect();
            let detail = match &outcome {
                Ok(()) => format!("plugged: {}", if ids.is_empty() { "nothing".into() } else { ids.join(", ") }),
                Err(e) => e.clone(),
            };
            tl.add(Some(&v.name), "plug", start, outcome.is_ok(), detail);
            outcome.map_err(|e| (v.name.clone(), e))
        });
        let failed: Vec<String> =
            results.into_iter().filter_map(Result::err).map(|(vm, e)| format!("{vm}: {e}")).collect();
        if failed.is_empty() {
            return Ok(());
        }
        let reason = format!("{} (the VMs run there; the job resumed without those devices)", failed.join("; "));
        Err(Failure::of(None, "plug on the destinations", reason))
    }

    /// Undoes what was done before `f` happened: cancels migrations, plugs back what the plan
    /// describes, resumes the job if it is quiesced. `saving`: a checkpoint, whose VMs already
    /// saved are continued where they were (no other QEMU runs them), where a migrated one is
    /// left to its destination.
    fn roll_back(&mut self, job: &mut dyn Job, mut f: Failure, job_running: bool, saving: bool) -> Failure {
        let (tl, o) = (self.tl, self.o);
        (o.say)(&format!("rolling back: {f}"));
        let unplugged = &self.unplugged;
        let undone = each_vm(self.plan, |v| {
            let start = Instant::now();
            let mut notes = Vec::new();
            let mut plugged_back = false;
            if let Ok(mut c) = connect(&v.qmp, o) {
                // A migration under way (or never started) is cancelled; the source runs on.
                match migration::progress(&mut c, o.qmp_timeout) {
                    Ok(p) if !p.ended() && p.status != "none" => match migration::cancel(&mut c, o.migration_timeout) {
                        Ok(_) => notes.push(format!("{}: migration cancelled", v.name)),
                        Err(e) => notes.push(format!("{}: migration not cancelled: {e}", v.name)),
                    },
                    Ok(p) if saving && p.status == "completed" => match c.execute(&qapi_qmp::cont {}, o.qmp_timeout) {
                        Ok(_) => notes.push(format!("{}: saved, and continued", v.name)),
                        Err(e) => notes.push(format!("{}: saved, and not continued: {e}", v.name)),
                    },
                    _ => {}
                }
                drop(c);
            }
            let gone: &[String] = unplugged.iter().find(|(n, _)| n == &v.name).map_or(&[], |(_, d)| d);
            let (back, missing): (Vec<&PlugDevice>, Vec<&String>) = (
                v.replug.iter().filter(|d| gone.contains(&d.id)).collect(),
                gone.iter().filter(|id| !v.replug.iter().any(|d| &d.id == *id)).collect(),
            );
            if !back.is_empty() {
                let specs: Vec<PlugDevice> = back.into_iter().cloned().collect();
                match plug_devices(&v.qmp, &specs, o) {
                    Ok(()) => {
                        plugged_back = true;
                        notes.push(format!(
                            "{}: plugged back {}",
                            v.name,
                            specs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>().join(", ")
                        ))
                    }
                    Err(e) => notes.push(format!("{}: not plugged back: {e}", v.name)),
                }
            }
            if !missing.is_empty() {
                notes.push(format!(
                    "{}: {} stay unplugged (the plan has no [[vm.replug]] for them)",
                    v.name,
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            if !notes.is_empty() {
                tl.add(Some(&v.name), "rollback", start, true, notes.join("; "));
            }
            Ok((notes, plugged_back))
        });
        let mut replugged = false;
        for (notes, plugged_back) in undone.into_iter().flatten() {
            f.rolled_back.extend(notes);
            replugged |= plugged_back;
        }
        if !job_running {
            match self.switch(job, "resume") {
                Ok(()) => f.rolled_back.push("job resumed on the source VMs".into()),
                Err(e) => f.rolled_back.push(format!("job not resumed: {}", e.reason)),
            }
        } else {
            // In the through order the job runs already; a switch picks up re-plugged devices.
            if replugged && self.switch(job, "quiesce").is_ok() && self.switch(job, "resume").is_ok() {
                f.rolled_back.push("job switched onto the plugged-back devices".into());
            } else {
                f.rolled_back.push("job runs on the source VMs".into());
            }
        }
        f
    }

    /// The time the job did not run (see [`Record::job_stall_s`]).
    fn job_stall(&self, through: bool) -> f64 {
        if through {
            let switches: f64 = self.switches.iter().map(|(_, s)| s.total_ms / 1000.0).sum();
            let pause = self.moved.iter().filter_map(|m| m.downtime_ms).max().unwrap_or(0) as f64 / 1000.0;
            return switches + pause;
        }
        let phases = self.tl.phases.lock().unwrap_or_else(|e| e.into_inner());
        let job: Vec<&Phase> = phases.iter().filter(|p| p.vm.is_none()).collect();
        let first = job.iter().map(|p| p.start_s).fold(f64::INFINITY, f64::min);
        let last = job.iter().map(|p| p.end_s).fold(0.0, f64::max);
        if first.is_finite() {
            last - first
        } else {
            0.0
        }
    }
}

/// Why a VM's migration was given up when another's failed.
const STOPPED: &str = "stopped: another VM's migration failed";

/// One VM's migration: the destination listens, the source sends, the progress is read until
/// it completes, fails, or `stop` is set (another VM failed, or an interrupt).
/// `dst`: the destination QEMU told to listen at `uri` first (none for a file).
fn migrate_one(
    v: &VmPlan,
    dst: Option<&Path>,
    uri: &str,
    o: &Options<'_>,
    stop: &AtomicBool,
) -> Result<Progress, String> {
    // Held until the migration ends: the destination's connection stays open meanwhile.
    let _dst = match dst {
        Some(qmp) => {
            let mut d = connect(qmp, o).map_err(|e| format!("destination: {e}"))?;
            migration::listen(&mut d, uri, o.qmp_timeout).map_err(|e| format!("destination: {e}"))?;
            Some(d)
        }
        None => None,
    };
    let mut src = connect(&v.qmp, o).map_err(|e| e.to_string())?;
    migration::start(&mut src, uri, o.qmp_timeout).map_err(|e| e.to_string())?;
    (o.say)(&format!("{}: migrating to {uri}...", v.name));
    let mut last_said = Instant::now();
    let done = migration::wait(&mut src, o.migration_timeout, o.progress_every, |p| {
        if last_said.elapsed() >= Duration::from_secs(1) {
            last_said = Instant::now();
            (o.say)(&format!(
                "{}: {} {} of {} MiB, dirty {} pages/s, expected downtime {} ms",
                v.name,
                p.status,
                p.transferred_bytes >> 20,
                p.total_bytes >> 20,
                p.dirty_pages_per_s,
                p.expected_downtime_ms.map_or("?".into(), |d| d.to_string())
            ));
        }
        !stop.load(Ordering::SeqCst) && !o.interrupted.load(Ordering::SeqCst)
    });
    match done {
        Ok(p) => {
            (o.say)(&format!("{}: migrated ({:.1} MiB)", v.name, p.transferred_bytes as f64 / f64::from(1 << 20)));
            Ok(p)
        }
        Err(MigrationError::Stopped(_)) if o.interrupted.load(Ordering::SeqCst) => Err("interrupted".into()),
        Err(MigrationError::Stopped(_)) => Err(STOPPED.into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Has `v`'s destination QEMU load the VM saved in `file` and waits, at most the migration
/// timeout, until it holds it.
fn load_one(v: &VmPlan, file: &Path, o: &Options<'_>) -> Result<String, String> {
    let uri = exec_uri("cat ", file)?;
    let mut d = connect(&v.destination.qmp, o).map_err(|e| format!("destination: {e}"))?;
    (o.say)(&format!("{}: restoring from {}...", v.name, file.display()));
    migration::listen(&mut d, &uri, o.qmp_timeout).map_err(|e| format!("destination: {e}"))?;
    let start = Instant::now();
    loop {
        let st = d.execute(&qapi_qmp::query_status {}, o.qmp_timeout).map_err(|e| format!("destination: {e}"))?;
        if st.status != qapi_qmp::RunState::inmigrate {
            return Ok(format!("restored from {}, now {}", file.display(), crate::plan::run_state(&st.status)));
        }
        if start.elapsed() >= o.migration_timeout {
            return Err(format!("still loading {} after {:?}", file.display(), o.migration_timeout));
        }
        std::thread::sleep(o.progress_every);
    }
}

fn plug_devices(qmp: &std::path::Path, specs: &[PlugDevice], o: &Options<'_>) -> Result<(), String> {
    if specs.is_empty() {
        return Ok(());
    }
    let mut c = connect(qmp, o).map_err(|e| e.to_string())?;
    for d in specs {
        devices::plug(&mut c, d, o.qmp_timeout).map_err(|e| format!("device_add {}: {e}", d.id))?;
    }
    Ok(())
}

impl Record {
    /// The timeline as an SVG picture: a row per VM and one for the job, a bar per phase
    /// (a failed one in red), the seconds along the bottom.
    pub fn svg(&self) -> String {
        let mut rows: Vec<Option<String>> = vec![None];
        for p in &self.phases {
            if !rows.contains(&p.vm) {
                rows.push(p.vm.clone());
            }
        }
        let (left, top, row_h, width) = (110.0, 30.0, 34.0, 760.0);
        let span = self.wall_s.max(1e-3);
        let x = |t: f64| left + t / span * width;
        let height = top + row_h * rows.len() as f64 + 40.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n",
            left + width + 20.0
        );
        s += &format!(
            "<text x=\"{left}\" y=\"18\">kawarimi vmm {} ({} order): {:.2} s, job stalled {:.3} s</text>\n",
            self.action,
            match self.order {
                Order::Through => "through",
                Order::Pause => "pause",
            },
            self.wall_s,
            self.job_stall_s
        );
        let colour = |phase: &str, ok: bool| match (phase, ok) {
            (_, false) => "#d62728",
            ("quiesce", _) => "#ff7f0e",
            ("resume", _) => "#2ca02c",
            ("unplug", _) => "#9467bd",
            ("migration" | "save" | "restore", _) => "#1f77b4",
            ("plug", _) => "#8c564b",
            _ => "#7f7f7f",
        };
        for (i, r) in rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let name = r.as_deref().unwrap_or("job");
            s += &format!("<text x=\"4\" y=\"{}\">{}</text>\n", y + row_h / 2.0 + 4.0, xml(name));
            for p in self.phases.iter().filter(|p| &p.vm == r) {
                let (x0, x1) = (x(p.start_s), x(p.end_s).max(x(p.start_s) + 1.5));
                s += &format!(
                    "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {:.3}-{:.3} s: {}</title></rect>\n",
                    y + 4.0,
                    x1 - x0,
                    row_h - 8.0,
                    colour(&p.phase, p.ok),
                    xml(name),
                    xml(&p.phase),
                    p.start_s,
                    p.end_s,
                    xml(&p.detail)
                );
            }
        }
        let axis_y = top + row_h * rows.len() as f64 + 14.0;
        for k in 0..=5 {
            let t = span * k as f64 / 5.0;
            s += &format!("<text x=\"{:.1}\" y=\"{axis_y}\" text-anchor=\"middle\">{t:.2} s</text>\n", x(t));
        }
        s += "</svg>\n";
        s
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

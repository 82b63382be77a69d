//! The migration plan (`plan.toml`): which VMs move, how each is reached, what is unplugged
//! before the move and plugged after it, and where it goes. It is read strictly (an unknown
//! key is an error naming it and its line) and then checked against the live VMs before
//! anything is touched ([`Plan::check`]).
//!
//! ```toml
//! [[vm]]
//! name = "node-a"                         # for messages and the timeline
//! qmp = "/run/kawarimi/node-a.qmp"        # the source QEMU's QMP socket
//! unplug = ["hca0"]                       # passthrough devices (their ids) to remove first
//!
//! [[vm.replug]]                           # how to plug them back if the move is rolled back
//! driver = "vfio-pci"
//! id = "hca0"
//! host = "0000:03:00.0"
//!
//! [vm.destination]
//! qmp = "/run/kawarimi/node-a-dst.qmp"    # a QEMU started with -incoming defer (or a URI)
//! uri = "tcp:10.0.0.2:4444"               # where the migration stream goes
//!
//! [[vm.destination.plug]]                 # devices that exist on the destination host
//! driver = "vfio-pci"
//! id = "hca0"
//! host = "0000:81:00.0"
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::client::{ClientError, QmpClient};

/// A whole plan: one entry per VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub vm: Vec<VmPlan>,
}

/// One VM's part of the move.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPlan {
    pub name: String,
    pub qmp: PathBuf,
    #[serde(default)]
    pub unplug: Vec<String>,
    /// How to plug the unplugged devices back into the source when a migration is rolled
    /// back (QEMU forgets a device's settings once it is gone). A device unplugged and not
    /// described here stays out after a rollback, and the job goes on without it.
    #[serde(default)]
    pub replug: Vec<PlugDevice>,
    pub destination: Destination,
}

/// Where a VM goes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// The destination QEMU's QMP socket.
    pub qmp: PathBuf,
    /// The migration URI (`tcp:HOST:PORT`, `unix:PATH`, `exec:…`).
    pub uri: String,
    #[serde(default)]
    pub plug: Vec<PlugDevice>,
}

/// A device added on the destination after the move (`device_add`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlugDevice {
    pub driver: String,
    pub id: String,
    /// The host PCI address of a passthrough device (`vfio-pci`'s `host`).
    #[serde(default)]
    pub host: Option<String>,
    /// The bus to plug into (a hotplug-capable root port), if the machine needs one named.
    #[serde(default)]
    pub bus: Option<String>,
}

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("plan {file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("plan {file}, VM {vm}: {reason}")]
    Vm { file: String, vm: String, reason: String },
}

/// What [`Plan::check`] found on one VM, for the dry run's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFound {
    pub name: String,
    /// The source QEMU's version and run state.
    pub source: ((u64, u64, u64), String),
    /// Every user device of the source (their ids).
    pub devices: Vec<String>,
}

impl Plan {
    /// Reads the plan in `file`.
    pub fn load(file: &Path) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| PlanError::Read { file: file.display().to_string(), reason: e.to_string() })?;
        Plan::parse(&text, &file.display().to_string())
    }

    /// Reads a plan from `text` (`file` names it in errors) and checks what needs no VM: at
    /// least one VM, names and sockets used once, device ids used once per VM, a URI with a
    /// transport QEMU knows.
    pub fn parse(text: &str, file: &str) -> Result<Plan, PlanError> {
        let plan: Plan = toml::from_str(text)
            .map_err(|e| PlanError::Read { file: file.to_string(), reason: e.to_string().trim_end().to_string() })?;
        let invalid = |reason: String| PlanError::Invalid { file: file.to_string(), reason };
        if plan.vm.is_empty() {
            return Err(invalid("no [[vm]]: nothing to migrate".into()));
        }
        let mut names = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        for v in &plan.vm {
            let in_vm = |reason: String| PlanError::Vm { file: file.to_string(), vm: v.name.clone(), reason };
            if v.name.is_empty() {
                return Err(invalid("a VM without a name".into()));
            }
            if !names.insert(v.name.as_str()) {
                return Err(invalid(format!("two VMs are named {:?}", v.name)));
            }
            for s in [&v.qmp, &v.destination.qmp] {
                if !sockets.insert(s.as_path()) {
                    return Err(in_vm(format!("QMP socket {} is used twice in the plan", s.display())));
                }
            }
            let mut ids = BTreeSet::new();
            if let Some(d) = v.unplug.iter().find(|d| !ids.insert(d.as_str())) {
                return Err(in_vm(format!("device {d:?} is unplugged twice")));
            }
            if let Some(d) = v.replug.iter().find(|d| !ids.contains(d.id.as_str())) {
                return Err(in_vm(format!("device {:?} is to be plugged back but is not unplugged", d.id)));
            }
            let mut plugged = BTreeSet::new();
            if let Some(d) = v.destination.plug.iter().find(|d| !plugged.insert(d.id.as_str())) {
                return Err(in_vm(format!("device {:?} is plugged twice", d.id)));
            }
            let known = ["tcp:", "unix:", "exec:", "rdma:", "fd:", "file:"];
            if !known.iter().any(|k| v.destination.uri.starts_with(k)) {
                return Err(in_vm(format!(
                    "migration URI {:?} names no transport QEMU knows ({})",
                    v.destination.uri,
                    known.join(" ")
                )));
            }
        }
        Ok(plan)
    }

    /// Checks the plan against the live VMs, touching nothing: every source QEMU answers on
    /// its socket and has every device the plan unplugs; every destination QEMU answers and
    /// waits for an incoming migration (started with `-incoming`). Each VM's QMP calls wait
    /// at most `timeout`. Returns what it found on each VM.
    pub fn check(&self, file: &str, timeout: Duration) -> Result<Vec<VmFound>, PlanError> {
        let mut found = Vec::new();
        for v in &self.vm {
            let in_vm = |reason: String| PlanError::Vm { file: file.to_string(), vm: v.name.clone(), reason };
            let qmp_error = |e: ClientError| in_vm(e.to_string());
            let mut src = QmpClient::connect(&v.qmp, timeout).map_err(qmp_error)?;
            let status = src.execute(&qapi_qmp::query_status {}, timeout).map_err(qmp_error)?;
            let devices = user_devices(&mut src, timeout).map_err(qmp_error)?;
            if let Some(d) = v.unplug.iter().find(|d| !devices.contains(d)) {
                return Err(in_vm(format!(
                    "device {d:?} to unplug is not in the VM (its devices: {})",
                    if devices.is_empty() { "none with an id".to_string() } else { devices.join(", ") }
                )));
            }
            let mut dst =
                QmpClient::connect(&v.destination.qmp, timeout).map_err(|e| in_vm(format!("destination: {e}")))?;
            let dst_status =
                dst.execute(&qapi_qmp::query_status {}, timeout).map_err(|e| in_vm(format!("destination: {e}")))?;
            if dst_status.status != qapi_qmp::RunState::inmigrate {
                return Err(in_vm(format!(
                    "the destination QEMU ({}) is not waiting for a migration: its state is {}, not inmigrate (start \
                     it with -incoming defer)",
                    v.destination.qmp.display(),
                    run_state(&dst_status.status)
                )));
            }
            found.push(VmFound {
                name: v.name.clone(),
                source: (src.greeting().version, run_state(&status.status)),
                devices,
            });
        }
        Ok(found)
    }
}

/// The ids of the devices the VM was given with an id (`-device …,id=X` or `device_add`):
/// QEMU lists them as the children of `/machine/peripheral`.
pub fn user_devices(c: &mut QmpClient, timeout: Duration) -> Result<Vec<String>, ClientError> {
    let props = c.execute(&qapi_qmp::qom_list { path: "/machine/peripheral".into() }, timeout)?;
    Ok(props.into_iter().filter(|p| p.type_.starts_with("child<")).map(|p| p.name).collect())
}

/// A run state as QEMU names it (`running`, `inmigrate`, …).
pub(crate) fn run_state(s: &qapi_qmp::RunState) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[vm]]
name = "node-a"
qmp = "/run/a.qmp"
unplug = ["hca0"]

[vm.destination]
qmp = "/run/a-dst.qmp"
uri = "tcp:10.0.0.2:4444"

[[vm.destination.plug]]
driver = "vfio-pci"
id = "hca0"
host = "0000:81:00.0"

[[vm]]
name = "node-b"
qmp = "/run/b.qmp"
destination = { qmp = "/run/b-dst.qmp", uri = "unix:/run/b.mig" }
"#;

    #[test]
    fn a_plan_reads_as_written() {
        let p = Plan::parse(GOOD, "plan.toml").unwrap();
        assert_eq!(p.vm.len(), 2);
        assert_eq!(p.vm[0].unplug, vec!["hca0"]);
        assert_eq!(p.vm[0].destination.plug[0].host.as_deref(), Some("0000:81:00.0"));
        assert!(p.vm[1].unplug.is_empty() && p.vm[1].destination.plug.is_empty());
    }

    /// Each mistake is refused with a message that names it.
    #[test]
    fn mistakes_are_named() {
        let cases: [(String, &str); 8] = [
            (GOOD.replace("unplug = [\"hca0\"]", "unplugg = [\"hca0\"]"), "unknown field `unplugg`"),
            (GOOD.replace("host = \"0000:81:00.0\"", "hots = \"x\""), "unknown field `hots`"),
            (GOOD.replace("name = \"node-b\"", "name = \"node-a\""), "two VMs are named \"node-a\""),
            (GOOD.replace("/run/b-dst.qmp", "/run/a.qmp"), "/run/a.qmp is used twice"),
            (GOOD.replace("unplug = [\"hca0\"]", "unplug = [\"hca0\", \"hca0\"]"), "\"hca0\" is unplugged twice"),
            (GOOD.replace("tcp:10.0.0.2:4444", "10.0.0.2:4444"), "names no transport QEMU knows"),
            ("".to_string(), "missing field `vm`"),
            ("vm = []".to_string(), "no [[vm]]"),
        ];
        for (text, says) in cases {
            let e = Plan::parse(&text, "plan.toml").unwrap_err().to_string();
            assert!(e.contains(says) && e.starts_with("plan plan.toml"), "{e:?} does not say {says:?}");
        }
        // A TOML error says where.
        let e = Plan::parse("[[vm]]\nname = \n", "p.toml").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}

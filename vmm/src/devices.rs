//! Hot-unplugging and plugging a VM's devices through QMP: the steps around a migration that
//! let go of a passthrough HCA on the source and give the destination's to the VM.

use std::time::{Duration, Instant};

use crate::client::{ClientError, QmpClient};
use crate::plan::PlugDevice;

/// Hot-unplugs device `id` and waits, at most `timeout` in all, for QEMU's `DEVICE_DELETED` of
/// it: only then has the guest let go (for a PCI device, its driver released it and the slot
/// was powered off), and may the host give the device to another VM or migrate this one.
/// Returns how long the whole unplug took.
pub fn unplug(c: &mut QmpClient, id: &str, timeout: Duration) -> Result<Duration, ClientError> {
    let start = Instant::now();
    c.execute(&qapi_qmp::device_del { id: id.to_string() }, timeout)?;
    let left = timeout.saturating_sub(start.elapsed());
    let what = format!("DEVICE_DELETED of {id} (the guest did not release the device)");
    c.wait_event(
        |e| e.name == "DEVICE_DELETED" && e.data.get("device").and_then(|d| d.as_str()) == Some(id),
        &what,
        left,
    )?;
    Ok(start.elapsed())
}

/// Plugs device `d` (`device_add`): its driver and id, and the host PCI address of a
/// passthrough device and the bus it goes on when the plan names them.
pub fn plug(c: &mut QmpClient, d: &PlugDevice, timeout: Duration) -> Result<(), ClientError> {
    let mut arguments = qapi_spec::Dictionary::new();
    if let Some(host) = &d.host {
        arguments.insert("host".into(), serde_json::Value::String(host.clone()));
    }
    let add = qapi_qmp::device_add { driver: d.driver.clone(), id: Some(d.id.clone()), bus: d.bus.clone(), arguments };
    c.execute(&add, timeout).map(drop)
}

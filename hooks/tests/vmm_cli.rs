//! `kawarimi vmm check` from the command line: a plan with a mistake is refused before any VM
//! is contacted, and one whose VM does not answer names the VM and its socket. (Checks against
//! live QEMUs are in `vmm/tests/qemu.rs`.)

use std::process::Command;

fn check(plan_text: &str, name: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("kawarimi-vmm-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, plan_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kawarimi"))
        .args(["vmm", "check", "--timeout", "0.3", "--plan"])
        .arg(&plan)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

const PLAN: &str = "[[vm]]\nname = \"node-a\"\nqmp = \"/nonexistent/a.qmp\"\nunplug = [\"hca0\"]\n\
                    [vm.destination]\nqmp = \"/nonexistent/a-dst.qmp\"\nuri = \"tcp:127.0.0.1:4444\"\n";

#[test]
fn a_plan_with_an_unknown_key_is_refused_naming_it() {
    let (code, out) = check(&PLAN.replace("unplug", "unplugg"), "key");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("unknown field `unplugg`") && out.contains("plan.toml"), "{out}");
}

#[test]
fn a_vm_that_does_not_answer_is_named_with_its_socket() {
    let (code, out) = check(PLAN, "socket");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("VM node-a") && out.contains("/nonexistent/a.qmp"), "{out}");
}

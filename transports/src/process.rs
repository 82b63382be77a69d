//! Naming a process for good: a pid is reused, a pid with its start time is not. Job files
//! and shared-memory segments name their owner this way, so that whatever a killed job left
//! behind is recognised as orphaned by the next one.

/// When process `pid` started (clock ticks after boot, `/proc/PID/stat` field 22), or `None`
/// when there is no such process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')': the fields
    // after it start past the last ')'. Field 22 is the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `started` still runs (`started` 0: unknown, the
/// pid alone decides).
pub fn is_alive(pid: u32, started: u64) -> bool {
    start_ticks(pid).is_some_and(|t| started == 0 || t == started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_name_this_process_and_no_dead_one() {
        let me = start_ticks(std::process::id()).expect("own start time");
        assert!(me > 0);
        assert_eq!(start_ticks(std::process::id()), Some(me), "stable");
        // pid_max is at most 2^22 on Linux.
        assert_eq!(start_ticks(u32::MAX - 1), None);
        assert!(is_alive(std::process::id(), me));
        assert!(!is_alive(std::process::id(), me + 1), "the same pid, started at another time");
        assert!(is_alive(std::process::id(), 0));
    }
}

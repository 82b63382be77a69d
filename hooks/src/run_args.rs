//! `kawarimi run`'s command line: kawarimi's own options are taken anywhere before the
//! program, as mpirun takes its own; every other word goes to mpirun unchanged.
//!
//! Finding "the program" needs to know which of mpirun's options take values (`-np 4`: `4`
//! is no program). [`MPIRUN_VALUED`] lists those of Open MPI 4.1's mpirun (from `mpirun
//! --help all`). An option missing from it is taken for a flag; if a word that follows such an
//! option is then taken for the program while kawarimi's options come after it, that reading
//! may be wrong, and it is refused with a message that says so instead of guessed.

/// kawarimi's own options of `kawarimi run`; each takes one value.
pub const OWN: [&str; 3] = ["--job-name", "--lib", "--mpirun"];

/// Open MPI 4.1 mpirun's options that take values, with how many (`-mca NAME VALUE`: 2).
/// Open MPI accepts each long option with one dash or two; both forms are listed where its
/// help lists both.
const MPIRUN_VALUED: &[(&str, usize)] = &[
    ("-am", 1),
    ("--app", 1),
    ("--bind-to", 1),
    ("-c", 1),
    ("-cf", 1),
    ("--cartofile", 1),
    ("-cpu-list", 1),
    ("--cpu-list", 1),
    ("-cpu-set", 1),
    ("--cpu-set", 1),
    ("-cpus-per-proc", 1),
    ("--cpus-per-proc", 1),
    ("-cpus-per-rank", 1),
    ("--cpus-per-rank", 1),
    ("-debugger", 1),
    ("--debugger", 1),
    ("-default-hostfile", 1),
    ("--default-hostfile", 1),
    ("-gmca", 2),
    ("--gmca", 2),
    ("-H", 1),
    ("-host", 1),
    ("--host", 1),
    ("-hnp", 1),
    ("--hnp", 1),
    ("-hostfile", 1),
    ("--hostfile", 1),
    ("-launch-agent", 1),
    ("--launch-agent", 1),
    ("-machinefile", 1),
    ("--machinefile", 1),
    ("--map-by", 1),
    ("-max-restarts", 1),
    ("--max-restarts", 1),
    ("-max-vm-size", 1),
    ("--max-vm-size", 1),
    ("-mca", 2),
    ("--mca", 2),
    ("-N", 1),
    ("-n", 1),
    ("--n", 1),
    ("-np", 1),
    ("--np", 1),
    ("-npernode", 1),
    ("--npernode", 1),
    ("-npersocket", 1),
    ("--npersocket", 1),
    ("-ompi-server", 1),
    ("--ompi-server", 1),
    ("-output-filename", 1),
    ("--output-filename", 1),
    ("-path", 1),
    ("--path", 1),
    ("-personality", 1),
    ("--personality", 1),
    ("--ppr", 1),
    ("--prefix", 1),
    ("--preload-files", 1),
    ("--rank-by", 1),
    ("-report-events", 1),
    ("--report-events", 1),
    ("-report-pid", 1),
    ("--report-pid", 1),
    ("-report-uri", 1),
    ("--report-uri", 1),
    ("-rf", 1),
    ("--rankfile", 1),
    ("-stdin", 1),
    ("--stdin", 1),
    ("-timeout", 1),
    ("--timeout", 1),
    ("-tune", 1),
    ("-wd", 1),
    ("--wd", 1),
    ("-wdir", 1),
    ("--wdir", 1),
    ("-x", 1),
    ("-xml-file", 1),
    ("--xml-file", 1),
    ("-xterm", 1),
    ("--xterm", 1),
];

/// How many values mpirun's option `word` takes, if kawarimi knows it.
fn mpirun_values(word: &str) -> Option<usize> {
    MPIRUN_VALUED.iter().find(|(name, _)| *name == word).map(|&(_, n)| n)
}

/// `kawarimi run`'s options, and the words for mpirun.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// libkawarimi.so, as given (a path).
    pub lib: Option<String>,
    pub mpirun: Option<String>,
    pub job_name: Option<String>,
    /// mpirun's options, the program and its arguments, in the order given.
    pub for_mpirun: Vec<String>,
}

impl RunArgs {
    /// Records kawarimi's `option` (one of [`OWN`]); an option given twice is an error.
    pub fn set(&mut self, option: &str, value: String) -> Result<(), String> {
        let slot = match option {
            "--job-name" => &mut self.job_name,
            "--mpirun" => &mut self.mpirun,
            "--lib" => &mut self.lib,
            _ => return Err(format!("kawarimi run: {option} is not an option of kawarimi's")),
        };
        if slot.is_some() {
            return Err(format!("kawarimi run: {option} is given twice"));
        }
        *slot = Some(value);
        Ok(())
    }
}

/// kawarimi's own option that `word` is (`--job-name` or `--job-name=VALUE`), with the value
/// when it is attached.
fn own_option(word: &str) -> Option<(&'static str, Option<&str>)> {
    OWN.iter().find_map(|&o| match word.strip_prefix(o) {
        Some("") => Some((o, None)),
        Some(rest) => rest.strip_prefix('=').map(|v| (o, Some(v))),
        None => None,
    })
}

/// A word that looks meant for kawarimi but is not exactly one of its options: a single
/// dash (`-job-name`, which mpirun would also read as its own) or a prefix (`--job`).
fn near_own_option(word: &str) -> Option<&'static str> {
    let name = word.split('=').next().unwrap_or(word);
    let bare = name.trim_start_matches('-');
    if bare.is_empty() || !word.starts_with('-') {
        return None;
    }
    OWN.into_iter().find(|o| {
        let own = o.trim_start_matches('-');
        own == bare || (name.starts_with("--") && bare.len() >= 3 && own.starts_with(bare))
    })
}

/// Splits `kawarimi run`'s words (what follows `run`) into kawarimi's options and mpirun's.
pub fn split(words: &[String]) -> Result<RunArgs, String> {
    let mut out = RunArgs::default();
    let mut i = 0;
    // The last option mpirun may know but kawarimi does not, when the word just before the
    // program was one: the program may be its value.
    let mut unknown_before_program: Option<&str> = None;
    while i < words.len() {
        let w = words[i].as_str();
        if let Some((option, attached)) = own_option(w) {
            let value = match attached {
                Some(v) => v.to_string(),
                None => {
                    i += 1;
                    words.get(i).cloned().ok_or_else(|| format!("kawarimi run: {option} needs a value"))?
                }
            };
            out.set(option, value)?;
            i += 1;
            continue;
        }
        if let Some(meant) = near_own_option(w) {
            return Err(format!(
                "kawarimi run: {w:?} is ambiguous: kawarimi's option is {meant} (two dashes, the full name); \
                 mpirun has no such option"
            ));
        }
        if w.starts_with('-') && w.len() > 1 {
            let n = mpirun_values(w).unwrap_or(0);
            unknown_before_program = (mpirun_values(w).is_none() && !w.contains('=')).then_some(w);
            let end = (i + 1 + n).min(words.len());
            out.for_mpirun.extend_from_slice(&words[i..end]);
            i = end;
            continue;
        }
        // The program: it and everything after it are mpirun's, untouched (a program may have
        // a --job-name of its own).
        if let Some(flag) = unknown_before_program {
            if let Some(own) = words[i + 1..].iter().find(|a| own_option(a).is_some()) {
                return Err(format!(
                    "kawarimi run: cannot tell whether {w:?} is the program or the value of {flag:?}, an mpirun \
                     option kawarimi does not know, so {own:?} after it is ambiguous: put kawarimi's options \
                     before {flag:?}"
                ));
            }
        }
        out.for_mpirun.extend_from_slice(&words[i..]);
        return Ok(out);
    }
    Err("kawarimi run: no program given (usage: kawarimi run [options and mpirun's options] PROGRAM [ARGS])".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn own_options_are_taken_before_or_among_mpiruns() {
        for line in [
            "--job-name sim1 --oversubscribe -np 4 ./prog -v",
            "--oversubscribe --job-name sim1 -np 4 ./prog -v",
            "--oversubscribe -np 4 --job-name=sim1 ./prog -v",
        ] {
            let a = split(&words(line)).unwrap();
            assert_eq!(a.job_name.as_deref(), Some("sim1"), "{line}");
            assert_eq!(a.for_mpirun, words("--oversubscribe -np 4 ./prog -v"), "{line}");
        }
        let a = split(&words("-x FOO --lib /l.so -mca btl self --mpirun /bin/mpirun prog")).unwrap();
        assert_eq!(a.lib.as_deref(), Some("/l.so"));
        assert_eq!(a.mpirun.as_deref(), Some("/bin/mpirun"));
        assert_eq!(a.for_mpirun, words("-x FOO -mca btl self prog"));
    }

    #[test]
    fn the_programs_own_words_are_left_alone() {
        // --job-name after the program is the program's; the values of mpirun's options are
        // not programs.
        let a = split(&words("-np 2 -x --job-name --host a,b ./sim --job-name mine")).unwrap();
        assert_eq!(a.job_name, None);
        assert_eq!(a.for_mpirun, words("-np 2 -x --job-name --host a,b ./sim --job-name mine"));
    }

    #[test]
    fn mistakes_are_named() {
        let e = split(&words("-np 2 --job-name a --job-name b ./p")).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = split(&words("-np 2 --job-name")).unwrap_err();
        assert!(e.contains("needs a value"), "{e}");
        let e = split(&words("-np 2")).unwrap_err();
        assert!(e.contains("no program"), "{e}");
        for near in ["-job-name", "--job", "--job-nam=x", "-lib"] {
            let e = split(&words(&format!("-np 2 {near} x ./p"))).unwrap_err();
            assert!(e.contains("ambiguous") && e.contains("--"), "{near}: {e}");
        }
    }

    #[test]
    fn an_unknown_mpirun_option_before_the_program_makes_later_own_options_ambiguous() {
        let e = split(&words("--some-new-option value --job-name x ./p")).unwrap_err();
        assert!(e.contains("--some-new-option") && e.contains("ambiguous"), "{e}");
        // Without own options after it, the reading does not matter: all goes to mpirun.
        let a = split(&words("--job-name x --some-new-flag ./p --job-name y")).unwrap_err();
        assert!(a.contains("ambiguous"), "{a}");
        let a = split(&words("--job-name x --some-new-flag ./p arg")).unwrap();
        assert_eq!(a.for_mpirun, words("--some-new-flag ./p arg"));
    }
}

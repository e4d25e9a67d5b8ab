//! `lockyard run` as a drop-in for util-linux flock(1): the idioms
//! scripts use, each run by bash as a script would, with flock(1) itself
//! as the peer that checks who holds what. (util-linux's own flock test
//! suite runs against both in `cargo xtask ci`.)

#![allow(clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use lockyard_test_support::{Scratch, is_root, skip};

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

/// Run `script` with bash in `dir`, `$L` naming `lockyard run` and `$F` a
/// lock file in `dir`.
fn bash(dir: &Path, script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("L", format!("{LOCKYARD} run"))
        .env("LY", LOCKYARD)
        .env("F", dir.join("f.lock"))
        .output()
        .expect("bash")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert `script` prints exactly `expected` on stdout.
fn prints(dir: &Path, script: &str, expected: &str) {
    let out = bash(dir, script);
    assert_eq!(stdout(&out), expected, "script:\n{script}\nstderr:\n{}", stderr(&out));
}

#[test]
fn descriptor_mode_locks_the_shells_descriptor_in_place() {
    let dir = Scratch::new("flock-fd-mode");
    prints(
        dir.dir(),
        r#"( $L -n 9 || exit 1; flock -n "$F" true; echo "inside: $?" ) 9>"$F"; flock -n "$F" true; echo "after: $?""#,
        "inside: 1\nafter: 0\n",
    );
    prints(
        dir.dir(),
        r#"exec 9>"$F"; $L -n 9; echo "locked: $?"; flock -n "$F" true; echo "held: $?";
           $L -u 9; echo "unlocked: $?"; flock -n "$F" true; echo "free: $?""#,
        "locked: 0\nheld: 1\nunlocked: 0\nfree: 0\n",
    );
    // A busy descriptor: the conflict code, and the script can tell.
    prints(
        dir.dir(),
        r#"flock "$F" sleep 5 & sleep 0.2; ( $L -n -E 9 9 || echo "busy: $?" ) 9>"$F"; kill %1"#,
        "busy: 9\n",
    );
    // A descriptor that is not open: flock(1)'s message and status.
    let out = bash(dir.dir(), "$L -n 9");
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(stderr(&out).contains("lockyard: 9: Bad file descriptor"), "{out:?}");
    // --fd with a command, and -o keeping the descriptor from it.
    prints(
        dir.dir(),
        r#"exec 10<>"$F"; $L --fd 10 -c "$L -n --fd 10 true; echo inner \$?"; $L -o --fd 10 -c "$L -n --fd 10 true 2>/dev/null; echo closed \$?""#,
        "inner 0\nclosed 65\n",
    );
}

#[test]
fn a_timed_wait_on_the_shells_descriptor_waits_in_the_kernel_and_leaves_nothing_behind() {
    let dir = Scratch::new("flock-fd-wait");
    // Queued behind a holder that unlocks in place (flock -u: no close),
    // the waiter gets the lock while its -w still runs.
    prints(
        dir.dir(),
        r#"exec 8>"$F"; flock 8; ( sleep 0.3; flock -u 8 ) &
           ( $L -w 10 9 && echo "got it: $?"; flock -n "$F" true; echo "held by the shell: $?" ) 9>"$F"; wait"#,
        "got it: 0\nheld by the shell: 1\n",
    );
    // Timed out: the conflict status, and once the holder is gone nothing
    // holds the file, the shell's descriptor included.
    prints(
        dir.dir(),
        r#"flock "$F" sleep 1 & sleep 0.2
           exec 9>"$F"; $L -w 0.3 9; echo "timed out: $?"; wait
           flock -n "$F" true; echo "free: $?""#,
        "timed out: 1\nfree: 0\n",
    );
}

#[test]
fn options_and_spellings_flock1_accepts() {
    let dir = Scratch::new("flock-options");
    prints(
        dir.dir(),
        r#"flock "$F" sleep 5 & sleep 0.2
           $L --excl --nonblocking --conf 42 "$F" true; echo "$?"
           $L --nb -E 43 "$F" true; echo "$?"
           $L -n -w 5 -E 44 "$F" true; echo "$?"
           $L --time 0.2 -E 45 "$F" true; echo "$?"
           $L -w 0 -E 46 "$F" true; echo "$?"
           $L -s -x -n -E 47 "$F" true; echo "$?"
           $L -x -s -n "$F" true; echo "shared beside an exclusive: $?"
           kill %1"#,
        "42\n43\n44\n45\n46\n47\nshared beside an exclusive: 1\n",
    );
    prints(
        dir.dir(),
        r#"flock -s "$F" sleep 5 & sleep 0.2; $L -x -s -n "$F" echo shared; kill %1"#,
        "shared\n",
    );
    // A wait with -w ends when the holder lets go, on a file or on the
    // shell's descriptor.
    prints(
        dir.dir(),
        r#"flock "$F" sleep 0.4 & sleep 0.1; $L -w 10 "$F" echo file; wait
           flock "$F" sleep 0.4 & sleep 0.1; ( $L -w 10 9 && echo descriptor ) 9>"$F"; wait"#,
        "file\ndescriptor\n",
    );
    let version = bash(dir.dir(), "$L -V");
    assert!(version.status.success() && stdout(&version).contains("lockyard"), "{version:?}");
    let help = bash(dir.dir(), "$L --help");
    assert!(help.status.success() && stdout(&help).contains("--conflict-exit-code"), "{help:?}");
    for bad in
        ["$L --bogus \"$F\" true", "$L -w soon \"$F\" true", "$L", "$L -F -o \"$F\" true", "$L \"$F\" -c a b"]
    {
        let out = bash(dir.dir(), bad);
        assert_eq!(out.status.code(), Some(64), "{bad}: {out:?}");
        assert!(stderr(&out).contains("Try 'lockyard run --help'"), "{bad}: {out:?}");
    }
}

#[test]
fn commands_run_as_flock1_runs_them() {
    let dir = Scratch::new("flock-commands");
    // -c goes through $SHELL, else /bin/sh.
    prints(dir.dir(), r#"SHELL=/bin/bash $L "$F" -c '[[ x == x ]] && echo bash'"#, "bash\n");
    prints(dir.dir(), r#"env -u SHELL $LY run "$F" -c 'echo "$0"'"#, "/bin/sh\n");
    // The command's status, 128+N for a signal, 69 if it cannot run.
    prints(
        dir.dir(),
        r#"$L "$F" sh -c 'exit 7'; echo $?; $L "$F" sh -c 'kill -TERM $$'; echo $?"#,
        "7\n143\n",
    );
    let missing = bash(dir.dir(), r#"$L "$F" /nonexistent/program"#);
    assert_eq!(missing.status.code(), Some(69), "{missing:?}");
    assert!(stderr(&missing).contains("failed to execute /nonexistent/program: No such file or directory"));
    // -F: lockyard becomes the command, which then holds the lock.
    prints(dir.dir(), r#"$L -F "$F" sh -c 'flock -n "$F" true; echo "held by me: $?"'"#, "held by me: 1\n");
    // Without -o, what the command leaves running keeps the lock; with
    // -o it does not.
    prints(
        dir.dir(),
        r#"$L "$F" sh -c 'sleep 3 >/dev/null 2>&1 &'; flock -n "$F" true; echo "kept: $?"; pkill -f "^sleep 3$"
           $L -o "$F" sh -c 'sleep 3 >/dev/null 2>&1 &'; flock -n "$F" true; echo "closed: $?"; pkill -f "^sleep 3$""#,
        "kept: 1\nclosed: 0\n",
    );
    // --verbose prints what flock(1) prints, where it prints it.
    let out = bash(dir.dir(), r#"$L --verbose "$F" true"#);
    let text = stdout(&out);
    let mut lines = text.lines();
    let took = lines.next().unwrap_or_default();
    assert!(took.starts_with("lockyard: getting lock took ") && took.ends_with(" seconds"), "{text}");
    assert_eq!(lines.next(), Some("lockyard: executing true"), "{text}");
    let busy = bash(dir.dir(), r#"flock "$F" sleep 5 & sleep 0.2; $L --verbose -n "$F" true; kill %1"#);
    assert!(stderr(&busy).contains("lockyard: failed to get lock"), "{busy:?}");
    assert!(stderr(&busy).contains("held by pid="), "lockyard's holder line: {busy:?}");
}

#[test]
fn byte_ranges_with_fcntl_locks() {
    let dir = Scratch::new("flock-fcntl");
    let out = bash(
        dir.dir(),
        r#"$L --shared --fcntl --start 1 --length 2 "$F" grep -c 'OFDLCK ADVISORY  READ.* 1 2$' /proc/locks"#,
    );
    assert_eq!(stdout(&out), "1\n", "{out:?}");
    // flock and fcntl locks are independent; fcntl ones exclude each other.
    prints(
        dir.dir(),
        r#"$L --fcntl "$F" sh -c '$LY run -n "$F" true; echo "flock: $?"; $LY run --fcntl -n "$F" true; echo "fcntl: $?"'"#,
        "flock: 0\nfcntl: 1\n",
    );
}

#[test]
fn what_can_be_locked_matches_flock1() {
    let dir = Scratch::new("flock-targets");
    // New lock files are 0666 less the umask, so others can lock them.
    prints(dir.dir(), r#"umask 0; $L "$F" true; stat -c %a "$F""#, "666\n");
    prints(dir.dir(), r#"umask 022; $L "$F.2" true; stat -c %a "$F.2""#, "644\n");
    // Read-only files, directories (this one, or named) lock.
    prints(dir.dir(), r#"touch ro; chmod 444 ro; $L -n ro echo read-only"#, "read-only\n");
    prints(dir.dir(), r#"mkdir -p d; $L -n d echo dir; $L -n . echo dot"#, "dir\ndot\n");
    // The man page's idiom: a 0555 script that locks itself.
    let script = dir.path("self-locking.sh");
    std::fs::write(
        &script,
        "#!/bin/bash\n[ \"${FLOCKER}\" != \"$0\" ] && exec env FLOCKER=\"$0\" $L -en \"$0\" \"$0\" \"$@\" || :\necho \"locked $1\"\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    prints(dir.dir(), "./self-locking.sh once", "locked once\n");
    prints(dir.dir(), r#"flock -n ./self-locking.sh ./self-locking.sh twice; echo "$?""#, "1\n");
    // A link of our own, in a directory of our own, is followed.
    prints(
        dir.dir(),
        r#"touch target; ln -sf target link; $L link sh -c 'flock -n target true; echo $?'"#,
        "1\n",
    );
}

#[test]
fn other_users_lock_files_lock_and_their_links_in_sticky_dirs_do_not() {
    if !is_root() {
        skip("needs root to make files and links of another user");
        return;
    }
    let dir = Scratch::new("flock-users");
    std::fs::set_permissions(dir.dir(), std::fs::Permissions::from_mode(0o1777)).expect("sticky");
    // Another user's lock file in a sticky directory: flock(2) needs only
    // read access, and O_CREAT (which protected_regular refuses) is not used.
    prints(dir.dir(), r#"touch theirs; chown nobody theirs; chmod 644 theirs; $L -n theirs echo ok"#, "ok\n");
    // A link of another user in a sticky world-writable directory is the
    // protected_symlinks attack: refused, and its target left alone.
    let out = bash(
        dir.dir(),
        r#"touch victim; ln -s victim planted; chown -h nobody planted; $L -n planted echo followed"#,
    );
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    assert!(stderr(&out).contains("refusing to follow a symbolic link"), "{out:?}");
    assert!(stdout(&out).is_empty(), "{out:?}");
    // A link of the directory's owner is followed there too.
    prints(dir.dir(), r#"ln -s victim mine; $L -n mine echo followed"#, "followed\n");
}

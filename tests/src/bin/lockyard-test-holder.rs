//! Test helper: take a lock through lockyard-flock, say so, hold it.
//!
//! `lockyard-test-holder PATH [flock|ofd|posix] [shared|exclusive] [START LEN]`
//! prints `locked <pid>` once it holds the lock, then holds it until its
//! stdin closes (or it is killed). Exits 3 if the lock is busy.
//! `lockyard-test-holder --pidfile PATH` claims a pidfile the same way.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::process::ExitCode;

use lockyard_flock::{ByteRange, LockFile, LockKind, LockMode, LockOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: lockyard-test-holder PATH [flock|ofd|posix] [shared|exclusive] [START LEN]");
        return ExitCode::from(2);
    };
    if path == "--pidfile" {
        let Some(pidfile) = args.get(1) else { return ExitCode::from(2) };
        return match lockyard_flock::Pidfile::new(pidfile).claim() {
            Ok(guard) => {
                hold_until_stdin_closes();
                drop(guard);
                ExitCode::SUCCESS
            }
            Err(e) if e.is_busy() => ExitCode::from(3),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let kind = match args.get(1).map(String::as_str) {
        None | Some("flock") => LockKind::Flock,
        Some("ofd") => LockKind::Ofd,
        Some("posix") => LockKind::Posix,
        Some(other) => {
            eprintln!("unknown kind {other}");
            return ExitCode::from(2);
        }
    };
    let mode = match args.get(2).map(String::as_str) {
        Some("shared") => LockMode::Shared,
        _ => LockMode::Exclusive,
    };
    let range = match (args.get(3), args.get(4)) {
        (Some(start), Some(len)) => ByteRange::new(start.parse().expect("start"), len.parse().expect("len")),
        _ => ByteRange::WHOLE,
    };
    let options = LockOptions::new().kind(kind).mode(mode).range(range);
    let file = match LockFile::with_options(path, options) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let guard = match file.try_lock() {
        Ok(Some(guard)) => guard,
        Ok(None) => return ExitCode::from(3),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    hold_until_stdin_closes();
    drop(guard);
    ExitCode::SUCCESS
}

fn hold_until_stdin_closes() {
    println!("locked {}", std::process::id());
    std::io::stdout().flush().expect("stdout");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

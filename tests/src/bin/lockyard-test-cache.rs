//! Test helper: one lockyard-cache client process.
//!
//! `lockyard-test-cache ROOT store KEY TEXT [--die-at STEP] [--two-renames]`
//! publishes an entry whose file `data` holds TEXT; with `--die-at` it
//! SIGKILLs itself at that step (`staging`, `mid-write`, `built`, `synced`,
//! `displaced`, `published`).
//! `lockyard-test-cache ROOT ensure KEY COUNTFILE [--block]` ensures KEY;
//! its build appends a line to COUNTFILE, then (with `--block`) prints
//! `building` and waits for stdin to close, else sleeps 200 ms.
//! `lockyard-test-cache ROOT hold KEY` looks KEY up and holds the reader
//! guard until stdin closes.
//! Prints `digest HEX` for the entry it ends with, after `ready` for hold.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use lockyard_cache::Wait;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use lockyard_cache::{BuildResult, Cache, CacheOptions, Step};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words[..] {
        [root, "store", key, text, ref rest @ ..] => store(root, key, text, rest),
        [root, "ensure", key, count, ref rest @ ..] => ensure(root, key, count, rest.contains(&"--block")),
        [root, "hold", key] => hold(root, key),
        _ => Err("usage: lockyard-test-cache ROOT store|ensure|hold ...".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockyard-test-cache: {e}");
            ExitCode::FAILURE
        }
    }
}

fn die() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    unreachable!("SIGKILL returned")
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn wait_for_stdin_to_close() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

fn store(root: &str, key: &str, text: &str, rest: &[&str]) -> Result<(), String> {
    let die_at = rest.iter().position(|a| *a == "--die-at").and_then(|i| rest.get(i + 1)).copied();
    let step_name = |step: Step| match step {
        Step::StagingCreated => "staging",
        Step::Built => "built",
        Step::Synced => "synced",
        Step::Displaced => "displaced",
        Step::Published => "published",
        _ => "other",
    };
    let mut options = CacheOptions::new().wait(Wait::timeout(Duration::from_secs(30)));
    if let Some(at) = die_at {
        let at = at.to_owned();
        options = options.on_step(move |step| {
            if step_name(step) == at {
                die();
            }
        });
    }
    if rest.contains(&"--two-renames") {
        options = options.force_two_renames();
    }
    let cache = Cache::open(root, options).map_err(|e| e.to_string())?;
    let mid_write = die_at == Some("mid-write");
    let guard = cache
        .store(key, |dir: &Path| -> BuildResult {
            std::fs::create_dir(dir.join("sub"))?;
            std::fs::write(dir.join("sub/extra"), b"more")?;
            let mut file = std::fs::File::create(dir.join("data"))?;
            file.write_all(&text.as_bytes()[..text.len() / 2])?;
            if mid_write {
                die();
            }
            file.write_all(&text.as_bytes()[text.len() / 2..])?;
            Ok(serde_json::json!({ "text": text }))
        })
        .map_err(|e| e.to_string())?;
    say(&format!("digest {}", guard.meta().digest));
    Ok(())
}

fn ensure(root: &str, key: &str, count: &str, block: bool) -> Result<(), String> {
    let cache = Cache::open(root, CacheOptions::new().wait(Wait::timeout(Duration::from_secs(30))))
        .map_err(|e| e.to_string())?;
    let guard = cache
        .ensure(key, |dir: &Path| -> BuildResult {
            let mut log = std::fs::OpenOptions::new().append(true).create(true).open(count)?;
            writeln!(log, "build by {}", std::process::id())?;
            std::fs::write(dir.join("data"), format!("built by {}", std::process::id()))?;
            if block {
                say("building");
                wait_for_stdin_to_close();
            } else {
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(serde_json::Value::Null)
        })
        .map_err(|e| e.to_string())?;
    say(&format!("digest {}", guard.meta().digest));
    Ok(())
}

fn hold(root: &str, key: &str) -> Result<(), String> {
    let cache = Cache::open(root, CacheOptions::new()).map_err(|e| e.to_string())?;
    let guard = cache.lookup(key).map_err(|e| e.to_string())?.ok_or("no such entry")?;
    say("ready");
    wait_for_stdin_to_close();
    say(&format!("digest {}", guard.meta().digest));
    Ok(())
}

//! `lockyard who` and `lockyard locks` against `cat /proc/locks` (the
//! floor: the kernel generating the text) and `lslocks`, with 1k, 10k and
//! 100k locks held.
//!
//! `cargo bench -p lockyard-cli --bench cli`; each figure is the median of
//! several rounds of the whole commands, taken in turn. `lslocks` is run at 1k locks (it
//! rescans every descriptor for every lock, so 10k takes minutes; set
//! `LOCKYARD_BENCH_LSLOCKS=1` to include it at 10k). `-- --test` (CI's
//! smoke run) does the 1k case with one run each.

#![allow(clippy::print_stdout)]

use lockyard_test_support::held;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use held::Held;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

/// Wall time of one run of `program args`, output discarded.
fn once(program: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success() || program == LOCKYARD, "{program} {args:?} failed: {status}");
    started.elapsed()
}

/// Median wall times of `runs` rounds of `commands`, each round running
/// every command once in turn, so that the machine's drift (other load,
/// the kernel's lock lists) is shared by all of them.
fn medians(runs: usize, commands: &[(&str, &[&str])]) -> Vec<Duration> {
    let mut times = vec![Vec::with_capacity(runs); commands.len()];
    for _ in 0..runs {
        for (i, (program, args)) in commands.iter().enumerate() {
            times[i].push(once(program, args));
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect()
}

fn main() {
    if held::child_mode() {
        return;
    }
    let smoke = std::env::args().any(|a| a == "--test");
    let sizes: &[usize] = if smoke { &[1_000] } else { &[1_000, 10_000, 100_000] };
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>14}",
        "locks", "cat", "who", "locks", "lslocks", "who/cat", "locks/cat", "lslocks/locks"
    );
    for &count in sizes {
        let runs = if smoke {
            1
        } else if count >= 100_000 {
            3
        } else {
            15
        };
        let held = Held::new(count);
        let target = held.target();
        let target = target.to_str().expect("utf-8");
        let times =
            medians(runs, &[("cat", &["/proc/locks"]), (LOCKYARD, &["who", target]), (LOCKYARD, &["locks"])]);
        let (cat, who, locks) = (times[0], times[1], times[2]);
        let lslocks = (count <= 1_000
            || (count <= 10_000 && std::env::var_os("LOCKYARD_BENCH_LSLOCKS").is_some()))
        .then(|| once("lslocks", &[]));
        println!(
            "{count:>7} {:>12.3?} {:>12.3?} {:>12.3?} {:>12} {:>10.2} {:>10.2} {:>14}",
            cat,
            who,
            locks,
            lslocks.map_or("-".to_owned(), |d| format!("{d:.3?}")),
            who.as_secs_f64() / cat.as_secs_f64(),
            locks.as_secs_f64() / cat.as_secs_f64(),
            lslocks.map_or("-".to_owned(), |d| format!("{:.0}", d.as_secs_f64() / locks.as_secs_f64())),
        );
    }
}

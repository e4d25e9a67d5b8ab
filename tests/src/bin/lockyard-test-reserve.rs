//! A reserver for the multi-process reservation tests, on a synthetic
//! topology (reservations are lock files; no CPU is pinned here).
//!
//! `lockyard-test-reserve DIR ROUNDS HOLD_MS LOG`: each round reserves a
//! random 1 to 6 CPUs exclusively (every fourth round one whole LLC, as a
//! benchmark) of a 16-CPU host of four LLCs, waiting as long as needed,
//! and while holding appends `pid mode start_ns end_ns cpus llcs` to LOG
//! (one `write` with O_APPEND, so lines never interleave).
//!
//! `lockyard-test-reserve DIR hold-all`: reserves all 16 CPUs, prints
//! `held`, and sleeps until killed.

#![allow(clippy::print_stdout)]

use lockyard_topo::Wait;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockyard_topo::{Amount, Mode, Request, Reserver, Topology};

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let topology = Topology::synthetic(1, 4, 4, false);
    let all = topology.online.clone();
    let reserver = Reserver::new(Path::new(&args[0]), topology, &all).expect("reserver");
    if args.get(1).map(String::as_str) == Some("hold-all") {
        let held = reserver.reserve(&Request::new(Amount::Cpus(16))).expect("all of it");
        println!("held {}", held.cpus());
        std::io::stdout().flush().expect("flush");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    let rounds: usize = args[1].parse().expect("rounds");
    let hold = Duration::from_millis(args[2].parse().expect("hold ms"));
    let mut log = std::fs::OpenOptions::new().append(true).create(true).open(&args[3]).expect("log");
    for round in 0..rounds {
        let request = if round % 4 == 3 {
            Request::new(Amount::Llcs(1)).mode(Mode::ExclusiveLlc)
        } else {
            Request::new(Amount::Cpus(fastrand::usize(1..=6)))
        };
        let held = reserver.reserve_wait(&request, &Wait::timeout(Duration::from_secs(60))).expect("reserve");
        let start = now_ns();
        std::thread::sleep(hold);
        let end = now_ns();
        let llcs: Vec<String> = held.llcs().iter().map(ToString::to_string).collect();
        let line = format!(
            "{} {} {start} {end} {} {}\n",
            std::process::id(),
            held.mode(),
            held.cpus(),
            llcs.join(",")
        );
        log.write_all(line.as_bytes()).expect("log");
        drop(held);
    }
}

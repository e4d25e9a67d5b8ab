//! Reservations in one process, against fixture topologies (reservations
//! are lock files, so a 128-CPU host can be reserved from a 2-CPU VM;
//! only pinning needs the CPUs to exist).

use lockyard_topo::Wait;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lockyard_procfs::CpuList;
use lockyard_topo::{Amount, Mode, Placement, Request, ReserveError, Reserver, Smt, Topology};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lockyard-reserve-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn list(text: &str) -> CpuList {
    text.parse().expect("cpu list")
}

fn topology(nodes: u32, llcs_per: u32, cpus_per: u32, smt: bool) -> Topology {
    Topology::synthetic(nodes, llcs_per, cpus_per, smt)
}

fn reserver(dir: &Dir, topology: Topology) -> Reserver {
    let all = topology.online.clone();
    Reserver::new(&dir.0, topology, &all).expect("reserver")
}

#[test]
fn exclusive_cpus_never_overlap_and_consolidate_into_shared_llcs() {
    let dir = Dir::new("cpus");
    let r = reserver(&dir, topology(1, 4, 8, false));
    let a = r.reserve(&Request::new(Amount::Cpus(3))).expect("a");
    let b = r.reserve(&Request::new(Amount::Cpus(3))).expect("b");
    assert_eq!(a.cpus(), &list("0-2"));
    assert_eq!(b.cpus(), &list("3-5"), "consolidated into llc-0, which a already shares");
    assert_eq!((a.llcs(), b.llcs()), (&[0][..], &[0][..]));
    let spread = r.reserve(&Request::new(Amount::Cpus(2)).placement(Placement::Spread)).expect("spread");
    assert_eq!(spread.llcs(), [8], "spreading prefers an idle LLC");
    assert_eq!(a.jobs(), 3);
    assert!(a.to_string().starts_with("cpus 0-2 (3 jobs), llc-0 shared, node 0"), "{a}");
    // The directory was made for everyone, and so were the lock files.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir.0).expect("dir").permissions().mode() & 0o7777, 0o1777);
    assert_eq!(
        std::fs::metadata(dir.0.join("cpu-0.lock")).expect("lock").permissions().mode() & 0o777,
        0o666
    );
}

#[test]
fn a_benchmark_llc_keeps_everyone_out_and_busy_names_holders() {
    let dir = Dir::new("llc");
    let r = reserver(&dir, topology(1, 2, 4, false));
    let bench = r.reserve(&Request::new(Amount::Llcs(1)).mode(Mode::ExclusiveLlc)).expect("bench");
    assert_eq!((bench.llcs(), bench.cpus()), (&[0][..], &list("0-3")));
    let job = r.reserve(&Request::new(Amount::Cpus(4))).expect("job");
    assert_eq!(job.cpus(), &list("4-7"), "the job goes around the benchmark's LLC");
    let budget = r.reserve(&Request::new(Amount::Cpus(2)).mode(Mode::Shared)).expect("budget");
    assert_eq!(budget.llcs(), [4], "a budget shares the job's LLC, not the benchmark's");
    let err = r.reserve(&Request::new(Amount::Llcs(1)).mode(Mode::ExclusiveLlc)).expect_err("all busy");
    let ReserveError::Busy { busy, .. } = &err else { panic!("{err}") };
    let me = std::process::id();
    assert!(
        busy.iter().any(|b| b.name == "llc-0" && b.holders.holding().any(|h| h.pid == Some(me))),
        "{err}"
    );
    // In io::Result code, busy is WouldBlock, as std's try_lock says it.
    assert_eq!(std::io::Error::from(err).kind(), std::io::ErrorKind::WouldBlock);
    drop(bench);
    let again = r.reserve(&Request::new(Amount::Llcs(1)).mode(Mode::ExclusiveLlc)).expect("freed by drop");
    assert_eq!(again.llcs(), [0]);
}

#[test]
fn impossible_requests_fail_at_once() {
    let dir = Dir::new("impossible");
    let r = reserver(&dir, topology(2, 2, 4, false));
    for request in [
        Request::new(Amount::Cpus(17)),
        Request::new(Amount::Llcs(5)),
        Request::new(Amount::Cpus(9)).node(1),
        Request::new(Amount::Cpus(1)).node(7),
        Request::new(Amount::Cpus(0)),
    ] {
        let started = Instant::now();
        let err = r.reserve_wait(&request, &Wait::timeout(Duration::from_secs(30))).expect_err("impossible");
        assert!(matches!(err, ReserveError::Impossible { .. }), "{err}");
        assert!(!err.is_busy());
        assert!(started.elapsed() < Duration::from_secs(5), "not after a wait");
    }
}

#[test]
fn nodes_fill_before_spilling_and_node_requests_stay_home() {
    let dir = Dir::new("numa");
    let r = reserver(&dir, topology(2, 2, 4, false));
    let on1 = r.reserve(&Request::new(Amount::Cpus(3)).node(1)).expect("node 1");
    assert_eq!((on1.cpus(), on1.nodes()), (&list("8-10"), &[1][..]));
    // Node 0 has the most free CPUs now: filled first, then node 1.
    let big = r.reserve(&Request::new(Amount::Cpus(10))).expect("spill");
    assert_eq!(big.cpus(), &list("0-7,11,12"), "{big}");
    assert_eq!(big.nodes(), [0, 1]);
}

#[test]
fn smt_siblings_together_or_apart() {
    let dir = Dir::new("smt");
    let r = reserver(&dir, topology(1, 1, 8, true));
    let together = r.reserve(&Request::new(Amount::Cpus(2))).expect("together");
    assert_eq!(together.cpus(), &list("0-1"), "one core's two threads");
    drop(together);
    let apart = r.reserve(&Request::new(Amount::Cpus(3)).smt(Smt::Apart)).expect("apart");
    assert_eq!(apart.cpus(), &list("0,2,4"), "three cores");
}

#[test]
fn a_waiter_gets_what_a_release_frees() {
    let dir = Dir::new("wait");
    let r = reserver(&dir, topology(1, 1, 4, false));
    let holder = r.reserve(&Request::new(Amount::Cpus(4))).expect("all of it");
    let err = r
        .reserve_wait(&Request::new(Amount::Cpus(2)), &Wait::timeout(Duration::from_millis(50)))
        .expect_err("busy");
    assert!(matches!(err, ReserveError::Timeout { .. }), "{err}");
    let waiter = {
        let r = r.clone();
        std::thread::spawn(move || {
            let got = r.reserve_wait(&Request::new(Amount::Cpus(2)), &Wait::timeout(Duration::from_secs(20)));
            (got.map(|g| g.cpus().clone()), Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let released = Instant::now();
    drop(holder);
    let (got, at) = waiter.join().expect("thread");
    assert_eq!(got.expect("reserved after the release"), list("0-1"));
    assert!(at >= released);

    // A waiter plans around what is free: with CPUs 0 and 2 busy and 3
    // wanted of 0-3, it waits for one busy CPU, not both.
    let one = Request::new(Amount::Cpus(1));
    let (cpu0, cpu1, cpu2) =
        (r.reserve(&one).expect("0"), r.reserve(&one).expect("1"), r.reserve(&one).expect("2"));
    assert_eq!((cpu0.cpus(), cpu2.cpus()), (&list("0"), &list("2")));
    drop(cpu1);
    let waiter = {
        let r = r.clone();
        std::thread::spawn(move || {
            r.reserve_wait(&Request::new(Amount::Cpus(3)), &Wait::timeout(Duration::from_secs(20)))
                .map(|g| g.cpus().clone())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    drop(cpu0);
    assert_eq!(waiter.join().expect("thread").expect("reserved while CPU 2 is still held"), list("0-1,3"));
    drop(cpu2);
}

#[test]
fn a_waiting_large_request_is_not_starved_by_small_ones() {
    let dir = Dir::new("fair");
    let r = reserver(&dir, topology(1, 1, 4, false));
    let small = r.reserve(&Request::new(Amount::Cpus(1))).expect("small");
    let big = {
        let r = r.clone();
        std::thread::spawn(move || {
            r.reserve_wait(&Request::new(Amount::Cpus(4)), &Wait::timeout(Duration::from_secs(20))).map(drop)
        })
    };
    // Once the big request waits at the gate, small ones are held back
    // even though CPUs are free.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match r.reserve(&Request::new(Amount::Cpus(1))) {
            Err(ReserveError::Busy { busy, .. }) if busy.iter().any(|b| b.name == "gate") => break,
            Ok(extra) => drop(extra),
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the big request never took the gate");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(small);
    big.join().expect("thread").expect("the big request got everything");
}

#[test]
fn cpus_without_a_known_llc_are_still_reservable() {
    let dir = Dir::new("nollc");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/odd");
    let topology = Topology::read(&root);
    assert_eq!(topology.cpus.iter().filter(|c| c.llc.is_none()).count(), 2, "the fixture lacks two LLCs");
    let r = reserver(&dir, topology);
    let all = r.reserve(&Request::new(Amount::Cpus(3))).expect("every CPU, LLC known or not");
    assert_eq!(all.cpus(), &list("0-2"));
    let err = r.reserve(&Request::new(Amount::Cpus(1))).expect_err("all taken");
    assert!(err.is_busy(), "{err}");
}

/// A budget as a share of the CPUs this process may use: rounded up, at
/// least one, on the requested node when there is one.
#[test]
fn a_percentage_budget_scales_with_the_allowed_cpus() {
    let dir = Dir::new("percent");
    let r = reserver(&dir, topology(2, 2, 4, false));
    let third = r.reserve(&Request::new(Amount::CpuPercent(30)).mode(Mode::Shared)).expect("30%");
    assert_eq!(third.cpus().len(), 5, "30% of 16 is 4.8, rounded up");
    drop(third);
    let one = r.reserve(&Request::new(Amount::CpuPercent(1))).expect("1%");
    assert_eq!(one.cpus().len(), 1, "at least one");
    drop(one);
    let node = r.reserve(&Request::new(Amount::CpuPercent(50)).node(1)).expect("50% of node 1");
    assert_eq!(node.cpus(), &list("8-11"), "half of node 1's eight CPUs, on node 1");
    drop(node);
    let all = r.reserve(&Request::new(Amount::CpuPercent(100))).expect("100%");
    assert_eq!(all.cpus().len(), 16);
    drop(all);
    let err = r.reserve(&Request::new(Amount::CpuPercent(101))).expect_err("more than all");
    assert!(matches!(err, ReserveError::Impossible { .. }), "{err}");
    assert_eq!(Amount::percent_of(30, 0), 0, "of nothing, nothing");
}

#[test]
fn pin_current_pins_this_thread_and_the_threads_it_starts() {
    let dir = Dir::new("pin");
    let topology = Topology::read(std::path::Path::new("/"));
    let allowed = topology.allowed();
    let reserver = Reserver::new(&dir.0, topology, &allowed).expect("reserver");
    let reservation = reserver.reserve(&Request::new(Amount::Cpus(1))).expect("one CPU");
    let cpu = reservation.cpus().iter().next().expect("a CPU") as usize;
    let affinity = || rustix::thread::sched_getaffinity(None).expect("affinity");
    let before = affinity();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            reservation.pin_current().expect("pin");
            let pinned = affinity();
            assert!(pinned.is_set(cpu) && pinned.count() == 1, "pinned to {cpu}");
            let child = std::thread::spawn(move || affinity().count()).join().expect("child");
            assert_eq!(child, 1, "a thread started after the pin inherits it");
        });
    });
    assert_eq!(affinity(), before, "other threads keep their affinity");
}

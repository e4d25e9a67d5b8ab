//! Planning a reservation: which LLCs and CPUs, in which lock order.
//! Pure functions of the topology, the allowed CPUs, the current use and
//! the request, so they are property-tested without lock files.

use std::collections::HashMap;

use lockyard_flock::LockMode;
use lockyard_procfs::CpuList;

use crate::reserve::{Amount, Mode, Placement, Request, Smt};
use crate::{Llc, Topology, cpu_lock_name};

/// How each resource is held now, from one snapshot.
#[derive(Debug)]
pub(crate) struct Use {
    /// Per LLC (by index into `topology.llcs`): held exclusively, shared
    /// holders.
    pub(crate) llc: Vec<(bool, usize)>,
    /// Per CPU id: held.
    pub(crate) cpu: HashMap<u32, bool>,
}

/// A chosen set of resources and the locks they need.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) llcs: Vec<usize>,
    pub(crate) cpus: Vec<u32>,
    /// Lock names in the canonical order, with modes.
    pub(crate) locks: Vec<(String, LockMode)>,
}

/// Choose resources for `request` from `topology`, within `allowed`,
/// given how they are held (`usage`): `None` if too few are free. With
/// `ignore_busy`, busy ones are allowed too (the plan of a waiter, which
/// then waits for them), fewest busy first.
///
/// A pure function of its arguments: no lock files, no /proc.
pub(crate) fn plan(
    topology: &Topology,
    allowed: &CpuList,
    usage: &Use,
    request: &Request,
    ignore_busy: bool,
) -> Option<Plan> {
    let llcs = &topology.llcs;
    // Candidate LLCs in preference order: by node (the requested one,
    // or the one with most free CPUs, then the others by distance),
    // then by placement policy.
    let node_of = |l: &Llc| topology.cpu(l.key).and_then(|c| c.node);
    let cpu_held = |c: &u32| usage.cpu.get(c).copied().unwrap_or(false);
    let free_cpus = |i: usize| -> Vec<u32> {
        let mut cpus: Vec<u32> = llcs[i]
            .cpus
            .iter()
            .filter(|&c| allowed.contains(c))
            .filter(|c| request.node.is_none_or(|n| topology.cpu(*c).and_then(|cpu| cpu.node) == Some(n)))
            .filter(|c| ignore_busy || request.mode != Mode::ExclusiveCpu || !cpu_held(c))
            .collect();
        order_smt(topology, &mut cpus, request.smt);
        // A waiter's plan may include busy CPUs: free ones first, so
        // it waits for as few holders as it can.
        cpus.sort_by_key(cpu_held);
        cpus
    };
    // Each LLC's candidate CPUs, in the order they would be taken.
    let free: Vec<Vec<u32>> = (0..llcs.len()).map(free_cpus).collect();
    let usable = |i: usize| -> bool {
        let (exclusive, holders) = usage.llc[i];
        if ignore_busy {
            return true;
        }
        match request.mode {
            Mode::ExclusiveLlc => holders == 0 && !llcs[i].cpus.iter().any(|c| cpu_held(&c)),
            Mode::ExclusiveCpu | Mode::Shared => !exclusive,
        }
    };
    let busy_count = |i: usize| -> usize {
        let (_, holders) = usage.llc[i];
        holders + llcs[i].cpus.iter().filter(cpu_held).count()
    };
    let mut order: Vec<usize> = (0..llcs.len()).filter(|&i| !free[i].is_empty() && usable(i)).collect();
    let home = request.node.or_else(|| {
        let mut per_node: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
        for &i in &order {
            if let Some(n) = node_of(&llcs[i]) {
                *per_node.entry(n).or_default() += free[i].len();
            }
        }
        per_node.into_iter().max_by_key(|&(n, free)| (free, std::cmp::Reverse(n))).map(|(n, _)| n)
    });
    let distance = |l: &Llc| -> u32 {
        match (home, node_of(l)) {
            (Some(home), Some(node)) => topology
                .nodes
                .iter()
                .find(|n| n.id == home)
                .and_then(|n| n.distances.get(&node).copied())
                .unwrap_or(if node == home { 0 } else { u32::MAX }),
            _ => 0,
        }
    };
    order.sort_by_cached_key(|&i| {
        let (_, holders) = usage.llc[i];
        let in_use = holders > 0;
        let policy = match request.placement {
            Placement::Consolidate => !in_use,
            Placement::Spread => in_use,
        };
        (distance(&llcs[i]), if ignore_busy { busy_count(i) } else { 0 }, policy, llcs[i].key)
    });
    let mut chosen_llcs = Vec::new();
    let mut chosen_cpus = Vec::new();
    let amount = match request.amount {
        Amount::CpuPercent(percent) => {
            let on_node =
                |c: u32| request.node.is_none_or(|n| topology.cpu(c).and_then(|cpu| cpu.node) == Some(n));
            Amount::Cpus(Amount::percent_of(percent, allowed.iter().filter(|&c| on_node(c)).count()))
        }
        other => other,
    };
    match amount {
        // Nothing asked for is nothing to plan (Reserver refuses it first).
        Amount::Llcs(0) | Amount::Cpus(0) => return None,
        Amount::Llcs(n) => {
            for &i in order.iter().take(n) {
                chosen_llcs.push(i);
                chosen_cpus.extend(&free[i]);
            }
            if chosen_llcs.len() < n {
                return None;
            }
        }
        Amount::Cpus(n) => {
            for &i in &order {
                if chosen_cpus.len() >= n {
                    break;
                }
                let take = n - chosen_cpus.len();
                chosen_llcs.push(i);
                chosen_cpus.extend(free[i].iter().take(take));
            }
            if chosen_cpus.len() < n {
                return None;
            }
        }
        Amount::CpuPercent(_) => unreachable!("turned into a number of CPUs above"),
    }
    chosen_llcs.sort_by_key(|&i| llcs[i].key);
    chosen_cpus.sort_unstable();
    let llc_mode = if request.mode == Mode::ExclusiveLlc { LockMode::Exclusive } else { LockMode::Shared };
    let mut locks: Vec<(String, LockMode)> =
        chosen_llcs.iter().map(|&i| (llcs[i].lock_name(), llc_mode)).collect();
    if request.mode == Mode::ExclusiveCpu {
        locks.extend(chosen_cpus.iter().map(|&c| (cpu_lock_name(c), LockMode::Exclusive)));
    }
    Some(Plan { llcs: chosen_llcs, cpus: chosen_cpus, locks })
}

fn order_smt(topology: &Topology, cpus: &mut [u32], smt: Smt) {
    let core = |c: u32| topology.cpu(c).and_then(|cpu| cpu.core).unwrap_or(c);
    let package = |c: u32| topology.cpu(c).and_then(|cpu| cpu.package).unwrap_or(0);
    // A CPU's rank among its core's siblings: 0 for the first thread.
    let thread =
        |c: u32| topology.cpu(c).map_or(0, |cpu| cpu.smt_siblings.iter().position(|s| s == c).unwrap_or(0));
    match smt {
        Smt::Together => cpus.sort_by_key(|&c| (package(c), core(c), c)),
        Smt::Apart => cpus.sort_by_key(|&c| (thread(c), package(c), core(c), c)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A synthetic host, some of it held, and a request for it.
    #[derive(Debug)]
    struct Case {
        topology: Topology,
        allowed: CpuList,
        usage: Use,
        request: Request,
    }

    fn case() -> impl Strategy<Value = Case> {
        (1u32..=3, 1u32..=3, 1u32..=4, any::<bool>())
            .prop_flat_map(|(nodes, llcs, cpus, smt)| {
                let smt = smt && cpus % 2 == 0;
                let topology = Topology::synthetic(nodes, llcs, cpus, smt);
                let n_cpus = topology.cpus.len();
                let n_llcs = topology.llcs.len();
                (
                    Just(topology),
                    proptest::collection::vec(any::<bool>(), n_cpus),
                    proptest::collection::vec(any::<bool>(), n_cpus),
                    proptest::collection::vec((any::<bool>(), 0usize..3), n_llcs),
                    0..3u8,
                    1..=n_cpus,
                    1..=100u32,
                    proptest::option::of(0..nodes + 1),
                    any::<bool>(),
                    any::<bool>(),
                    any::<bool>(),
                )
            })
            .prop_map(
                |(topology, allowed, cpu_held, llc_held, mode, n, percent, node, llcs, spread, apart)| {
                    let allowed: CpuList =
                        topology.cpus.iter().zip(&allowed).filter(|(_, a)| **a).map(|(c, _)| c.id).collect();
                    let usage = Use {
                        // An exclusive holder is the only holder.
                        llc: llc_held.iter().map(|&(x, n)| if x { (true, 1) } else { (false, n) }).collect(),
                        cpu: allowed.iter().zip(&cpu_held).map(|(c, &h)| (c, h)).collect(),
                    };
                    let mode = [Mode::ExclusiveCpu, Mode::ExclusiveLlc, Mode::Shared][usize::from(mode)];
                    let amount = match (llcs, n % 3) {
                        (true, _) => Amount::Llcs(n.min(topology.llcs.len())),
                        (false, 0) => Amount::CpuPercent(percent),
                        (false, _) => Amount::Cpus(n),
                    };
                    let mut request = Request::new(amount).mode(mode);
                    if let Some(node) = node {
                        request = request.node(node);
                    }
                    if spread {
                        request = request.placement(Placement::Spread);
                    }
                    if apart {
                        request = request.smt(Smt::Apart);
                    }
                    Case { topology, allowed, usage, request }
                },
            )
    }

    fn cpu_held(case: &Case, cpu: u32) -> bool {
        case.usage.cpu.get(&cpu).copied().unwrap_or(false)
    }

    proptest! {
        /// What a plan holds is what was asked for, inside what may be
        /// used, and never what another reservation excludes.
        #[test]
        fn a_plan_is_the_right_size_allowed_and_free(case in case()) {
            let Some(plan) = plan(&case.topology, &case.allowed, &case.usage, &case.request, false) else {
                return Ok(());
            };
            match case.request.amount {
                Amount::Cpus(n) => prop_assert_eq!(plan.cpus.len(), n),
                Amount::CpuPercent(p) => {
                    let pool = case.allowed.iter().filter(|&c| {
                        case.request.node.is_none_or(|n| case.topology.cpu(c).and_then(|cpu| cpu.node) == Some(n))
                    }).count();
                    let n = Amount::percent_of(p, pool);
                    prop_assert!(n >= 1 && n * 100 >= pool * p as usize && (n - 1) * 100 < pool * p as usize);
                    prop_assert_eq!(plan.cpus.len(), n);
                }
                Amount::Llcs(n) => prop_assert_eq!(plan.llcs.len(), n),
            }
            for &cpu in &plan.cpus {
                prop_assert!(case.allowed.contains(cpu));
                if let Some(node) = case.request.node {
                    prop_assert_eq!(case.topology.cpu(cpu).and_then(|c| c.node), Some(node));
                }
                let llc = case.topology.cpu(cpu).and_then(|c| c.llc);
                prop_assert!(plan.llcs.iter().any(|&i| Some(case.topology.llcs[i].key) == llc), "CPU {} outside the plan's LLCs", cpu);
                if case.request.mode == Mode::ExclusiveCpu {
                    prop_assert!(!cpu_held(&case, cpu), "CPU {} is held", cpu);
                }
            }
            for &i in &plan.llcs {
                let (exclusive, holders) = case.usage.llc[i];
                prop_assert!(!exclusive, "LLC {} is held exclusively", i);
                if case.request.mode == Mode::ExclusiveLlc {
                    prop_assert_eq!(holders, 0);
                    prop_assert!(!case.topology.llcs[i].cpus.iter().any(|c| cpu_held(&case, c)));
                }
            }
        }

        /// Locks are taken in one order every process agrees on (LLCs by
        /// key, then CPUs ascending), so two reservations never deadlock.
        #[test]
        fn locks_come_in_the_canonical_order(case in case()) {
            for ignore_busy in [false, true] {
                let Some(plan) = plan(&case.topology, &case.allowed, &case.usage, &case.request, ignore_busy) else {
                    continue;
                };
                let names: Vec<&str> = plan.locks.iter().map(|(n, _)| n.as_str()).collect();
                let key = |name: &str| {
                    let (kind, n) = name.split_once('-').expect("kind-number");
                    (kind != "llc", n.parse::<u32>().expect("number"))
                };
                prop_assert!(names.windows(2).all(|w| key(w[0]) < key(w[1])), "{:?}", names);
            }
        }

        /// A plan is refused only when it cannot be had: if enough is
        /// free for an exclusive-CPU request, one is made; and ignoring
        /// who is busy, any request that fits what is allowed is planned.
        #[test]
        fn a_plan_is_refused_only_when_too_little_is_free(case in case()) {
            let in_pool = |cpu: u32| {
                case.allowed.contains(cpu)
                    && case.request.node.is_none_or(|n| case.topology.cpu(cpu).and_then(|c| c.node) == Some(n))
            };
            if let Amount::Cpus(n) = case.request.amount {
                let pool = case.topology.cpus.iter().filter(|c| in_pool(c.id)).count();
                let planned = plan(&case.topology, &case.allowed, &case.usage, &case.request, true);
                prop_assert_eq!(planned.is_some(), n <= pool);
                if case.request.mode == Mode::ExclusiveCpu {
                    let free = case.topology.cpus.iter().filter(|c| {
                        in_pool(c.id)
                            && !cpu_held(&case, c.id)
                            && c.llc.and_then(|k| case.topology.llcs.iter().position(|l| l.key == k)).is_some_and(|i| !case.usage.llc[i].0)
                    }).count();
                    let planned = plan(&case.topology, &case.allowed, &case.usage, &case.request, false);
                    prop_assert_eq!(planned.is_some(), n <= free, "{} free", free);
                }
            }
        }
    }
}

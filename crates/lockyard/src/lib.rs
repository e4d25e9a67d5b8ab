//! lockyard: crash-safe locks for processes sharing one Linux host, and
//! the `lockyard` command that shows who holds what.
//!
//! This crate re-exports the library crates, each usable alone:
//!
//! - [`procfs`] (`lockyard-procfs`): parsers for mountinfo, `/proc/locks`,
//!   fdinfo, cmdline and CPU lists.
//! - [`flock`] (`lockyard-flock`): hardened lock files, flock/OFD locks,
//!   prompt cancellable waits, exact holders, pidfiles.
//! - [`cache`] (`lockyard-cache`): crash-safe shared on-disk cache.
//! - [`kvm`] (`lockyard-kvm`): KVM preflight and kernel-image resolution.
//! - [`topo`] (`lockyard-topo`): host CPU topology and reservation lock names.
//!
//! and holds what the command adds on top: [`listing`] (every lock on the
//! host with paths and holders) and [`cli`] (the command-line interface,
//! shared with `cargo xtask man`), plus [`table`] and [`units`] for
//! printing.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod json;
pub mod listing;
pub mod table;
pub mod units;

pub use lockyard_cache as cache;
pub use lockyard_flock as flock;
pub use lockyard_kvm as kvm;
pub use lockyard_procfs as procfs;
pub use lockyard_topo as topo;

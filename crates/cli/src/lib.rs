//! The `lockyard` command's definitions, shared by the binary and by
//! `cargo xtask man`: the clap interface ([`cli`]), `lockyard run`'s
//! flock(1)-compatible command line ([`flock_args`]), and how the command
//! prints ([`table`]) and reads durations and sizes ([`units`]).
//!
//! Programs that want lockyard's functionality depend on the `lockyard`
//! facade or one of its library crates, not on this package.

#![warn(missing_docs)]

pub mod cli;
pub mod flock_args;
pub mod table;
pub mod units;

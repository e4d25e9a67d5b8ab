#![allow(clippy::print_stderr)] // xtask talks to the developer on stderr by design.

//! Developer tasks: `cargo xtask <task>`.
//!
//! `ci` is what `.ci/run` and a developer run before pushing. It runs each
//! step in order and stops at the first failure with a line naming it.

use std::env;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// One CI step: a name for the log and the command to run. Adding a step
/// to CI is adding a line to [`ci_steps`].
struct Step {
    name: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const fn cargo(name: &'static str, args: &'static [&'static str]) -> Step {
    Step { name, program: "cargo", args, env: &[] }
}

fn ci_steps() -> Vec<Step> {
    vec![
        cargo("format", &["fmt", "--all", "--check"]),
        cargo(
            "clippy",
            &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
        ),
        cargo("test", &["test", "--workspace", "--all-features"]),
        Step {
            env: &[("RUSTDOCFLAGS", "-D warnings")],
            ..cargo("doc", &["doc", "--workspace", "--no-deps", "--all-features"])
        },
        cargo("bench smoke", &["bench", "--workspace", "--", "--test"]),
        cargo("man page", &["run", "--quiet", "--package", "xtask", "--", "man"]),
    ]
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("man") => man(),
        Some("help" | "--help" | "-h") | None => {
            usage();
            Ok(())
        }
        Some(other) => {
            usage();
            Err(anyhow::anyhow!("unknown task `{other}`"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() {
    eprintln!(
        "usage: cargo xtask <task>\n\n\
         tasks:\n  \
         ci      format check, clippy, tests, docs, a bench smoke run and the man page; stops at the first failure\n  \
         man     write the lockyard(1) man page to target/man/lockyard.1"
    );
}

fn ci() -> Result<()> {
    let started = Instant::now();
    for step in ci_steps() {
        run(&step)?;
    }
    eprintln!("xtask ci: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Write the man page generated from the command's clap definition.
fn man() -> Result<()> {
    use clap::CommandFactory;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?;
    let dir = root.join("target/man");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let command = lockyard::cli::Cli::command();
    // lockyard(1), plus lockyard-locks(1) and friends for the subcommands.
    let mut pages = vec![("lockyard".to_owned(), command.clone())];
    for sub in command.get_subcommands() {
        let name = format!("lockyard-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page_command) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(page_command).render(&mut page).context("render man page")?;
        std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    }
    eprintln!("xtask man: wrote {}/lockyard*.1", dir.display());
    Ok(())
}

fn run(step: &Step) -> Result<()> {
    eprintln!("xtask ci: step `{}`: {} {}", step.name, step.program, step.args.join(" "));
    let started = Instant::now();
    let status = Command::new(step.program)
        .args(step.args)
        .envs(step.env.iter().copied())
        .status()
        .with_context(|| format!("step `{}`: cannot start {}", step.name, step.program))?;
    if !status.success() {
        bail!("step `{}` failed ({status}); rerun: {} {}", step.name, step.program, step.args.join(" "));
    }
    eprintln!("xtask ci: step `{}` passed in {:.1?}", step.name, started.elapsed());
    Ok(())
}

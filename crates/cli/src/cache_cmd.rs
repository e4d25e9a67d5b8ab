//! `lockyard cache`: the lockyard-cache library for shells and CI jobs.
//! Exit codes: 0 success, 1 a negative answer (missing or corrupt entry,
//! declined, a lock busy past `--wait`), 2 an error; `ensure` passes the
//! build's or COMMAND's status through.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use lockyard::cache::{Cache, CacheError, CacheOptions, Clean, CleanPlan, Listed, NotACache, Wait};
use lockyard_cache::{Manifest, Pushed, Remote};
use lockyard_cli::cli::{CacheArgs, CacheCommand, RemoteCommand};
use lockyard_cli::table::{self, Column, Style};
use lockyard_cli::units::{format_age, format_size, parse_duration, parse_size};
use serde::Serialize;

use crate::exit::{Exit, Outcome, sentence};
use crate::run::spawn_and_wait;
use crate::{SCHEMA, emit, print_json};

pub(crate) fn cache(args: &CacheArgs) -> Outcome {
    // Only the commands that move entries reach the remote: a list or a
    // clean works whatever state the remote's settings are in.
    let uses_remote = matches!(
        args.command,
        CacheCommand::Put { .. }
            | CacheCommand::Ensure { .. }
            | CacheCommand::Push { .. }
            | CacheCommand::Pull { .. }
            | CacheCommand::Remote { .. }
    );
    let remote = match args.remote.as_deref().filter(|url| !url.is_empty() && uses_remote) {
        Some(url) => Some(Remote::open(url, args.remote_timeout)?),
        None => None,
    };
    if let CacheCommand::Remote { command } = &args.command {
        let Some(remote) = remote else {
            bail!("no remote: give --remote URL or set LOCKYARD_CACHE_REMOTE");
        };
        return match command {
            RemoteCommand::List { json } => remote_list(&remote, *json),
            RemoteCommand::Remove { keys } => remote_remove(&remote, keys),
        };
    }
    if matches!(args.command, CacheCommand::Push { .. } | CacheCommand::Pull { .. }) && remote.is_none() {
        bail!("no remote: give --remote URL or set LOCKYARD_CACHE_REMOTE");
    }
    let url = args.remote.as_deref().unwrap_or_default();
    let root = root(args.dir.as_deref(), |name| std::env::var_os(name))?;
    // Without -w, as long as it takes (like flock(1)).
    let mut options = CacheOptions::new().wait(args.wait.map_or_else(Wait::default, Wait::timeout));
    if let Some(remote) = remote {
        options = options.remote(remote).require_remote(args.require_remote);
    }
    // Looking creates nothing, and neither does removing from a cache
    // that is not there: those open read-only first.
    let stores = matches!(
        args.command,
        CacheCommand::Put { .. } | CacheCommand::Ensure { .. } | CacheCommand::Pull { .. }
    );
    if !stores {
        match Cache::open(&root, options.clone().read_only()) {
            Ok(cache) => {
                if let Some(code) = look(&cache, &args.command, url)? {
                    return Ok(code);
                }
            }
            Err(CacheError::NotACache { reason: NotACache::Missing | NotACache::Empty, .. }) => {
                return nothing_there(&root, &args.command);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let CacheCommand::Put { src, .. } = &args.command {
        // Before the root is made: a typo creates no cache.
        check_source(src)?;
    }
    let cache = Cache::open(&root, options)?;
    match &args.command {
        CacheCommand::Put { key, src } => put(&cache, key, src),
        CacheCommand::Ensure { key, build, command, close } => ensure(&cache, key, build, command, *close),
        CacheCommand::Clean { all, keep, older_than, max_size, dry_run, yes } => {
            let policy = if *all {
                Clean::All
            } else if let Some(n) = keep {
                Clean::KeepNewest(*n)
            } else if let Some(age) = older_than {
                Clean::UnusedFor(parse_duration(age).map_err(anyhow::Error::msg)?)
            } else if let Some(size) = max_size {
                Clean::MaxBytes(parse_size(size).map_err(anyhow::Error::msg)?)
            } else {
                bail!("say what to remove: --all, --keep N, --older-than DUR or --max-size SIZE");
            };
            clean(&cache, policy, *dry_run, *yes)
        }
        CacheCommand::Pull { key } => pull(&cache, key, url),
        CacheCommand::Sweep => sweep(&cache),
        CacheCommand::Remove { names } => remove(&cache, names),
        CacheCommand::List { .. }
        | CacheCommand::Show { .. }
        | CacheCommand::Verify { .. }
        | CacheCommand::Push { .. }
        | CacheCommand::Remote { .. } => {
            unreachable!("answered above")
        }
    }
}

/// The commands that only look, on a cache opened read-only; `None` for
/// the others. `url` is the remote's.
fn look(cache: &Cache, command: &CacheCommand, url: &str) -> Result<Option<Exit>> {
    Ok(Some(match command {
        CacheCommand::List { json } => list(cache, *json)?,
        CacheCommand::Show { key, json } => show(cache, key, *json)?,
        CacheCommand::Verify { key, json } => verify(cache, key.as_deref(), *json)?,
        CacheCommand::Push { key } => push(cache, key, url)?,
        _ => return Ok(None),
    }))
}

/// What each command says where no cache exists yet (a missing or empty
/// root), without creating one.
fn nothing_there(root: &Path, command: &CacheCommand) -> Outcome {
    let shown = table::escape_path(root);
    match command {
        CacheCommand::List { json: true } => {
            print_json(&ListReport { schema: SCHEMA, root: root.display().to_string(), entries: &[] })?;
        }
        CacheCommand::Verify { key: None, json: true } => {
            print_json(&VerifyReport {
                schema: SCHEMA,
                root: root.display().to_string(),
                entries: Vec::new(),
            })?;
        }
        CacheCommand::Show { key, .. }
        | CacheCommand::Verify { key: Some(key), .. }
        | CacheCommand::Push { key } => {
            eprintln!("lockyard: no entry {key:?}: no cache at {shown} yet");
            return Ok(Exit::NO);
        }
        CacheCommand::Remove { names } => {
            for name in names {
                eprintln!("lockyard: no {name:?}: no cache at {shown} yet");
            }
            return Ok(Exit::NO);
        }
        _ => eprintln!("lockyard: no cache at {shown} yet; nothing to do"),
    }
    Ok(Exit::SUCCESS)
}

/// The cache root: `--dir`, else `LOCKYARD_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/lockyard` (if absolute, as the XDG spec asks), else
/// `$HOME/.cache/lockyard`.
pub(crate) fn root(dir: Option<&Path>, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = dir {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = set("LOCKYARD_CACHE_DIR") {
        return Ok(dir);
    }
    if let Some(xdg) = set("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Ok(xdg.join("lockyard"));
    }
    match set("HOME") {
        Some(home) if home.is_absolute() && home != Path::new("/") => Ok(home.join(".cache/lockyard")),
        Some(home) => bail!(
            "HOME is {:?}, which cannot hold a per-user cache; pass --dir or set LOCKYARD_CACHE_DIR",
            home.display()
        ),
        None => bail!("HOME is not set, so there is no default cache; pass --dir or set LOCKYARD_CACHE_DIR"),
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0))
}

pub(crate) fn age(ns: u64) -> String {
    format_age(Duration::from_nanos(now_ns().saturating_sub(ns)))
}

#[derive(Serialize)]
struct ListReport<'a> {
    schema: u32,
    root: String,
    entries: &'a [Listed],
}

fn list(cache: &Cache, json: bool) -> Outcome {
    let entries = cache.list()?;
    if json {
        print_json(&ListReport {
            schema: SCHEMA,
            root: cache.root().display().to_string(),
            entries: &entries,
        })?;
        return Ok(Exit::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|item| match item {
            Listed::Valid { key, size, created_ns, last_used_ns, digest, .. } => vec![
                key.clone(),
                format_size(*size),
                age(*created_ns),
                age(*last_used_ns),
                digest.chars().take(16).collect(),
            ],
            Listed::Corrupt { key, reason, .. } => {
                vec![key.clone(), "-".into(), "-".into(), "-".into(), format!("CORRUPT: {reason}")]
            }
            Listed::Foreign { key, reason, .. } => {
                vec![
                    key.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("FOREIGN: {reason}, left alone"),
                ]
            }
            _ => vec![item.key().to_owned(), "-".into(), "-".into(), "-".into(), "?".into()],
        })
        .collect();
    let column = |name, flexible| Column { name, flexible };
    let columns = [
        column("KEY", true),
        column("SIZE", false),
        column("CREATED", false),
        column("USED", false),
        column("DIGEST", true),
    ];
    emit(&table::render(&columns, &rows, Style { width: crate::stdout_width(), ..Style::default() }))?;
    Ok(Exit::SUCCESS)
}

#[derive(Serialize)]
struct ShowReport<'a> {
    schema: u32,
    path: String,
    lock: String,
    last_used_ns: u64,
    meta: &'a lockyard::cache::EntryMeta,
    readers: Vec<lockyard::flock::Holder>,
}

fn show(cache: &Cache, key: &str, json: bool) -> Outcome {
    let Some(guard) = cache.inspect(key)? else {
        eprintln!("lockyard: no entry {key:?} in {}", cache.root().display());
        return Ok(Exit::NO);
    };
    let meta = guard.meta().clone();
    let last_used_ns = guard.last_used_ns();
    drop(guard);
    // Everyone holding the entry lock now is a reader (we let go of ours).
    let lock = cache.lock_path(key);
    let readers: Vec<_> =
        lockyard::flock::holders_of(&lock).map(|h| h.holding().cloned().collect()).unwrap_or_default();
    let path = cache.entry_path(key);
    if json {
        print_json(&ShowReport {
            schema: SCHEMA,
            path: path.display().to_string(),
            lock: lock.display().to_string(),
            last_used_ns,
            meta: &meta,
            readers,
        })?;
        return Ok(Exit::SUCCESS);
    }
    let mut text = format!(
        "key:       {key}\npath:      {}\nsize:      {} in {} files\ncreated:   {}\nused:      {}\n\
         digest:    blake3:{}\nlock:      {}\n",
        path.display(),
        format_size(meta.size),
        meta.files,
        age(meta.created_ns),
        age(last_used_ns),
        meta.digest,
        lock.display()
    );
    if readers.is_empty() {
        text.push_str("readers:   none\n");
    }
    for reader in &readers {
        text.push_str(&format!("reader:    {reader}\n"));
    }
    if !meta.user.is_null() {
        text.push_str(&format!("metadata:  {}\n", meta.user));
    }
    emit(&text)?;
    Ok(Exit::SUCCESS)
}

#[derive(Serialize)]
struct Verified {
    key: String,
    /// `intact`, `corrupt`, `missing` or `error`.
    state: &'static str,
    reason: Option<lockyard::cache::CorruptReason>,
    /// For `error`: what went wrong.
    error: Option<String>,
    size: Option<u64>,
    digest: Option<String>,
}

#[derive(Serialize)]
struct VerifyReport {
    schema: u32,
    root: String,
    entries: Vec<Verified>,
}

/// Exit status 0 if every entry is intact, 1 if one is corrupt or missing,
/// 2 if one could not be checked; every entry is checked either way.
fn verify(cache: &Cache, key: Option<&str>, json: bool) -> Outcome {
    // Each key with the bytes it should hash, for the progress bar.
    // Foreign items are not entries: nothing to verify.
    let keys: Vec<(String, u64)> = match key {
        Some(key) => {
            let size = cache.inspect(key).ok().flatten().map_or(0, |g| g.meta().size);
            vec![(key.to_owned(), size)]
        }
        None => cache
            .list()?
            .into_iter()
            .filter(|l| !matches!(l, Listed::Foreign { .. }))
            .map(|l| (l.key().to_owned(), listed_size(&l)))
            .collect(),
    };
    let bar = progress(
        keys.iter().map(|(_, size)| size).sum(),
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    let mut entries = Vec::new();
    for (key, size) in keys {
        bar.set_message(format!("verifying {}", crate::escape(&key)));
        let start = bar.position();
        let verified = cache.verify_with(&key, |n| bar.inc(n));
        // Whatever was read, the entry's share of the bar is done.
        bar.set_position(start + size);
        let blank = Verified { key, state: "", reason: None, error: None, size: None, digest: None };
        let checked = match verified {
            Ok(Some(meta)) => {
                Verified { state: "intact", size: Some(meta.size), digest: Some(meta.digest), ..blank }
            }
            Ok(None) => Verified { state: "missing", ..blank },
            Err(CacheError::Corrupt { reason, .. }) => {
                Verified { state: "corrupt", reason: Some(reason), ..blank }
            }
            Err(e) => Verified { state: "error", error: Some(sentence(&e.into())), ..blank },
        };
        if !json {
            let shown = crate::escape(&checked.key);
            let line = match (checked.state, &checked.reason, &checked.error) {
                ("intact", ..) => format!("{shown}: intact ({})\n", format_size(checked.size.unwrap_or(0))),
                ("corrupt", Some(reason), _) => format!("{shown}: CORRUPT: {reason}\n"),
                ("error", _, Some(error)) => format!("{shown}: cannot verify: {}\n", crate::escape(error)),
                _ => format!("{shown}: no such entry\n"),
            };
            bar.suspend(|| emit(&line))?;
        }
        entries.push(checked);
    }
    bar.finish_and_clear();
    let code = entries.iter().map(|e| match e.state {
        "intact" => 0,
        "error" => 2,
        _ => 1,
    });
    let code = code.max().unwrap_or(0);
    if json {
        print_json(&VerifyReport { schema: SCHEMA, root: cache.root().display().to_string(), entries })?;
    }
    Ok(Exit::status(code))
}

/// `put`'s source must be a directory.
fn check_source(src: &Path) -> Result<()> {
    let meta = std::fs::metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory; `put` stores a directory's contents", src.display());
    }
    Ok(())
}

fn put(cache: &Cache, key: &str, src: &Path) -> Outcome {
    let source = std::fs::canonicalize(src).with_context(|| format!("cannot resolve {}", src.display()))?;
    if let Ok(root) = std::fs::canonicalize(cache.root())
        && root.starts_with(&source)
    {
        bail!(
            "{} contains the cache root {}; a copy would copy itself. Store a directory outside the cache",
            src.display(),
            root.display()
        );
    }
    let guard = cache.put(key, src, serde_json::json!({ "source": source.display().to_string() }))?;
    emit(&format!("{}\n", guard.path().display()))?;
    Ok(Exit::SUCCESS)
}

fn push(cache: &Cache, key: &str, url: &str) -> Outcome {
    let Some(pushed) = cache.push(key)? else {
        eprintln!("lockyard: no entry {key:?} in {}", table::escape_path(cache.root()));
        return Ok(Exit::NO);
    };
    let said = match pushed {
        Pushed::Uploaded { archive_size } => format!("pushed {key} to {url} ({})", format_size(archive_size)),
        Pushed::Present => format!("{url} already holds this build of {key}"),
        Pushed::Kept { digest } => {
            format!(
                "{url} holds another build of {key} (digest {}), kept: the first push wins",
                &digest[..16]
            )
        }
        _ => format!("{url} holds {key}"),
    };
    emit(&format!("{}\n", crate::escape(&said)))?;
    Ok(Exit::SUCCESS)
}

fn pull(cache: &Cache, key: &str, url: &str) -> Outcome {
    let Some(guard) = cache.pull(key)? else {
        eprintln!("lockyard: no entry {key:?} in {}", crate::escape(url));
        return Ok(Exit::NO);
    };
    emit(&format!("{}\n", guard.path().display()))?;
    Ok(Exit::SUCCESS)
}

#[derive(Serialize)]
struct RemoteListReport<'a> {
    schema: u32,
    remote: &'a str,
    entries: Vec<RemoteListed<'a>>,
}

#[derive(Serialize)]
struct RemoteListed<'a> {
    /// Named by the manifest when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(flatten)]
    manifest: Option<&'a Manifest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn remote_list(remote: &Remote, json: bool) -> Outcome {
    let listed = remote.list()?;
    if json {
        let entries = listed
            .iter()
            .map(|(key, item)| RemoteListed {
                key: item.is_err().then_some(key.as_str()),
                manifest: item.as_ref().ok(),
                error: item.as_ref().err().map(ToString::to_string),
            })
            .collect();
        print_json(&RemoteListReport { schema: SCHEMA, remote: remote.url(), entries })?;
        return Ok(Exit::SUCCESS);
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|(key, item)| match item {
            Ok(m) => vec![
                key.clone(),
                format_size(m.size),
                m.files.to_string(),
                age(m.created_ns),
                m.digest.chars().take(16).collect(),
            ],
            Err(e) => vec![key.clone(), "-".into(), "-".into(), "-".into(), format!("UNUSABLE: {e}")],
        })
        .collect();
    let column = |name, flexible| Column { name, flexible };
    let columns = [
        column("KEY", true),
        column("SIZE", false),
        column("FILES", false),
        column("CREATED", false),
        column("DIGEST", true),
    ];
    emit(&table::render(&columns, &rows, Style { width: crate::stdout_width(), ..Style::default() }))?;
    Ok(Exit::SUCCESS)
}

fn remote_remove(remote: &Remote, keys: &[String]) -> Outcome {
    let mut all = true;
    for key in keys {
        match remote.remove(key)? {
            0 => {
                eprintln!("lockyard: no entry {key:?} in {}", crate::escape(remote.url()));
                all = false;
            }
            1 => emit(&format!("removed {key} (1 object)\n"))?,
            n => emit(&format!("removed {key} ({n} objects)\n"))?,
        }
    }
    Ok(Exit::answer(all))
}

/// A build command that exited non-zero (or was killed): its status is
/// passed through.
#[derive(Debug, thiserror::Error)]
#[error("the build command exited with status {0}; nothing was published")]
struct BuildFailed(u8);

fn ensure(cache: &Cache, key: &str, build: &str, command: &[OsString], close: bool) -> Outcome {
    let result = cache.ensure(key, |staging| {
        let mut sh = Command::new("sh");
        sh.args(["-c", build]).env("LOCKYARD_STAGING", staging).env("LOCKYARD_KEY", key);
        // Keep stdout for the entry's path.
        sh.stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?));
        match spawn_and_wait(sh, |_| {}) {
            Exit::SUCCESS => Ok(serde_json::json!({ "build": build })),
            failed => Err(BuildFailed(failed.code()).into()),
        }
    });
    let guard = match result {
        Ok(guard) => guard,
        Err(CacheError::Build { source, key }) => match source.downcast_ref::<BuildFailed>() {
            Some(&BuildFailed(code)) => {
                eprintln!("lockyard: {}", crate::escape(&format!("{key}: {source}")));
                return Ok(Exit::status(code));
            }
            None => return Err(CacheError::Build { key, source }.into()),
        },
        Err(e) => return Err(e.into()),
    };
    if command.is_empty() {
        emit(&format!("{}\n", guard.path().display()))?;
        return Ok(Exit::SUCCESS);
    }
    let mut child = Command::new(&command[0]);
    child.args(&command[1..]).env("LOCKYARD_ENTRY", guard.path());
    if !close {
        crate::run::inherit([guard.as_fd()]).context("cannot hand the entry's lock to the command")?;
    }
    let code = spawn_and_wait(child, |_| {});
    if close {
        drop(guard);
    } else {
        // What COMMAND left running keeps the entry held for reading.
        drop(guard.into_fd());
    }
    Ok(code)
}

fn clean(cache: &Cache, policy: Clean, dry_run: bool, yes: bool) -> Outcome {
    let plan = cache.plan_clean(policy)?;
    let mut text = String::new();
    for victim in &plan.victims {
        match &victim.corrupt {
            Some(reason) => {
                text.push_str(&format!("remove {} (corrupt: {reason})\n", crate::escape(&victim.key)));
            }
            None => text.push_str(&format!(
                "remove {} ({}, used {})\n",
                crate::escape(&victim.key),
                format_size(victim.size),
                age(victim.last_used_ns)
            )),
        }
    }
    for (name, reason) in &plan.foreign {
        text.push_str(&format!(
            "leave {} ({reason}: not made by lockyard; `lockyard cache remove` it if it should go)\n",
            crate::escape(name)
        ));
    }
    let summary = summary(&plan);
    if dry_run {
        text.push_str(&format!("dry run: would remove {summary}\n"));
        emit(&text)?;
        return Ok(Exit::SUCCESS);
    }
    if !plan.victims.is_empty() && !yes {
        emit(&text)?;
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to remove {summary} without confirmation: pass --yes (or --dry-run to only list)"
            );
        }
        eprint!("Remove {summary}? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).context("cannot read the answer")?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("lockyard: nothing removed");
            return Ok(Exit::NO);
        }
    } else if yes {
        emit(&text)?;
    }
    let bar = progress(u64::try_from(plan.victims.len())?, "{msg} [{bar:30}] {pos}/{len} entries, eta {eta}");
    bar.set_message(format!("removing {summary}"));
    let report = cache.clean_planned_with(&plan, |_| bar.inc(1))?;
    bar.finish_and_clear();
    let n = report.removed.len();
    let entries = if n == 1 { "entry" } else { "entries" };
    let mut out = format!("removed {n} {entries}, freed {}\n", format_size(report.freed));
    for busy in &report.busy {
        out.push_str(&crate::escape(&format!("kept {}: in use, held by {}", busy.name, busy.holders)));
        out.push('\n');
    }
    for key in &report.changed {
        out.push_str(&format!(
            "kept {}: replaced, used or changed since it was listed\n",
            crate::escape(key)
        ));
    }
    emit(&out)?;
    Ok(Exit::SUCCESS)
}

fn listed_size(listed: &Listed) -> u64 {
    match listed {
        Listed::Valid { size, .. } => *size,
        _ => 0,
    }
}

/// A progress bar on stderr for `len` units of work, drawn only when
/// stderr is a terminal (a pipe or log file gets the results alone).
fn progress(len: u64, template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn summary(plan: &CleanPlan) -> String {
    let n = plan.victims.len();
    format!("{n} {} ({})", if n == 1 { "entry" } else { "entries" }, format_size(plan.bytes()))
}

fn remove(cache: &Cache, names: &[String]) -> Outcome {
    let mut code = 0;
    for name in names {
        let shown = crate::escape(name);
        match cache.remove(name) {
            Ok(true) => emit(&format!("removed {shown}\n"))?,
            Ok(false) => {
                eprintln!("lockyard: no {shown} in {}", table::escape_path(cache.root()));
                code = code.max(1);
            }
            Err(e) if e.is_busy() => {
                eprintln!("lockyard: kept {}", crate::escape(&e.to_string()));
                code = code.max(1);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Exit::status(code))
}

fn sweep(cache: &Cache) -> Outcome {
    let report = cache.sweep()?;
    let mut out = String::new();
    for name in &report.removed {
        out.push_str(&format!("removed {name}: its writer is gone\n"));
    }
    for kept in &report.kept {
        out.push_str(&format!("kept {}: its writer is alive, held by {}\n", kept.name, kept.holders));
    }
    out.push_str(&format!("swept {}, kept {}\n", report.removed.len(), report.kept.len()));
    emit(&out)?;
    Ok(Exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn the_root_comes_from_the_flag_then_the_environment() {
        let all = [("LOCKYARD_CACHE_DIR", "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(root(Some(Path::new("d")), env(&all)).unwrap(), Path::new("d"));
        assert_eq!(root(None, env(&all)).unwrap(), Path::new("/c"));
        assert_eq!(root(None, env(&all[1..])).unwrap(), Path::new("/x/lockyard"));
        assert_eq!(root(None, env(&all[2..])).unwrap(), Path::new("/h/.cache/lockyard"));
        let relative_xdg = [("XDG_CACHE_HOME", "x"), ("HOME", "/h")];
        assert_eq!(root(None, env(&relative_xdg)).unwrap(), Path::new("/h/.cache/lockyard"));
        let empty = [("LOCKYARD_CACHE_DIR", ""), ("HOME", "/h")];
        assert_eq!(root(None, env(&empty)).unwrap(), Path::new("/h/.cache/lockyard"));
    }

    #[test]
    fn a_home_that_cannot_hold_a_cache_is_refused() {
        for home in [&[][..], &[("HOME", "")], &[("HOME", "/")], &[("HOME", "rel")]] {
            let err = root(None, env(home)).expect_err("refused").to_string();
            assert!(err.contains("--dir") && err.contains("LOCKYARD_CACHE_DIR"), "{err}");
        }
    }
}

//! `lockyard preflight` and `lockyard kernel`.

use anyhow::Context;
use lockyard::cache::{Cache, CacheError, CacheOptions, NotACache, Wait};
use lockyard::kvm::kernels::{self, CachedKernel, CorruptKernel, KernelMeta, Origin, StoreKernel};
use lockyard::kvm::{
    Candidate, Capability, ImageInfo, KernelSpec, Preflight, ResolveError, Resolver, Source, SourceKind,
    Status,
};
use lockyard_cli::cli::{KernelAction, KernelArgs, KernelListArgs, KernelStoreArgs, PreflightArgs};
use lockyard_cli::table::{self, Column, Style};
use lockyard_cli::units::format_size;
use serde::Serialize;

use crate::exit::{Exit, Outcome};
use crate::{SCHEMA, emit, print_json};

#[derive(Serialize)]
struct PreflightReport<'a> {
    schema: u32,
    passed: bool,
    #[serde(flatten)]
    report: &'a lockyard::kvm::Report,
}

pub(crate) fn preflight(args: &PreflightArgs) -> Outcome {
    let mut preflight = Preflight::new().device(&args.device);
    for name in &args.caps {
        preflight = preflight.capability(Capability::parse(name)?);
    }
    let report = preflight.run();
    if args.json {
        print_json(&PreflightReport { schema: SCHEMA, passed: report.passed(), report: &report })?;
    } else {
        let mut text = String::new();
        for check in &report.checks {
            text.push_str(&format!("{:<5} {}: {}\n", check.status, check.name, check.detail));
            // A failure's message already ends with its remedy.
            if let (Some(remedy), Status::Warn) = (&check.remedy, check.status) {
                text.push_str(&format!("      remedy: {remedy}\n"));
            }
        }
        if report.transient {
            text.push_str("      (host pressure: this may pass if retried later)\n");
        }
        emit(&text)?;
    }
    Ok(Exit::answer(!report.checks.iter().any(|c| c.status == Status::Fail)))
}

/// The chain the flags describe (see `lockyard kernel --help`).
fn chain(args: &KernelArgs, flags_given: bool) -> Result<Resolver, anyhow::Error> {
    let mut resolver = Resolver::new();
    if let Some(image) = &args.image {
        resolver = resolver.source(Source::Image(image.clone()));
    }
    if let Some(version) = &args.version {
        resolver = resolver.version(version.clone());
        if let Some(cache) = kernel_cache(args)? {
            resolver = resolver.source(Source::Kernels(cache));
        }
    }
    if !args.search.is_empty() {
        resolver = resolver.source(Source::BuildTrees(args.search.clone()));
    }
    let release =
        args.release.clone().or_else(|| args.version.clone()).unwrap_or_else(lockyard::kvm::running_release);
    if !flags_given {
        // A kernel developer's trees: ./linux and ../linux when they hold
        // a built image (else they are not trees, and not worth listing),
        // then the build tree the installed modules point at.
        let built = |dir: &std::path::Path| {
            ["arch/x86/boot/bzImage", "arch/arm64/boot/Image", "vmlinux"].iter().any(|f| dir.join(f).exists())
        };
        let mut trees: Vec<std::path::PathBuf> =
            ["linux", "../linux"].iter().map(std::path::PathBuf::from).filter(|d| built(d)).collect();
        let modules_build = args.root.join("lib/modules").join(&release).join("build");
        if built(&modules_build) {
            trees.push(modules_build);
        }
        if !trees.is_empty() {
            resolver = resolver.source(Source::BuildTrees(trees));
        }
    }
    if args.search.is_empty() || args.fallback {
        resolver = resolver.source(Source::Installed { root: args.root.clone(), release });
    }
    Ok(resolver)
}

/// The kernel cache, read-only; `None` where there is none yet (no
/// cache is no cached kernel).
fn kernel_cache(args: &KernelArgs) -> Result<Option<Cache>, anyhow::Error> {
    read_only_cache(args.cache_dir.as_deref(), Wait::timeout(args.wait))
}

fn read_only_cache(dir: Option<&std::path::Path>, wait: Wait) -> Result<Option<Cache>, anyhow::Error> {
    let root = crate::cache_cmd::root(dir, |name| std::env::var_os(name))?;
    match Cache::open(&root, CacheOptions::new().wait(wait).read_only()) {
        Ok(cache) => Ok(Some(cache)),
        Err(CacheError::NotACache { reason: NotACache::Missing | NotACache::Empty, .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `lockyard kernel store`.
fn store(args: &KernelStoreArgs) -> Outcome {
    let mut request =
        if args.from.is_dir() { StoreKernel::tree(&args.from)? } else { StoreKernel::image(&args.from) };
    if let Some(path) = &args.vmlinux {
        request = request.vmlinux(path);
    }
    if let Some(path) = &args.config {
        request = request.config(path);
    }
    if let Some(release) = &args.release {
        request = request.version(release);
    }
    if let Some(commit) = &args.git {
        request = request.origin(Origin::Git { commit: commit.clone() });
    } else if let Some(url) = &args.tarball {
        request = request.origin(Origin::Tarball { url: url.clone() });
    }
    let root = crate::cache_cmd::root(args.cache_dir.as_deref(), |name| std::env::var_os(name))?;
    let cache = Cache::open(&root, CacheOptions::new().wait(Wait::timeout(args.wait)))?;
    let stored = request.store(&cache)?;
    let path = stored.guard.path().display().to_string();
    if args.json {
        #[derive(Serialize)]
        struct Stored<'a> {
            schema: u32,
            key: &'a str,
            path: String,
            #[serde(flatten)]
            meta: &'a KernelMeta,
        }
        print_json(&Stored { schema: SCHEMA, key: &stored.key, path, meta: &stored.meta })?;
        return Ok(Exit::SUCCESS);
    }
    let meta = &stored.meta;
    let mut files = vec![meta.image.as_str()];
    if meta.vmlinux {
        files.push("vmlinux");
    }
    if meta.config.is_some() {
        files.push("config");
    }
    emit(&format!(
        "stored:   {}\nversion:  {}\narch:     {}\nconfig:   {}\norigin:   {}\nfiles:    {}\npath:     {path}\n",
        stored.key,
        meta.version,
        meta.arch,
        meta.config.as_deref().unwrap_or("none given"),
        meta.origin,
        files.join(", "),
    ))?;
    Ok(Exit::SUCCESS)
}

/// `lockyard kernel list`.
fn list(args: &KernelListArgs) -> Outcome {
    let found = match read_only_cache(args.cache_dir.as_deref(), Wait::default())? {
        Some(cache) => kernels::kernels(&cache).context("cannot list the kernel cache")?,
        None => kernels::Kernels::default(),
    };
    if args.json {
        #[derive(Serialize)]
        struct Listing<'a> {
            schema: u32,
            kernels: &'a [CachedKernel],
            corrupt: &'a [CorruptKernel],
        }
        print_json(&Listing { schema: SCHEMA, kernels: &found.kernels, corrupt: &found.corrupt })?;
        return Ok(Exit::SUCCESS);
    }
    if found.kernels.is_empty() && found.corrupt.is_empty() {
        emit("no kernels stored (`lockyard kernel store` adds one)\n")?;
        return Ok(Exit::SUCCESS);
    }
    let column = |name, flexible| Column { name, flexible };
    let columns = [
        column("KEY", true),
        column("VERSION", false),
        column("ARCH", false),
        column("CONFIG", false),
        column("SIZE", false),
        column("STORED", false),
        column("ORIGIN", true),
    ];
    let rows: Vec<Vec<String>> = found
        .kernels
        .iter()
        .map(|k| {
            vec![
                k.key.clone(),
                k.meta.version.clone(),
                k.meta.arch.to_string(),
                k.meta.config.as_deref().map_or("-".to_owned(), |c| c[..c.len().min(12)].to_owned()),
                format_size(k.size),
                crate::cache_cmd::age(k.created_ns),
                k.meta.origin.to_string(),
            ]
        })
        .collect();
    let mut text = table::render(&columns, &rows, Style { width: crate::stdout_width(), ..Style::default() });
    for corrupt in &found.corrupt {
        text.push_str(&format!("{}: corrupt: {}\n", table::escape(&corrupt.key, false), corrupt.reason));
    }
    emit(&text)?;
    Ok(Exit::SUCCESS)
}

/// What was asked for is wrong: say so (and with --json, as an outcome
/// a harness can tell from "no kernel"), status 2.
fn misconfigured(args: &KernelArgs, message: &str) -> Outcome {
    if args.json {
        print_json(&KernelReport {
            schema: SCHEMA,
            found: false,
            outcome: "misconfigured",
            error: Some(message.to_owned()),
            path: None,
            source: None,
            image: None,
            passed_over: &[],
        })?;
    }
    eprintln!("lockyard: {}", crate::escape(message));
    Ok(Exit::FAILED)
}

#[derive(Serialize)]
struct KernelReport<'a> {
    schema: u32,
    found: bool,
    /// `found`, `unavailable` (nothing bootable: a harness skips), or
    /// `misconfigured` (what was asked for is wrong: a harness fails).
    outcome: &'static str,
    /// What is wrong, when misconfigured.
    error: Option<String>,
    path: Option<String>,
    source: Option<SourceKind>,
    image: Option<&'a ImageInfo>,
    /// Candidates passed over (all of them when nothing was found).
    passed_over: &'a [Candidate],
}

pub(crate) fn kernel(args: &KernelArgs) -> Outcome {
    match &args.action {
        Some(KernelAction::Store(store_args)) => return store(store_args),
        Some(KernelAction::List(list_args)) => return list(list_args),
        None => {}
    }
    let flags_given = args.image.is_some() || args.version.is_some() || !args.search.is_empty();
    let spec_text = args.spec.clone().or_else(|| {
        let from_env = std::env::var("LOCKYARD_KERNEL").ok().filter(|s| !s.is_empty());
        from_env.filter(|_| !flags_given && args.release.is_none())
    });
    let resolver = match spec_text {
        Some(text) => match KernelSpec::parse(&text) {
            Ok(spec) => {
                let cache = match &spec {
                    KernelSpec::Path(_) => None,
                    _ => kernel_cache(args)?,
                };
                Resolver::for_spec(&spec, cache, &args.root)
            }
            Err(e) => return misconfigured(args, &e.to_string()),
        },
        None => chain(args, flags_given)?,
    };
    let resolver = match &args.config {
        Some(path) => match kernels::config_file_fingerprint(path) {
            Ok(fingerprint) => resolver.config(fingerprint),
            Err(e) => return misconfigured(args, &e.to_string()),
        },
        None => resolver,
    };
    let resolved = match resolver.resolve() {
        Ok(resolved) => resolved,
        Err(ResolveError::Unavailable { tried }) => {
            if args.json {
                print_json(&KernelReport {
                    schema: SCHEMA,
                    found: false,
                    outcome: "unavailable",
                    error: None,
                    path: None,
                    source: None,
                    image: None,
                    passed_over: &tried,
                })?;
            }
            let mut text = "lockyard: no bootable kernel image found; tried, in order:\n".to_owned();
            for candidate in &tried {
                text.push_str(&format!("  {candidate}\n"));
            }
            eprint!("{text}");
            return Ok(Exit::NO);
        }
        Err(e @ ResolveError::Image { .. }) => return misconfigured(args, &e.to_string()),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        print_json(&KernelReport {
            schema: SCHEMA,
            found: true,
            outcome: "found",
            error: None,
            path: Some(resolved.path.display().to_string()),
            source: Some(resolved.source),
            image: Some(&resolved.image),
            passed_over: &resolved.passed_over,
        })?;
        return Ok(Exit::SUCCESS);
    }
    let image = &resolved.image;
    let mut format = image.format.to_owned();
    if let Some(protocol) = &image.boot_protocol {
        format.push_str(&format!(", boot protocol {protocol}"));
    }
    let mut text = format!(
        "image:    {}\nversion:  {}\nformat:   {format}, {}\nsource:   {}\n",
        resolved.path.display(),
        image.version.as_deref().unwrap_or("unknown (the header does not say)"),
        format_size(image.size),
        resolved.source,
    );
    if !resolved.passed_over.is_empty() {
        text.push_str("passed over:\n");
        for candidate in &resolved.passed_over {
            text.push_str(&format!("  {candidate}\n"));
        }
    }
    emit(&text)?;
    Ok(Exit::SUCCESS)
}

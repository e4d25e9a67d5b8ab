//! `lockyard preflight` and `lockyard kernel`.

use lockyard::cache::{Cache, CacheError, CacheOptions, NotACache, Wait};
use lockyard::kvm::{
    Candidate, Capability, ImageInfo, Preflight, ResolveError, Resolver, Source, SourceKind, Status,
};
use lockyard_cli::cli::{KernelArgs, PreflightArgs};
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

#[derive(Serialize)]
struct KernelReport<'a> {
    schema: u32,
    found: bool,
    path: Option<String>,
    source: Option<SourceKind>,
    image: Option<&'a ImageInfo>,
    /// Candidates passed over (all of them when nothing was found).
    passed_over: &'a [Candidate],
}

pub(crate) fn kernel(args: &KernelArgs) -> Outcome {
    let mut resolver = Resolver::new();
    if let Some(image) = &args.image {
        resolver = resolver.source(Source::Image(image.clone()));
    }
    if let Some(version) = &args.version {
        resolver = resolver.version(version.clone());
        let root = crate::cache_cmd::root(args.cache_dir.as_deref(), |name| std::env::var_os(name))?;
        // Looking up creates nothing; no cache yet is no cached kernel.
        match Cache::open(&root, CacheOptions::new().wait(Wait::timeout(args.wait)).read_only()) {
            Ok(cache) => resolver = resolver.source(Source::Cache { cache, key: version.clone() }),
            Err(CacheError::NotACache { reason: NotACache::Missing | NotACache::Empty, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !args.search.is_empty() {
        resolver = resolver.source(Source::BuildTrees(args.search.clone()));
    }
    let release =
        args.release.clone().or_else(|| args.version.clone()).unwrap_or_else(lockyard::kvm::running_release);
    resolver = resolver.source(Source::Installed { root: args.root.clone(), release });

    let resolved = match resolver.resolve() {
        Ok(resolved) => resolved,
        Err(ResolveError::Unavailable { tried }) => {
            if args.json {
                print_json(&KernelReport {
                    schema: SCHEMA,
                    found: false,
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
        Err(e) => return Err(e.into()),
    };
    if args.json {
        print_json(&KernelReport {
            schema: SCHEMA,
            found: true,
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

//! `lockyard cache` with a remote tier, against a real S3 server: moto's
//! server mode (from PyPI, installed by `cargo xtask ci`), started on
//! 127.0.0.1 for each test and stopped after. Two cache roots stand for
//! two hosts sharing one bucket.

use lockyard_test_support::s3::Moto;
use lockyard_test_support::{Scratch, incompressible, skip};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");
const BUCKET: &str = "lockyard-test";

/// A moto S3 server holding the test bucket, killed on drop.
struct S3(Moto);

impl S3 {
    /// Start one, or say why not (counted as a skip).
    fn start(dir: &Scratch) -> Option<S3> {
        if !Moto::available() {
            skip("needs moto's S3 server (pip install 'moto[server]'; cargo xtask ci installs it)");
            return None;
        }
        Some(S3(Moto::start(&dir.0, BUCKET)))
    }

    /// An object under the test prefix, read with boto3 (moto's own
    /// dependency), as another S3 client would.
    fn get(&self, object: &str) -> Vec<u8> {
        self.boto("sys.stdout.buffer.write(s3.get_object(Bucket=B, Key=K)['Body'].read())", object, &[])
    }

    /// Replace an object under the test prefix, as an attacker with write
    /// access to the bucket would.
    fn put(&self, object: &str, body: &[u8]) {
        self.boto("s3.put_object(Bucket=B, Key=K, Body=sys.stdin.buffer.read())", object, body);
    }

    /// Delete an object under the test prefix.
    fn delete(&self, object: &str) {
        self.boto("s3.delete_object(Bucket=B, Key=K)", object, &[]);
    }

    fn boto(&self, action: &str, object: &str, input: &[u8]) -> Vec<u8> {
        let script = format!(
            "import sys, boto3\n\
             s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{}', region_name='us-east-1', \
             aws_access_key_id='lockyard-test-key', aws_secret_access_key='lockyard-test-secret')\n\
             B, K = '{BUCKET}', 'team/{object}'\n{action}\n",
            self.0.port
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        child.stdin.take().expect("stdin").write_all(input).expect("write");
        let out = child.wait_with_output().expect("boto3");
        assert!(out.status.success(), "boto3 on {object}: {}", text(&out.stderr));
        out.stdout
    }

    fn url(&self) -> String {
        format!("s3://{BUCKET}/team")
    }

    /// `lockyard cache --dir ROOT --remote URL ARGS...` with the S3
    /// settings in the environment.
    fn cache(&self, root: &Path, args: &[&str]) -> Output {
        self.command(root, args).output().expect("run lockyard")
    }

    fn command(&self, root: &Path, args: &[&str]) -> Command {
        let mut command = cache_via(root, &self.url(), self.0.port);
        command.args(args);
        command
    }

    /// How many GETs of `key`'s archive the server has answered.
    fn archive_downloads(&self, key: &str) -> usize {
        self.0
            .log_text()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&format!("/v1/{key}/")) && l.contains(".tar.zst"))
            .count()
    }

    /// How many multipart uploads the server has begun.
    fn multipart_uploads_begun(&self) -> usize {
        self.0.log_text().lines().filter(|l| l.contains("\"POST ") && l.contains("uploads")).count()
    }

    /// How many multipart uploads are begun and neither completed nor
    /// aborted, as S3 lists them.
    fn multipart_uploads_open(&self) -> usize {
        let listed = self.boto("print(len(s3.list_multipart_uploads(Bucket=B).get('Uploads', [])))", "", &[]);
        text(&listed).trim().parse().expect("a count")
    }
}

/// `lockyard cache --dir ROOT --remote URL`, with an S3 endpoint on
/// 127.0.0.1:`port` and the test's credentials in the environment; the
/// caller adds the subcommand.
fn cache_via(root: &Path, url: &str, port: u16) -> Command {
    let mut command = Command::new(LOCKYARD);
    command
        .arg("cache")
        .arg("--dir")
        .arg(root)
        .arg("--remote")
        .arg(url)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "lockyard-test-key")
        .env("AWS_SECRET_ACCESS_KEY", "lockyard-test-secret")
        .env_remove("LOCKYARD_LOG")
        .stdin(Stdio::null());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn manifest(s3: &S3, key: &str) -> Value {
    serde_json::from_slice(&s3.get(&format!("v1/{key}/manifest.json"))).expect("manifest")
}

fn archive_name(s3: &S3, key: &str) -> String {
    format!("v1/{key}/{}.tar.zst", manifest(s3, key)["digest"].as_str().expect("digest"))
}

/// Put `archive` in place of `key`'s, with its length in the manifest,
/// as someone with write access to the bucket could.
fn plant(s3: &S3, key: &str, archive: &[u8]) {
    let mut edited = manifest(s3, key);
    edited["archive_size"] = archive.len().into();
    s3.put(&archive_name(s3, key), archive);
    s3.put(&format!("v1/{key}/manifest.json"), &serde_json::to_vec(&edited).expect("json"));
}

fn staging_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root.join(".staging")).map_or(true, |mut d| d.next().is_none())
}

/// A build that writes a nested tree with an executable and a symlink.
const BUILD: &str = "cd \"$LOCKYARD_STAGING\" && mkdir -p lib/sub && echo payload > lib/sub/data \
    && printf '#!/bin/sh\\necho hi\\n' > run && chmod +x run && ln -s lib/sub/data link \
    && head -c 300000 /dev/urandom > lib/blob";

#[test]
fn a_build_is_pushed_and_a_second_host_pulls_it_instead_of_building() {
    let dir = Scratch::new("remote-share");
    let Some(s3) = S3::start(&dir) else { return };
    let (host_a, host_b) = (dir.0.join("a"), dir.0.join("b"));

    let built = s3.cache(&host_a, &["ensure", "tree", "--build", BUILD]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    let listed = s3.cache(&host_a, &["remote", "list", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["entries"][0]["key"], "tree");
    assert_eq!(listed["entries"][0]["files"], 4);
    assert_eq!(listed["entries"][0]["dirs"], 2);

    // Host B misses locally: it pulls, and its build never runs.
    let pulled = s3.cache(&host_b, &["ensure", "tree", "--build", "echo BUILT >&2; exit 9"]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert!(!text(&pulled.stderr).contains("BUILT"));
    let entry = PathBuf::from(text(&pulled.stdout).trim());
    assert_eq!(entry, host_b.join("tree"));
    for file in ["lib/sub/data", "run", "lib/blob"] {
        assert_eq!(
            std::fs::read(entry.join(file)).ok(),
            std::fs::read(host_a.join("tree").join(file)).ok(),
            "{file}"
        );
    }
    assert_eq!(std::fs::read_link(entry.join("link")).expect("link"), Path::new("lib/sub/data"));
    let run = Command::new(entry.join("run")).output().expect("the executable bit travelled");
    assert_eq!(text(&run.stdout), "hi\n");
    let verify = s3.cache(&host_b, &["verify", "tree"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));

    // A push of the same build is a no-op; another build of the key is
    // kept out (the first push wins).
    let again = s3.cache(&host_b, &["push", "tree"]);
    assert!(text(&again.stdout).contains("already holds"), "{}", text(&again.stdout));
    let rebuilt = s3.cache(&host_b, &["put", "tree", host_a.join(".staging").to_str().expect("utf-8")]);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt.stderr));
    let other = s3.cache(&host_b, &["push", "tree"]);
    assert!(other.status.success());
    assert!(text(&other.stdout).contains("another build"), "{}", text(&other.stdout));

    // Explicit pull on a third host, and a key nobody has.
    let host_c = dir.0.join("c");
    let pull = s3.cache(&host_c, &["pull", "tree"]);
    assert!(pull.status.success(), "{}", text(&pull.stderr));
    assert_eq!(text(&pull.stdout).trim(), host_c.join("tree").display().to_string());
    let missing = s3.cache(&host_c, &["pull", "nobody"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing.stderr));
}

#[test]
fn a_bad_build_is_taken_back_with_remote_remove_and_replaced() {
    let dir = Scratch::new("remote-remove");
    let Some(s3) = S3::start(&dir) else { return };
    let build = |what: &str| format!("echo {what} > \"$LOCKYARD_STAGING/out\"");
    let bad = s3.cache(&dir.0.join("a"), &["ensure", "k", "--build", &build("bad")]);
    assert!(bad.status.success(), "{}", text(&bad.stderr));
    s3.put("v1/k/notes.txt", b"not the cache's");

    let removed = s3.cache(&dir.0.join("a"), &["remote", "remove", "k"]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert_eq!(text(&removed.stdout), "removed k (2 objects)\n");
    assert_eq!(s3.get("v1/k/notes.txt"), b"not the cache's", "only the cache's objects go");
    let listed = s3.cache(&dir.0.join("a"), &["remote", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["entries"], serde_json::json!([]));

    // The key is free again: the next build pushed wins.
    let good = s3.cache(&dir.0.join("b"), &["ensure", "k", "--build", &build("good")]);
    assert!(good.status.success(), "{}", text(&good.stderr));
    let pulled = s3.cache(&dir.0.join("c"), &["pull", "k"]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert_eq!(std::fs::read_to_string(dir.0.join("c/k/out")).expect("out"), "good\n");

    // A manifest whose archive is gone is refused, and removable.
    s3.delete(&archive_name(&s3, "k"));
    let orphan = s3.cache(&dir.0.join("d"), &["--require-remote", "pull", "k"]);
    assert_eq!(orphan.status.code(), Some(2), "{}", text(&orphan.stderr));
    assert!(text(&orphan.stderr).contains("not there"), "{}", text(&orphan.stderr));
    let some_missing = s3.cache(&dir.0.join("d"), &["remote", "remove", "k", "never-pushed"]);
    assert_eq!(some_missing.status.code(), Some(1), "{}", text(&some_missing.stderr));
    assert_eq!(text(&some_missing.stdout), "removed k (1 object)\n");
    assert!(text(&some_missing.stderr).contains("\"never-pushed\""), "{}", text(&some_missing.stderr));
}

/// A local entry that no longer matches its digest is not published, and
/// the multipart upload begun for it is aborted, not left on the bucket.
#[test]
fn a_corrupt_local_entry_is_not_pushed_and_its_upload_is_aborted() {
    let dir = Scratch::new("remote-corrupt");
    let Some(s3) = S3::start(&dir) else { return };
    let host = dir.0.join("a");
    let src = dir.0.join("src");
    std::fs::create_dir(&src).expect("mkdir");
    // Incompressible, so three parts: the upload is under way when the
    // mismatch shows.
    let data = incompressible(20 << 20);
    std::fs::write(src.join("data"), &data).expect("write");
    let put = Command::new(LOCKYARD)
        .args(["cache", "--dir"])
        .arg(&host)
        .args(["put", "big"])
        .arg(&src)
        .env_remove("LOCKYARD_CACHE_REMOTE")
        .output()
        .expect("put");
    assert!(put.status.success(), "{}", text(&put.stderr));
    let stored = host.join("big/data");
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let at = 19 << 20;
    let set_byte = |value: u8| {
        let file = std::fs::OpenOptions::new().write(true).open(&stored).expect("open");
        file.write_all_at(&[value], at).expect("write a byte");
    };
    set_byte(!data[at as usize]);

    let pushed = s3.cache(&host, &["--require-remote", "push", "big"]);
    assert_eq!(pushed.status.code(), Some(2), "{}", text(&pushed.stderr));
    assert!(text(&pushed.stderr).contains("digest"), "{}", text(&pushed.stderr));
    assert_eq!(s3.multipart_uploads_begun(), 1, "a multipart upload was begun: {}", s3.0.log_text());
    assert_eq!(s3.multipart_uploads_open(), 0, "no unfinished upload is left");
    let objects = s3.boto("print(s3.list_objects_v2(Bucket=B).get('KeyCount'))", "", &[]);
    assert_eq!(text(&objects).trim(), "0", "nothing was published");

    // Repaired, it goes up. Then, as after a push that died before its
    // manifest, the archive is there alone: the next push uploads the
    // parts again, finds the archive there at the end, aborts them, and
    // writes the manifest.
    set_byte(data[at as usize]);
    let pushed = s3.cache(&host, &["--require-remote", "push", "big"]);
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    s3.delete("v1/big/manifest.json");
    let again = s3.cache(&host, &["--require-remote", "push", "big"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(s3.multipart_uploads_begun(), 3, "{}", s3.0.log_text());
    assert_eq!(s3.multipart_uploads_open(), 0, "no unfinished upload is left");
    assert_eq!(manifest(&s3, "big")["key"], "big");
}

#[test]
fn tampered_truncated_and_escaping_archives_are_rejected_and_leave_nothing() {
    let dir = Scratch::new("remote-reject");
    let Some(s3) = S3::start(&dir) else { return };
    let host_a = dir.0.join("a");
    for (key, build) in [("good", BUILD), ("other", "echo other > \"$LOCKYARD_STAGING/x\"")] {
        let built = s3.cache(&host_a, &["ensure", key, "--build", build]);
        assert!(built.status.success(), "{}", text(&built.stderr));
    }
    let original = s3.get(&archive_name(&s3, "good"));
    let manifest_bytes = s3.get("v1/good/manifest.json");
    let good_archive = archive_name(&s3, "good");
    let restore = |s3: &S3| {
        s3.put(&good_archive, &original);
        s3.put("v1/good/manifest.json", &manifest_bytes);
    };
    let rejected = |s3: &S3, case: &str, says: &str| {
        let host = dir.0.join(case);
        let out = s3.cache(&host, &["--require-remote", "pull", "good"]);
        assert_eq!(out.status.code(), Some(2), "{case}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(says), "{case}: {}", text(&out.stderr));
        assert!(!host.join("good").exists(), "{case}: nothing published");
        assert!(staging_is_empty(&host), "{case}: no debris");
        // Without --require-remote an ensure warns and builds locally.
        let ensured = s3.cache(&host, &["ensure", "good", "--build", "echo local > \"$LOCKYARD_STAGING/x\""]);
        assert!(ensured.status.success(), "{case}: {}", text(&ensured.stderr));
        assert!(
            text(&ensured.stderr).contains("going on with the local cache"),
            "{case}: {}",
            text(&ensured.stderr)
        );
        assert!(host.join("good/x").exists(), "{case}");
    };

    // Another entry's archive in its place, its length in the manifest:
    // it unpacks, and its digest gives it away.
    let swapped = s3.get(&archive_name(&s3, "other"));
    plant(&s3, "good", &swapped);
    rejected(&s3, "swapped", "its entry.json is unusable");
    restore(&s3);

    // The same archive with one file's bytes changed, recompressed: a
    // valid archive whose digest gives it away.
    let mut tar = zstd::decode_all(&original[..]).expect("decompress");
    let at = tar.windows(8).position(|w| w == b"payload\n").expect("the payload");
    tar[at..at + 8].copy_from_slice(b"PAYLOAD\n");
    let tampered = zstd::encode_all(&tar[..], 3).expect("compress");
    plant(&s3, "good", &tampered);
    rejected(&s3, "tampered", "does not match its manifest's digest");
    restore(&s3);

    // A truncated upload: shorter than the manifest says.
    s3.put(&archive_name(&s3, "good"), &original[..original.len() / 2]);
    rejected(&s3, "truncated", "truncated");
    restore(&s3);

    // One flipped byte in the compressed stream.
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    s3.put(&archive_name(&s3, "good"), &flipped);
    rejected(&s3, "flipped", "refused");
    restore(&s3);

    // A manifest that lies about the size.
    let mut small = manifest(&s3, "good");
    small["size"] = 10.into();
    s3.put("v1/good/manifest.json", &serde_json::to_vec(&small).expect("json"));
    rejected(&s3, "oversized", "more than the manifest declares");
    restore(&s3);

    // A manifest too large to be one is not read into memory.
    s3.put("v1/good/manifest.json", &vec![b' '; 70 << 10]);
    rejected(&s3, "huge-manifest", "larger than 64 KiB");
    restore(&s3);

    // An archive whose member climbs out of the entry, packed by hand.
    let escaping = escaping_archive();
    plant(&s3, "good", &escaping);
    rejected(&s3, "escaping", "not a plain relative path");
    assert!(!dir.0.join("escaping/evil").exists() && !dir.0.join("evil").exists(), "nothing written outside");
}

/// tar + zstd holding an `entry.json` and then `../evil`, the tar made
/// by hand: the tar crate refuses to write such a path.
fn escaping_archive() -> Vec<u8> {
    let mut tar = Vec::new();
    let mut member = |name: &str, body: &[u8]| {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&header);
        tar.extend_from_slice(body);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    };
    let meta = br#"{"schema":1,"key":"good","created_ns":1,"size":5,"files":1,"digest":"00","user":null}"#;
    member("entry.json", meta);
    member("../evil", b"evil\n");
    tar.resize(tar.len() + 1024, 0);
    zstd::encode_all(&tar[..], 3).expect("compress")
}

#[test]
fn concurrent_ensures_on_one_host_make_one_download() {
    let dir = Scratch::new("remote-flight");
    let Some(s3) = S3::start(&dir) else { return };
    let built = s3.cache(&dir.0.join("a"), &["ensure", "k", "--build", BUILD]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    assert_eq!(s3.archive_downloads("k"), 0);
    let host = dir.0.join("b");
    let callers: Vec<Child> = (0..8)
        .map(|_| {
            s3.command(&host, &["ensure", "k", "--build", "echo BUILT >&2; exit 9"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for caller in callers {
        let out = caller.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), host.join("k").display().to_string());
    }
    assert_eq!(s3.archive_downloads("k"), 1, "one download for eight callers: {}", s3.0.log_text());
}

#[test]
fn a_server_gone_mid_pull_leaves_no_entry_and_sweep_leaves_no_debris() {
    let dir = Scratch::new("remote-gone");
    let Some(mut s3) = S3::start(&dir) else { return };
    let big = "head -c 200000000 /dev/urandom > \"$LOCKYARD_STAGING/big\"";
    let built = s3.cache(&dir.0.join("a"), &["ensure", "big", "--build", big]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    let host = dir.0.join("b");
    let pull = s3
        .command(&host, &["--require-remote", "--remote-timeout", "5s", "pull", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Stop the server once the download is under way.
    let started = Instant::now();
    while s3.archive_downloads("big") == 0 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    s3.0.kill();
    let out = pull.wait_with_output().expect("wait");
    // A pull that finished before the kill is not a failure of the test's
    // making; it would have to be faster than one 8 MiB part, though.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("remote cache"), "{}", text(&out.stderr));
    assert!(!host.join("big").exists());
    let swept =
        Command::new(LOCKYARD).args(["cache", "--dir"]).arg(&host).arg("sweep").output().expect("sweep");
    assert!(swept.status.success(), "{}", text(&swept.stderr));
    assert!(staging_is_empty(&host));
}

#[test]
fn a_remote_down_is_a_warning_unless_required() {
    let dir = Scratch::new("remote-down");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let run =
        |args: &[&str]| cache_via(&dir.0.join("c"), "s3://nobody/x", port).args(args).output().expect("run");
    let build = "echo x > \"$LOCKYARD_STAGING/x\"";
    let out = run(&["ensure", "k", "--build", build]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("going on with the local cache"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("lockyard-test-secret"), "{}", text(&out.stderr));
    let out = run(&["--require-remote", "ensure", "k2", "--build", build]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Commands that do not move entries never open the remote: a broken
    // remote setting (here: no region) does not stop a list.
    let list = Command::new(LOCKYARD)
        .args(["cache", "--dir"])
        .arg(dir.0.join("c"))
        .args(["--remote", "s3://nobody/x", "list"])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .expect("run");
    assert!(list.status.success(), "{}", text(&list.stderr));
    let pull = Command::new(LOCKYARD)
        .args(["cache", "--dir"])
        .arg(dir.0.join("c"))
        .args(["--remote", "s3://nobody/x", "pull", "k"])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("HOME", dir.0.join("no-home"))
        .output()
        .expect("run");
    assert_eq!(pull.status.code(), Some(2));
    assert!(text(&pull.stderr).contains("AWS_REGION"), "the fix is named: {}", text(&pull.stderr));
    // Credentials in the URL are refused before anything is sent.
    let out = Command::new(LOCKYARD)
        .args(["cache", "--dir"])
        .arg(dir.0.join("c"))
        .args(["--remote", "s3://key:secret@bucket/p", "push", "k"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("credentials"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("secret@"), "the URL's secret is not echoed: {}", text(&out.stderr));
}

#[test]
fn a_server_that_never_answers_is_given_up_on_after_the_timeout() {
    let dir = Scratch::new("remote-silent");
    // Accepts connections (the kernel's backlog does) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let run = |args: &[&str]| {
        let started = Instant::now();
        let mut out = cache_via(&dir.0.join("c"), "s3://silent/x", port)
            .args(["--remote-timeout", "1s"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        // Without a timeout this would wait forever: give it far more
        // than its 1 s, then call it hung.
        while out.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = out.kill();
                panic!("lockyard {args:?} still waiting on a silent server after 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        out.wait_with_output().expect("output")
    };
    let out = run(&["--require-remote", "pull", "k"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(&["ensure", "k", "--build", "echo x > \"$LOCKYARD_STAGING/x\""]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("going on with the local cache"), "{}", text(&out.stderr));
    assert!(dir.0.join("c/k/x").exists());
    drop(silent);
}

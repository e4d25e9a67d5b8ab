//! `lockyard topo` against this host, with a reservation lock held by
//! util-linux flock(1).

use std::process::{Command, Stdio};

use serde_json::Value;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

#[test]
fn topo_maps_this_host_and_names_who_holds_a_cpu() {
    let dir = std::env::temp_dir().join(format!("lockyard-topo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("lock dir");
    let topo = |json: bool| {
        let mut command = Command::new(LOCKYARD);
        command.args(["topo", "--lock-dir"]).arg(&dir);
        if json {
            command.arg("--json");
        }
        let out = command.output().expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let view: Value = serde_json::from_str(&topo(true)).expect("json");
    assert_eq!(view["schema"], 1);
    assert!(view["held"].as_object().expect("held").is_empty(), "{view}");
    let cpu = view["topology"]["cpus"][0]["id"].as_u64().expect("a cpu");
    let llc = view["topology"]["cpus"][0]["llc"].as_u64();

    let lock = dir.join(format!("cpu-{cpu}.lock"));
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("flock(1)");
    // flock(1) creates and locks the file before it runs sleep.
    let held = (0..200).find_map(|_| {
        let view: Value = serde_json::from_str(&topo(true)).expect("json");
        let holders = view["held"][format!("cpu-{cpu}")].clone();
        if holders.is_null() {
            std::thread::sleep(std::time::Duration::from_millis(10));
            None
        } else {
            Some(holders)
        }
    });
    let text = topo(false);
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    let _ = std::fs::remove_dir_all(&dir);

    let held = held.expect("the held CPU shows up");
    assert_eq!(held[0]["pid"].as_u64(), Some(u64::from(holder.id())), "{held}");
    let line = text.lines().find(|l| l.trim_start().starts_with(&format!("cpu-{cpu} "))).expect("cpu line");
    assert!(line.contains(&format!("held by pid={}", holder.id())), "{text}");
    if let Some(llc) = llc {
        let line =
            text.lines().find(|l| l.trim_start().starts_with(&format!("llc-{llc} "))).expect("llc line");
        assert!(line.ends_with(": free"), "only the CPU is held: {text}");
    }
}

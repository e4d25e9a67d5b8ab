//! moto's S3 server, started on 127.0.0.1 for a test or benchmark and
//! killed on drop. `cargo xtask deps` installs it (`moto[server]` from
//! PyPI); the remote cache tier's tests and benchmark run against it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto S3 server on a port of its own, holding one empty bucket.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Moto {
    /// Whether moto's server can be started here.
    pub fn available() -> bool {
        Command::new("python3")
            .args(["-c", "import moto.server"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Start one with `bucket` created in it, logging its requests in a
    /// file under `log_dir`. Panics if it does not come up within a
    /// minute; check [`Moto::available`] first.
    pub fn start(log_dir: &Path, bucket: &str) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let log = log_dir.join(format!("moto-{port}.log"));
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("moto's log"))
            .spawn()
            .expect("start moto");
        let mut moto = Moto { child, port, log };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = moto.child.try_wait().expect("wait for moto");
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(60),
                "moto did not start: {}",
                moto.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(moto.http("PUT", &format!("/{bucket}"), &[]).0, 200, "create the bucket");
        moto
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the server logged: one line per request answered.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One plain HTTP request (moto takes unsigned ones): status, body.
    fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).expect("send");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).expect("receive");
        let split = reply.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
        let head = String::from_utf8_lossy(&reply[..split]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
        let mut body = reply[split..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (status, body)
    }

    /// Stop it now, as a server lost mid-transfer would be.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).expect("hex").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body = &body[line_end + 2 + size + 2..];
    }
}

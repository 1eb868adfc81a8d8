//! Real `redis-server` processes on free loopback ports, for the cluster
//! tests: started, stopped, killed and restarted by the test, so that it
//! can cut Redis under running nodes. Debian's `redis-server` (installed by
//! scripts/setup-redis.sh).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server`, killed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    append_only: bool,
}

/// A free port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    /// Starts `redis-server` on a free port, its files in `dir`; with
    /// `append_only`, every write is logged (`--appendonly yes`,
    /// `--appendfsync always`) so a restart keeps it.
    pub fn start(dir: &Path, append_only: bool) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            append_only,
        };
        redis.launch();
        redis
    }

    fn launch(&mut self) {
        let aof = if self.append_only { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", aof, "--appendfsync", "always"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (scripts/setup-redis.sh installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs one command and returns the first line of its reply (`+OK`,
    /// `:5`, `$3` ...), or `None` if Redis does not answer.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut byte = [0u8];
        while !reply.ends_with(b"\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => reply.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&reply).trim_end().to_string())
    }

    /// Runs a command with `redis-cli` and returns its whole output (for
    /// replies of several lines, such as `KEYS`).
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills it with SIGKILL (what was not logged is lost).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

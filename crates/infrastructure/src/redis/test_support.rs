//! Test helpers: the Redis that `scripts/test.sh` starts. A test that needs it fails loudly
//! when it is missing instead of being skipped; tests share it, so each uses its own keys.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the test Redis URL.
pub const REDIS_URL_VAR: &str = "SBA_TEST_REDIS_URL";

/// The URL of the test Redis.
///
/// # Panics
/// With instructions, when the variable is unset: a test that needs Redis must fail loudly
/// rather than be skipped.
pub fn redis_url() -> String {
    std::env::var(REDIS_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{REDIS_URL_VAR} is not set: run scripts/test.sh, or set SBA_TEST_REDIS_URL \
             (scripts/services-up.sh starts a private Redis and exports it)"
        )
    })
}

/// A private `redis-server` on a free port that keeps nothing on disk, killed when dropped:
/// for tests that stop and restart Redis without disturbing the others.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not start within 10 s.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not start within 10 s.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server on port {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0_u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read(&mut reply).is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

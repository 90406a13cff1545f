//! Test helpers: the Redis that `scripts/test.sh` starts. A test that needs it fails loudly
//! when it is missing instead of being skipped; tests share it, so each uses its own keys.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::{ClientLike as _, LuaInterface as _};
use fred::types::Builder;
use fred::types::config::Config;
use uuid::Uuid;

use super::events::keys::queue_key;

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

/// A client of the test Redis for what tests do by hand (groups, raw entries).
///
/// # Panics
/// When the test Redis is missing or unreachable.
pub async fn admin_client() -> Client {
    let admin = Builder::from_config(Config::from_url(&redis_url()).unwrap()).build().unwrap();
    admin.init().await.expect("connecting to the test Redis");
    admin
}

/// A consumer group of its own on the event queues of partitions `0..partitions`, created
/// at the queues' ends: a consumer in it sees only entries appended after this, and keeps
/// leases and dead letters of its own, so a test may run a worker beside other tests.
///
/// # Panics
/// When Redis refuses.
pub async fn new_queue_group(admin: &Client, partitions: u16) -> String {
    let group = format!("test-{}", Uuid::now_v7());
    for p in 0..partitions {
        let _: String = admin
            .eval(
                "return redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')['ok']",
                vec![queue_key(p)],
                vec![group.clone()],
            )
            .await
            .unwrap();
    }
    group
}

/// Removes a group of [`new_queue_group`] from the queues (its leases expire; its dead
/// letters are the test's to replay).
///
/// # Panics
/// When Redis refuses.
pub async fn drop_queue_group(admin: &Client, group: &str, partitions: u16) {
    for p in 0..partitions {
        let _: i64 = admin
            .eval("return redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])", vec![queue_key(p)], vec![group])
            .await
            .unwrap();
    }
}

/// A private `redis-server` on a free port, killed when dropped: for tests that stop and
/// restart Redis without disturbing the others. It keeps nothing on disk unless started
/// with [`Self::start_durable`].
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
    /// The directory of its append-only file, when it has one.
    dir: Option<PathBuf>,
}

impl PrivateRedis {
    /// Starts one on a free port that keeps nothing on disk: a restart starts it empty.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not start within 10 s.
    pub fn start() -> Self {
        Self::start_in(None)
    }

    /// Starts one on a free port with the append-only file on and `appendfsync always`, in
    /// a directory of its own (removed when dropped), as docs/operations.md requires of a
    /// production Redis: what it acknowledged survives [`Self::stop`] (a kill) and
    /// [`Self::restart`].
    ///
    /// # Panics
    /// When `redis-server` is missing or does not start within 10 s.
    pub fn start_durable() -> Self {
        let dir = std::env::temp_dir().join(format!("sba-redis-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creating the private Redis' directory");
        Self::start_in(Some(dir))
    }

    fn start_in(dir: Option<PathBuf>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, child: None, dir };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port, with what its append-only file holds, if it has one.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not start within 10 s.
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", ""];
        let dir = self.dir.as_ref().map(|dir| dir.display().to_string());
        match &dir {
            Some(dir) => args.extend(["--dir", dir, "--appendonly", "yes", "--appendfsync", "always"]),
            None => args.extend(["--appendonly", "no"]),
        }
        let child = Command::new("redis-server")
            .args(args)
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

    /// Kills it, deletes whatever it kept on disk and starts it again on its port, empty: a
    /// Redis that lost its data.
    ///
    /// # Panics
    /// As [`Self::restart`], or when its files cannot be removed.
    pub fn restart_empty(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            std::fs::remove_dir_all(dir).expect("removing the private Redis' files");
            std::fs::create_dir_all(dir).expect("creating the private Redis' directory");
        }
        self.restart();
    }

    /// Kills it (SIGKILL: no chance to write anything more to disk).
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
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

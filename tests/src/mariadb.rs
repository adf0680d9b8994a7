//! A MariaDB server of the test's own, for fault tests that stop the
//! database (DESIGN §6 "MySQL down"): `mariadbd` on a free loopback port
//! with a fresh data directory of its own under `/var/tmp`, so the
//! machine's server on 3306, which other tests share, is never touched.
//!
//! It runs with `--skip-grant-tables` (any user, no password, as root on
//! the shared server) and `--no-defaults` (no `/etc/mysql` file applies),
//! and needs no `mariadb-install-db`: an empty data directory starts in
//! well under a second. A test can pause it (it stops answering, like a
//! hung server), kill it (connections refused, as a crash) and start it
//! again on the same data directory and port, where everything committed
//! before the kill is still there (InnoDB's crash recovery).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::process::{Child, Command};

use crate::{free_port, unique_tag};

/// The server binary Debian's `mariadb-server` installs.
const MARIADBD: &str = "/usr/sbin/mariadbd";
/// How long a start may take, crash recovery after a kill included.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A private `mariadbd`; killed and its data directory removed when
/// dropped.
pub struct PrivateMariaDb {
    pub port: u16,
    /// The data directory, with the server's socket, pid file and log.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl PrivateMariaDb {
    /// Starts a server on a free port over an empty data directory and
    /// returns once it answers a query; panics with its log if it does
    /// not within a minute.
    pub async fn start() -> Self {
        let port = free_port();
        let dir = PathBuf::from(format!("/var/tmp/status-test-mariadb-{port}-{}", unique_tag()));
        std::fs::create_dir_all(dir.join("data")).expect("a data directory under /var/tmp");
        let mut server = Self { port, dir, child: None };
        server.launch().await;
        // A data directory a server created and never shut down cleanly
        // may not start again after a kill (its system tablespace's header
        // is not on disk yet): one clean stop makes it whole.
        server.stop().await;
        server.launch().await;
        server
    }

    /// The server URL without a database: `mysql://root@127.0.0.1:{port}`,
    /// in the form of `TEST_DATABASE_URL`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("the private mariadbd is running")
    }

    /// What the server wrote to its error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    async fn launch(&mut self) {
        let data = self.dir.join("data");
        let child = Command::new(MARIADBD)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", self.dir.join("mariadb.sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", self.dir.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-name-resolve", "--user=root"])
            // Small: a test's tables hold a few thousand rows.
            .args(["--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mariadbd is installed (apt-get install mariadb-server)");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut conn) = sqlx::MySqlConnection::connect(&self.url()).await {
                if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
                    let _ = conn.close().await;
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("the private mariadbd on port {} exited ({status}):\n{}", self.port, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the private mariadbd on port {} never answered:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Stops answering without closing connections (SIGSTOP).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Answers again after [`Self::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Shuts the server down cleanly (SIGTERM) and waits until it is gone;
    /// panics if it is not within a minute. The data directory stays.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            let stopped = tokio::time::timeout(START_TIMEOUT, child.wait()).await;
            assert!(stopped.is_ok(), "the private mariadbd on port {} did not stop:\n{}", self.port, self.log());
        }
    }

    /// Kills the server (SIGKILL) and waits until it is gone: connections
    /// are refused from then on. The data directory stays.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same data directory and port, after
    /// a [`Self::kill`] or [`Self::stop`] (or kills it first); returns once
    /// it answers.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // A paused server must be woken to die.
                let _ = std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status();
            }
            let _ = child.start_kill();
            // Reaped before its files go, so it writes nothing after.
            for _ in 0..100 {
                if child.try_wait().is_ok_and(|s| s.is_some()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

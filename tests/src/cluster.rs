//! A real Redis Cluster of three primaries on loopback ports, started for
//! one test and torn down after it (`redis-server --cluster-enabled yes`,
//! `redis-cli --cluster create`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::unique_tag;

/// A running cluster; dropped, its servers are killed and its files removed.
pub struct LocalCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

/// A port free now whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    for _ in 0..200 {
        let port = crate::free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

impl LocalCluster {
    pub async fn start(primaries: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("status-cluster-{}", unique_tag()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let ports: Vec<u16> = (0..primaries).map(|_| cluster_port()).collect();
        let mut children = Vec::new();
        for port in &ports {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf"), "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            children.push(child);
        }
        let cluster = Self { ports, children, dir };
        for port in &cluster.ports {
            cluster.wait(|| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(), "node start");
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        for port in cluster.ports.clone() {
            cluster.wait(
                || {
                    let out = Command::new("redis-cli").args(["-p", &port.to_string(), "cluster", "info"]).output();
                    out.map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")).unwrap_or(false)
                },
                "cluster_state:ok",
            );
        }
        cluster
    }

    fn wait(&self, ready: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready() {
            assert!(Instant::now() < deadline, "cluster: {what} timed out");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service's cluster URL for this cluster.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Node `index`'s cluster id.
    fn node_id(&self, index: usize) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.ports[index].to_string(), "cluster", "myid"])
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Moves `slots` slots with their keys from node `from` to node `to`
    /// (`redis-cli --cluster reshard`), as an operator rebalancing would,
    /// and waits until every node agrees on the new map.
    pub fn reshard(&self, from: usize, to: usize, slots: u32) {
        let status = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", self.ports[0])])
            .args(["--cluster-from", &self.node_id(from), "--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(status.success(), "redis-cli --cluster reshard failed");
        let check = || {
            Command::new("redis-cli")
                .args(["--cluster", "check", &format!("127.0.0.1:{}", self.ports[0])])
                .output()
                .map(|o| {
                    o.status.success() && String::from_utf8_lossy(&o.stdout).contains("[OK] All 16384 slots covered")
                })
                .unwrap_or(false)
        };
        self.wait(check, "slots agreed after the reshard");
    }

    /// Kills node `index`: connections to it are refused and the slots it
    /// served have no server.
    pub fn kill(&mut self, index: usize) {
        let _ = self.children[index].kill();
        let _ = self.children[index].wait();
    }

    /// Keys held by each primary.
    pub fn key_counts(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|p| {
                let out = Command::new("redis-cli").args(["-p", &p.to_string(), "dbsize"]).output().expect("redis-cli");
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
            })
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

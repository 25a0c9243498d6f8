//! A PostgreSQL cluster of the test's own, to restart, cut off and freeze without touching
//! the server other tests share: made with `pg_createcluster` on a free port (trust
//! authentication, as `initdb --auth=trust` writes it into `pg_hba.conf`), started, and
//! dropped with the value (`pg_dropcluster --stop`), thawed first if it was frozen.
//!
//! Without the Debian cluster tools, or without the right to run them, a test says plainly
//! that it did not run and returns; with `CALL_RESULT_WEBHOOK_REQUIRE_DATABASE` set (as
//! `.ci/run` does) it fails instead.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// The PostgreSQL major version whose cluster tools are used.
const VERSION: &str = "15";

/// One cluster, dropped with the value.
pub struct Cluster {
    pub name: String,
    pub port: u16,
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    frozen: Vec<i32>,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ctl(name: &str, action: &[&str]) -> Result<(), String> {
    let mut args = vec!["--skip-systemctl-redirect", VERSION, name];
    args.extend_from_slice(action);
    run("pg_ctlcluster", &args)
}

/// A port no one listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `sql` on `url` and answers the first column of the first row, as text.
pub fn query(url: &str, sql: &str) -> Result<String, String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async move {
                let (client, connection) = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio_postgres::connect(&url, tokio_postgres::NoTls),
                )
                .await
                .map_err(|_| "timed out connecting".to_string())?
                .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                let rows = client.simple_query(&sql).await.map_err(|e| e.to_string())?;
                Ok(rows
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => {
                            Some(row.get(0).unwrap_or("").to_owned())
                        }
                        _ => None,
                    })
                    .unwrap_or_default())
            })
    })
    .join()
    .expect("the query's thread")
}

impl Cluster {
    /// A new cluster, started, or `None` (after saying why) when one cannot be made.
    pub fn create(test: &str) -> Option<Cluster> {
        let name = format!("crwh_{test}_{}", std::process::id());
        let port = free_port();
        let made = run(
            "pg_createcluster",
            &[
                VERSION,
                &name,
                "-p",
                &port.to_string(),
                "--",
                "--auth=trust",
            ],
        )
        .and_then(|()| ctl(&name, &["start"]));
        let cluster = Cluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            name,
            port,
            frozen: Vec::new(),
        };
        if let Err(e) = made.and_then(|()| cluster.wait_up(Duration::from_secs(30))) {
            drop(cluster);
            if std::env::var_os("CALL_RESULT_WEBHOOK_REQUIRE_DATABASE").is_some() {
                panic!("{test}: cannot make a PostgreSQL cluster of its own: {e}");
            }
            eprintln!("{test}: NOT RUN: cannot make a PostgreSQL cluster of its own ({e})");
            return None;
        }
        Some(cluster)
    }

    /// Where the cluster's `postgresql.conf` and `pg_hba.conf` are (owned by the server's user).
    pub fn config_dir(&self) -> std::path::PathBuf {
        format!("/etc/postgresql/{VERSION}/{}", self.name).into()
    }

    /// Waits until the cluster answers a query.
    pub fn wait_up(&self, within: Duration) -> Result<(), String> {
        let until = std::time::Instant::now() + within;
        loop {
            match query(&self.url, "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() >= until => {
                    return Err(format!("{} does not answer: {e}", self.name));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `pg_ctlcluster restart -m fast`: every connection is cut, the server is down for a
    /// moment, then up again.
    pub fn restart(&self) {
        ctl(&self.name, &["restart", "-m", "fast"]).expect("restart the test cluster");
    }

    /// Stops the server (`-m fast`); [`start`](Self::start) starts it again.
    pub fn stop(&self) {
        ctl(&self.name, &["stop", "-m", "fast"]).expect("stop the test cluster");
    }

    pub fn start(&self) {
        ctl(&self.name, &["start"]).expect("start the test cluster");
    }

    /// `pg_terminate_backend` on every client connection but its own; answers how many.
    pub fn terminate_backends(&self) -> u64 {
        query(
            &self.url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .expect("pg_terminate_backend")
        .parse()
        .unwrap_or(0)
    }

    /// The postmaster's pid, from its pid file.
    fn postmaster(&self) -> i32 {
        let path = format!("/var/lib/postgresql/{VERSION}/{}/postmaster.pid", self.name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid in postmaster.pid")
    }

    /// SIGSTOP to the postmaster and every process it started: the server keeps its
    /// connections open and answers nothing.
    pub fn freeze(&mut self) {
        let postmaster = self.postmaster();
        let mut pids = vec![postmaster];
        pids.extend(children(postmaster));
        for pid in &pids {
            run("kill", &["-STOP", &pid.to_string()]).expect("SIGSTOP");
        }
        self.frozen = pids;
    }

    /// SIGCONT to what [`freeze`](Self::freeze) stopped.
    pub fn thaw(&mut self) {
        for pid in self.frozen.drain(..) {
            let _ = run("kill", &["-CONT", &pid.to_string()]);
        }
    }
}

/// The processes whose parent is `parent` (from `/proc/<pid>/stat`).
fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command may hold spaces: the fields after its closing parenthesis.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.thaw();
        if let Err(e) = run("pg_dropcluster", &["--stop", VERSION, &self.name]) {
            eprintln!("could not drop the test cluster {}: {e}", self.name);
        }
    }
}

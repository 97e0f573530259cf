//! A throwaway Postgres server on a free loopback port, from the distro's binaries.
//!
//! `PgServer::start()` returns `None` (after printing why) when no Postgres binaries are
//! installed, so suites skip instead of failing on a machine without them. Postgres
//! refuses to run as root, so as root the server runs as OS user `corraltest` (created
//! if missing). The server is stopped, by its own data directory, when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const OS_USER: &str = "corraltest";

pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_root: bool,
    // Removed after the server is stopped (fields drop after `Drop::drop` runs).
    _dir: tempfile::TempDir,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<v>/bin` holding initdb and pg_ctl.
fn find_bin() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, b)| b)
}

fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()
        .map(|a| a.port())
}

fn ensure_os_user() -> Result<(), String> {
    let exists = Command::new("id")
        .arg(OS_USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if exists {
        return Ok(());
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            OS_USER,
        ])
        .output()
        .map_err(|e| format!("useradd: {e}"))?;
    // Another test may have created it in the meantime (exit 9: already exists).
    if out.status.success() || out.status.code() == Some(9) {
        Ok(())
    } else {
        Err(format!(
            "useradd {OS_USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl PgServer {
    /// Starts a fresh server, or explains on stderr why Postgres tests are skipped.
    pub fn start() -> Option<PgServer> {
        match Self::try_start() {
            Ok(s) => Some(s),
            Err(why) => {
                eprintln!("SKIP postgres tests: {why}");
                None
            }
        }
    }

    fn try_start() -> Result<PgServer, String> {
        let bin = find_bin().ok_or(
            "no /usr/lib/postgresql/*/bin/{initdb,pg_ctl}; install the postgresql package",
        )?;
        let as_root = is_root();
        if as_root {
            ensure_os_user()?;
        }
        let dir = tempfile::Builder::new()
            .prefix("corral-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| format!("mkdir: {e}"))?;
        if as_root {
            let out = Command::new("chown")
                .args(["-R", OS_USER])
                .arg(dir.path())
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            check("chown", &out)?;
        }
        let port = free_port().ok_or("no free loopback port")?;
        let server = PgServer {
            bin,
            data,
            port,
            as_root,
            _dir: dir,
        };
        let out = server.run(
            "initdb",
            &[
                "-D",
                path_str(&server.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        check("initdb", &out)?;
        server.start_again()?;
        Ok(server)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<Output, String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", OS_USER, "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))
    }

    /// (Re)starts the server on its port; used after [`PgServer::stop`].
    pub fn start_again(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off \
             -c synchronous_commit=off -c max_connections=200",
            self.port,
            path_str(&self.data)
        );
        let log = self.data.join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data),
                "-l",
                path_str(&log),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        check("pg_ctl start", &out).map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\n{tail}")
        })
    }

    /// Stops the server (fast shutdown); the data directory stays for `start_again`.
    pub fn stop(&self) -> Result<(), String> {
        let out = self.run(
            "pg_ctl",
            &["-D", path_str(&self.data), "-m", "fast", "-w", "stop"],
        )?;
        check("pg_ctl stop", &out)
    }

    #[allow(dead_code)] // for suites that build their own URLs
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `postgres`.
    #[allow(dead_code)]
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_db(&self, name: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        check("create database", &out)?;
        Ok(self.url_for(name))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            // Already stopped by the test is fine; anything else is worth seeing.
            if !e.contains("Is server running?") {
                eprintln!("stopping test postgres: {e}");
            }
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn check(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

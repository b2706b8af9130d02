//! The embedded Postgres: finds the installed server binaries, creates a cluster once in a
//! data directory, starts it on a free loopback port and stops it cleanly.
//!
//! Used by `rowcast dev` / `rowcast migrate` without `DATABASE_URL`, and by the test
//! harness. Postgres refuses to run as root, so when we are root the cluster is owned by and
//! run as the `postgres` system user (or `nobody`).

use std::{
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::store::embedded::{CREATE_DATABASE, DATABASE_EXISTS, SET_SEARCH_PATH};
/// The superuser and database the embedded cluster is created with.
pub use crate::store::embedded::{EMBEDDED_DATABASE, EMBEDDED_USER};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb via ROWCAST_PG_BINDIR, pg_config --bindir, PATH, \
         /usr/lib/postgresql/*/bin and Homebrew). Install them: on Debian/Ubuntu `sudo apt-get install postgresql`, \
         on macOS `brew install postgresql@16`; or set DATABASE_URL to use an existing server"
    )]
    BinariesNotFound,
    #[error("{command} failed: {detail}")]
    CommandFailed { command: String, detail: String },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running as root, but there is no unprivileged `postgres` or `nobody` user to run Postgres as")]
    NoUnprivilegedUser,
}

/// A running (or adopted) embedded cluster. Call [`EmbeddedPostgres::stop`] to shut it down.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bindir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
}

impl EmbeddedPostgres {
    /// Start the cluster in `data_dir`, creating it first if needed. A server left running
    /// by a crashed previous run is stopped and restarted; a stale `postmaster.pid` is removed.
    pub fn start(data_dir: &Path, bindir_override: Option<&Path>) -> Result<Self, ClusterError> {
        let bindir = find_bindir(bindir_override)?;
        let run_as = if is_root() {
            Some(unprivileged_user().ok_or(ClusterError::NoUnprivilegedUser)?)
        } else {
            None
        };
        let data_dir = absolute(data_dir)?;
        let mut pg = EmbeddedPostgres {
            bindir,
            data_dir,
            port: 0,
            run_as,
        };
        pg.init_if_needed()?;
        pg.recover_from_crash()?;
        let mut last_err = None;
        // The free port we pick can be taken before Postgres binds it; try a few.
        for _ in 0..3 {
            pg.port = free_port().map_err(|source| ClusterError::Io {
                path: pg.data_dir.clone(),
                source,
            })?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.create_database()?;
                    return Ok(pg);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(ClusterError::BinariesNotFound))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection string for `database` on this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{EMBEDDED_USER}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Connection string for the default `rowcast` database.
    pub fn database_url(&self) -> String {
        self.url_for(EMBEDDED_DATABASE)
    }

    /// Fast shutdown: active sessions are disconnected, data is flushed. Blocks until stopped.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let out = self.run(
            self.bindir.join("pg_ctl").as_os_str(),
            &[
                "stop",
                "-D",
                &self.data_dir_str(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
            ],
        )?;
        check("pg_ctl stop", out)
    }

    fn data_dir_str(&self) -> String {
        self.data_dir.display().to_string()
    }

    fn init_if_needed(&self) -> Result<(), ClusterError> {
        if self.data_dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        let io = |source| ClusterError::Io {
            path: self.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.data_dir).map_err(io)?;
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid)).map_err(io)?;
            make_traversable(&self.data_dir).map_err(io)?;
        }
        let out = self.run(
            self.bindir.join("initdb").as_os_str(),
            &[
                "-D",
                &self.data_dir_str(),
                "-U",
                EMBEDDED_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        )?;
        check("initdb", out)
    }

    fn recover_from_crash(&self) -> Result<(), ClusterError> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let Ok(contents) = std::fs::read_to_string(&pid_file) else {
            return Ok(());
        };
        let pid = contents.lines().next().unwrap_or("").trim();
        let alive_postgres = !pid.is_empty()
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().starts_with("postgres"))
                .unwrap_or(false);
        if alive_postgres {
            tracing::warn!(
                pid,
                "a Postgres from a previous run is still running; stopping it"
            );
            self.stop()
        } else {
            tracing::warn!("removing stale postmaster.pid left by a crashed run");
            std::fs::remove_file(&pid_file).map_err(|source| ClusterError::Io {
                path: pid_file,
                source,
            })
        }
    }

    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let log = self.data_dir.join("rowcast-postgres.log");
        // The server log keeps user data out: `terse` drops DETAIL/HINT/CONTEXT (a unique
        // violation's DETAIL quotes the key, e.g. an email), and no failing statement text
        // is logged (`log_min_error_statement=panic`); the error itself still is.
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300 -c fsync=on \
             -c log_error_verbosity=terse -c log_min_error_statement=panic",
            self.port
        );
        let out = self.run(
            self.bindir.join("pg_ctl").as_os_str(),
            &[
                "start",
                "-D",
                &self.data_dir_str(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
            ],
        )?;
        check("pg_ctl start", out).map_err(|e| {
            let tail = std::fs::read_to_string(&log)
                .map(|l| l.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
                .unwrap_or_default();
            match e {
                ClusterError::CommandFailed { command, detail } => ClusterError::CommandFailed {
                    command,
                    detail: format!("{detail}; server log: {tail}"),
                },
                other => other,
            }
        })
    }

    fn create_database(&self) -> Result<(), ClusterError> {
        let psql = self.bindir.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let url = self.url_for("postgres");
        let out = self.run(psql.as_os_str(), &[&url, "-c", SET_SEARCH_PATH])?;
        check("psql (search path)", out)?;
        let exists = self.run(psql.as_os_str(), &[&url, "-tAc", DATABASE_EXISTS])?;
        if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
            return Ok(());
        }
        let out = self.run(psql.as_os_str(), &[&url, "-c", CREATE_DATABASE])?;
        check("psql (create the database)", out)
    }

    fn run(&self, program: &std::ffi::OsStr, args: &[&str]) -> Result<Output, ClusterError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        // The unprivileged user may not be able to enter our working directory.
        if let Some(parent) = self.data_dir.parent() {
            cmd.current_dir(parent);
        }
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.output().map_err(|e| ClusterError::CommandFailed {
            command: program.to_string_lossy().into_owned(),
            detail: e.to_string(),
        })
    }
}

fn check(command: &str, out: Output) -> Result<(), ClusterError> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    Err(ClusterError::CommandFailed {
        command: command.to_string(),
        detail: format!("{} {}", stderr.trim(), stdout.trim())
            .trim()
            .to_string(),
    })
}

/// Where initdb/pg_ctl live: the override, `pg_config --bindir`, PATH, Debian's versioned
/// directories (newest first), then Homebrew's.
pub fn find_bindir(bindir_override: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = bindir_override {
        return if has_initdb(d) {
            Ok(d.to_path_buf())
        } else {
            Err(ClusterError::BinariesNotFound)
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&d) {
            return Ok(d);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has_initdb(d)) {
            return Ok(d);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = Vec::new();
    for root in ["/usr/lib/postgresql", "/opt/homebrew/opt", "/usr/local/opt"] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .trim_start_matches("postgresql@")
                .trim_start_matches("postgresql")
                .parse::<u32>()
                .unwrap_or(0);
            if root == "/usr/lib/postgresql" || name.starts_with("postgresql") {
                candidates.push((version, entry.path().join("bin")));
            }
        }
    }
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .map(|(_, d)| d)
        .find(|d| has_initdb(d))
        .ok_or(ClusterError::BinariesNotFound)
}

fn absolute(p: &Path) -> Result<PathBuf, ClusterError> {
    std::path::absolute(p).map_err(|source| ClusterError::Io {
        path: p.to_path_buf(),
        source,
    })
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

fn is_root() -> bool {
    // Reading our own uid without libc: the owner of /proc/self is the effective user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// uid and gid of `postgres`, else `nobody`, from /etc/passwd.
fn unprivileged_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let lookup = |name: &str| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == name {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    lookup("postgres").or_else(|| lookup("nobody"))
}

/// Give others search (x) permission on every ancestor that lacks it, so the unprivileged
/// Postgres user can reach its data directory. Only needed when running as root.
fn make_traversable(dir: &Path) -> std::io::Result<()> {
    let mut cur = dir.parent();
    while let Some(d) = cur {
        let meta = std::fs::metadata(d)?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o001))?;
        }
        cur = d.parent();
    }
    Ok(())
}

/// Give a freshly created directory tree to the unprivileged user when we are root, so a
/// cluster can be created inside it (used for temporary test clusters).
pub fn prepare_parent_dir(dir: &Path) -> std::io::Result<()> {
    if is_root() {
        make_traversable(&dir.join("x"))?;
    }
    Ok(())
}

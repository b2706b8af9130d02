//! Deployment artefacts checked against the code (there is no Docker engine or cluster
//! here): docker-compose.yml, the Dockerfile, the Kubernetes and App Engine files, the
//! Makefile and the settings reference in docs/operations.md. Plus the two small commands
//! the image relies on, `rowcast healthcheck` and `rowcast token`.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use rowcast::{auth::token::TokenKeys, config, metrics};
use serde_json::Value;

use crate::support::TestApp;

const BIN: &str = env!("CARGO_BIN_EXE_rowcast");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn known_vars() -> BTreeSet<String> {
    config::env_vars()
}

fn port_of(listen: &str) -> u16 {
    listen
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| panic!("ROWCAST_LISTEN {listen:?} is not host:port"))
        .port()
}

/// `KEY: value` pairs of a compose `environment:` block (mapping or list form).
fn compose_env(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| {
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn compose_file_describes_a_working_stack() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    let pg = &services["postgres"];
    let server = &services["server"];

    // Postgres: a current major version, data on a named volume, a pg_isready healthcheck.
    let image = pg["image"].as_str().unwrap();
    let major: u32 = image
        .strip_prefix("postgres:")
        .and_then(|t| t.split(['.', '-']).next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("postgres image {image:?} should pin a major version"));
    assert!(major >= 16, "postgres:{major} is not a current major");
    let volumes = compose["volumes"].as_object().expect("top-level volumes");
    let data_volume = pg["volumes"][0].as_str().unwrap();
    let (volume_name, mount) = data_volume.split_once(':').unwrap();
    assert!(
        volumes.contains_key(volume_name),
        "{volume_name} is not a named volume"
    );
    assert_eq!(mount, "/var/lib/postgresql/data");
    let test = pg["healthcheck"]["test"].to_string();
    assert!(test.contains("pg_isready"), "postgres healthcheck: {test}");

    let pg_env: std::collections::HashMap<_, _> = compose_env(pg).into_iter().collect();
    let (user, password, db) = (
        &pg_env["POSTGRES_USER"],
        &pg_env["POSTGRES_PASSWORD"],
        &pg_env["POSTGRES_DB"],
    );

    // The server: built from this repository, started once Postgres is healthy.
    assert_eq!(server["build"].as_str(), Some("."));
    assert_eq!(
        server["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert!(
        server["restart"].as_str().is_some(),
        "server restart policy"
    );

    // Every variable set for the server is one the server reads.
    let env = compose_env(server);
    let known = known_vars();
    for (k, _) in &env {
        assert!(
            known.contains(k),
            "compose sets {k}, which rowcast does not read"
        );
    }
    let env: std::collections::HashMap<_, _> = env.into_iter().collect();

    // DATABASE_URL reaches the postgres service with its credentials.
    let url: tokio_postgres::Config = env["DATABASE_URL"].parse().expect("DATABASE_URL");
    assert_eq!(
        url.get_hosts(),
        &[tokio_postgres::config::Host::Tcp("postgres".into())]
    );
    assert_eq!(url.get_user(), Some(user.as_str()));
    assert_eq!(url.get_password(), Some(password.as_bytes()));
    assert_eq!(url.get_dbname(), Some(db.as_str()));

    // The secret comes from the environment and has no default: without it compose stops
    // with a message that says how to make one (a published default is a forgeable key).
    let secret = &env["ROWCAST_JWT_SECRET"];
    let message = secret
        .strip_prefix("${ROWCAST_JWT_SECRET:?")
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or_else(|| {
            panic!("ROWCAST_JWT_SECRET must be required from the environment: {secret}")
        });
    assert!(message.contains("openssl rand"), "{message}");
    assert!(
        !message.contains('$'),
        "compose would interpolate it: {message}"
    );

    // Migrations run on start (the default; stated explicitly here).
    assert_ne!(
        env.get("ROWCAST_MIGRATE_ON_START").map(String::as_str),
        Some("false")
    );

    // The published container port is the one the server listens on, on all interfaces.
    let listen = &env["ROWCAST_LISTEN"];
    assert!(listen.starts_with("0.0.0.0:"), "{listen}");
    let port = port_of(listen);
    let published: Vec<u16> = server["ports"]
        .as_array()
        .expect("server ports")
        .iter()
        .filter_map(|p| p.as_str()?.rsplit(':').next()?.parse().ok())
        .collect();
    assert!(
        published.contains(&port),
        "{published:?} does not publish {port}"
    );

    // Compose's default stop grace period is 10 s; the drain must fit in it.
    let drain = humantime::parse_duration(&env["ROWCAST_SHUTDOWN_TIMEOUT"]).unwrap();
    assert!(drain < Duration::from_secs(10), "{drain:?}");
}

/// The cargo command of each `RUN ... cargo build ...` in the Dockerfile.
fn dockerfile_builds(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    joined
        .lines()
        .filter(|l| l.trim_start().starts_with("RUN "))
        .flat_map(|l| l.split("&&").map(str::trim).collect::<Vec<_>>())
        .map(|c| c.trim_start_matches("RUN ").trim().to_string())
        .filter(|c| c.starts_with("cargo build"))
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The commands of a Makefile target's recipe, with `$(CARGO)` spelled `cargo`.
fn make_recipe(makefile: &str, target: &str) -> Vec<String> {
    let mut lines = makefile
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{target}:")));
    lines
        .next()
        .unwrap_or_else(|| panic!("Makefile has no {target} target"));
    lines
        .take_while(|l| l.starts_with('\t'))
        .map(|l| {
            l.trim()
                .replace("$(CARGO)", "cargo")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn the_image_is_built_with_the_command_ci_runs() {
    let dockerfile = read("Dockerfile");
    let makefile = read("Makefile");
    let builds = dockerfile_builds(&dockerfile);
    assert_eq!(
        builds.len(),
        2,
        "dependency layer and final build: {builds:?}"
    );
    let make_build = make_recipe(&makefile, "build");
    assert_eq!(make_build.len(), 1, "{make_build:?}");
    for b in &builds {
        assert_eq!(b, &make_build[0], "Dockerfile and `make build` differ");
    }
    // CI runs `make build` (so the Dockerfile's build command is exercised there).
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "make build"),
        ".ci/run does not run `make build`"
    );
    // `make image` builds this Dockerfile.
    assert!(make_recipe(&makefile, "image")[0].starts_with("docker build"));

    // Every workspace member's manifest is in the dependency layer.
    let workspace: toml_members::Members = toml_members::parse(&read("Cargo.toml"));
    for member in workspace.0 {
        let manifest = format!("{member}/Cargo.toml");
        assert!(
            dockerfile.contains(&format!("COPY {manifest}")),
            "the Dockerfile does not copy {manifest} before building dependencies"
        );
    }
    // The builder's toolchain is at least the workspace's rust-version.
    let version = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    let builder = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let required = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"')
        .to_string();
    assert!(
        version(builder) >= version(&required),
        "Dockerfile's Rust {builder} < {required}"
    );

    // build.rs embeds ../migrations, so the image build needs them.
    assert!(dockerfile.contains("COPY migrations migrations"));
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "!migrations/"));

    // Runtime: non-root, listening where EXPOSE says, healthy when /ready is.
    let env_listen = dockerfile
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ROWCAST_LISTEN="))
        .expect("ENV ROWCAST_LISTEN in the Dockerfile");
    let exposed: u16 = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(port_of(env_listen), exposed);
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
    assert!(dockerfile.contains(r#"CMD ["rowcast", "healthcheck"]"#));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["rowcast"]"#));
    assert!(dockerfile.contains(r#"CMD ["serve"]"#));
    for word in dockerfile.split_whitespace() {
        if let Some((k, _)) = word.split_once('=') {
            if k.starts_with("ROWCAST_") {
                assert!(known_vars().contains(k), "Dockerfile sets unknown {k}");
            }
        }
    }
}

/// Workspace members from the root Cargo.toml, without a TOML dependency: the
/// `members = [...]` array is simple enough to read by hand.
mod toml_members {
    pub struct Members(pub Vec<String>);

    pub fn parse(cargo_toml: &str) -> Members {
        let start = cargo_toml.find("members").expect("workspace members");
        let rest = &cargo_toml[start..];
        let open = rest.find('[').expect("[");
        let close = rest.find(']').expect("]");
        Members(
            rest[open + 1..close]
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }
}

#[test]
fn kubernetes_and_app_engine_files_match_the_server() {
    let text = read("deploy/k8s/rowcast.yaml");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("k8s document"))
        .collect();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["Deployment", "Service", "PodDisruptionBudget"] {
        assert!(kinds.contains(k), "{k} missing from the manifest");
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"], "rowcast:latest",
        "make deploy-k8s replaces this line"
    );
    let known = known_vars();
    let mut listen = None;
    let mut drain = None;
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            known.contains(name),
            "the manifest sets {name}, which rowcast does not read"
        );
        match name {
            "ROWCAST_LISTEN" => listen = e["value"].as_str(),
            "ROWCAST_SHUTDOWN_TIMEOUT" => drain = e["value"].as_str(),
            "DATABASE_URL" | "ROWCAST_JWT_SECRET" => {
                assert!(
                    e["valueFrom"]["secretKeyRef"].is_object(),
                    "{name} must come from a Secret"
                )
            }
            _ => {}
        }
    }
    let port = port_of(listen.expect("ROWCAST_LISTEN"));
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(port as u64)
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    // The pod is killed after the grace period: it must cover the preStop pause and the drain.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pause: u64 = container["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let drain = humantime::parse_duration(drain.expect("ROWCAST_SHUTDOWN_TIMEOUT")).unwrap();
    assert!(
        grace > pause + drain.as_secs(),
        "grace {grace}s < preStop {pause}s + drain {drain:?}"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    let app = yaml("deploy/appengine/app.yaml");
    assert_eq!(app["runtime"], "custom");
    assert_eq!(app["env"], "flex");
    assert_eq!(app["readiness_check"]["path"], "/ready");
    assert_eq!(app["liveness_check"]["path"], "/health");
    for (k, v) in app["env_variables"].as_object().unwrap() {
        assert!(
            known.contains(k),
            "app.yaml sets {k}, which rowcast does not read"
        );
        assert!(
            k != "DATABASE_URL" && k != "ROWCAST_JWT_SECRET",
            "{k} must not be committed in app.yaml"
        );
        if k == "ROWCAST_LISTEN" {
            // App Engine flexible sends traffic to port 8080.
            assert_eq!(port_of(v.as_str().unwrap()), 8080);
        }
    }
}

#[test]
fn makefile_has_every_target_and_no_credentials() {
    let makefile = read("Makefile");
    for t in [
        "dev",
        "test",
        "migrate",
        "psql",
        "token",
        "bench",
        "image",
        "build",
        "deploy-cloudrun",
        "deploy-appengine",
        "deploy-k8s",
    ] {
        assert!(
            makefile.lines().any(|l| l.starts_with(&format!("{t}:"))),
            "Makefile has no {t} target"
        );
    }
    assert!(
        !makefile.contains("postgres://"),
        "a connection string in the Makefile"
    );
    for line in makefile.lines() {
        let words: Vec<&str> = line
            .trim_start_matches("export ")
            .split_whitespace()
            .collect();
        let assigns_secret = ["DATABASE_URL", "ROWCAST_JWT_SECRET"].iter().any(|v| {
            let name = words.first().map(|w| w.split('=').next().unwrap_or(w));
            name == Some(*v)
                && (words.first().is_some_and(|w| w.contains('='))
                    || words.get(1).is_some_and(|w| w.ends_with('=')))
        });
        assert!(!assigns_secret, "the Makefile sets a credential: {line}");
    }
}

#[test]
fn operations_doc_lists_exactly_the_settings_and_metrics() {
    let doc = read("docs/operations.md");
    let known = known_vars();
    for v in &known {
        assert!(
            doc.contains(&format!("`{v}`")),
            "docs/operations.md does not document {v}"
        );
    }
    let mut documented = BTreeSet::new();
    for (i, _) in doc.match_indices("ROWCAST_") {
        let name: String = doc[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        documented.insert(name);
    }
    for v in &documented {
        assert!(
            known.contains(v),
            "docs/operations.md documents {v}, which the code does not read"
        );
    }
    for m in metrics::CATALOG {
        assert!(
            doc.contains(&format!("`{}`", m.name)),
            "docs/operations.md does not list metric {}",
            m.name
        );
    }
}

#[tokio::test]
async fn healthcheck_command_follows_ready() {
    let app = TestApp::spawn().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let run = |listen: String| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .arg("healthcheck")
                .env_clear()
                .env("ROWCAST_LISTEN", listen)
                .output()
                .expect("run rowcast healthcheck")
        })
        .await
        .unwrap()
    };
    let ok = run(addr.clone()).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // 0.0.0.0 (as in the image) is probed on loopback.
    let port = addr.rsplit(':').next().unwrap();
    let ok = run(format!("0.0.0.0:{port}")).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    app.shutdown().await;

    // Nothing listening: unhealthy.
    let down = run(addr).await;
    assert_eq!(down.status.code(), Some(1));

    // Up but not ready (the database is unreachable): unhealthy.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut cfg = rowcast::config::Config::for_database(&format!(
        "postgres://rowcast@127.0.0.1:{dead_port}/nothing"
    ));
    cfg.database.connect_timeout = Duration::from_millis(300);
    let unready = TestApp::start(cfg).await;
    let r = unready.get("/ready").await;
    assert_eq!(r.status(), 503);
    let out = run(unready.base.trim_start_matches("http://").to_string()).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("503"), "{stderr}");
    unready.shutdown().await;
}

#[test]
fn token_command_signs_what_the_server_verifies() {
    let secret = config::TEST_JWT_SECRET;
    let keys = TokenKeys::hs256(secret.as_bytes(), "rowcast", "rowcast");
    let sub = uuid::Uuid::new_v4().to_string();
    let out = Command::new(BIN)
        .args(["token", "--sub", &sub])
        .env_clear()
        .env("ROWCAST_JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let who = keys.verify(token.trim()).expect("token verifies");
    assert_eq!(who.subject(), Some(sub.as_str()));
    assert_eq!(who.role, rowcast::auth::Role::Authenticated);

    let out = Command::new(BIN)
        .args(["token", "--role", "service"])
        .env_clear()
        .env("ROWCAST_JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    let who = keys
        .verify(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap();
    assert_eq!(who.role, rowcast::auth::Role::Service);

    // The dev secret in the data directory, as `make token` uses it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwt-secret"), secret).unwrap();
    let out = Command::new(BIN)
        .args(["token", "--data-dir"])
        .arg(dir.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who = keys
        .verify(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap();
    assert!(uuid::Uuid::parse_str(who.subject().unwrap()).is_ok());

    // Bad input: a clear error, exit code 2, no token.
    let out = Command::new(BIN)
        .args(["token", "--sub", "not-a-uuid"])
        .env_clear()
        .env("ROWCAST_JWT_SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["token", "--data-dir"])
        .arg(empty.path())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ROWCAST_JWT_SECRET"));
}

/// The image build sees only what `.dockerignore` lets through. Every file the release
/// build reads through `include_str!`/`include_bytes!` (outside test modules) must be in
/// that context, or `docker build` breaks while `cargo build` here works.
#[test]
fn the_docker_context_holds_what_the_release_build_reads() {
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "the context starts from nothing");
    let allowed: Vec<&str> = rules[1..]
        .iter()
        .map(|r| {
            r.strip_prefix('!')
                .unwrap_or_else(|| panic!("unexpected .dockerignore rule {r:?}"))
        })
        .collect();
    let in_context = |rel: &str| {
        allowed
            .iter()
            .any(|a| rel == *a || (a.ends_with('/') && rel.starts_with(a)))
    };
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "server/Cargo.toml",
        "server/build.rs",
    ] {
        assert!(
            in_context(needed),
            "{needed} is not in the Docker build context"
        );
    }

    let root = std::fs::canonicalize(repo()).unwrap();
    let mut stack = vec![root.join("server/src")];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            assert!(in_context(&rel), "{rel} is not in the Docker build context");
            let text = std::fs::read_to_string(&path).unwrap();
            let shipped = text.split("#[cfg(test)]").next().unwrap_or("");
            for mac in ["include_str!(\"", "include_bytes!(\""] {
                for (i, _) in shipped.match_indices(mac) {
                    let arg = &shipped[i + mac.len()..];
                    let target = &arg[..arg.find('"').unwrap()];
                    let file = std::fs::canonicalize(path.parent().unwrap().join(target))
                        .unwrap_or_else(|e| panic!("{rel}: {target}: {e}"));
                    let rel_target = file.strip_prefix(&root).unwrap().to_string_lossy();
                    assert!(
                        in_context(&rel_target),
                        "{rel} includes {rel_target}, which the Docker build cannot see"
                    );
                    checked += 1;
                }
            }
        }
    }
    // build.rs embeds every migration.
    for entry in std::fs::read_dir(root.join("migrations")).unwrap() {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(in_context(&rel), "{rel} is not in the Docker build context");
        checked += 1;
    }
    assert!(checked > 0);
}

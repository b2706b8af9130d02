//! Auth under abuse: concurrent sign-in bursts against the limits (checked and counted in
//! one statement before any hash), limits shared by two instances on one database, the
//! password-hashing memory bound of a real `rowcast serve` process under a sign-up burst
//! (peak RSS from /proc), sign-up switches and the anonymous sign-up limit, alike answers
//! for existing and new emails, and the cleanup of idle anonymous users.

use std::time::Duration;

use futures::FutureExt as _;
use reqwest::StatusCode;
use rowcast::{auth::mail::MailDelivery, config::Config};
use serde_json::{json, Value};

use crate::support::{self, process::ServerProcess, TestApp};

const PASSWORD: &str = "correct horse battery";

fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> reqwest::Response {
    http.post(url).json(&body).send().await.unwrap()
}

async fn spawn_on(db_url: &str, edit: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::for_database(db_url);
    edit(&mut config);
    TestApp::spawn_with(config).await
}

async fn sign_in_status(app: &TestApp, email: &str, password: &str) -> StatusCode {
    post(
        &app.http,
        app.url("/auth/v1/token?grant_type=password"),
        json!({"email": email, "password": password}),
    )
    .await
    .status()
}

#[tokio::test]
async fn a_concurrent_burst_cannot_pass_the_sign_in_limits() {
    let db = support::migrated_db().await;
    let app = spawn_on(&db, |c| {
        c.auth.signin_limits.per_account = 5;
        c.auth.signin_limits.per_address = 1000;
    })
    .await;
    let email = unique_email();
    let r = post(
        &app.http,
        app.url("/auth/v1/signup"),
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), 200);

    // 100 at once: 99 wrong passwords and the right one in the middle.
    let attempts = (0..100).map(|i| {
        let password = if i == 50 {
            PASSWORD.to_string()
        } else {
            format!("wrong {i}")
        };
        let (http, url, email) = (
            app.http.clone(),
            app.url("/auth/v1/token?grant_type=password"),
            email.clone(),
        );
        tokio::spawn(async move {
            let r = post(&http, url, json!({"email": email, "password": password})).await;
            (i, r.status())
        })
    });
    let results = futures::future::join_all(attempts).await;
    let mut checked_wrong = 0;
    let mut checked = 0;
    for r in results {
        let (i, status) = r.unwrap();
        assert!([200, 400, 429].contains(&status.as_u16()), "{status}");
        if status != 429 {
            checked += 1;
            if i != 50 {
                checked_wrong += 1;
            }
        }
    }
    println!("burst: {checked} of 100 attempts were checked ({checked_wrong} wrong)");
    assert!(
        checked_wrong <= 5,
        "{checked_wrong} wrong passwords were checked, limit 5"
    );
    assert!(checked <= 6, "{checked} attempts were checked");
    // The limit is reached: now even the right password is refused.
    assert_eq!(sign_in_status(&app, &email, PASSWORD).await, 429);
    app.shutdown().await;

    // An address at its limit: a burst of unknown emails is refused, every one.
    let db = support::migrated_db().await;
    let app = spawn_on(&db, |c| {
        c.auth.signin_limits.per_account = 1000;
        c.auth.signin_limits.per_address = 10;
    })
    .await;
    for _ in 0..10 {
        assert_eq!(sign_in_status(&app, &unique_email(), "guess").await, 400);
    }
    let burst = (0..40).map(|_| {
        let (http, url) = (
            app.http.clone(),
            app.url("/auth/v1/token?grant_type=password"),
        );
        tokio::spawn(async move {
            post(
                &http,
                url,
                json!({"email": unique_email(), "password": "guess"}),
            )
            .await
            .status()
        })
    });
    for s in futures::future::join_all(burst).await {
        assert_eq!(s.unwrap(), 429);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn limits_are_shared_by_two_instances_on_one_database() {
    let db = support::migrated_db().await;
    let edit = |c: &mut Config| {
        c.auth.signin_limits.per_account = 4;
        c.auth.accounts.signup_limits.anonymous_per_address = 3;
        c.auth.accounts.signup_limits.email_per_address = 1000;
    };
    let a = spawn_on(&db, edit).await;
    let b = spawn_on(&db, edit).await;
    let email = unique_email();
    let r = post(
        &a.http,
        a.url("/auth/v1/signup"),
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), 200);
    for app in [&a, &b, &a, &b] {
        assert_eq!(sign_in_status(app, &email, "guess").await, 400);
    }
    assert_eq!(sign_in_status(&a, &email, PASSWORD).await, 429);
    assert_eq!(sign_in_status(&b, &email, PASSWORD).await, 429);

    // Anonymous sign-ins per address per hour, counted across both.
    for app in [&a, &b, &a] {
        assert_eq!(
            post(&app.http, app.url("/auth/v1/signup"), json!({}))
                .await
                .status(),
            200
        );
    }
    let r = post(&b.http, b.url("/auth/v1/signup"), json!({})).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Resident memory of a process from /proc: (current, peak) in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_sign_up_burst_keeps_hashing_memory_within_the_budget() {
    const BUDGET_MIB: u64 = 40; // two 19 MiB hashes at a time
    const SLACK_MIB: u64 = 64; // everything else 200 requests may hold (buffers, tasks)
    let db = support::migrated_db().await;
    let server = ServerProcess::start_with(
        &db,
        &[
            ("ROWCAST_PASSWORD_HASH_MEMORY_BUDGET_MIB", "40"),
            ("ROWCAST_AUTH_SIGNUPS_PER_ADDRESS", "1000000"),
            ("ROWCAST_SIGNIN_FAILURES_PER_ADDRESS", "1000000"),
        ],
    );
    let http = reqwest::Client::new();
    support::eventually(Duration::from_secs(30), "the server is ready", || {
        let (http, url) = (http.clone(), server.url("/ready"));
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    // One sign-up first, so the baseline includes the hashing code and one memory area.
    let r = post(
        &http,
        server.url("/auth/v1/signup"),
        json!({"email": unique_email(), "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (baseline, _) = rss_kib(server.pid());

    let burst = (0..200).map(|_| {
        let (http, url) = (http.clone(), server.url("/auth/v1/signup"));
        tokio::spawn(async move {
            let r = post(
                &http,
                url,
                json!({"email": unique_email(), "password": PASSWORD}),
            )
            .await;
            (r.status(), r.headers().contains_key("retry-after"))
        })
    });
    let mut created = 0;
    for r in futures::future::join_all(burst).await {
        let (status, retry_after) = r.unwrap();
        match status.as_u16() {
            200 => created += 1,
            429 => assert!(retry_after, "429 without Retry-After"),
            other => panic!("sign-up answered {other}"),
        }
    }
    // And 100 concurrent sign-ins (unknown emails: each verifies the dummy hash).
    let burst = (0..100).map(|_| {
        let (http, url) = (
            http.clone(),
            server.url("/auth/v1/token?grant_type=password"),
        );
        tokio::spawn(async move {
            post(
                &http,
                url,
                json!({"email": unique_email(), "password": "guess"}),
            )
            .await
            .status()
            .as_u16()
        })
    });
    for s in futures::future::join_all(burst).await {
        assert!([400, 429].contains(&s.unwrap()));
    }
    let (after, peak) = rss_kib(server.pid());
    let bound = baseline + (BUDGET_MIB + SLACK_MIB) * 1024;
    println!(
        "sign-up burst of 200 ({created} created), then 100 sign-ins: RSS baseline {} MiB, peak {} MiB, after {} MiB, bound {} MiB",
        baseline / 1024, peak / 1024, after / 1024, bound / 1024
    );
    assert!(created >= 2, "the burst created {created} users");
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB above the bound {bound} KiB"
    );
}

#[tokio::test]
async fn sign_up_switches_and_the_anonymous_limit() {
    let db = support::migrated_db().await;
    let app = spawn_on(&db, |c| {
        c.auth.accounts.email_signup = false;
        c.auth.accounts.anonymous_signin = false;
    })
    .await;
    let r = post(
        &app.http,
        app.url("/auth/v1/signup"),
        json!({"email": unique_email(), "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "signup-disabled");
    let r = post(&app.http, app.url("/auth/v1/signup"), json!({})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "signup-disabled");
    app.shutdown().await;

    // Email sign-up off, anonymous on and limited to two per address per hour.
    let app = spawn_on(&db, |c| {
        c.auth.accounts.email_signup = false;
        c.auth.accounts.signup_limits.anonymous_per_address = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            post(&app.http, app.url("/auth/v1/signup"), json!({}))
                .await
                .status(),
            200
        );
    }
    let r = post(&app.http, app.url("/auth/v1/signup"), json!({})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "rate-limited");
    let r = post(
        &app.http,
        app.url("/auth/v1/signup"),
        json!({"email": unique_email(), "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), 403);
    app.shutdown().await;
}

#[tokio::test]
async fn existing_and_new_emails_get_alike_answers_and_email_changes_are_limited() {
    let outbox = tempfile::tempdir().unwrap();
    let db = support::migrated_db().await;
    let app = spawn_on(&db, |c| {
        c.auth.accounts.email_confirmation = true;
        c.auth.accounts.mail.delivery = MailDelivery::Outbox(outbox.path().to_path_buf());
    })
    .await;
    let existing = unique_email();
    let first = post(
        &app.http,
        app.url("/auth/v1/signup"),
        json!({"email": existing, "password": PASSWORD}),
    )
    .await;
    assert_eq!(first.status(), 200);
    let shape = |v: &Value| {
        let mut v = v.clone();
        for volatile in ["id", "email", "created_at", "updated_at"] {
            v[volatile] = Value::Null;
        }
        v
    };
    let again = post(
        &app.http,
        app.url("/auth/v1/signup"),
        json!({"email": existing, "password": PASSWORD}),
    )
    .await;
    let new = post(
        &app.http,
        app.url("/auth/v1/signup"),
        json!({"email": unique_email(), "password": PASSWORD}),
    )
    .await;
    assert_eq!(again.status(), new.status());
    let (again, new): (Value, Value) = (again.json().await.unwrap(), new.json().await.unwrap());
    assert_eq!(
        shape(&again),
        shape(&new),
        "sign-up tells an existing address from a new one"
    );
    app.shutdown().await;

    // Without confirmation an email change applies at once, so a taken address must be
    // refused; such probing is limited per account (and per client address).
    let app = spawn_on(&db, |c| {
        c.auth.accounts.signup_limits.mail_per_recipient = 3
    })
    .await;
    let anon: Value = post(&app.http, app.url("/auth/v1/signup"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    let token = anon["access_token"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = app
            .http
            .put(app.url("/auth/v1/user"))
            .bearer_auth(&token)
            .json(&json!({"email": unique_email()}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    app.shutdown().await;
}

#[tokio::test]
async fn idle_anonymous_users_are_cleaned_up_when_configured() {
    let db = support::migrated_db().await;
    let app = spawn_on(&db, |_| {}).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let s: Value = post(&app.http, app.url("/auth/v1/signup"), json!({}))
            .await
            .json()
            .await
            .unwrap();
        ids.push(s["user"]["id"].as_str().unwrap().to_string());
    }
    let regular: Value = post(
        &app.http,
        app.url("/auth/v1/signup"),
        json!({"email": unique_email(), "password": PASSWORD}),
    )
    .await
    .json()
    .await
    .unwrap();
    let client = app.db().await;
    // The first anonymous user and the regular one were last seen two days ago.
    for id in [&ids[0], regular["user"]["id"].as_str().unwrap()] {
        client
            .execute(
                "with u as (update rowcast.users set created_at = now() - interval '2 days', \
                   last_sign_in_at = now() - interval '2 days' where id = $1::text::uuid returning id) \
                 update rowcast.sessions set created_at = now() - interval '2 days' where user_id in (select id from u)",
                &[&id],
            )
            .await
            .unwrap();
    }
    app.shutdown().await;

    // Off by default: nothing was deleted. On (one day): the idle anonymous user goes at
    // the first pass, the recent one and the regular user stay.
    let count = |id: String| {
        let db = db.clone();
        async move {
            let c = support::connect(&db).await;
            c.query_one(
                "select count(*) from rowcast.users where id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(count(ids[0].clone()).await, 1);
    let app = spawn_on(&db, |c| {
        c.auth.accounts.anonymous_cleanup_after = Some(Duration::from_secs(24 * 3600))
    })
    .await;
    support::eventually(
        Duration::from_secs(30),
        "the idle anonymous user is deleted",
        || count(ids[0].clone()).then(|n| async move { n == 0 }),
    )
    .await;
    assert_eq!(count(ids[1].clone()).await, 1);
    assert_eq!(
        count(regular["user"]["id"].as_str().unwrap().to_string()).await,
        1
    );
    app.shutdown().await;
}

//! The email flows end to end, through the server's real SMTP client and a real SMTP
//! listener started by the test (`support::smtp`): sign-up confirmation, password recovery,
//! magic link / code sign-in and email change, with expired, reused and wrong tokens, the
//! per-address limits, and answers that do not tell whether an address has an account.

use reqwest::StatusCode;
use rowcast::{
    auth::mail::{MailDelivery, SmtpConfig, SmtpTls},
    config::Config,
};
use serde_json::{json, Value};

use crate::support::{self, smtp::SmtpSink, TestApp};

const PASSWORD: &str = "correct horse battery";

fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn spawn(edit: impl FnOnce(&mut Config)) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let db_url = support::migrated_db().await;
    let mut config = Config::for_database(&db_url);
    config.auth.accounts.mail.delivery = MailDelivery::Smtp(SmtpConfig {
        host: "127.0.0.1".into(),
        port: sink.addr.port(),
        tls: SmtpTls::None,
        username: None,
        password: None,
    });
    config.auth.accounts.site_url = Some("http://app.example.test".into());
    edit(&mut config);
    (TestApp::spawn_with(config).await, sink)
}

async fn post(app: &TestApp, path: &str, body: Value, bearer: Option<&str>) -> (StatusCode, Value) {
    let mut req = app.http.post(app.url(path)).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json::<Value>().await.unwrap_or(Value::Null))
}

async fn put_user(app: &TestApp, bearer: &str, body: Value) -> (StatusCode, Value) {
    let r = app
        .http
        .put(app.url("/auth/v1/user"))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json::<Value>().await.unwrap_or(Value::Null))
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    post(
        app,
        "/auth/v1/token?grant_type=password",
        json!({"email": email, "password": password}),
        None,
    )
    .await
}

/// Follow an emailed link without following the redirect: the `Location` header.
async fn open_link(link: &str) -> (StatusCode, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client.get(link).send().await.unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), location)
}

fn fragment_param(location: &str, name: &str) -> Option<String> {
    let fragment = location.split_once('#')?.1;
    form_urlencoded::parse(fragment.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn sign_up_confirmation_by_link_with_reuse_refused_and_existing_emails_answered_alike() {
    let (app, mut sink) = spawn(|c| c.auth.accounts.email_confirmation = true).await;
    let email = unique_email();
    let (status, user) = post(
        &app,
        "/auth/v1/signup?redirect_to=http://app.example.test/welcome",
        json!({"email": email, "password": PASSWORD, "data": {"name": "Ada"}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert!(
        user.get("access_token").is_none(),
        "signed in before confirming: {user}"
    );
    assert_eq!(user["email"], email);
    assert_eq!(user["email_confirmed_at"], Value::Null);

    let mail = sink.next_to(&email).await;
    assert!(mail.subject.contains("Confirm"), "{mail:?}");
    assert_eq!(mail.link_param("type"), "signup");
    assert_eq!(
        mail.link_param("redirect_to"),
        "http://app.example.test/welcome"
    );

    // Until confirmed, the right password gets a stable code (a wrong one is just wrong).
    let (status, body) = sign_in(&app, &email, PASSWORD).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("email-not-confirmed"))
    );
    let (_, body) = sign_in(&app, &email, "not the password").await;
    assert_eq!(body["code"], "invalid-credentials");

    // Resending gives a new link and retires the first; an unknown address gets the same
    // answer and no mail.
    let (s1, b1) = post(
        &app,
        "/auth/v1/resend",
        json!({"type": "signup", "email": unique_email()}),
        None,
    )
    .await;
    let (s2, b2) = post(
        &app,
        "/auth/v1/resend?redirect_to=http://app.example.test/welcome",
        json!({"type": "signup", "email": email}),
        None,
    )
    .await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(s2, 200, "{b2}");
    let first = mail;
    let mail = sink.next_to(&email).await;
    assert_ne!(first.link_param("token"), mail.link_param("token"));
    let (_, location) = open_link(&first.link()).await;
    assert_eq!(
        fragment_param(&location, "error_code").as_deref(),
        Some("verification-failed"),
        "a retired link still works: {location}"
    );

    // The link confirms and signs in: a redirect with the session in the fragment.
    let (status, location) = open_link(&mail.link()).await;
    assert_eq!(status, 303);
    assert!(
        location.starts_with("http://app.example.test/welcome#"),
        "{location}"
    );
    let access = fragment_param(&location, "access_token").expect("access token");
    assert!(fragment_param(&location, "refresh_token").is_some());
    assert_eq!(fragment_param(&location, "type").as_deref(), Some("signup"));
    let r = app
        .http
        .get(app.url("/auth/v1/user"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["email"], email);
    assert!(me["email_confirmed_at"].is_string(), "{me}");
    let (status, _) = sign_in(&app, &email, PASSWORD).await;
    assert_eq!(status, 200);

    // The link is single-use.
    let (status, location) = open_link(&mail.link()).await;
    assert_eq!(status, 303);
    assert_eq!(
        fragment_param(&location, "error_code").as_deref(),
        Some("verification-failed"),
        "{location}"
    );
    assert!(fragment_param(&location, "access_token").is_none());

    // A redirect to a foreign site is replaced by the site URL.
    let (_, location) = open_link(&format!(
        "{}/auth/v1/verify?token=x&type=signup&redirect_to=http://app.example.test.evil.test/",
        app.base
    ))
    .await;
    assert!(
        location.starts_with("http://app.example.test#"),
        "{location}"
    );

    // Signing up again with the (confirmed) address answers exactly like a new address,
    // creates nothing and mails nothing.
    let fresh = unique_email();
    let (s1, again) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": email, "password": "some other password", "data": {"name": "Ada"}}),
        None,
    )
    .await;
    let (s2, new) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": fresh, "password": "some other password", "data": {"name": "Ada"}}),
        None,
    )
    .await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(keys(&again), keys(&new));
    for field in [
        "aud",
        "role",
        "is_anonymous",
        "app_metadata",
        "user_metadata",
        "email_confirmed_at",
        "last_sign_in_at",
    ] {
        assert_eq!(again[field], new[field], "{field} differs");
    }
    assert_ne!(
        again["id"], me["id"],
        "the answer revealed the real account"
    );
    // Mail is sent in order: the next one is the new address's, so none went to the old.
    sink.next_to(&fresh).await;
    let users: i64 = app
        .db()
        .await
        .query_one(
            "select count(*) from rowcast.users where lower(email) = lower($1)",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn recovery_by_code_with_wrong_expired_and_reused_codes_and_other_sessions_ended() {
    let (app, mut sink) = spawn(|_| {}).await;
    let email = unique_email();
    let (status, first) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": email, "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let old_refresh = first["refresh_token"].as_str().unwrap().to_string();

    // Unknown and known addresses get the same answer; only the known one gets mail.
    let (s1, b1) = post(
        &app,
        "/auth/v1/recover",
        json!({"email": unique_email()}),
        None,
    )
    .await;
    let (s2, b2) = post(&app, "/auth/v1/recover", json!({"email": email}), None).await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!((s2, b2), (StatusCode::OK, json!({})));
    let mail = sink.next_to(&email).await;
    assert_eq!(mail.link_param("type"), "recovery");
    let code = mail.code();

    // A wrong code, then the right one.
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let (status, body) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "recovery", "email": email, "token": wrong}),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("verification-failed"))
    );
    let (status, session) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "recovery", "email": email.to_uppercase(), "token": code}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let access = session["access_token"].as_str().unwrap().to_string();

    // Recovery ended the other sessions.
    let (status, _) = post(
        &app,
        "/auth/v1/token?grant_type=refresh_token",
        json!({"refresh_token": old_refresh}),
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Reused code.
    let (status, body) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "recovery", "email": email, "token": code}),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("verification-failed"))
    );

    // Set the new password with the recovered session.
    let (status, body) = put_user(&app, &access, json!({"password": "a brand new password"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sign_in(&app, &email, PASSWORD).await.0, 400);
    assert_eq!(sign_in(&app, &email, "a brand new password").await.0, 200);

    // An expired code (its expiry moved into the past in the database) is refused.
    post(&app, "/auth/v1/recover", json!({"email": email}), None).await;
    let mail = sink.next_to(&email).await;
    app.db()
        .await
        .execute("update rowcast.email_tokens set expires_at = now() - interval '1 second' where used_at is null", &[])
        .await
        .unwrap();
    let (status, body) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "recovery", "email": email, "token": mail.code()}),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("verification-failed"))
    );
    let (status, body) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "recovery", "token_hash": mail.link_param("token")}),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("verification-failed"))
    );

    // Only hashes are stored.
    let stored: i64 = app
        .db()
        .await
        .query_one(
            "select count(*) from rowcast.email_tokens where link_hash = convert_to($1, 'UTF8') or code_hash = convert_to($2, 'UTF8')",
            &[&mail.link_param("token"), &mail.code()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn magic_link_and_code_sign_in_with_wrong_codes_and_mails_rate_limited() {
    let (app, mut sink) = spawn(|c| {
        c.auth.signin_limits.per_account = 3;
        c.auth.accounts.signup_limits.mail_per_recipient = 3;
    })
    .await;
    // An unknown address with create_user: a new, password-less user signs in by link.
    let email = unique_email();
    let (status, body) = post(
        &app,
        "/auth/v1/otp",
        json!({"email": email, "data": {"plan": "free"}}),
        None,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let mail = sink.next_to(&email).await;
    assert_eq!(mail.link_param("type"), "magiclink");
    // Ten concurrent uses of one link: exactly one signs in.
    let uses = (0..10).map(|_| {
        let (http, url, token) = (
            app.http.clone(),
            app.url("/auth/v1/verify"),
            mail.link_param("token"),
        );
        tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"type": "magiclink", "token_hash": token}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        })
    });
    let mut sessions: Vec<Value> = Vec::new();
    for u in futures::future::join_all(uses).await {
        let (status, body) = u.unwrap();
        match status.as_u16() {
            200 => sessions.push(body),
            403 => assert_eq!(body["code"], "verification-failed"),
            other => panic!("verify answered {other}: {body}"),
        }
    }
    assert_eq!(
        sessions.len(),
        1,
        "a one-time link signed in {} times",
        sessions.len()
    );
    let session = sessions.remove(0);
    assert_eq!(session["user"]["email"], email);
    assert_eq!(session["user"]["user_metadata"]["plan"], "free");
    assert!(session["user"]["email_confirmed_at"].is_string());

    // Without create_user an unknown address gets nothing, and the same answer.
    let stranger = unique_email();
    let (status, body) = post(
        &app,
        "/auth/v1/otp",
        json!({"email": stranger, "create_user": false}),
        None,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));

    // The code works too (gotrue's `email` type); wrong codes count like failed sign-ins:
    // after three, even the right code waits.
    post(&app, "/auth/v1/otp", json!({"email": email}), None).await;
    let mail = sink.next_to(&email).await; // (so none went to the stranger)
    let code = mail.code();
    let wrong = if code == "999999" { "999998" } else { "999999" };
    for _ in 0..3 {
        let (status, _) = post(
            &app,
            "/auth/v1/verify",
            json!({"type": "email", "email": email, "token": wrong}),
            None,
        )
        .await;
        assert_eq!(status, 403);
    }
    let (status, body) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "email", "email": email, "token": code}),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (429, Some("rate-limited"))
    );
    // The code is still unspent: the limit, not the code, refused it.
    app.db()
        .await
        .execute(
            "delete from rowcast.auth_limits where key like 'code:%'",
            &[],
        )
        .await
        .unwrap();
    let (status, _) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "email", "email": email, "token": code}),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Three mails to one address per hour (two sent above): the next request waits, and
    // so does one for an address without an account, at its own limit.
    let (status, _) = post(&app, "/auth/v1/otp", json!({"email": email}), None).await;
    assert_eq!(status, 200);
    sink.next_to(&email).await;
    let r = app
        .http
        .post(app.url("/auth/v1/otp"))
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    for _ in 0..2 {
        post(&app, "/auth/v1/recover", json!({"email": stranger}), None).await;
    }
    let (status, _) = post(&app, "/auth/v1/recover", json!({"email": stranger}), None).await;
    assert_eq!(
        status, 429,
        "the limit must not depend on whether the address has an account"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn email_change_waits_for_confirmation_and_answers_alike_for_taken_addresses() {
    let (app, mut sink) = spawn(|c| c.auth.accounts.email_confirmation = true).await;
    let service = rowcast::auth::token::TokenKeys::hs256(
        rowcast::config::TEST_JWT_SECRET.as_bytes(),
        "rowcast",
        "rowcast",
    )
    .sign(
        &rowcast::auth::Identity::service(),
        std::time::Duration::from_secs(300),
    )
    .unwrap();
    // Two confirmed users made by the service.
    let (a, b) = (unique_email(), unique_email());
    for e in [&a, &b] {
        let (status, _) = post(
            &app,
            "/auth/v1/admin/users",
            json!({"email": e, "password": PASSWORD}),
            Some(&service),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (_, session) = sign_in(&app, &a, PASSWORD).await;
    let access = session["access_token"].as_str().unwrap().to_string();

    // Asking for a taken address and a free one: alike answers, nothing changes yet.
    let free = unique_email();
    let (s1, taken_answer) = put_user(&app, &access, json!({"email": b})).await;
    // (supabase-js sends its PKCE fields along, null when unused.)
    let (s2, free_answer) = put_user(
        &app,
        &access,
        json!({"email": free, "code_challenge": null, "code_challenge_method": null}),
    )
    .await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(keys(&taken_answer), keys(&free_answer));
    assert_eq!(taken_answer["email"], a);
    assert_eq!(free_answer["email"], a);
    assert_eq!(taken_answer["new_email"], b);
    assert_eq!(free_answer["new_email"], free);
    // Only the free address gets mail (mail goes out in order).
    let mail = sink.next_to(&free).await;
    assert_eq!(mail.link_param("type"), "email_change");

    // The code from the mail applies the change.
    let (status, session) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "email_change", "email": free, "token": mail.code()}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["email"], free);
    assert_eq!(sign_in(&app, &free, PASSWORD).await.0, 200);
    assert_eq!(sign_in(&app, &a, PASSWORD).await.0, 400);
    app.shutdown().await;
}

#[tokio::test]
async fn without_mail_the_email_flows_say_so_and_dev_writes_an_outbox() {
    // No mail configured (serve without SMTP): a clear refusal, the same for every address.
    let app = TestApp::spawn().await;
    let (status, body) = post(
        &app,
        "/auth/v1/recover",
        json!({"email": unique_email()}),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("forbidden"))
    );
    app.shutdown().await;

    // The dev outbox: mail becomes a file there, from a template file that overrides the
    // built-in one.
    let dir = tempfile::tempdir().unwrap();
    support::write_file(
        dir.path(),
        "recovery.txt",
        "Subject: Custom reset\n\nYour code is {{ .Token }}, {{ .Email }}.\n",
    );
    let db_url = support::migrated_db().await;
    let mut config = Config::for_database(&db_url);
    config.auth.accounts.mail.delivery = MailDelivery::Outbox(dir.path().join("outbox"));
    config.auth.accounts.mail.templates = Some(dir.path().to_path_buf());
    let app = TestApp::spawn_with(config).await;
    let email = unique_email();
    post(
        &app,
        "/auth/v1/signup",
        json!({"email": email, "password": PASSWORD}),
        None,
    )
    .await;
    let (status, _) = post(&app, "/auth/v1/recover", json!({"email": email}), None).await;
    assert_eq!(status, 200);
    let outbox = dir.path().join("outbox");
    support::eventually(
        std::time::Duration::from_secs(20),
        "a mail in the outbox",
        || {
            let outbox = outbox.clone();
            async move {
                std::fs::read_dir(&outbox)
                    .map(|d| d.count() > 0)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    let file = std::fs::read_dir(&outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(&email), "{text}");
    assert!(text.contains("Subject: Custom reset"), "{text}");
    assert!(text.contains("Your code is "), "{text}");
    app.shutdown().await;
}

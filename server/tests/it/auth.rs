//! Auth over HTTP against real Postgres: sign-up and sign-in flows, refresh rotation and
//! reuse detection, sign-out, anonymous users, the admin API, external providers, the
//! attacks the issue lists, and the identity row-level security sees.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use rowcast::{
    auth::{
        provider::external_user_id,
        token::{public_rsa_jwk, SigningAlgorithm, TokenKeys},
        Identity,
    },
    config::{Config, TEST_JWT_SECRET},
    store::Store,
};
use serde_json::{json, Value};

use crate::support::{self, TestApp};

const PASSWORD: &str = "correct horse battery";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn test_keys() -> TokenKeys {
    TokenKeys::hs256(TEST_JWT_SECRET.as_bytes(), "rowcast", "rowcast")
}

fn service_key() -> String {
    test_keys()
        .sign(&Identity::service(), Duration::from_secs(300))
        .unwrap()
}

async fn spawn(edit: impl FnOnce(&mut Config)) -> TestApp {
    let db_url = support::migrated_db().await;
    let mut config = Config::for_database(&db_url);
    edit(&mut config);
    TestApp::spawn_with(config).await
}

fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn post(app: &TestApp, path: &str, body: Value, bearer: Option<&str>) -> reqwest::Response {
    let mut req = app.http.post(app.url(path)).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn get(app: &TestApp, path: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(app.url(path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn sign_up(app: &TestApp, email: &str, password: &str) -> Value {
    let (status, body) = json_of(
        post(
            app,
            "/auth/v1/signup",
            json!({"email": email, "password": password}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    json_of(
        post(
            app,
            "/auth/v1/token?grant_type=password",
            json!({"email": email, "password": password}),
            None,
        )
        .await,
    )
    .await
}

async fn refresh(app: &TestApp, token: &str) -> (StatusCode, Value) {
    json_of(
        post(
            app,
            "/auth/v1/token?grant_type=refresh_token",
            json!({"refresh_token": token}),
            None,
        )
        .await,
    )
    .await
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The claims of a JWT, read without verifying (the test inspects what the server signed).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// An RSA key pair made by openssl: (private PEM, public PEM).
fn rsa_key_pair(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join("key.pem");
    let public = dir.join("pub.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey failed");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout failed");
    (
        std::fs::read(private).unwrap(),
        std::fs::read(public).unwrap(),
    )
}

fn encode(alg: Algorithm, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

#[tokio::test]
async fn sign_up_sign_in_and_manage_the_current_user() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let session = sign_up(&app, &email, PASSWORD).await;
    assert_eq!(session["token_type"], "bearer");
    assert_eq!(session["expires_in"], 3600);
    let user_id = str_of(&session["user"], "id").to_string();
    assert_eq!(session["user"]["email"], email);
    assert_eq!(session["user"]["is_anonymous"], false);
    let claims = claims_of(str_of(&session, "access_token"));
    assert_eq!(claims["sub"], user_id);
    assert_eq!(claims["role"], "authenticated");
    assert_eq!(claims["iss"], "rowcast");
    assert_eq!(claims["aud"], "rowcast");
    assert!(claims["session_id"].is_string(), "{claims}");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );

    // Emails are unique regardless of case. Without email confirmation, signing up again
    // is a password sign-in to the same account (no second user, no "already exists").
    let (status, again) = json_of(
        post(
            &app,
            "/auth/v1/signup",
            json!({"email": email.to_uppercase(), "password": PASSWORD}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["user"]["id"], session["user"]["id"]);
    let (status, body) = json_of(
        post(
            &app,
            "/auth/v1/signup",
            json!({"email": email.to_uppercase(), "password": "another password"}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("invalid-credentials"))
    );

    // Too short a password is refused by the policy.
    let (status, body) = json_of(
        post(
            &app,
            "/auth/v1/signup",
            json!({"email": unique_email(), "password": "short"}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("invalid-field"))
    );

    let (status, signed_in) = sign_in(&app, &email.to_uppercase(), PASSWORD).await;
    assert_eq!(status, 200, "{signed_in}");
    let access = str_of(&signed_in, "access_token").to_string();
    assert_eq!(signed_in["user"]["id"], user_id);

    let (status, me) = json_of(get(&app, "/auth/v1/user", Some(&access)).await).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], user_id);
    assert!(me.get("password_hash").is_none());

    let (status, me) = json_of(
        app.http
            .put(app.url("/auth/v1/user"))
            .bearer_auth(&access)
            .json(&json!({"data": {"nickname": "ada"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_metadata"]["nickname"], "ada");

    // Without a token there is no current user.
    let (status, body) = json_of(get(&app, "/auth/v1/user", None).await).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (401, Some("unauthorized"))
    );

    // The password is stored as an argon2id hash.
    let db = app.db().await;
    let hash: String = db
        .query_one(
            "select password_hash from rowcast.users where id = $1::text::uuid",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    // HS256: no public keys to publish.
    let (status, jwks) = json_of(get(&app, "/.well-known/jwks.json", None).await).await;
    assert_eq!((status.as_u16(), jwks), (200, json!({"keys": []})));
    app.shutdown().await;
}

/// Every forged or stale token gets the same 401 and the same body.
async fn assert_all_rejected_alike(app: &TestApp, tokens: &[(&str, String)]) {
    let mut bodies = Vec::new();
    for (what, token) in tokens {
        let (status, body) = json_of(get(app, "/auth/v1/user", Some(token)).await).await;
        assert_eq!(status, 401, "{what} was not rejected: {body}");
        bodies.push((what, body));
    }
    let first = &bodies[0].1;
    assert_eq!(first["code"], "unauthorized");
    for (what, body) in &bodies {
        assert_eq!(body, first, "{what} got a different error");
    }
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_rejected_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_pem) = rsa_key_pair(dir.path());
    let jwks = json!({"keys": [public_rsa_jwk(&private_pem).unwrap()]});
    let provider_iss = "https://securetoken.google.com/demo-project";
    let app = spawn(|c| {
        c.auth.providers = vec![rowcast::config::ProviderConfig {
            name: "firebase".into(),
            issuer: provider_iss.into(),
            audience: "demo-project".into(),
            jwks: jwks.clone(),
        }];
    })
    .await;
    let session = sign_up(&app, &unique_email(), PASSWORD).await;
    let good = str_of(&session, "access_token").to_string();
    assert_eq!(get(&app, "/auth/v1/user", Some(&good)).await.status(), 200);

    let secret = EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes());
    let mut claims = claims_of(&good);

    let header_none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let alg_none = format!("{header_none}.{body}.");

    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!("someone-else");
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("another-app");
    let mut expired = claims.clone();
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);

    // Tampered: another user's id in a payload under the original signature.
    let parts: Vec<&str> = good.split('.').collect();
    claims["sub"] = json!(uuid::Uuid::new_v4().to_string());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );

    // HS256 "signed" with the provider's RS256 public key, claiming to be the provider.
    let provider_claims = json!({
        "iss": provider_iss, "aud": "demo-project", "sub": "attacker",
        "iat": now(), "exp": now() + 600,
    });
    let hs_with_public = encode(
        Algorithm::HS256,
        &provider_claims,
        &EncodingKey::from_secret(&public_pem),
    );
    let provider_none = format!(
        "{header_none}.{}.",
        URL_SAFE_NO_PAD.encode(provider_claims.to_string())
    );

    let tokens = [
        ("alg none", alg_none),
        ("alg none for the provider", provider_none),
        ("HS256 signed with the RS256 public key", hs_with_public),
        (
            "wrong issuer",
            encode(Algorithm::HS256, &wrong_iss, &secret),
        ),
        (
            "wrong audience",
            encode(Algorithm::HS256, &wrong_aud, &secret),
        ),
        ("expired", encode(Algorithm::HS256, &expired, &secret)),
        ("tampered payload", tampered),
        ("garbage", "not.a.jwt".to_string()),
    ];
    assert_all_rejected_alike(&app, &tokens).await;
    app.shutdown().await;
}

#[tokio::test]
async fn rs256_signing_publishes_its_public_key_and_refuses_hs256_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_pem) = rsa_key_pair(dir.path());
    let app = spawn(|c| {
        c.auth.algorithm = SigningAlgorithm::Rs256;
        c.auth.private_key_pem = Some(private_pem.clone());
    })
    .await;
    let (status, jwks) = json_of(get(&app, "/.well-known/jwks.json", None).await).await;
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert!(keys[0].get("d").is_none(), "private key material published");

    let session = sign_up(&app, &unique_email(), PASSWORD).await;
    let good = str_of(&session, "access_token").to_string();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(good.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], keys[0]["kid"]);
    assert_eq!(get(&app, "/auth/v1/user", Some(&good)).await.status(), 200);

    // The classic confusion attack: same claims, HS256 keyed with the public key.
    let claims = claims_of(&good);
    let forged = encode(
        Algorithm::HS256,
        &claims,
        &EncodingKey::from_secret(&public_pem),
    );
    let expired = {
        let mut c = claims.clone();
        c["exp"] = json!(now() - 3600);
        encode(
            Algorithm::RS256,
            &c,
            &EncodingKey::from_rsa_pem(&private_pem).unwrap(),
        )
    };
    assert_all_rejected_alike(
        &app,
        &[
            ("HS256 signed with the RS256 public key", forged),
            ("expired", expired),
        ],
    )
    .await;
    app.shutdown().await;
}

#[test]
fn es256_keys_sign_verify_and_publish_only_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ec.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey failed");
    let pem = std::fs::read(&key).unwrap();
    let keys = TokenKeys::asymmetric(SigningAlgorithm::Es256, &pem, "rowcast", "rowcast").unwrap();
    let jwks = keys.jwks();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert!(jwks["keys"][0].get("d").is_none());
    let uid = uuid::Uuid::new_v4().to_string();
    let token = keys
        .sign(&Identity::user(&uid, json!({})), Duration::from_secs(60))
        .unwrap();
    assert_eq!(keys.verify(&token).unwrap().subject(), Some(uid.as_str()));
    // The same claims under HS256 keyed with the public JWK's text are refused.
    let forged = encode(
        Algorithm::HS256,
        &claims_of(&token),
        &EncodingKey::from_secret(jwks["keys"][0].to_string().as_bytes()),
    );
    assert!(keys.verify(&forged).is_err());
    // A wrong key type for the algorithm is a configuration error.
    assert!(TokenKeys::asymmetric(SigningAlgorithm::Rs256, &pem, "rowcast", "rowcast").is_err());
}

#[tokio::test]
async fn unknown_email_and_wrong_password_fail_alike() {
    let app = spawn(|c| {
        c.auth.signin_limits.per_account = 1000;
        c.auth.signin_limits.per_address = 1000;
    })
    .await;
    let email = unique_email();
    sign_up(&app, &email, PASSWORD).await;

    let (s1, wrong) = sign_in(&app, &email, "not the password").await;
    let (s2, unknown) = sign_in(&app, &unique_email(), "not the password").await;
    assert_eq!(s1, 400);
    assert_eq!(s2, s1);
    assert_eq!(
        wrong, unknown,
        "the error reveals whether the account exists"
    );
    assert_eq!(wrong["code"], "invalid-credentials");

    // Both paths verify an argon2id hash. Compare medians loosely: the machine is shared and
    // noisy (a 3.5x ratio was seen under a full parallel suite), but skipping the hash for
    // unknown emails makes that path ~1 ms against tens of ms, a ratio far above 8.
    let mut wrong_times = Vec::new();
    let mut unknown_times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        sign_in(&app, &email, "not the password").await;
        wrong_times.push(t.elapsed());
        let t = Instant::now();
        sign_in(&app, &unique_email(), "not the password").await;
        unknown_times.push(t.elapsed());
    }
    wrong_times.sort();
    unknown_times.sort();
    let (w, u) = (wrong_times[4], unknown_times[4]);
    println!("sign-in medians over 9 tries: wrong password {w:?}, unknown email {u:?}");
    let ratio = w.as_secs_f64().max(u.as_secs_f64()) / w.as_secs_f64().min(u.as_secs_f64());
    assert!(
        ratio < 8.0,
        "median wrong-password {w:?} vs unknown-email {u:?} (ratio {ratio:.2})"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited_per_account_and_per_address() {
    let app = spawn(|c| {
        c.auth.signin_limits.per_account = 3;
        c.auth.signin_limits.per_address = 6;
        c.auth.signin_limits.window = Duration::from_secs(600);
    })
    .await;
    let email = unique_email();
    sign_up(&app, &email, PASSWORD).await;
    for _ in 0..3 {
        let (status, _) = sign_in(&app, &email, "guess").await;
        assert_eq!(status, 400);
    }
    // Locked: even the right password waits.
    let r = post(
        &app,
        "/auth/v1/token?grant_type=password",
        json!({"email": email, "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "rate-limited");

    // The address: three more failures on other accounts make six from this client.
    for _ in 0..3 {
        let (status, _) = sign_in(&app, &unique_email(), "guess").await;
        assert_eq!(status, 400);
    }
    let r = post(
        &app,
        "/auth/v1/token?grant_type=password",
        json!({"email": unique_email(), "password": "guess"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    app.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let app = spawn(|c| {
        c.http.trusted_proxy_header = Some("x-forwarded-for".into());
        c.auth.signin_limits.per_account = 100;
        c.auth.signin_limits.per_address = 2;
    })
    .await;
    let attempt = |forwarded: &'static str| {
        app.http
            .post(app.url("/auth/v1/token?grant_type=password"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": unique_email(), "password": "guess"}))
            .send()
    };
    // The client-supplied first entry varies; the proxy-added last one is what counts.
    assert_eq!(attempt("9.9.9.1, 203.0.113.7").await.unwrap().status(), 400);
    assert_eq!(attempt("9.9.9.2, 203.0.113.7").await.unwrap().status(), 400);
    assert_eq!(attempt("9.9.9.3, 203.0.113.7").await.unwrap().status(), 429);
    // Another client behind the same proxy is not locked out.
    assert_eq!(attempt("203.0.113.8").await.unwrap().status(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_stable_client_errors() {
    let app = TestApp::spawn().await;
    let raw = |path: &str, body: Vec<u8>| {
        app.http
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/auth/v1/signup",
            b"{\"email\": ".to_vec(),
            400,
            "invalid-json",
        ),
        ("/auth/v1/signup", b"not json".to_vec(), 400, "invalid-json"),
        ("/auth/v1/signup", b"".to_vec(), 400, "invalid-json"),
        ("/auth/v1/signup", b"[1, 2]".to_vec(), 400, "invalid-field"),
        (
            "/auth/v1/signup",
            br#"{"email": "a@b.io"}"#.to_vec(),
            400,
            "invalid-field",
        ),
        (
            "/auth/v1/signup",
            br#"{"email": 5, "password": "x"}"#.to_vec(),
            400,
            "invalid-field",
        ),
        (
            "/auth/v1/signup",
            br#"{"email": "no-at-sign", "password": "long enough pw"}"#.to_vec(),
            400,
            "invalid-field",
        ),
        (
            "/auth/v1/token?grant_type=password",
            br#"{"email": "a@b.io"}"#.to_vec(),
            400,
            "invalid-field",
        ),
        (
            "/auth/v1/token?grant_type=password",
            br#"{"email": "a@b.io", "password": 12345678}"#.to_vec(),
            400,
            "invalid-field",
        ),
        (
            "/auth/v1/token?grant_type=refresh_token",
            b"{}".to_vec(),
            400,
            "invalid-field",
        ),
        (
            "/auth/v1/token?grant_type=magic",
            b"{}".to_vec(),
            400,
            "bad-request",
        ),
        ("/auth/v1/token", b"{}".to_vec(), 400, "bad-request"),
        (
            "/auth/v1/token?grant_type=refresh_token",
            br#"{"refresh_token": "nope"}"#.to_vec(),
            400,
            "invalid-credentials",
        ),
    ];
    for (path, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body).to_string();
        let (got, json) = json_of(raw(path, body).await.unwrap()).await;
        assert_eq!(got.as_u16(), status, "{path} {shown}: {json}");
        assert_eq!(json["code"], code, "{path} {shown}: {json}");
        // serde's message would quote the wrong-typed value; it must not be echoed.
        assert!(!json.to_string().contains("12345678"), "{json}");
    }

    // A 10 MB body is refused by the size limit, not parsed.
    let big = format!(
        "{{\"email\": \"a@b.io\", \"password\": \"{}\"}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let (status, json) = json_of(raw("/auth/v1/signup", big.into_bytes()).await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), json["code"].as_str()),
        (413, Some("payload-too-large"))
    );

    // The server is unaffected.
    assert_eq!(app.get("/health").await.status(), 200);
    sign_up(&app, &unique_email(), PASSWORD).await;
    app.shutdown().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_whole_session() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let first = sign_up(&app, &email, PASSWORD).await;
    let r1 = str_of(&first, "refresh_token").to_string();
    let session_id = claims_of(str_of(&first, "access_token"))["session_id"].clone();

    let (status, second) = refresh(&app, &r1).await;
    assert_eq!(status, 200, "{second}");
    let r2 = str_of(&second, "refresh_token").to_string();
    assert_ne!(r1, r2, "the refresh token did not rotate");
    let access2 = str_of(&second, "access_token");
    assert_eq!(claims_of(access2)["session_id"], session_id);
    assert_eq!(
        get(&app, "/auth/v1/user", Some(access2)).await.status(),
        200
    );

    // The refresh token is stored hashed, never in the clear.
    let db = app.db().await;
    let stored: i64 = db
        .query_one(
            "select count(*) from rowcast.refresh_tokens where token_hash = convert_to($1, 'UTF8')",
            &[&r2],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);

    // Another device's session is a separate family.
    let (_, other) = sign_in(&app, &email, PASSWORD).await;
    let other_refresh = str_of(&other, "refresh_token").to_string();

    // Reusing the spent r1 (e.g. stolen) fails and revokes the family: r2 is dead too.
    let (status, body) = refresh(&app, &r1).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("invalid-credentials"))
    );
    let (status, _) = refresh(&app, &r2).await;
    assert_eq!(status, 400, "the session survived reuse of a spent token");

    let (status, body) = refresh(&app, &other_refresh).await;
    assert_eq!(status, 200, "an unrelated session was revoked: {body}");
    app.shutdown().await;
}

#[tokio::test]
async fn sign_out_this_device_or_every_device() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    sign_up(&app, &email, PASSWORD).await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        let (status, s) = sign_in(&app, &email, PASSWORD).await;
        assert_eq!(status, 200);
        devices.push(s);
    }
    let access = |i: usize| str_of(&devices[i], "access_token").to_string();
    let refresh_of = |i: usize| str_of(&devices[i], "refresh_token").to_string();

    let r = post(&app, "/auth/v1/logout", json!({}), Some(&access(0))).await;
    assert_eq!(r.status(), 204);
    assert_eq!(refresh(&app, &refresh_of(0)).await.0, 400);
    let (status, rotated) = refresh(&app, &refresh_of(1)).await;
    assert_eq!(status, 200, "signing out one device ended another");
    let device1_refresh = str_of(&rotated, "refresh_token").to_string();

    let r = post(
        &app,
        "/auth/v1/logout?scope=global",
        json!({}),
        Some(&access(2)),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(refresh(&app, &device1_refresh).await.0, 400);
    assert_eq!(refresh(&app, &refresh_of(2)).await.0, 400);

    // Signing out needs a signed-in caller.
    let r = post(&app, "/auth/v1/logout", json!({}), None).await;
    assert_eq!(r.status(), 401);
    app.shutdown().await;
}

#[tokio::test]
async fn anonymous_sign_in_then_upgrade_with_email_and_password() {
    let app = TestApp::spawn().await;
    let (status, anon) = json_of(post(&app, "/auth/v1/signup", json!({}), None).await).await;
    assert_eq!(status, 200, "{anon}");
    assert_eq!(anon["user"]["is_anonymous"], true);
    assert_eq!(anon["user"]["email"], Value::Null);
    let id = str_of(&anon["user"], "id").to_string();
    let access = str_of(&anon, "access_token").to_string();
    assert_eq!(claims_of(&access)["role"], "authenticated");
    assert_eq!(claims_of(&access)["is_anonymous"], true);

    let db = app.db().await;
    let rows: i64 = db
        .query_one(
            "select count(*) from rowcast.users where id = $1::text::uuid and is_anonymous",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "anonymous sign-in did not create a user row");

    let email = unique_email();
    let (status, upgraded) = json_of(
        app.http
            .put(app.url("/auth/v1/user"))
            .bearer_auth(&access)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{upgraded}");
    assert_eq!(upgraded["id"], id);
    assert_eq!(upgraded["is_anonymous"], false);

    let (status, signed_in) = sign_in(&app, &email, PASSWORD).await;
    assert_eq!(status, 200, "{signed_in}");
    assert_eq!(
        signed_in["user"]["id"], id,
        "the upgrade made a different user"
    );
    assert_eq!(
        claims_of(str_of(&signed_in, "access_token"))["is_anonymous"],
        false
    );
    app.shutdown().await;
}

#[tokio::test]
async fn admin_api_requires_the_service_key() {
    let app = TestApp::spawn().await;
    let user = sign_up(&app, &unique_email(), PASSWORD).await;
    let user_token = str_of(&user, "access_token").to_string();

    let (status, body) = json_of(get(&app, "/auth/v1/admin/users", None).await).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = json_of(get(&app, "/auth/v1/admin/users", Some(&user_token)).await).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("forbidden"))
    );
    let r = post(
        &app,
        "/auth/v1/admin/users",
        json!({"email": unique_email(), "password": PASSWORD}),
        Some(&user_token),
    )
    .await;
    assert_eq!(r.status(), 403);

    let service = service_key();
    let email = unique_email();
    let (status, created) = json_of(
        post(
            &app,
            "/auth/v1/admin/users",
            json!({"email": email, "password": PASSWORD, "app_metadata": {"plan": "pro"}}),
            Some(&service),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = str_of(&created, "id").to_string();
    assert_eq!(created["app_metadata"]["plan"], "pro");

    let (status, list) =
        json_of(get(&app, "/auth/v1/admin/users?per_page=100", Some(&service)).await).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2);
    assert!(list["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["id"] == id.as_str()));

    // App metadata set by the admin is in the user's tokens.
    let (status, signed_in) = sign_in(&app, &email, PASSWORD).await;
    assert_eq!(status, 200);
    let old_refresh = str_of(&signed_in, "refresh_token").to_string();
    assert_eq!(
        claims_of(str_of(&signed_in, "access_token"))["app_metadata"]["plan"],
        "pro"
    );

    // A user cannot set their own app metadata.
    let r = app
        .http
        .put(app.url("/auth/v1/user"))
        .bearer_auth(str_of(&signed_in, "access_token"))
        .json(&json!({"app_metadata": {"plan": "free-forever"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Reset the password: the old one stops working, and existing sessions end.
    let new_password = "a brand new password";
    let (status, updated) = json_of(
        app.http
            .put(app.url(&format!("/auth/v1/admin/users/{id}")))
            .bearer_auth(&service)
            .json(&json!({"password": new_password, "app_metadata": {"plan": "team"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["app_metadata"]["plan"], "team");
    assert_eq!(sign_in(&app, &email, PASSWORD).await.0, 400);
    assert_eq!(refresh(&app, &old_refresh).await.0, 400);
    let (status, fresh) = sign_in(&app, &email, new_password).await;
    assert_eq!(status, 200);
    assert_eq!(
        claims_of(str_of(&fresh, "access_token"))["app_metadata"]["plan"],
        "team"
    );

    let r = app
        .http
        .delete(app.url(&format!("/auth/v1/admin/users/{id}")))
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .http
        .delete(app.url(&format!("/auth/v1/admin/users/{id}")))
        .bearer_auth(&service)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) =
        json_of(get(&app, &format!("/auth/v1/admin/users/{id}"), Some(&service)).await).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (404, Some("not-found"))
    );
    assert_eq!(sign_in(&app, &email, new_password).await.0, 400);
    app.shutdown().await;
}

#[tokio::test]
async fn external_provider_tokens_are_verified_and_mapped_to_internal_users() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_pem) = rsa_key_pair(dir.path());
    let mut jwk = public_rsa_jwk(&private_pem).unwrap();
    jwk["kid"] = json!("firebase-key-1");
    support::write_file(dir.path(), "jwks.json", &json!({"keys": [jwk]}).to_string());
    let iss = "https://securetoken.google.com/demo-project";
    let providers = json!([{
        "name": "firebase",
        "issuer": iss,
        "audience": "demo-project",
        "jwks_file": dir.path().join("jwks.json"),
    }])
    .to_string();
    let parsed = rowcast::config::parse_providers(&providers, "rowcast").unwrap();
    let app = spawn(|c| c.auth.providers = parsed).await;

    let firebase_uid = "Xy7aB2cD3eF4gH5iJ6kL7mN8oP9q"; // 28 characters, like Firebase's.
    let claims = json!({
        "iss": iss, "aud": "demo-project", "sub": firebase_uid,
        "iat": now(), "exp": now() + 600, "email": "fb-user@example.com",
        "role": "service", // A provider cannot pick the Postgres role.
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("firebase-key-1".into());
    let key = EncodingKey::from_rsa_pem(&private_pem).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();

    let (status, me) = json_of(get(&app, "/auth/v1/user", Some(&token)).await).await;
    assert_eq!(status, 200, "{me}");
    let expected = external_user_id(iss, firebase_uid);
    assert_eq!(me["id"], expected.to_string());
    assert_eq!(me["email"], "fb-user@example.com");
    // The service key is still required for admin routes.
    assert_eq!(
        get(&app, "/auth/v1/admin/users", Some(&token))
            .await
            .status(),
        403
    );

    let db = app.db().await;
    let row = db
        .query_one(
            "select user_id, subject from rowcast.identities where issuer = $1",
            &[&iss],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, uuid::Uuid>(0), expected);
    assert_eq!(row.get::<_, String>(1), firebase_uid);

    // The identity Postgres sees: uid() is the internal id, the original subject is kept.
    let identity = test_keys()
        .with_providers(
            rowcast::auth::provider::from_config(
                &rowcast::config::parse_providers(&providers, "rowcast").unwrap(),
            )
            .unwrap(),
        )
        .verify(&token)
        .unwrap();
    let store = Store::new(&app.db_url, &Config::for_database(&app.db_url).database).unwrap();
    let (uid, sub, role): (uuid::Uuid, String, String) = store
        .as_identity(&identity, async |tx| {
            let r = tx
                .query_one(
                    "select rowcast.uid(), rowcast.claims()->>'provider_sub', current_user::text",
                    &[],
                )
                .await?;
            Ok((r.get(0), r.get(1), r.get(2)))
        })
        .await
        .unwrap();
    assert_eq!(
        (uid, sub.as_str(), role.as_str()),
        (expected, firebase_uid, "rowcast_authenticated")
    );

    // Wrong audience, HS256 keyed with the public key, unknown kid: all refused alike.
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("other-project");
    let mut unknown_kid = Header::new(Algorithm::RS256);
    unknown_kid.kid = Some("not-a-key".into());
    assert_all_rejected_alike(
        &app,
        &[
            (
                "wrong audience",
                jsonwebtoken::encode(&header, &wrong_aud, &key).unwrap(),
            ),
            (
                "HS256 with the public key",
                encode(
                    Algorithm::HS256,
                    &claims,
                    &EncodingKey::from_secret(&public_pem),
                ),
            ),
            (
                "unknown kid",
                jsonwebtoken::encode(&unknown_kid, &claims, &key).unwrap(),
            ),
        ],
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn owner_only_policy_sees_the_callers_rows_and_leaves_no_identity_behind() {
    let app = TestApp::spawn().await;
    let a = sign_up(&app, &unique_email(), PASSWORD).await;
    let b = sign_up(&app, &unique_email(), PASSWORD).await;
    let keys = test_keys();
    let who_a = keys.verify(str_of(&a, "access_token")).unwrap();
    let who_b = keys.verify(str_of(&b, "access_token")).unwrap();

    let db = app.db().await;
    // Qualified: the embedded cluster's login role is `rowcast`, so "$user" in the default
    // search_path would put an unqualified table in schema rowcast.
    db.batch_execute(
        "create table public.notes (
           id serial primary key,
           owner_id uuid not null references rowcast.users (id),
           body text not null);
         alter table public.notes enable row level security;
         create policy owner_only on public.notes using (owner_id = rowcast.uid());
         grant select on public.notes to rowcast_anon, rowcast_authenticated, rowcast_service;
         grant insert on public.notes to rowcast_authenticated;
         grant usage on sequence public.notes_id_seq to rowcast_authenticated;",
    )
    .await
    .unwrap();
    for (who, n) in [(&a, 3), (&b, 2)] {
        for i in 0..n {
            db.execute(
                "insert into public.notes (owner_id, body) values ($1::text::uuid, $2)",
                &[&str_of(&who["user"], "id"), &format!("note {i}")],
            )
            .await
            .unwrap();
        }
    }

    // One pooled connection: every transaction below reuses the same backend.
    let mut dcfg = Config::for_database(&app.db_url).database;
    dcfg.pool_size = 1;
    let store = Store::new(&app.db_url, &dcfg).unwrap();
    let owners = async |who: &Identity| -> Vec<String> {
        store
            .as_identity(who, async |tx| {
                let rows = tx
                    .query("select owner_id::text from public.notes", &[])
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap()
    };
    let seen_a = owners(&who_a).await;
    assert_eq!(seen_a.len(), 3);
    assert!(seen_a.iter().all(|o| o == str_of(&a["user"], "id")));
    let seen_b = owners(&who_b).await;
    assert_eq!(seen_b.len(), 2);
    assert!(owners(&Identity::anonymous()).await.is_empty());
    assert_eq!(owners(&Identity::service()).await.len(), 5);

    // A user writes rows referencing their own user id (the foreign key to rowcast.users
    // is checked for the request role too), and cannot write rows for someone else.
    store
        .as_identity(&who_a, async |tx| {
            tx.execute(
                "insert into public.notes (owner_id, body) values (rowcast.uid(), 'mine')",
                &[],
            )
            .await?;
            Ok(())
        })
        .await
        .unwrap();
    let err = store
        .as_identity(&who_a, async |tx| {
            tx.execute(
                "insert into public.notes (owner_id, body) values ($1::text::uuid, 'theirs')",
                &[&str_of(&b["user"], "id")],
            )
            .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42501"));
    assert_eq!(owners(&who_a).await.len(), 4);

    // Claims that would break SQL if pasted into it change nothing.
    let hostile = Identity::user(
        str_of(&a["user"], "id"),
        json!({
            "email": "x'); delete from notes; --",
            "app_metadata": {"nested": {"deep": ["'", "\"", "$$", "\\"]}},
            "huge": "'".repeat(100_000),
        }),
    );
    assert_eq!(owners(&hostile).await.len(), 4);
    assert_eq!(owners(&Identity::service()).await.len(), 6);

    // After the transactions, the pooled connection carries no identity (checked on the
    // pool's own connection: a new one could not show a leak).
    let client = store.pool().get().await.unwrap();
    let row = client
        .query_one(
            "select current_user::text, session_user::text, \
                    coalesce(current_setting('rowcast.claims', true), ''), rowcast.uid() is null",
            &[],
        )
        .await
        .unwrap();
    let (current, session): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        current, session,
        "the request role leaked past its transaction"
    );
    assert_eq!(row.get::<_, String>(2), "");
    assert!(row.get::<_, bool>(3));
    app.shutdown().await;
}

#[tokio::test]
async fn request_roles_cannot_read_password_or_token_hashes() {
    let app = TestApp::spawn().await;
    sign_up(&app, &unique_email(), PASSWORD).await;
    let store = Store::new(&app.db_url, &Config::for_database(&app.db_url).database).unwrap();
    let user = Identity::user(&uuid::Uuid::new_v4().to_string(), json!({}));
    for who in [Identity::anonymous(), user, Identity::service()] {
        for sql in [
            "select password_hash from rowcast.users",
            "select token_hash from rowcast.refresh_tokens",
            "select * from rowcast.sessions",
        ] {
            let err = store
                .as_identity(&who, async |tx| {
                    tx.query(sql, &[]).await?;
                    Ok(())
                })
                .await
                .unwrap_err();
            assert_eq!(err.sqlstate(), Some("42501"), "{:?} ran {sql}", who.role);
        }
    }
    // Admin tooling with the service role may list users without their hashes.
    let emails = store
        .as_identity(&Identity::service(), async |tx| {
            Ok(tx
                .query("select id, email from rowcast.users", &[])
                .await?
                .len())
        })
        .await
        .unwrap();
    assert_eq!(emails, 1);
    app.shutdown().await;
}

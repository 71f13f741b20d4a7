//! Every client is authenticated before its body is read, and its token stays here.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::control::{api, code};
use crate::support::*;

const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "toolgate";

fn jwt(claims: Value) -> String {
    let key = EncodingKey::from_ed_pem(include_bytes!("../fixtures/oauth-test-key.pem")).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("test-key-1".into());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(audience: &str, expires_in_secs: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": ISSUER, "aud": audience, "sub": "alice@corp.example",
           "groups": ["sre"], "iat": now, "exp": now + expires_in_secs})
}

/// The `[oauth]` table that accepts the test issuer's JWTs.
pub fn oauth_config() -> String {
    let jwks = repo_root().join("tests/fixtures/oauth-test-jwks.json");
    format!(
        "[oauth]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_file = {:?}\n",
        jwks.display().to_string()
    )
}

/// A valid JWT for the OAuth user alice@corp.example, for five minutes.
pub fn user_jwt() -> String {
    jwt(claims(AUDIENCE, 300))
}

async fn setup(upstream_headers: &str) -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "{}\n{}",
        upstream.config(upstream_headers),
        oauth_config()
    ))
    .await;
    prime_catalog(&gw).await;
    (upstream, gw)
}

async fn call(gw: &GatewayProc, token: Option<&str>, marker: &str) -> reqwest::Response {
    let body = modern_call(1, "read_page", json!({"page_id": marker}), json!({})).to_string();
    let mut req = modern_request(&http(), &gw.url("py"), "read_page", body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn assert_unauthorized(resp: reqwest::Response, expect_in_message: &str) {
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"toolgate\""),
        "{challenge}"
    );
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(expect_in_message),
        "{message:?} lacks {expect_in_message:?}"
    );
}

#[tokio::test]
async fn tokens_are_checked_before_anything_reaches_the_upstream() {
    let (upstream, gw) = setup("trust_annotations = true").await;

    assert_unauthorized(
        call(&gw, None, "MARK-NOTOKEN").await,
        "missing bearer token",
    )
    .await;
    assert_unauthorized(
        call(&gw, Some("tg_not-a-known-token"), "MARK-UNKNOWN").await,
        "unknown token",
    )
    .await;
    assert_unauthorized(
        call(&gw, Some(EXPIRED_TOKEN), "MARK-EXPIRED").await,
        "expired",
    )
    .await;
    let wrong_audience = jwt(claims("someone-else", 300));
    assert_unauthorized(
        call(&gw, Some(&wrong_audience), "MARK-AUD").await,
        "InvalidAudience",
    )
    .await;
    let expired_jwt = jwt(claims(AUDIENCE, -600));
    assert_unauthorized(
        call(&gw, Some(&expired_jwt), "MARK-JWTEXP").await,
        "ExpiredSignature",
    )
    .await;
    let mut forged = jwt(claims(AUDIENCE, 300));
    forged.replace_range(forged.len() - 6.., "AAAAAA");
    assert_unauthorized(
        call(&gw, Some(&forged), "MARK-FORGED").await,
        "invalid OAuth token",
    )
    .await;

    let ok = call(&gw, Some(&jwt(claims(AUDIENCE, 300))), "MARK-JWTOK").await;
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("no page MARK-JWTOK"));
    let ok = call(&gw, Some(AGENT_TOKEN), "MARK-TOKENOK").await;
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();

    let received = upstream.posts();
    let bodies: Vec<&str> = received.iter().map(|p| p.body.as_str()).collect();
    for refused in [
        "MARK-NOTOKEN",
        "MARK-UNKNOWN",
        "MARK-EXPIRED",
        "MARK-AUD",
        "MARK-JWTEXP",
        "MARK-FORGED",
    ] {
        assert!(
            !bodies.iter().any(|b| b.contains(refused)),
            "{refused} reached the upstream"
        );
    }
    assert!(bodies.iter().any(|b| b.contains("MARK-JWTOK")));
    assert!(bodies.iter().any(|b| b.contains("MARK-TOKENOK")));
    // The client's bearer token is for toolgate alone.
    assert!(
        received.iter().all(|p| p.authorization.is_none()),
        "{received:?}"
    );
}

#[tokio::test]
async fn upstream_credentials_come_from_config_not_from_the_client() {
    let (upstream, gw) = setup(
        "trust_annotations = true\nheaders = { \"Authorization\" = \"Bearer upstream-secret\" }",
    )
    .await;
    let ok = call(&gw, Some(AGENT_TOKEN), "MARK-CREDS").await;
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    let received = upstream.posts();
    let post = received
        .iter()
        .find(|p| p.body.contains("MARK-CREDS"))
        .expect("call reached upstream");
    assert_eq!(
        post.authorization.as_deref(),
        Some("Bearer upstream-secret")
    );
}

#[tokio::test]
async fn a_jwt_used_before_its_nbf_is_refused_with_the_same_leeway_as_exp() {
    let (upstream, gw) = setup("trust_annotations = true").await;
    let now = chrono::Utc::now().timestamp();
    let not_before = |secs: i64| {
        let mut c = claims(AUDIENCE, 600);
        c["nbf"] = json!(now + secs);
        jwt(c)
    };

    // Ten minutes early: refused, and the client is told why.
    assert_unauthorized(
        call(&gw, Some(&not_before(600)), "MARK-NBF-EARLY").await,
        "the token is not valid yet",
    )
    .await;
    // Ten seconds early is within the 30 s clock leeway, as it is for exp.
    let ok = call(&gw, Some(&not_before(10)), "MARK-NBF-SKEW").await;
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();

    let bodies: Vec<String> = upstream.posts().into_iter().map(|p| p.body).collect();
    assert!(!bodies.iter().any(|b| b.contains("MARK-NBF-EARLY")));
    assert!(bodies.iter().any(|b| b.contains("MARK-NBF-SKEW")));
}

const ALICE_OPERATOR: &str = "tg_test-operator-alice";
const BOB_OPERATOR: &str = "tg_test-operator-bob";

#[tokio::test]
async fn an_operator_cannot_approve_their_own_oauth_call_whatever_the_subjects_case() {
    let upstream = PyUpstream::start().await;
    // alice's principal is written as operators usually write it; her IdP capitalises.
    let operators = format!(
        "[[operator]]\nname = \"alice\"\nrole = \"approver\"\ntoken_sha256 = \"{}\"\nprincipals = [\"oauth:alice@corp.example\"]\n\
         [[operator]]\nname = \"bob\"\nrole = \"approver\"\ntoken_sha256 = \"{}\"\nprincipals = [\"oauth:bob@corp.example\"]\n",
        sha256_hex(ALICE_OPERATOR),
        sha256_hex(BOB_OPERATOR)
    );
    let gw = start_gateway(&format!(
        "{}\n{}\n{operators}",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 30"),
        oauth_config()
    ))
    .await;
    prime_catalog(&gw).await;
    let mut c = claims(AUDIENCE, 300);
    c["sub"] = json!("Alice@corp.example");
    let token = jwt(c);

    // A destructive call by an OAuth user is held.
    let url = gw.url("py");
    let body = modern_call(3, "delete_page", json!({"page_id": "MARK-SELF"}), json!({}));
    let client = tokio::spawn(async move {
        let resp = modern_request(&http(), &url, "delete_page", body.to_string())
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    });
    let hold = eventually("the hold", || async {
        let (_, body) = api(
            &gw,
            reqwest::Method::GET,
            "/api/v1/holds",
            Some(ALICE_OPERATOR),
            None,
        )
        .await;
        body["holds"].as_array().and_then(|h| h.first()).cloned()
    })
    .await;
    assert_eq!(
        hold["call"]["identity"]["name"], "alice@corp.example",
        "{hold}"
    );
    let call_id = hold["call_id"].as_str().unwrap();

    let (status, body) = api(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/holds/{call_id}/approve"),
        Some(ALICE_OPERATOR),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "self_approval"), "{body}");
    // Another approver may resolve it.
    let (status, body) = api(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/holds/{call_id}/deny"),
        Some(BOB_OPERATOR),
        None,
    )
    .await;
    assert_eq!(
        (status, body["resolution"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.contains("isError"), "{answer}");
    assert!(
        !upstream
            .posts()
            .iter()
            .any(|p| p.body.contains("MARK-SELF"))
    );
}

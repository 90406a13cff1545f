//! The handshake: a token on any of the three transports, verified before the upgrade.

use jsonwebtoken::{EncodingKey, Header, encode};
use sba_domain::Role;
use serde_json::json;

use super::{Transport, try_connect};
use crate::helpers::{
    AUDIENCE, ISSUER, SECRET, Store, TestApp, new_tenant, problem, spawn_app, spawn_app_with,
};

fn sign(claims: &serde_json::Value) -> String {
    encode(&Header::default(), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn expired() -> String {
    let exp = jsonwebtoken::get_current_timestamp() - 60;
    sign(
        &json!({"sub": "alice", "tenant_id": new_tenant().to_string(), "exp": exp, "iss": ISSUER, "aud": AUDIENCE}),
    )
}

fn tenantless() -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    sign(&json!({"sub": "alice", "exp": exp, "iss": ISSUER, "aud": AUDIENCE}))
}

async fn app() -> TestApp {
    spawn_app(Store::Sqlite).await
}

#[tokio::test]
async fn bad_expired_and_tenantless_tokens_are_refused_with_401_on_every_transport_without_an_upgrade() {
    let app = app().await;
    let forged = app.token(new_tenant(), "alice", Role::Authenticated).replace('.', "x.");
    for transport in Transport::ALL {
        for (token, code) in [
            (forged.as_str(), "token_invalid"),
            (&expired(), "token_expired"),
            (&tenantless(), "tenant_missing"),
        ] {
            let Err(refusal) = try_connect(&app, token, transport).await else {
                panic!("{transport:?} with a {code} token was upgraded");
            };
            assert_eq!(refusal.status, 401, "{transport:?} {code}: {}", refusal.body);
            assert_eq!(refusal.body["code"], code, "{transport:?}: {}", refusal.body);
        }
    }
}

#[tokio::test]
async fn a_valid_token_on_every_transport_upgrades_and_sba_v1_is_selected() {
    let app = app().await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for transport in Transport::ALL {
        let (mut client, protocol) = try_connect(&app, &token, transport)
            .await
            .unwrap_or_else(|refusal| panic!("{transport:?}: {refusal:?}"));
        assert_eq!(protocol.as_deref(), Some("sba.v1"), "{transport:?}");
        client.assert_alive().await;
    }
}

#[tokio::test]
async fn a_request_that_is_not_an_upgrade_is_a_bad_request_problem() {
    let app = app().await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    problem(app.get("/v1/stream", &token).await, 400, "invalid_request").await;
    problem(app.get_anonymous("/v1/stream").await, 401, "token_missing").await;
}

#[tokio::test]
async fn the_access_token_never_reaches_a_metric() {
    let app = app().await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let (mut client, _) = try_connect(&app, &token, Transport::Query).await.unwrap();
    client.assert_alive().await;
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("sba_ws_connections"), "the gateway's metrics are there");
    assert!(metrics.contains(r#"route="/v1/stream""#), "the handshake is labelled by its route template");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!metrics.contains(signature), "the token leaked into /metrics");
}

#[tokio::test]
async fn handshakes_are_rate_limited_like_every_v1_route() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_RATE_LIMIT__DEFAULT", "2/60")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for transport in [Transport::Header, Transport::Query] {
        assert!(try_connect(&app, &token, transport).await.is_ok(), "{transport:?}");
    }
    let Err(refusal) = try_connect(&app, &token, Transport::Subprotocol).await else {
        panic!("a third handshake within the quota's window was upgraded");
    };
    assert_eq!(
        (refusal.status, refusal.body["code"].as_str()),
        (429, Some("rate_limited")),
        "{}",
        refusal.body
    );
}

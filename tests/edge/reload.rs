//! SPEC §9 reload: a new configuration applies to new requests, a broken one is rejected and the
//! running one stays, a new issuer's keys are fetched before the swap.

use std::io::Write;

use crate::support::*;

fn write(path: &std::path::Path, text: &str) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[tokio::test]
async fn reload_swaps_good_configurations_and_keeps_the_running_one_on_errors() {
    let edge = Edge::start("", &support_route()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.yaml");
    let routes = |client: &str| {
        fill(
            &format!(
                r#"
  - name: support
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{{discovery}}"
        allowedClients: [{client}]
    upstream: {{ url: "{{agent}}" }}
"#
            ),
            &edge.issuer,
            &edge.agent,
        )
    };
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);

    // Only client-b allowed now: the same token is refused.
    write(
        &path,
        &format!("listen: 127.0.0.1:0\nroutes:\n{}", routes("client-b")),
    );
    edge.app.reload(&path).await.unwrap();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 403);

    // A broken file: rejected with its diagnostics, the running configuration stays.
    write(
        &path,
        "listen: 127.0.0.1:0\nroutes:\n  - name: support\n    upstream: { url: nope }\n",
    );
    let error = edge.app.reload(&path).await.unwrap_err();
    assert!(error.contains("gatehouse.yaml:"), "{error}");
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 403);

    // A new issuer that cannot be reached: rejected before the swap.
    let unreachable = routes("client-a").replace(
        &edge.issuer.discovery_url(),
        "http://127.0.0.1:9/.well-known/openid-configuration",
    );
    write(
        &path,
        &format!("listen: 127.0.0.1:0\njwt: {{ jwksFetchTimeout: 500ms }}\nroutes:\n{unreachable}"),
    );
    let error = edge.app.reload(&path).await.unwrap_err();
    assert!(error.contains("no keys"), "{error}");
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 403);

    // Back to client-a.
    write(
        &path,
        &format!("listen: 127.0.0.1:0\nroutes:\n{}", routes("client-a")),
    );
    edge.app.reload(&path).await.unwrap();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
}

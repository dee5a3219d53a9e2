//! Several replicas behind one route (`upstream.urls`): session affinity by consistent
//! hashing, round robin without a session, passive health when a replica goes away.

use std::collections::{HashMap, HashSet};

use gatehouse::dev::EchoAgent;
use http::Method;

use crate::support::*;

const SESSION: &str = "x-amzn-bedrock-agentcore-runtime-session-id";

/// Replicas on fixed addresses. Consistent hashing places each session independently, so with
/// 100 sessions the count per replica is binomial (σ ≈ 4.7 sessions for 3 replicas) and about
/// one placement in eight of random ports would leave ±25%; fixed replica URLs make the
/// placement, and so the test, deterministic. Several candidate ports in case one is taken.
async fn fixed_agents(n: usize) -> Vec<EchoAgent> {
    for port in [28449u16, 28437, 28441, 28453, 28457] {
        let mut agents = Vec::new();
        for i in 1..=n {
            match EchoAgent::start(format!("127.77.0.{i}:{port}").parse().unwrap()).await {
                Ok(agent) => agents.push(agent),
                Err(_) => break,
            }
        }
        if agents.len() == n {
            return agents;
        }
    }
    panic!("no free port for the replica agents");
}

async fn edge_with_replicas(n: usize, protocol: &str) -> (Edge, Vec<EchoAgent>) {
    let issuer = issuer().await;
    let agents = if n == 3 {
        fixed_agents(n).await
    } else {
        let mut agents = Vec::new();
        for _ in 0..n {
            agents.push(agent().await);
        }
        agents
    };
    let urls: Vec<String> = agents.iter().map(|a| format!("\"{}\"", a.url())).collect();
    let yaml = format!(
        r#"listen: 127.0.0.1:0
routes:
  - name: support
    protocol: {protocol}
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [client-a]
    upstream: {{ urls: [{urls}] }}
    # The session ids here are the test's own, not issued through the edge (sessions.rs
    # covers binding).
    sessionBinding: {{ enabled: false }}
"#,
        discovery = issuer.discovery_url(),
        urls = urls.join(", ")
    );
    let edge = Edge::from_yaml(issuer, agents[0].clone(), &yaml).await;
    (edge, agents)
}

fn session_id(i: usize) -> String {
    format!("replica-test-session-{i:06}-0123456789abcdef")
}

/// Which replica saw each session, and how many requests each replica got.
fn placements(agents: &[EchoAgent], header: &str) -> (HashMap<String, HashSet<usize>>, Vec<usize>) {
    let mut seen: HashMap<String, HashSet<usize>> = HashMap::new();
    let mut counts = vec![0; agents.len()];
    for (i, agent) in agents.iter().enumerate() {
        for request in agent.requests() {
            counts[i] += 1;
            if let Some(id) = request.header(header) {
                seen.entry(id).or_default().insert(i);
            }
        }
    }
    (seen, counts)
}

async fn invoke_sessions(edge: &Edge, token: &str, sessions: usize, per_session: usize) {
    let auth = format!("Bearer {token}");
    for round in 0..per_session {
        for s in 0..sessions {
            let id = session_id(s);
            let reply = edge
                .send(
                    Method::POST,
                    "/runtimes/support/invocations",
                    &[("authorization", &auth), (SESSION, &id)],
                    &format!(r#"{{"round":{round}}}"#),
                )
                .await;
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            assert_eq!(reply.header(SESSION), Some(id.as_str()));
        }
    }
}

#[tokio::test]
async fn sessions_stick_spread_evenly_and_move_only_with_their_replica() {
    let (edge, agents) = edge_with_replicas(3, "HTTP").await;
    let token = edge.valid_token();
    invoke_sessions(&edge, &token, 100, 10).await;

    let (seen, counts) = placements(&agents, SESSION);
    assert_eq!(seen.len(), 100);
    for (id, replicas) in &seen {
        assert_eq!(replicas.len(), 1, "session {id} reached {replicas:?}");
    }
    assert_eq!(counts.iter().sum::<usize>(), 1000);
    // Even is 333 requests each; ±25%.
    for c in &counts {
        assert!((250..=417).contains(c), "uneven: {counts:?}");
    }
    let home: HashMap<String, usize> = seen
        .iter()
        .map(|(id, r)| (id.clone(), *r.iter().next().unwrap()))
        .collect();

    // Replica 2 goes away: its sessions move (each to one new replica), the others stay.
    agents[2].shutdown().await;
    for agent in &agents {
        agent.clear();
    }
    invoke_sessions(&edge, &token, 100, 10).await;
    let (after, counts) = placements(&agents, SESSION);
    assert_eq!(counts[2], 0);
    assert_eq!(counts[0] + counts[1], 1000);
    for (id, replicas) in &after {
        assert_eq!(replicas.len(), 1, "session {id} reached {replicas:?}");
        let now = *replicas.iter().next().unwrap();
        if home[id] == 2 {
            assert_ne!(now, 2);
        } else {
            assert_eq!(
                now, home[id],
                "session {id} moved although its replica is up"
            );
        }
    }
}

#[tokio::test]
async fn requests_without_a_session_are_spread_round_robin() {
    let (edge, agents) = edge_with_replicas(3, "MCP").await;
    let auth = format!("Bearer {}", edge.valid_token());
    for _ in 0..300 {
        let reply = edge
            .send(
                Method::POST,
                "/runtimes/support/invocations",
                &[("authorization", &auth)],
                "{}",
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    let counts: Vec<u64> = agents.iter().map(EchoAgent::request_count).collect();
    assert_eq!(counts, vec![100, 100, 100]);

    // MCP sessions stick by Mcp-Session-Id.
    for agent in &agents {
        agent.clear();
    }
    for s in 0..20 {
        for _ in 0..5 {
            let id = format!("mcp-{s}");
            let reply = edge
                .send(
                    Method::POST,
                    "/runtimes/support/invocations",
                    &[("authorization", &auth), ("mcp-session-id", &id)],
                    "{}",
                )
                .await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("mcp-session-id"), Some(id.as_str()));
        }
    }
    let (seen, _) = placements(&agents, "mcp-session-id");
    assert_eq!(seen.len(), 20);
    assert!(seen.values().all(|r| r.len() == 1), "{seen:?}");
}

#[tokio::test]
async fn a_refusing_replica_is_skipped_without_failing_requests() {
    let (edge, agents) = edge_with_replicas(2, "MCP").await;
    agents[1].shutdown().await;
    let auth = format!("Bearer {}", edge.valid_token());
    for i in 0..20 {
        let reply = edge
            .send(
                Method::POST,
                "/runtimes/support/invocations",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                &format!(r#"{{"i":{i}}}"#),
            )
            .await;
        assert_eq!(reply.status, 200, "request {i}: {:?}", reply.body);
        // The body reached the live replica intact, also when the dead one was tried first.
        assert_eq!(reply.json()["payload"]["i"], i);
    }
    assert_eq!(agents[0].request_count(), 20);

    // Every replica gone: 502.
    agents[0].shutdown().await;
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/support/invocations",
            &[("authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_type(), Some("BadGatewayException"));
}

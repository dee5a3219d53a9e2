//! The one-line-per-route summary `gatehouse validate` prints.

use super::defaults;
use super::file::FileConfig;

/// One line per route: name, protocol, path, authorizer, upstream, and the outbound credential
/// when the route has one.
pub fn summary(file: &FileConfig) -> Vec<String> {
    file.routes
        .iter()
        .map(|route| {
            let path = route
                .path
                .clone()
                .unwrap_or_else(|| defaults::route_path(&route.name));
            let auth = match &route.authorizer_configuration {
                Some(a) if route.authorizer_type.as_deref() != Some("NONE") => {
                    format!("CUSTOM_JWT {}", a.custom_jwt_authorizer.discovery_url)
                }
                _ => "NONE".to_owned(),
            };
            let upstream = route.upstream.as_ref().map_or_else(String::new, |u| {
                u.url
                    .clone()
                    .or_else(|| u.urls.as_ref().map(|urls| urls.join(",")))
                    .or_else(|| u.agent_runtime_arn.clone())
                    .unwrap_or_default()
            });
            let outbound = route
                .outbound_auth
                .as_ref()
                .map_or_else(String::new, |o| format!(" outbound={}", o.kind));
            format!(
                "route {} {} {path} auth={auth} upstream={upstream}{outbound}",
                route.name,
                route.protocol.as_deref().unwrap_or(defaults::PROTOCOL)
            )
        })
        .collect()
}

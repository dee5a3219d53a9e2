//! The compiled quota configuration: the store, the global rules (their limiters shared by
//! every route, so a per-client limit counts across routes), and per route the list of rules
//! that apply there with their metric handles resolved, so a decision allocates nothing but
//! its key.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::concurrency::InFlight;
use super::local::LocalLimiter;
use super::redis::{Bucket, RedisStore};
use super::rules::{Glob, KeyPart, MessageMatch, Rate};
use crate::config::file::{QuotaRuleFile, QuotasFile};
use crate::telemetry::metrics::Metrics;

/// Default `keyPrefix` of the Redis store.
pub const DEFAULT_KEY_PREFIX: &str = "gatehouse:";
/// Default longest wait for Redis per decision.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// What a decision does when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Fail open: the request goes on unlimited (logged and counted).
    Allow,
    /// Fail closed: 503.
    Deny,
}

/// Where rate counts live.
#[derive(Debug)]
pub enum Store {
    Local,
    Redis {
        redis: Arc<RedisStore>,
        timeout: Duration,
        on_error: OnError,
    },
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub key: Vec<KeyPart>,
    pub matcher: Option<MessageMatch>,
    pub rate: Option<Rate>,
    /// The local limiter of the rate (local store only).
    pub local: Option<Arc<LocalLimiter>>,
    pub inflight: Option<Arc<InFlight>>,
    /// Redis keys are this followed by the request's key.
    redis_prefix: String,
    emission_us: u64,
    tolerance_us: u64,
}

impl Rule {
    /// The Redis bucket of this rule for a request key.
    pub fn bucket(&self, key: &str) -> Bucket {
        let mut full = String::with_capacity(self.redis_prefix.len() + key.len());
        full.push_str(&self.redis_prefix);
        full.push_str(key);
        Bucket {
            key: full,
            emission_us: self.emission_us,
            tolerance_us: self.tolerance_us,
        }
    }

    /// Whether the rule needs the request's MCP message (`tool` key or `match`).
    fn needs_message(&self) -> bool {
        self.matcher.is_some() || self.key.contains(&KeyPart::Tool)
    }
}

/// The top-level `quotas` block, compiled.
#[derive(Debug)]
pub struct Quotas {
    pub store: Arc<Store>,
    key_prefix: String,
    global: Vec<Arc<Rule>>,
}

impl Quotas {
    /// `redis` gives the process's store for a URL (shared across reloads).
    pub fn compile(
        file: Option<&QuotasFile>,
        redis: impl FnOnce(&str) -> Result<Arc<RedisStore>, String>,
    ) -> Result<Self, String> {
        let store = match file.and_then(|f| f.store.as_ref()) {
            Some(store) if store.kind == "redis" => {
                let url = store
                    .url
                    .as_deref()
                    .ok_or("quotas.store: type redis needs a url")?;
                Store::Redis {
                    redis: redis(url)?,
                    timeout: store.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
                    on_error: match store.on_error.as_deref() {
                        Some("deny") => OnError::Deny,
                        _ => OnError::Allow,
                    },
                }
            }
            _ => Store::Local,
        };
        let prefix = file
            .and_then(|f| f.store.as_ref())
            .and_then(|s| s.key_prefix.clone())
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        let global = file
            .map(|f| f.rules.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|r| compile_rule(r, &format!("{prefix}{}:", r.name), &store).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            store: Arc::new(store),
            key_prefix: prefix,
            global,
        })
    }

    /// The rules of one route: the global ones that can apply there, then its own. `None`
    /// when no rule applies (the phase then costs nothing).
    pub fn for_route(
        &self,
        route: &str,
        mcp: bool,
        own: &[QuotaRuleFile],
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Arc<RouteQuotas>>, String> {
        let mut rules: Vec<Arc<Rule>> = self
            .global
            .iter()
            // Messages (and tools) exist only on MCP routes.
            .filter(|r| mcp || !r.needs_message())
            .cloned()
            .collect();
        for rule in own {
            let prefix = format!("{}{route}/{}:", self.key_prefix, rule.name);
            rules.push(Arc::new(compile_rule(rule, &prefix, &self.store)?));
        }
        if rules.is_empty() {
            return Ok(None);
        }
        let throttled = rules
            .iter()
            .map(|r| metrics.throttled(route, &r.name))
            .collect();
        let needs_message = rules.iter().any(|r| r.needs_message());
        Ok(Some(Arc::new(RouteQuotas {
            store: self.store.clone(),
            rules,
            throttled,
            needs_message,
            metrics: metrics.clone(),
        })))
    }
}

/// The quota rules of one route, ready for the request path.
#[derive(Debug)]
pub struct RouteQuotas {
    pub store: Arc<Store>,
    pub rules: Vec<Arc<Rule>>,
    /// `gatehouse_throttled_total{route, rule}`, one per rule.
    pub throttled: Vec<Counter>,
    needs_message: bool,
    pub metrics: Arc<Metrics>,
}

impl RouteQuotas {
    /// Whether some rule keys on `tool` or has a `match`: the MCP message must be read before
    /// quotas decide.
    pub fn needs_message(&self) -> bool {
        self.needs_message
    }
}

fn compile_rule(file: &QuotaRuleFile, redis_prefix: &str, store: &Store) -> Result<Rule, String> {
    let key = file
        .key
        .0
        .iter()
        .map(|k| KeyPart::parse(k))
        .collect::<Result<Vec<_>, _>>()?;
    let rate = file.rate.as_deref().map(Rate::parse).transpose()?;
    let burst = file
        .burst
        .or(rate.map(|r| r.count))
        .and_then(NonZeroU32::new)
        .unwrap_or(NonZeroU32::MIN);
    let local = match (rate, store) {
        (Some(rate), Store::Local) => Some(LocalLimiter::new(rate, burst)),
        _ => None,
    };
    let emission_us = rate.map_or(0, |r| {
        u64::try_from(r.emission_interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    });
    let matcher = file.matches.as_ref().map(|m| MessageMatch {
        method: m.method.as_deref().map(Glob::new),
        name: m.name.as_deref().map(Glob::new),
    });
    Ok(Rule {
        name: file.name.as_str().into(),
        key,
        matcher,
        rate,
        local,
        inflight: file.concurrency.map(InFlight::new),
        redis_prefix: redis_prefix.to_owned(),
        emission_us,
        tolerance_us: emission_us.saturating_mul(u64::from(burst.get())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::{OneOrMany, QuotaMatchFile};

    fn rule(name: &str, key: &[&str]) -> QuotaRuleFile {
        QuotaRuleFile {
            name: name.into(),
            key: OneOrMany(key.iter().map(|k| (*k).to_owned()).collect()),
            rate: Some("10/s".into()),
            ..Default::default()
        }
    }

    #[test]
    fn routes_get_global_rules_that_can_apply_and_their_own() {
        let file = QuotasFile {
            store: None,
            rules: vec![
                rule("per-client", &["client_id"]),
                rule("per-tool", &["tool"]),
                QuotaRuleFile {
                    matches: Some(QuotaMatchFile {
                        method: Some("initialize".into()),
                        name: None,
                    }),
                    ..rule("sessions", &["route"])
                },
            ],
        };
        let quotas = Quotas::compile(Some(&file), |_| Err("no redis".into())).unwrap();
        let metrics = Arc::new(Metrics::new());
        let http = quotas
            .for_route("agent", false, &[], &metrics)
            .unwrap()
            .unwrap();
        assert_eq!(http.rules.len(), 1);
        assert!(!http.needs_message());
        let mcp = quotas
            .for_route("tools", true, &[rule("own", &["sub"])], &metrics)
            .unwrap()
            .unwrap();
        let names: Vec<&str> = mcp.rules.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["per-client", "per-tool", "sessions", "own"]);
        assert!(mcp.needs_message());
        // Global limiters are shared: the same Arc on every route.
        assert!(Arc::ptr_eq(&http.rules[0], &mcp.rules[0]));
        assert_eq!(mcp.rules[3].bucket("u1").key, "gatehouse:tools/own:u1");
        assert_eq!(mcp.rules[0].bucket("c").key, "gatehouse:per-client:c");

        let none = Quotas::compile(None, |_| Err("no redis".into())).unwrap();
        assert!(
            none.for_route("agent", true, &[], &metrics)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn gcra_parameters() {
        let quotas = Quotas::compile(None, |_| Err("unused".into())).unwrap();
        let metrics = Arc::new(Metrics::new());
        let own = QuotaRuleFile {
            rate: Some("50/s".into()),
            burst: Some(5),
            ..rule("r", &["ip"])
        };
        let route = quotas
            .for_route("a", false, &[own], &metrics)
            .unwrap()
            .unwrap();
        let bucket = route.rules[0].bucket("k");
        assert_eq!((bucket.emission_us, bucket.tolerance_us), (20_000, 100_000));
        assert_eq!(bucket.key, "gatehouse:a/r:k");
    }
}

//! Route policy over verified claims: AgentCore's `allowedAudience`, `allowedClients`,
//! `allowedScopes` and `customClaims`. Pure functions, no I/O, checked on every request (also
//! when the token came from the verified-token cache, since routes differ in policy).
//!
//! Every configured check must pass (AND); within one list any element may match (OR). The
//! checks run in a fixed order — audience, client, scopes, custom claims — so the answer for a
//! token failing several is deterministic: a token not meant for this resource (`aud`) is a 401,
//! the others are 403s.
//!
//! ```
//! use gatehouse::auth::{claims::Claims, policy::{Policy, Denial}};
//! let policy = Policy { allowed_clients: Some(vec!["web".into()]), ..Policy::default() };
//! let claims = Claims::parse(br#"{"client_id":"cli"}"#).unwrap();
//! assert_eq!(policy.check(&claims), Err(Denial::Client));
//! ```

use serde_json::Value;

use super::claims::{Claim, Claims};

/// The compiled `customJwtAuthorizer` checks of one route.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allowed_clients: Option<Vec<String>>,
    pub allowed_audience: Option<Vec<String>>,
    pub allowed_scopes: Option<Vec<String>>,
    pub custom_claims: Vec<ClaimRule>,
}

/// One `customClaims` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRule {
    /// `STRING` claim equal to the value.
    Equals { claim: String, value: String },
    /// `STRING_ARRAY` claim containing the value.
    Contains { claim: String, value: String },
    /// `STRING_ARRAY` claim containing at least one of the values.
    ContainsAny { claim: String, values: Vec<String> },
}

impl ClaimRule {
    pub fn claim(&self) -> &str {
        match self {
            Self::Equals { claim, .. }
            | Self::Contains { claim, .. }
            | Self::ContainsAny { claim, .. } => claim,
        }
    }

    fn holds(&self, claims: &Claims) -> bool {
        let value = claims.get(self.claim());
        match (self, value) {
            (Self::Equals { value: want, .. }, Some(Claim::String(got))) => got == want,
            (Self::Contains { value: want, .. }, Some(Claim::Json(Value::Array(items)))) => items
                .iter()
                .any(|item| item.as_str() == Some(want.as_str())),
            (Self::ContainsAny { values, .. }, Some(Claim::Json(Value::Array(items)))) => items
                .iter()
                .filter_map(Value::as_str)
                .any(|got| values.iter().any(|want| want == got)),
            // Missing claim or wrong JSON type: the rule does not hold.
            _ => false,
        }
    }
}

/// Which check refused the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No `aud` in allowedAudience: the token was not issued for this resource (401).
    Audience,
    /// `client_id` not in allowedClients (403).
    Client,
    /// No scope in allowedScopes (403, `insufficient_scope` step-up).
    Scope,
    /// A custom-claim rule failed (403); names the claim.
    Claim(String),
}

impl Denial {
    /// The AgentCore-style message: it names the claim, never its value.
    pub fn message(&self) -> String {
        let claim = match self {
            Self::Audience => "aud",
            Self::Client => "client_id",
            Self::Scope => "scope",
            Self::Claim(name) => name,
        };
        format!("Claim '{claim}' value mismatch with configuration.")
    }
}

impl Policy {
    /// Checks every configured rule, in order: audience, client, scopes, custom claims.
    pub fn check(&self, claims: &Claims) -> Result<(), Denial> {
        if let Some(allowed) = &self.allowed_audience
            && !claims.aud().any(|aud| allowed.iter().any(|a| a == aud))
        {
            return Err(Denial::Audience);
        }
        if let Some(allowed) = &self.allowed_clients {
            let client = claims.client_id();
            if !allowed.iter().any(|a| Some(a.as_str()) == client) {
                return Err(Denial::Client);
            }
        }
        if let Some(allowed) = &self.allowed_scopes
            && !claims.scopes().any(|s| allowed.iter().any(|a| a == s))
        {
            return Err(Denial::Scope);
        }
        for rule in &self.custom_claims {
            if !rule.holds(claims) {
                return Err(Denial::Claim(rule.claim().to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Claims {
        Claims::parse(json.as_bytes()).unwrap()
    }

    fn strings(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn empty_policy_allows() {
        assert_eq!(Policy::default().check(&claims("{}")), Ok(()));
    }

    #[test]
    fn audience_any_of_token_audiences() {
        let p = Policy {
            allowed_audience: strings(&["api", "other"]),
            ..Policy::default()
        };
        assert_eq!(p.check(&claims(r#"{"aud":["x","other"]}"#)), Ok(()));
        assert_eq!(p.check(&claims(r#"{"aud":"api"}"#)), Ok(()));
        assert_eq!(p.check(&claims(r#"{"aud":"nope"}"#)), Err(Denial::Audience));
        assert_eq!(p.check(&claims(r#"{}"#)), Err(Denial::Audience));
        assert_eq!(p.check(&claims(r#"{"aud":[]}"#)), Err(Denial::Audience));
        assert_eq!(
            Denial::Audience.message(),
            "Claim 'aud' value mismatch with configuration."
        );
    }

    #[test]
    fn client_id_only() {
        let p = Policy {
            allowed_clients: strings(&["web"]),
            ..Policy::default()
        };
        assert_eq!(p.check(&claims(r#"{"client_id":"web"}"#)), Ok(()));
        assert_eq!(
            p.check(&claims(r#"{"client_id":"cli"}"#)),
            Err(Denial::Client)
        );
        // Cognito ID tokens carry the client in `aud`, not `client_id`: AgentCore refuses them.
        assert_eq!(p.check(&claims(r#"{"aud":"web"}"#)), Err(Denial::Client));
        assert_eq!(
            p.check(&claims(r#"{"azp":"web","cid":"web"}"#)),
            Err(Denial::Client)
        );
        assert_eq!(
            Denial::Client.message(),
            "Claim 'client_id' value mismatch with configuration."
        );
    }

    #[test]
    fn scopes_from_scope_or_scp() {
        let p = Policy {
            allowed_scopes: strings(&["invoke"]),
            ..Policy::default()
        };
        assert_eq!(p.check(&claims(r#"{"scope":"read invoke"}"#)), Ok(()));
        assert_eq!(p.check(&claims(r#"{"scp":["invoke"]}"#)), Ok(()));
        assert_eq!(p.check(&claims(r#"{"scp":"read invoke"}"#)), Ok(()));
        assert_eq!(
            p.check(&claims(r#"{"scope":"read invoker"}"#)),
            Err(Denial::Scope)
        );
        assert_eq!(p.check(&claims(r#"{}"#)), Err(Denial::Scope));
        assert_eq!(
            Denial::Scope.message(),
            "Claim 'scope' value mismatch with configuration."
        );
    }

    #[test]
    fn custom_claim_equals() {
        let rule = ClaimRule::Equals {
            claim: "tenant".into(),
            value: "acme".into(),
        };
        let p = Policy {
            custom_claims: vec![rule],
            ..Policy::default()
        };
        assert_eq!(p.check(&claims(r#"{"tenant":"acme"}"#)), Ok(()));
        assert_eq!(
            p.check(&claims(r#"{"tenant":"other"}"#)),
            Err(Denial::Claim("tenant".into()))
        );
        assert_eq!(
            p.check(&claims(r#"{"tenant":["acme"]}"#)),
            Err(Denial::Claim("tenant".into()))
        );
        assert_eq!(
            p.check(&claims(r#"{}"#)),
            Err(Denial::Claim("tenant".into()))
        );
        assert_eq!(
            Denial::Claim("tenant".into()).message(),
            "Claim 'tenant' value mismatch with configuration."
        );
    }

    #[test]
    fn custom_claim_contains() {
        let rule = ClaimRule::Contains {
            claim: "cognito:groups".into(),
            value: "support".into(),
        };
        let p = Policy {
            custom_claims: vec![rule],
            ..Policy::default()
        };
        assert_eq!(
            p.check(&claims(r#"{"cognito:groups":["a","support"]}"#)),
            Ok(())
        );
        assert_eq!(
            p.check(&claims(r#"{"cognito:groups":["a"]}"#)),
            Err(Denial::Claim("cognito:groups".into()))
        );
        assert_eq!(
            p.check(&claims(r#"{"cognito:groups":"support"}"#)),
            Err(Denial::Claim("cognito:groups".into()))
        );
    }

    #[test]
    fn custom_claim_contains_any() {
        let rule = ClaimRule::ContainsAny {
            claim: "groups".into(),
            values: vec!["support".into(), "admin".into()],
        };
        let p = Policy {
            custom_claims: vec![rule],
            ..Policy::default()
        };
        assert_eq!(p.check(&claims(r#"{"groups":["x","admin"]}"#)), Ok(()));
        assert_eq!(
            p.check(&claims(r#"{"groups":["x",1,null]}"#)),
            Err(Denial::Claim("groups".into()))
        );
        assert_eq!(
            p.check(&claims(r#"{"groups":[]}"#)),
            Err(Denial::Claim("groups".into()))
        );
    }

    #[test]
    fn all_checks_must_pass_in_order() {
        let p = Policy {
            allowed_audience: strings(&["api"]),
            allowed_clients: strings(&["web"]),
            allowed_scopes: strings(&["invoke"]),
            custom_claims: vec![ClaimRule::Equals {
                claim: "t".into(),
                value: "1".into(),
            }],
        };
        let ok = r#"{"aud":"api","client_id":"web","scope":"invoke","t":"1"}"#;
        assert_eq!(p.check(&claims(ok)), Ok(()));
        assert_eq!(
            p.check(&claims(
                r#"{"aud":"x","client_id":"x","scope":"x","t":"x"}"#
            )),
            Err(Denial::Audience)
        );
        assert_eq!(
            p.check(&claims(
                r#"{"aud":"api","client_id":"x","scope":"x","t":"x"}"#
            )),
            Err(Denial::Client)
        );
        assert_eq!(
            p.check(&claims(
                r#"{"aud":"api","client_id":"web","scope":"x","t":"x"}"#
            )),
            Err(Denial::Scope)
        );
        assert_eq!(
            p.check(&claims(
                r#"{"aud":"api","client_id":"web","scope":"invoke","t":"x"}"#
            )),
            Err(Denial::Claim("t".into()))
        );
    }
}

//! Unit tests of claims parsing: typed registered claims, the strictness rules, errors that
//! never quote the payload, and the packed form keeping every claim as sent.

use super::*;

fn parse(json: &str) -> Result<Claims, String> {
    Claims::parse(json.as_bytes()).map_err(|e| e.0)
}

#[test]
fn registered_claims_are_typed() {
    let c = parse(
        r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":10,"nbf":1.9,"iat":2,"client_id":"c","scope":"x  y","scp":["z"]}"#,
    )
    .unwrap();
    assert_eq!(c.iss(), Some("i"));
    assert_eq!(c.sub(), Some("s"));
    assert_eq!(c.aud().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!((c.exp(), c.nbf(), c.iat()), (Some(10), Some(1), Some(2)));
    assert_eq!(c.scopes().collect::<Vec<_>>(), ["x", "y", "z"]);
    assert_eq!(c.client_id(), Some("c"));
    assert!(c.has_scope("z") && !c.has_scope("x  y"));
}

#[test]
fn wrong_types_are_rejected() {
    let aud = "claim 'aud' must be a string or an array of strings";
    for (payload, error) in [
        (
            r#"{"exp":"10"}"#,
            "claim 'exp' must be a number of seconds (NumericDate)",
        ),
        (r#"{"exp":1e300}"#, "claim 'exp' is out of range"),
        (r#"{"nbf":-5}"#, "claim 'nbf' is out of range"),
        (r#"{"aud":5}"#, aud),
        (r#"{"aud":{"a":1}}"#, aud),
        (r#"{"aud":[1]}"#, aud),
        (
            r#"{"scope":["a"]}"#,
            "claim 'scope' must be a space-delimited string",
        ),
        (
            r#"{"scp":7}"#,
            "claim 'scp' must be a string or an array of strings",
        ),
        (r#"{"iss":1}"#, "claim 'iss' must be a string"),
        (
            r#"{"client_id":true}"#,
            "claim 'client_id' must be a string",
        ),
    ] {
        assert_eq!(parse(payload).unwrap_err(), error, "{payload}");
    }
}

#[test]
fn empty_audience_array_means_no_audience() {
    assert_eq!(parse(r#"{"aud":[]}"#).unwrap().aud().count(), 0);
    assert_eq!(parse(r#"{"aud":null}"#).unwrap().aud().count(), 0);
}

#[test]
fn duplicates_and_non_objects_are_rejected() {
    assert!(
        parse(r#"{"sub":"a","sub":"b"}"#)
            .unwrap_err()
            .contains("duplicate member name")
    );
    assert!(parse(r#"[1]"#).is_err());
    assert!(parse(r#"{"a":1} x"#).unwrap_err().contains("trailing"));
    assert!(parse("").is_err());
}

#[test]
fn errors_never_quote_the_payload() {
    for json in [
        r#""eyJhbGciOiJSUzI1NiJ9.secret.sig""#,
        r#"["eyJhbGciOiJSUzI1NiJ9.secret.sig"]"#,
        r#"{"eyJhbGciOiJSUzI1NiJ9.secret.sig" 1}"#,
        r#"{"a":"eyJhbGciOiJSUzI1NiJ9.secret.sig""#,
        "eyJhbGciOiJSUzI1NiJ9.secret.sig",
    ] {
        let error = parse(json).unwrap_err();
        assert!(!error.contains("secret"), "{json}: {error}");
        assert!(
            error.starts_with("token payload is not a JSON object: "),
            "{error}"
        );
    }
}

#[test]
fn render_for_headers() {
    let c = parse(r#"{"g":["a","b"],"n":5,"b":true,"o":{"x":1},"s":"v","mixed":["a",{"x":1}]}"#)
        .unwrap();
    assert_eq!(c.render("g").as_deref(), Some("a,b"));
    assert_eq!(c.render("n").as_deref(), Some("5"));
    assert_eq!(c.render("b").as_deref(), Some("true"));
    assert_eq!(c.render("s").as_deref(), Some("v"));
    assert_eq!(c.render("o"), None);
    assert_eq!(c.render("mixed"), None);
    assert_eq!(c.render("missing"), None);
}

#[test]
fn registered_claims_in_their_other_shapes() {
    let c = parse(r#"{"aud":"one","scp":"p  q","scope":null}"#).unwrap();
    assert_eq!(c.aud().collect::<Vec<_>>(), ["one"]);
    assert_eq!(c.scopes().collect::<Vec<_>>(), ["p", "q"]);
    let c = parse(r#"{"scp":["a b"],"scope":"c"}"#).unwrap();
    // `scope` first; an `scp` array element is one scope even with a space in it.
    assert_eq!(c.scopes().collect::<Vec<_>>(), ["c", "a b"]);
    let none = parse("{}").unwrap();
    assert_eq!(
        (none.iss(), none.sub(), none.client_id(), none.exp()),
        (None, None, None, None)
    );
    assert_eq!(none.scopes().count() + none.aud().count(), 0);
}

/// The packed form keeps every claim with its value as parsed (strings unescaped), in
/// name order, and finds each by name, whatever the order in the payload.
#[test]
fn every_claim_is_kept_as_sent() {
    let json = r#"{"z":"last","sub":"s\u00e9\"q","aud":["x"],"exp":5.5,"":"empty","n":-1,
        "b":false,"nil":null,"o":{"k":[1]},"a\\b":"esc","client_id":"","iss":"i"}"#;
    let c = parse(json).unwrap();
    let want: Map<String, Value> = serde_json::from_str(json).unwrap();
    let got: Vec<(String, Value)> = c
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Claim::String(s) => Value::String(s.to_owned()),
                Claim::Json(v) => v.clone(),
            };
            (name.to_owned(), value)
        })
        .collect();
    let mut sorted: Vec<(String, Value)> = want.clone().into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, sorted);
    for (name, value) in &want {
        match (c.get(name).unwrap(), value) {
            (Claim::String(got), Value::String(want)) => assert_eq!(got, want),
            (Claim::Json(got), want) => assert_eq!(got, want),
            (got, want) => panic!("{name}: {got:?} for {want}"),
        }
    }
    assert_eq!(c.get("zz"), None);
    assert_eq!(c.get("a"), None);
    assert_eq!(c.sub(), Some("s\u{e9}\"q"));
    assert_eq!(c.client_id(), Some(""));
    assert_eq!(c.get("exp"), Some(Claim::Json(&serde_json::json!(5.5))));
    assert_eq!(c.exp(), Some(5));
    assert_eq!(c.get("a\\b").and_then(Claim::as_str), Some("esc"));
    assert_eq!(
        c.get("aud").and_then(Claim::as_array).map(<[_]>::len),
        Some(1)
    );
    assert_eq!(c.render("").as_deref(), Some("empty"));
}

#[test]
fn many_claims_are_each_found() {
    let object: Map<String, Value> = (0..300)
        .map(|i| {
            (
                format!("c{i}"),
                if i % 2 == 0 {
                    Value::from(i)
                } else {
                    Value::from(format!("v{i}"))
                },
            )
        })
        .collect();
    let c = Claims::parse(Value::Object(object.clone()).to_string().as_bytes()).unwrap();
    assert_eq!(c.iter().count(), 300);
    for (name, value) in &object {
        assert_eq!(
            c.render(name),
            Some(
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            )
        );
    }
}

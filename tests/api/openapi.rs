//! The OpenAPI document against the server: the routes it lists are the routes served, its
//! query parameters are the ones accepted, and every answer the review tests receive has a
//! documented status and a body that fits the documented schema ([`ApiDoc::check`], run on
//! every call those tests make).

use chatguard::store::Role;
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// The review API's document with the lookups the checks need.
pub struct ApiDoc {
    doc: Value,
}

impl ApiDoc {
    /// The document the crate generates (the server serves the same; a test checks that).
    pub fn generated() -> Self {
        let doc = serde_json::to_value(chatguard::api::review::openapi()).unwrap();
        ApiDoc { doc }
    }

    /// `(method, path template)` of every operation.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut ops = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
        ops.sort();
        ops
    }

    fn operation(&self, method: &Method, path: &str) -> Result<(&str, &Value), String> {
        let path = path.split('?').next().unwrap_or(path);
        let got: Vec<&str> = path.split('/').collect();
        // Of the templates that match, the one with the most literal segments wins, as in axum.
        let mut best: Option<(usize, &str, &Value)> = None;
        for (template, item) in self.doc["paths"].as_object().unwrap() {
            let want: Vec<&str> = template.split('/').collect();
            if want.len() != got.len() {
                continue;
            }
            let mut literal = 0;
            let fits = want.iter().zip(&got).all(|(w, g)| {
                if w.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    w == g
                }
            });
            if fits && best.is_none_or(|(n, _, _)| literal > n) {
                best = Some((literal, template, item));
            }
        }
        let (_, template, item) = best.ok_or_else(|| format!("{path} is not documented"))?;
        let op = &item[method.as_str().to_lowercase()];
        if op.is_null() {
            return Err(format!("{method} {template} is not documented"));
        }
        Ok((template, op))
    }

    /// Checks one exchange: the operation is documented, answers `status` per the document,
    /// and `body` (a JSON body, or Null) fits the documented schema.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        body: &Value,
    ) -> Result<(), String> {
        let (template, op) = self.operation(method, path)?;
        let response = &op["responses"][status.as_str()];
        if response.is_null() {
            return Err(format!(
                "{method} {template} answered {status}, which is not documented"
            ));
        }
        let Some(schema) = response["content"]["application/json"].get("schema") else {
            return Ok(());
        };
        self.fits(schema, body, "$")
            .map_err(|e| format!("{method} {template} {status}: {e}"))
    }

    /// Checks `value` against the named component schema.
    pub fn check_schema(&self, name: &str, value: &Value) -> Result<(), String> {
        self.fits(
            &json!({"$ref": format!("#/components/schemas/{name}")}),
            value,
            "$",
        )
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> Result<&'a Value, String> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .ok_or_else(|| format!("unexpected $ref {r}"))?;
                let target = &self.doc["components"]["schemas"][name];
                if target.is_null() {
                    Err(format!("dangling $ref {r}"))
                } else {
                    self.resolve(target)
                }
            }
            None => Ok(schema),
        }
    }

    /// A JSON Schema subset, as utoipa writes it: `$ref`, `type` (one or a list), `enum`,
    /// `oneOf`/`anyOf`/`allOf`, `properties` + `required` (objects are closed unless they
    /// declare `additionalProperties`), `items`, and `{}` for any value.
    fn fits(&self, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        for key in ["oneOf", "anyOf"] {
            if let Some(options) = schema[key].as_array() {
                let fitting = options
                    .iter()
                    .filter(|s| self.fits(s, v, at).is_ok())
                    .count();
                let ok = if key == "oneOf" {
                    fitting == 1
                } else {
                    fitting >= 1
                };
                if !ok {
                    return Err(format!("{at}: {v} fits {fitting} of the {key} schemas"));
                }
            }
        }
        if schema.get("allOf").is_some() {
            // One object described in parts (`#[serde(flatten)]`): fields may come from any part.
            return self.fits(&self.merge_all_of(schema)?, v, at);
        }
        if let Some(values) = schema["enum"].as_array()
            && !values.contains(v)
        {
            return Err(format!("{at}: {v} is not one of {values:?}"));
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type {t}")),
            };
            let actual = match v {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            let ok = types
                .iter()
                .any(|t| *t == actual || (*t == "number" && actual == "integer"));
            if !ok {
                return Err(format!("{at}: {v} is {actual}, documented {types:?}"));
            }
        }
        match v {
            Value::Object(map) => {
                let props = schema["properties"].as_object();
                let extra = &schema["additionalProperties"];
                if let Some(required) = schema["required"].as_array() {
                    for r in required.iter().filter_map(Value::as_str) {
                        if !map.contains_key(r) {
                            return Err(format!("{at}: required field {r:?} is missing"));
                        }
                    }
                }
                let open = props.is_none() && extra.is_null() && schema.get("type").is_none();
                for (k, value) in map {
                    let field = format!("{at}.{k}");
                    match props.and_then(|p| p.get(k)) {
                        Some(s) => self.fits(s, value, &field)?,
                        None if extra.is_object() => self.fits(extra, value, &field)?,
                        None if extra == &Value::Bool(true) || open => {}
                        None if schema.get("oneOf").is_some() || schema.get("anyOf").is_some() => {}
                        None => return Err(format!("{field} is sent but not documented")),
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.fits(s, item, &format!("{at}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An `allOf` schema as one object schema: the parts' properties and required fields.
    fn merge_all_of(&self, schema: &Value) -> Result<Value, String> {
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        let mut own = schema.clone();
        let parts = own
            .as_object_mut()
            .and_then(|o| o.remove("allOf"))
            .unwrap_or_default();
        for part in parts.as_array().into_iter().flatten().chain([&own]) {
            let mut part = self.resolve(part)?.clone();
            if part.get("allOf").is_some() {
                part = self.merge_all_of(&part)?;
            }
            if let Some(p) = part["properties"].as_object() {
                properties.extend(p.clone());
            }
            if let Some(r) = part["required"].as_array() {
                required.extend(r.iter().cloned());
            }
        }
        Ok(json!({"type": "object", "properties": properties, "required": required}))
    }

    /// Every `$ref` in the document, wherever it is.
    fn refs(&self) -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(list) => list.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.doc, &mut out);
        out
    }
}

/// A value of the parameter's schema that the server accepts.
fn sample(doc: &ApiDoc, schema: &Value) -> String {
    let schema = doc.resolve(schema).unwrap();
    if let Some(first) = schema["enum"].as_array().and_then(|v| v.first()) {
        return first.as_str().unwrap().to_owned();
    }
    if let Some(option) = schema["oneOf"].as_array().and_then(|o| {
        o.iter()
            .find(|s| doc.resolve(s).map(|s| s["type"] != "null").unwrap_or(false))
    }) {
        return sample(doc, option);
    }
    let types: Vec<String> = match &schema["type"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(list) => list
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    match (
        types.iter().find(|t| *t != "null").map(String::as_str),
        schema["format"].as_str(),
    ) {
        (Some("integer"), _) => "1".into(),
        (Some("number"), _) => "0.5".into(),
        (Some("string"), Some("date-time")) => "2020-01-01T00:00:00Z".into(),
        _ => "x".into(),
    }
}

/// The routes the issue asks for; the document must list exactly these.
const ROUTES: [(&str, &str); 18] = [
    ("DELETE", "/api/v1/tokens/{name}"),
    ("GET", "/api/v1/audit-log"),
    ("GET", "/api/v1/decisions"),
    ("GET", "/api/v1/export/labels"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/overview/series"),
    ("GET", "/api/v1/policy"),
    ("GET", "/api/v1/review-items"),
    ("GET", "/api/v1/review-items/{id}"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/tokens"),
    ("GET", "/api/v1/users/{id}"),
    ("POST", "/api/v1/review-items/bulk-resolve"),
    ("POST", "/api/v1/review-items/{id}/claim"),
    ("POST", "/api/v1/review-items/{id}/release"),
    ("POST", "/api/v1/review-items/{id}/resolve"),
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/users/{id}/unban"),
];

async fn document_matches_the_routes_served(db: &TestDb, _: Backend) {
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let secret = |role| {
        let store = app.store().clone();
        async move {
            let name = format!("t-{}", uuid::Uuid::new_v4());
            store
                .create_token(&name, role, Utc::now())
                .await
                .unwrap()
                .unwrap()
                .1
        }
    };
    let viewer = secret(Role::Viewer).await;
    let admin = secret(Role::Admin).await;
    let url = |path: &str| format!("{}{path}", app.url);

    // Served behind a token, and the same document the crate generates.
    let res = app
        .client
        .get(url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let served: Value = app
        .client
        .get(url("/api/openapi.json"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let doc = ApiDoc::generated();
    assert_eq!(served, doc.doc);
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));

    let documented = doc.operations();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);

    for r in doc.refs() {
        assert!(doc.resolve(&json!({"$ref": r})).is_ok(), "dangling {r}");
    }
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    for (method, template) in &documented {
        let method: Method = method.parse().unwrap();
        let path = template.replace("{id}", "1").replace("{name}", "t");
        // Served: without a token every documented route answers 401, as documented.
        let res = app
            .client
            .request(method.clone(), url(&path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 401, "{method} {path}");
        doc.check(&method, &path, status, &body).unwrap();
        // A method the document does not list is not served.
        let res = app
            .client
            .request(Method::PATCH, url(&path))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "PATCH {path}");

        // Every documented query parameter is accepted, and nothing else is.
        let (_, op) = doc.operation(&method, &path).unwrap();
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["in"] == "query").collect())
            .unwrap_or_default();
        if method != Method::GET || params.is_empty() {
            continue;
        }
        let query: Vec<String> = params
            .iter()
            .filter(|p| p["name"] != "cursor")
            .map(|p| {
                format!(
                    "{}={}",
                    p["name"].as_str().unwrap(),
                    sample(&doc, &p["schema"])
                )
            })
            .collect();
        let res = app
            .client
            .get(url(&format!("{path}?{}", query.join("&"))))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        // Accepted: not refused as a bad request (a filter may well find nothing: 404).
        assert!(
            status == 200 || status == 404,
            "{path}?{}: {status} {text}",
            query.join("&")
        );
        let res = app
            .client
            .get(url(&format!("{path}?{}&undocumented=1", query.join("&"))))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{path} with an undocumented parameter");
    }
    app.stop().await;
}
both_backends!(document, document_matches_the_routes_served);

/// The checker itself catches what it is there to catch.
#[test]
fn the_checker_refuses_undocumented_fields_statuses_and_routes() {
    let doc = ApiDoc::generated();
    let item_path = "/api/v1/review-items/7";
    let error = json!({"error": {"code": "not_found", "message": "no review item 7"}});
    doc.check(&Method::GET, item_path, StatusCode::NOT_FOUND, &error)
        .unwrap();
    // Not documented for this route.
    assert!(
        doc.check(&Method::GET, item_path, StatusCode::CONFLICT, &error)
            .is_err()
    );
    // A field the document does not name, a missing field, a wrong type.
    let extra = json!({"error": {"code": "x", "message": "y", "hint": "z"}});
    let missing = json!({"error": {"code": "x"}});
    let wrong = json!({"error": {"code": 1, "message": "y"}});
    for body in [extra, missing, wrong] {
        assert!(
            doc.check(&Method::GET, item_path, StatusCode::NOT_FOUND, &body)
                .is_err(),
            "{body}"
        );
    }
    assert!(
        doc.check(
            &Method::GET,
            "/api/v1/nowhere",
            StatusCode::OK,
            &Value::Null
        )
        .is_err()
    );
    assert!(
        doc.check(&Method::PUT, item_path, StatusCode::OK, &Value::Null)
            .is_err()
    );
    // A body in parts (`#[serde(flatten)]`): fields from every part, and only those.
    let page = json!({"user_id": "u", "decisions": [], "active_strikes": 0, "previous_bans": 0,
                      "banned": false, "strikes": [], "bans": []});
    doc.check_schema("UserPage", &page).unwrap();
    let mut extra = page.clone();
    extra["karma"] = json!(1);
    assert!(doc.check_schema("UserPage", &extra).is_err());
    let mut missing = page.clone();
    missing.as_object_mut().unwrap().remove("banned");
    assert!(doc.check_schema("UserPage", &missing).is_err());
    // A literal segment wins over a parameter.
    let (template, _) = doc
        .operation(&Method::POST, "/api/v1/review-items/bulk-resolve")
        .unwrap();
    assert_eq!(template, "/api/v1/review-items/bulk-resolve");
}

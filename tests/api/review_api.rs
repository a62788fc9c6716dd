//! The review API over loopback: bearer tokens and roles, the JSON error shape, listing with
//! filters and cursors, exclusive claims, and resolutions carried out once on the Stream stand-in.

use std::time::Duration;

use chatguard::store::{ReviewFilter, Role};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::openapi::ApiDoc;
use crate::stream_standin::{Op, Scripted, StreamStandin};

struct Stack {
    app: TestApp,
    stream: StreamStandin,
    /// Every answer is checked against the OpenAPI document.
    doc: ApiDoc,
}

async fn stack(db: &TestDb) -> Stack {
    stack_with(db, &[]).await
}

/// A stack whose app also gets `env` (configuration overrides).
async fn stack_with(db: &TestDb, env: &[(&str, &str)]) -> Stack {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let base = stream.base_url();
    let mut vars = vec![("STREAM_BASE_URL", base.as_str())];
    vars.extend_from_slice(env);
    let app = TestApp::spawn(config(&db.url, &vars)).await;
    Stack {
        app,
        stream,
        doc: ApiDoc::generated(),
    }
}

impl Stack {
    /// A token's secret.
    async fn token(&self, name: &str, role: Role) -> String {
        let (_, secret) = self
            .app
            .store()
            .create_token(name, role, Utc::now())
            .await
            .unwrap()
            .unwrap();
        secret
    }

    /// Posts a borderline message and returns the id of the review item its flag opens.
    async fn item(&self, message_id: &str, user_id: &str) -> i64 {
        let r = self
            .app
            .post_webhook(
                &message_new(message_id, user_id, "what an idiot"),
                &format!("w-{message_id}"),
            )
            .await;
        assert_eq!(r.status(), 200);
        self.item_of(user_id).await
    }

    /// The id of the user's review item, once the worker has opened it.
    async fn item_of(&self, user_id: &str) -> i64 {
        let store = self.app.store().clone();
        let user = user_id.to_owned();
        eventually(Duration::from_secs(20), "the review item", move || {
            let store = store.clone();
            let filter = ReviewFilter {
                user_id: Some(user.clone()),
                ..ReviewFilter::default()
            };
            async move {
                let (items, _) = store.list_review_items(&filter, 10, None).await.ok()?;
                items.first().map(|i| i.id)
            }
        })
        .await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .app
            .client
            .request(method.clone(), format!("{}/api/v1{path}", self.app.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        if let Err(e) = self
            .doc
            .check(&method, &format!("/api/v1{path}"), status, &body)
        {
            panic!("the answer does not match the OpenAPI document: {e}\n{body}");
        }
        (status, body)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }
}

fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{:?}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{:?}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{:?}",
        got.1
    );
}

async fn every_route_checks_tokens_roles_ids_and_input(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let id = s.item("m-auth", "u-auth").await;
    let viewer = s.token("vera", Role::Viewer).await;
    let moderator = s.token("mo", Role::Moderator).await;
    let revoked = s.token("old", Role::Admin).await;
    assert!(s.app.store().revoke_token("old", Utc::now()).await.unwrap());

    let reads = ["/review-items".to_owned(), format!("/review-items/{id}")];
    let writes = ["claim", "release", "resolve"].map(|w| format!("/review-items/{id}/{w}"));
    let resolve = json!({"resolution": "dismiss"});
    for path in &reads {
        assert_error(&s.get(path, None).await, 401, "unauthorized");
        assert_error(&s.get(path, Some(&revoked)).await, 401, "unauthorized");
        assert_error(
            &s.get(path, Some("cg_not_a_token")).await,
            401,
            "unauthorized",
        );
        assert_eq!(s.get(path, Some(&viewer)).await.0, 200, "{path}");
    }
    for path in &writes {
        assert_error(
            &s.post(path, None, resolve.clone()).await,
            401,
            "unauthorized",
        );
        assert_error(
            &s.post(path, Some(&revoked), resolve.clone()).await,
            401,
            "unauthorized",
        );
        assert_error(
            &s.post(path, Some(&viewer), resolve.clone()).await,
            403,
            "forbidden",
        );
    }
    // A malformed header is as good as none.
    let res = s
        .app
        .client
        .get(format!("{}/api/v1/review-items", s.app.url))
        .header("authorization", format!("Token {moderator}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    for path in [
        "/review-items/999999",
        "/review-items/999999/claim",
        "/review-items/999999/release",
    ] {
        let got = if path.ends_with("999999") {
            s.get(path, Some(&moderator)).await
        } else {
            s.post(path, Some(&moderator), json!({})).await
        };
        assert_error(&got, 404, "not_found");
    }
    for path in ["/review-items/abc/claim", "/review-items/abc/release"] {
        assert_error(
            &s.post(path, Some(&moderator), json!({})).await,
            400,
            "bad_request",
        );
    }
    assert_error(
        &s.post(
            "/review-items/999999/resolve",
            Some(&moderator),
            resolve.clone(),
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &s.get("/review-items/abc", Some(&viewer)).await,
        400,
        "bad_request",
    );
    for query in [
        "cursor=zz",
        "sort=loudest",
        "limit=0",
        "limit=201",
        "min_score=2",
        "created_after=yesterday",
        "status=maybe",
        "colour=red",
    ] {
        let got = s
            .get(&format!("/review-items?{query}"), Some(&viewer))
            .await;
        assert_error(&got, 400, "bad_request");
    }
    // A cursor from one order does not fit another.
    let ids: Vec<i64> = vec![id, s.item("m-auth2", "u-auth2").await];
    assert_eq!(ids.len(), 2);
    let page = s.get("/review-items?limit=1", Some(&viewer)).await.1;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert_error(
        &s.get(
            &format!("/review-items?sort=score&cursor={cursor}"),
            Some(&viewer),
        )
        .await,
        400,
        "bad_request",
    );
    for body in [
        json!({"resolution": "burn"}),
        json!({"note": "no resolution"}),
        json!({"resolution": "ban", "ban_timeout_minutes": 0}),
    ] {
        let got = s
            .post(
                &format!("/review-items/{id}/resolve"),
                Some(&moderator),
                body,
            )
            .await;
        assert_error(&got, 400, "bad_request");
    }
    // None of the refused requests changed the item.
    assert_eq!(
        s.app.store().get_review_item(id).await.unwrap().status,
        "open"
    );
    s.app.stop().await;
}
both_backends!(
    every_route_checks_tokens_roles_ids_and_input_on,
    every_route_checks_tokens_roles_ids_and_input
);

async fn listing_filters_and_pages_with_a_cursor(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let viewer = s.token("vera", Role::Viewer).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(s.item(&format!("m-l{i}"), &format!("u-l{i}")).await);
    }

    let (status, one) = s.get("/review-items?user=u-l1", Some(&viewer)).await;
    assert_eq!(status, 200);
    let items = one["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{one}");
    assert_eq!(items[0]["id"], ids[1]);
    assert_eq!(items[0]["user_id"], "u-l1");
    assert!(one["next_cursor"].is_null());

    let none = s
        .get(
            "/review-items?status=resolved&channel=messaging:general",
            Some(&viewer),
        )
        .await
        .1;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let future = s
        .get(
            "/review-items?created_after=2999-01-01T00:00:00Z",
            Some(&viewer),
        )
        .await
        .1;
    assert_eq!(future["items"].as_array().unwrap().len(), 0);

    let mut seen = Vec::new();
    let mut path = "/review-items?sort=oldest&limit=2&status=open".to_owned();
    loop {
        let (status, page) = s.get(&path, Some(&viewer)).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/review-items?sort=oldest&limit=2&status=open&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "oldest first, each once");
    s.app.stop().await;
}
both_backends!(
    listing_filters_and_pages_with_a_cursor_on,
    listing_filters_and_pages_with_a_cursor
);

async fn one_of_two_racing_claims_wins_and_claims_are_audited(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let id = s.item("m-race", "u-race").await;
    let ann = s.token("ann", Role::Moderator).await;
    let bob = s.token("bob", Role::Admin).await;
    let path = format!("/review-items/{id}/claim");
    let (a, b) = tokio::join!(
        s.post(&path, Some(&ann), json!({})),
        s.post(&path, Some(&bob), json!({}))
    );
    let (winner, loser, loser_token) = match (a.0.as_u16(), b.0.as_u16()) {
        (200, 409) => ("ann", b, &bob),
        (409, 200) => ("bob", a, &ann),
        other => panic!("expected one 200 and one 409, got {other:?}"),
    };
    assert_error(&loser, 409, "conflict");
    assert!(
        loser.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains(winner),
        "{:?}",
        loser.1
    );
    // The loser can neither release nor resolve while the claim holds.
    assert_error(
        &s.post(
            &format!("/review-items/{id}/release"),
            Some(loser_token),
            json!({}),
        )
        .await,
        409,
        "conflict",
    );
    assert_error(
        &s.post(
            &format!("/review-items/{id}/resolve"),
            Some(loser_token),
            json!({"resolution": "dismiss"}),
        )
        .await,
        409,
        "conflict",
    );
    let item = s.app.store().get_review_item(id).await.unwrap();
    assert_eq!(item.claimed_by.as_deref(), Some(winner));

    let winner_token = if winner == "ann" { &ann } else { &bob };
    let (status, released) = s
        .post(
            &format!("/review-items/{id}/release"),
            Some(winner_token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(released["item"]["status"], "open");
    assert!(released["item"]["claimed_by"].is_null());

    let audit = s.app.store().list_audit(50, None).await.unwrap();
    let claims: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "review_item.claim")
        .collect();
    assert_eq!(claims.len(), 1, "only the winning claim: {audit:?}");
    assert_eq!(claims[0].actor, winner);
    assert_eq!(claims[0].target, format!("review_item:{id}"));
    let after: Value = serde_json::from_str(claims[0].after.as_deref().unwrap()).unwrap();
    assert_eq!(after["claimed_by"], winner);
    assert!(
        audit
            .iter()
            .any(|a| a.action == "review_item.release" && a.actor == winner)
    );
    s.app.stop().await;
}
both_backends!(
    one_of_two_racing_claims_wins_and_claims_are_audited_on,
    one_of_two_racing_claims_wins_and_claims_are_audited
);

async fn a_repeated_remove_deletes_once(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let id = s.item("m-rm", "u-rm").await;
    let mo = s.token("mo", Role::Moderator).await;
    let viewer = s.token("vera", Role::Viewer).await;

    let (status, shown) = s.get(&format!("/review-items/{id}"), Some(&viewer)).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["item"]["id"], id);
    assert_eq!(shown["decision"]["decision"], "flag", "{shown}");
    let history = shown["history"].as_array().unwrap();
    assert!(!history.is_empty());
    assert!(history.iter().all(|d| d["user_id"] == "u-rm"), "{shown}");

    let path = format!("/review-items/{id}/resolve");
    let body = json!({"resolution": "remove", "note": "slur", "hard": true});
    let (first, second) = (
        s.post(&path, Some(&mo), body.clone()).await,
        s.post(&path, Some(&mo), body.clone()).await,
    );
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["already_resolved"], false);
    assert_eq!(first.1["outcome"]["status"], "ok", "{}", first.1);
    assert_eq!(first.1["item"]["resolution"], "remove");
    assert_eq!(first.1["item"]["note"], "slur");
    assert_eq!(second.0, 200, "{}", second.1);
    assert_eq!(second.1["already_resolved"], true);
    assert_eq!(second.1["item"], first.1["item"]);

    let deletes: Vec<_> = s
        .stream
        .calls_to("/messages/m-rm")
        .into_iter()
        .filter(|c| c.method == Method::DELETE)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].query_param("hard"), Some("true"));

    let resolves: Vec<_> = s
        .app
        .store()
        .list_audit(50, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "review_item.resolve")
        .collect();
    assert_eq!(resolves.len(), 1, "{resolves:?}");
    assert_eq!(resolves[0].actor, "mo");
    let after: Value = serde_json::from_str(resolves[0].after.as_deref().unwrap()).unwrap();
    assert_eq!(after["outcome"]["status"], "ok");
    assert_eq!(after["item"]["status"], "resolved");
    let before: Value = serde_json::from_str(resolves[0].before.as_deref().unwrap()).unwrap();
    assert_eq!(before["status"], "open");
    s.app.stop().await;
}
both_backends!(repeated_remove, a_repeated_remove_deletes_once);

async fn approve_unflags_ban_bans_and_dismiss_calls_nothing(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let mo = s.token("mo", Role::Moderator).await;
    let ok = s.item("m-ok", "u-ok").await;
    let bad = s.item("m-ban", "u-ban").await;
    let meh = s.item("m-meh", "u-meh").await;
    s.stream.clear_calls();

    let (status, approved) = s
        .post(
            &format!("/review-items/{ok}/resolve"),
            Some(&mo),
            json!({"resolution": "approve"}),
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["outcome"]["calls"], json!(["unflag_message"]));
    let unflags = s.stream.calls_to("unflag");
    assert_eq!(unflags.len(), 1);
    assert_eq!(
        unflags[0].body.as_ref().unwrap()["target_message_id"],
        "m-ok"
    );

    let (status, banned) = s
        .post(
            &format!("/review-items/{bad}/resolve"),
            Some(&mo),
            json!({"resolution": "ban", "ban_timeout_minutes": 60, "reason": "abuse"}),
        )
        .await;
    assert_eq!(status, 200, "{banned}");
    let ban = s.stream.ban("u-ban", None).expect("a ban on the stand-in");
    assert_eq!(ban.reason.as_deref(), Some("abuse"));
    assert_eq!(ban.timeout_minutes, Some(60));
    assert!(s.stream.calls_to("/messages/m-ban").is_empty());
    let (_, user) = s.get("/users/u-ban", Some(&mo)).await;
    assert_eq!(user["banned"], true, "recorded at once: {user}");
    assert_eq!(user["bans"][0]["reason"], "abuse", "{user}");
    assert!(user["bans"][0]["until"].is_string(), "{user}");

    let before = s.stream.calls().len();
    let (status, dismissed) = s
        .post(
            &format!("/review-items/{meh}/resolve"),
            Some(&mo),
            json!({"resolution": "dismiss", "note": "fine"}),
        )
        .await;
    assert_eq!(status, 200, "{dismissed}");
    assert_eq!(dismissed["outcome"]["calls"], json!([]));
    assert_eq!(s.stream.calls().len(), before);
    s.app.stop().await;
}
both_backends!(
    approve_unflags_ban_bans_and_dismiss_calls_nothing_on,
    approve_unflags_ban_bans_and_dismiss_calls_nothing
);

async fn dry_run_resolves_without_calling_stream(db: &TestDb, _: Backend) {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let base = stream.base_url();
    let env: Vec<(String, String)> = [
        ("CHATGUARD_DATABASE_URL", db.url.as_str()),
        ("CHATGUARD_LISTEN", "127.0.0.1:0"),
        ("STREAM_BASE_URL", base.as_str()),
        ("CHATGUARD_DRY_RUN", "true"),
        ("CHATGUARD_SERVER__STALE_EVENT_SECS", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([(
        "CHATGUARD_RULES".to_owned(),
        rules_dir().display().to_string(),
    )])
    .collect();
    let app = TestApp::spawn(chatguard::config::Config::load_from(None, env).unwrap()).await;
    assert!(app.services.config.dry_run());
    let (secret, _) = app.services.dev_secret().await.unwrap();
    let body = message_new("m-dry", "u-dry", "what an idiot");
    let r = app
        .post_raw(
            &body,
            &body,
            Some(chatguard::config::DEV_API_KEY),
            Some(&secret),
            Some("w-dry"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let s = Stack {
        app,
        stream,
        doc: ApiDoc::generated(),
    };
    let id = s.item_of("u-dry").await;
    let mo = s.token("mo", Role::Moderator).await;
    let (status, got) = s
        .post(
            &format!("/review-items/{id}/resolve"),
            Some(&mo),
            json!({"resolution": "remove"}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["outcome"]["status"], "skipped");
    assert_eq!(got["item"]["status"], "resolved");
    assert!(s.stream.calls().is_empty(), "{:?}", s.stream.calls());
    s.app.stop().await;
}
both_backends!(
    dry_run_resolves_without_calling_stream_on,
    dry_run_resolves_without_calling_stream
);

async fn approving_a_blocked_message_clears_its_strike(db: &TestDb, _: Backend) {
    let s = stack_with(db, &[("CHATGUARD_REVIEW__INCLUDE_BLOCKS", "true")]).await;
    let mo = s.token("mo", Role::Moderator).await;
    let r = s
        .app
        .post_webhook(
            &message_new("m-strike", "u-strike", "kys you worthless idiot"),
            "w-strike",
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = s.item_of("u-strike").await;
    let strikes = || async {
        s.app
            .store()
            .user_standing(API_KEY, "u-strike", Utc::now())
            .await
            .unwrap()
            .active_strikes
    };
    assert_eq!(strikes().await, 1, "the block is a strike");
    let (status, body) = s
        .post(
            &format!("/review-items/{id}/resolve"),
            Some(&mo),
            json!({"resolution": "approve"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["strike_cleared"], true, "{body}");
    // The block deleted it, so there is nothing to unflag: Stream's 404 counts as done.
    assert_eq!(
        body["outcome"]["calls"],
        json!(["unflag_message"]),
        "{body}"
    );
    assert_eq!(strikes().await, 0);
    // The item page shows the decision and the user's history.
    let (status, page) = s.get(&format!("/review-items/{id}"), Some(&mo)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["decision"]["message_id"], "m-strike", "{page}");
    assert_eq!(page["history"].as_array().map(Vec::len), Some(1), "{page}");
    let strikes = page["standing"]["strikes"].as_array().unwrap();
    assert_eq!(strikes.len(), 1, "{page}");
    assert!(strikes[0]["cleared_at"].is_string(), "cleared: {page}");
    assert_eq!(page["standing"]["active_strikes"], 0);
    s.app.stop().await;
}
both_backends!(
    approving_a_blocked_message_clears_its_strike_on,
    approving_a_blocked_message_clears_its_strike
);

impl Stack {
    async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    /// The export body's status, content type and lines.
    async fn export(&self, query: &str, token: &str) -> (StatusCode, Option<String>, Vec<Value>) {
        let res = self
            .app
            .client
            .get(format!("{}/api/v1/export/labels?{query}", self.app.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = res.text().await.unwrap();
        let lines: Vec<Value> = if status == 200 {
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        } else {
            Vec::new()
        };
        for line in &lines {
            self.doc.check_schema("LabelLine", line).unwrap();
        }
        (status, ctype, lines)
    }
}

async fn new_routes_check_tokens_roles_ids_and_input(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let viewer = s.token("vera", Role::Viewer).await;
    let mo = s.token("mo", Role::Moderator).await;
    let admin = s.token("ada", Role::Admin).await;

    let bulk = json!({"ids": [1], "resolution": "dismiss"});
    let gets = [
        "/users/u-x",
        "/decisions",
        "/audit-log",
        "/stats",
        "/export/labels?since=2020-01-01T00:00:00Z",
        "/tokens",
    ];
    for path in gets {
        assert_error(&s.get(path, None).await, 401, "unauthorized");
    }
    for path in ["/review-items/bulk-resolve", "/users/u-x/unban", "/tokens"] {
        assert_error(&s.post(path, None, bulk.clone()).await, 401, "unauthorized");
    }
    assert_error(&s.delete("/tokens/vera", None).await, 401, "unauthorized");

    for path in ["/review-items/bulk-resolve", "/users/u-x/unban"] {
        assert_error(
            &s.post(path, Some(&viewer), bulk.clone()).await,
            403,
            "forbidden",
        );
    }
    for path in ["/audit-log", "/tokens"] {
        assert_error(&s.get(path, Some(&mo)).await, 403, "forbidden");
    }
    assert_error(
        &s.post("/tokens", Some(&mo), json!({"name": "x", "role": "viewer"}))
            .await,
        403,
        "forbidden",
    );
    assert_error(&s.delete("/tokens/vera", Some(&mo)).await, 403, "forbidden");
    for path in ["/decisions", "/stats"] {
        assert_eq!(s.get(path, Some(&viewer)).await.0, 200, "{path}");
    }

    assert_error(
        &s.get("/users/nobody", Some(&viewer)).await,
        404,
        "not_found",
    );
    assert_error(
        &s.delete("/tokens/nobody", Some(&admin)).await,
        404,
        "not_found",
    );

    let too_many: Vec<i64> = (1..=101).collect();
    assert_error(
        &s.post(
            "/review-items/bulk-resolve",
            Some(&mo),
            json!({"ids": too_many, "resolution": "dismiss"}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &s.post(
            "/review-items/bulk-resolve",
            Some(&mo),
            json!({"ids": [1], "resolution": "shrug"}),
        )
        .await,
        400,
        "bad_request",
    );
    for query in ["since=yesterday", "", "since=2020-01-01"] {
        let (status, _, _) = s.export(query, &viewer).await;
        assert_eq!(status, 400, "{query}");
    }
    for path in [
        "/decisions?limit=0",
        "/decisions?limit=201",
        "/decisions?colour=red",
    ] {
        assert_error(&s.get(path, Some(&viewer)).await, 400, "bad_request");
    }
    for path in ["/audit-log?before_id=x", "/audit-log?limit=500"] {
        assert_error(&s.get(path, Some(&admin)).await, 400, "bad_request");
    }
    for body in [
        json!({"name": "bob", "role": "root"}),
        json!({"name": " ", "role": "viewer"}),
        json!({"name": "bob"}),
    ] {
        assert_error(
            &s.post("/tokens", Some(&admin), body.clone()).await,
            400,
            "bad_request",
        );
    }
    assert_error(
        &s.post(
            "/tokens",
            Some(&admin),
            json!({"name": "vera", "role": "viewer"}),
        )
        .await,
        409,
        "conflict",
    );
    s.app.stop().await;
}
both_backends!(
    new_routes_check_tokens_roles_ids_and_input_on,
    new_routes_check_tokens_roles_ids_and_input
);

async fn bulk_resolve_then_stats_export_and_decisions(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let mo = s.token("mo", Role::Moderator).await;
    let other = s.token("other", Role::Moderator).await;
    let viewer = s.token("vera", Role::Viewer).await;
    let a = s.item("m-b1", "u-b1").await;
    let b = s.item("m-b2", "u-b2").await;
    let held = s.item("m-b3", "u-b3").await;
    let (status, _) = s
        .post(
            &format!("/review-items/{held}/claim"),
            Some(&other),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);

    let (status, _, lines) = s.export("since=2000-01-01T00:00:00Z", &viewer).await;
    assert_eq!(status, 200);
    assert!(lines.is_empty(), "{lines:?}");

    let (status, got) = s
        .post(
            "/review-items/bulk-resolve",
            Some(&mo),
            json!({"ids": [a, 999_999, b, held], "resolution": "remove", "note": "bulk"}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    let results = got["results"].as_array().unwrap();
    let statuses: Vec<_> = results.iter().map(|r| r["status"].clone()).collect();
    assert_eq!(statuses, [json!(200), json!(404), json!(200), json!(409)]);
    let ids: Vec<_> = results.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!(a), json!(999_999), json!(b), json!(held)]);
    assert_eq!(results[0]["result"]["item"]["resolution"], "remove");
    assert_eq!(results[0]["result"]["item"]["note"], "bulk");
    assert_eq!(results[1]["error"]["code"], "not_found");
    assert_eq!(results[3]["error"]["code"], "conflict");
    assert!(results[3].get("result").is_none());
    assert_eq!(s.stream.calls_to("/messages/m-b1").len(), 1);
    assert!(s.stream.calls_to("/messages/m-b3").is_empty());

    let (status, stats) = s.get("/stats", Some(&viewer)).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["resolved"], 2, "{stats}");
    let open: i64 = stats["open_by_category"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(open, 1, "{stats}");
    let by_cat = stats["by_category"].as_object().unwrap();
    assert_eq!(
        by_cat
            .values()
            .map(|c| c["upheld"].as_i64().unwrap())
            .sum::<i64>(),
        2
    );
    assert!(stats["median_resolution_secs"].as_f64().unwrap() >= 0.0);

    let (status, ctype, lines) = s.export("since=2000-01-01T00:00:00Z", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(ctype.as_deref(), Some("application/x-ndjson"));
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["text"], "what an idiot");
        assert_eq!(line["verdict"], "violation");
        assert!(line["category"].as_str().is_some_and(|c| !c.is_empty()));
    }
    let later = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, _, none) = s
        .export(&format!("since={}", later.replace('+', "%2B")), &viewer)
        .await;
    assert!(none.is_empty(), "{none:?}");

    let (status, got) = s
        .get("/decisions?user=u-b2&decision=flag", Some(&viewer))
        .await;
    assert_eq!(status, 200, "{got}");
    let list = got["decisions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{got}");
    assert_eq!(list[0]["user_id"], "u-b2");
    let (_, got) = s.get("/decisions?decision=ban", Some(&viewer)).await;
    assert_eq!(got["decisions"].as_array().map(Vec::len), Some(0), "{got}");
    let (_, got) = s.get("/decisions?limit=2", Some(&viewer)).await;
    assert_eq!(got["decisions"].as_array().map(Vec::len), Some(2), "{got}");
    s.app.stop().await;
}
both_backends!(
    bulk_resolve_then_stats_export_and_decisions_on,
    bulk_resolve_then_stats_export_and_decisions
);

async fn unban_calls_stream_once_and_lifts_the_ban(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let mo = s.token("mo", Role::Moderator).await;
    let admin = s.token("ada", Role::Admin).await;
    s.item("m-ub", "u-ub").await;
    s.app
        .store()
        .record_ban_event(API_KEY, "u-ub", true, None, Some("spam"), Utc::now())
        .await
        .unwrap();
    let (status, page) = s.get("/users/u-ub", Some(&mo)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["banned"], true, "{page}");
    assert_eq!(
        page["decisions"].as_array().map(Vec::len),
        Some(1),
        "{page}"
    );
    s.stream.clear_calls();

    let (status, got) = s.post("/users/u-ub/unban", Some(&mo), json!({})).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["outcome"]["status"], "ok", "{got}");
    assert_eq!(got["banned"], false, "{got}");
    let unbans: Vec<_> = s
        .stream
        .calls()
        .into_iter()
        .filter(|c| c.method == Method::DELETE)
        .collect();
    assert_eq!(unbans.len(), 1, "{unbans:?}");
    assert_eq!(unbans[0].query_param("target_user_id"), Some("u-ub"));

    let (_, page) = s.get("/users/u-ub", Some(&mo)).await;
    assert_eq!(page["banned"], false, "{page}");
    let bans = page["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "{page}");
    assert_eq!(bans[0]["source"], "stream");
    assert_eq!(bans[0]["reason"], "spam");
    assert!(bans[0]["lifted_at"].is_string(), "lifted: {page}");
    let (status, log) = s.get("/audit-log?limit=1", Some(&admin)).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["entries"][0]["action"], "user.unban", "{log}");
    assert_eq!(log["entries"][0]["actor"], "mo");
    assert_eq!(log["entries"][0]["target"], "user:u-ub");
    let next = log["next_before_id"].as_i64().unwrap();
    let (_, older) = s
        .get(&format!("/audit-log?before_id={next}"), Some(&admin))
        .await;
    assert!(
        older["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["id"].as_i64().unwrap() < next),
        "{older}"
    );
    s.app.stop().await;
}
both_backends!(
    unban_calls_stream_once_and_lifts_the_ban_on,
    unban_calls_stream_once_and_lifts_the_ban
);

async fn a_created_token_works_until_revoked(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let admin = s.token("ada", Role::Admin).await;
    let (status, made) = s
        .post(
            "/tokens",
            Some(&admin),
            json!({"name": "dash", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["token"]["role"], "viewer");
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/stats", Some(&secret)).await.0, 200);
    assert_eq!(s.get("/tokens", Some(&secret)).await.0, 403);

    let (status, list) = s.get("/tokens", Some(&admin)).await;
    assert_eq!(status, 200);
    let names: Vec<_> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("ada"), json!("dash")]);
    assert!(!list.to_string().contains(&secret));
    assert!(list["tokens"][1].get("token_hash").is_none(), "{list}");

    let (status, got) = s.delete("/tokens/dash", Some(&admin)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["revoked"], true);
    assert_error(&s.get("/stats", Some(&secret)).await, 401, "unauthorized");
    let (status, again) = s.delete("/tokens/dash", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(again["revoked"], false);

    let (_, log) = s.get("/audit-log", Some(&admin)).await;
    let actions: Vec<_> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].clone(), e["actor"].clone()))
        .collect();
    assert_eq!(
        actions,
        [
            (json!("token.revoke"), json!("ada")),
            (json!("token.create"), json!("ada"))
        ]
    );
    s.app.stop().await;
}
both_backends!(
    a_created_token_works_until_revoked_on,
    a_created_token_works_until_revoked
);

async fn claim_ttl_and_bulk_limit_come_from_the_configuration(db: &TestDb, _: Backend) {
    let s = stack_with(
        db,
        &[
            ("CHATGUARD_REVIEW__CLAIM_TTL_SECS", "30"),
            ("CHATGUARD_REVIEW__BULK_MAX", "2"),
        ],
    )
    .await;
    let mo = s.token("mo", Role::Moderator).await;
    let a = s.item("m-ttl1", "u-ttl1").await;
    let b = s.item("m-ttl2", "u-ttl2").await;
    let c = s.item("m-ttl3", "u-ttl3").await;

    let before = Utc::now();
    let (status, got) = s
        .post(&format!("/review-items/{a}/claim"), Some(&mo), json!({}))
        .await;
    assert_eq!(status, 200, "{got}");
    let until: chrono::DateTime<Utc> = got["item"]["claim_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ttl = (until - before).num_milliseconds();
    assert!((29_000..=31_000).contains(&ttl), "claim holds {ttl} ms");

    let three = s
        .post(
            "/review-items/bulk-resolve",
            Some(&mo),
            json!({"ids": [a, b, c], "resolution": "dismiss"}),
        )
        .await;
    assert_error(&three, 400, "bad_request");
    assert!(
        three.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("review.bulk_max"),
        "{}",
        three.1
    );
    let (status, two) = s
        .post(
            "/review-items/bulk-resolve",
            Some(&mo),
            json!({"ids": [b, c], "resolution": "dismiss"}),
        )
        .await;
    assert_eq!(status, 200);
    let statuses: Vec<_> = two["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64())
        .collect();
    assert_eq!(statuses, [Some(200), Some(200)]);
    s.app.stop().await;
}
both_backends!(
    review_settings,
    claim_ttl_and_bulk_limit_come_from_the_configuration
);

async fn the_decision_log_filters_and_pages_in_the_store(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let viewer = s.token("vera", Role::Viewer).await;
    for (m, u, text) in [
        ("m-d1", "u-d1", "hello friends, good game"),
        ("m-d2", "u-d2", "what an idiot"),
        ("m-d3", "u-d3", "kys you worthless idiot"),
        ("m-d4", "u-d4", "what an idiot"),
    ] {
        let r = s
            .app
            .post_webhook(&message_new(m, u, text), &format!("w-{m}"))
            .await;
        assert_eq!(r.status(), 200);
    }
    let store = s.app.store().clone();
    eventually(Duration::from_secs(20), "four decisions", move || {
        let store = store.clone();
        async move { (store.recent_decisions(10).await.ok()?.len() == 4).then_some(()) }
    })
    .await;

    let page = |query: &str| {
        let path = format!("/decisions?{query}");
        let viewer = viewer.clone();
        let s = &s;
        async move {
            let (status, body) = s.get(&path, Some(&viewer)).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    // Sorted: the worker may decide the four in any order.
    let users = |body: &Value| -> Vec<String> {
        let mut users: Vec<String> = body["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["user_id"].as_str().unwrap().to_owned())
            .collect();
        users.sort();
        users
    };
    assert_eq!(users(&page("decision=flag").await), ["u-d2", "u-d4"]);
    assert_eq!(users(&page("decision=block&user=u-d3").await), ["u-d3"]);
    assert_eq!(users(&page("decision=allow").await), ["u-d1"]);
    assert!(users(&page("decision=flag&user=u-d3").await).is_empty());
    assert_eq!(users(&page("channel=messaging:general").await).len(), 4);
    assert!(users(&page("channel=messaging:other").await).is_empty());
    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let future = future.replace('+', "%2B");
    assert!(users(&page(&format!("received_after={future}")).await).is_empty());
    assert_eq!(
        users(&page(&format!("received_before={future}")).await).len(),
        4
    );

    // One at a time, newest first, each once.
    let mut ids = Vec::new();
    let mut query = "limit=1".to_owned();
    loop {
        let body = page(&query).await;
        ids.extend(
            body["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_i64().unwrap()),
        );
        match body["next_before_id"].as_i64() {
            Some(next) => query = format!("limit=1&before_id={next}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    for bad in ["decision=maybe", "before_id=x", "received_after=today"] {
        assert_error(
            &s.get(&format!("/decisions?{bad}"), Some(&viewer)).await,
            400,
            "bad_request",
        );
    }
    s.app.stop().await;
}
both_backends!(
    decision_log,
    the_decision_log_filters_and_pages_in_the_store
);

async fn a_resolution_stream_refuses_can_be_tried_again(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let id = s.item("m-retry", "u-retry").await;
    let mo = s.token("mo", Role::Moderator).await;
    let (status, _) = s
        .post(&format!("/review-items/{id}/claim"), Some(&mo), json!({}))
        .await;
    assert_eq!(status, 200);
    // A refusal for good (400); a 5xx would be retried until Stream takes it.
    s.stream.push_scripted(
        Op::DeleteMessage,
        Scripted::stream_error(400, 4, "bad request"),
        1,
    );
    let path = format!("/review-items/{id}/resolve");
    let body = json!({"resolution": "remove", "note": "spam"});
    let failed = s.post(&path, Some(&mo), body.clone()).await;
    assert_error(&failed, 502, "stream_failed");
    // As it was: still claimed by the moderator, not resolved.
    let item = s.app.store().get_review_item(id).await.unwrap();
    assert_eq!(item.status, "claimed");
    assert_eq!(item.claimed_by.as_deref(), Some("mo"));
    assert_eq!(item.resolution, None);
    assert_eq!(item.resolved_at, None);
    let audit = s.app.store().list_audit(10, None).await.unwrap();
    assert_eq!(audit[0].action, "review_item.resolve_failed", "{audit:?}");
    let after: Value = serde_json::from_str(audit[0].after.as_deref().unwrap()).unwrap();
    assert_eq!(after["reopened"], true);
    assert_eq!(after["outcome"]["status"], "failed");

    // Stream is back: the same request now resolves and deletes.
    let (status, done) = s.post(&path, Some(&mo), body).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["already_resolved"], false);
    assert_eq!(done["outcome"]["status"], "ok");
    let deletes: Vec<_> = s
        .stream
        .calls_to("/messages/m-retry")
        .into_iter()
        .filter(|c| c.method == Method::DELETE)
        .collect();
    assert_eq!(deletes.len(), 2, "one refused, one done: {deletes:?}");
    s.app.stop().await;
}
both_backends!(
    stream_refusal,
    a_resolution_stream_refuses_can_be_tried_again
);

async fn me_and_policy_answer_any_role(db: &TestDb, _: Backend) {
    let s = stack(db).await;
    let viewer = s.token("vi", Role::Viewer).await;
    let (status, me) = s.get("/me", Some(&viewer)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me, json!({"token_name": "vi", "role": "viewer"}));
    let (status, policy) = s.get("/policy", Some(&viewer)).await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(
        policy["thresholds"]["toxicity"],
        json!({"flag": 0.6, "block": 0.85})
    );
    // The livestream override (rules/policy.toml) is stricter on spam.
    let (_, live) = s
        .get("/policy?channel_type=livestream", Some(&viewer))
        .await;
    assert!(
        live["thresholds"]["spam"]["flag"].as_f64() < policy["thresholds"]["spam"]["flag"].as_f64(),
        "{live} {policy}"
    );
    assert_error(&s.get("/me", None).await, 401, "unauthorized");
    assert_error(
        &s.get("/policy?nope=1", Some(&viewer)).await,
        400,
        "bad_request",
    );
    s.app.stop().await;
}
both_backends!(me_and_policy, me_and_policy_answer_any_role);

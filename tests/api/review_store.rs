//! The review-queue storage: API tokens, one open item per message, filters, keyset pagination
//! under concurrent inserts, exclusive claims, idempotent resolution, stats, export and audit.

use std::collections::{HashMap, HashSet};

use chatguard::domain::Scores;
use chatguard::store::{
    ClaimOutcome, Cursor, NewDecision, NewEvent, NewReviewItem, Outcome, ReleaseOutcome,
    Resolution, ResolveOutcome, ReviewFilter, ReviewItemRow, ReviewSort, ReviewStatus, Role, Store,
    StoreError, hash_token,
};
use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::both_backends;
use crate::helpers::*;

async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&db.url, 5).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000, 0).unwrap()
}

fn secs(n: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(n)
}

/// `n` stored decisions (events first, as the worker does); their ids in order.
async fn decisions(store: &Store, n: usize) -> Vec<i64> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let events: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent {
            webhook_id: format!("{tag}-{i}"),
            content_key: None,
            api_key: API_KEY.into(),
            event_type: "message.new".into(),
            status: "received",
            message_id: Some(format!("m-{tag}-{i}")),
            cid: Some("messaging:general".into()),
            user_id: Some("u".into()),
            payload: "{}".into(),
            received_at: t0(),
        })
        .collect();
    let inserted = store.insert_events(&events).await.unwrap();
    let outcomes: Vec<Outcome> = inserted
        .iter()
        .zip(&events)
        .map(|(ins, e)| {
            let chatguard::store::Inserted::New(event_id) = ins else {
                panic!("duplicate event {ins:?}");
            };
            Outcome::Decided(Box::new(NewDecision {
                event_id: *event_id,
                app: API_KEY.into(),
                webhook_id: e.webhook_id.clone(),
                event_type: e.event_type.clone(),
                message_id: e.message_id.clone(),
                cid: e.cid.clone(),
                user_id: e.user_id.clone(),
                text: "some text".into(),
                scores: Scores::default(),
                matched_rules: "[]".into(),
                reasons: "[]".into(),
                decision: "flag",
                policy_version: "test".into(),
                action: "{}".into(),
                action_status: "dry_run",
                dry_run: true,
                worker: "test".into(),
                received_at: t0(),
                fingerprint: None,
                shadow: false,
                would_do: None,
                strike_expires_at: None,
                outbox: None,
                review: None,
            }))
        })
        .collect();
    store
        .record_outcomes(&outcomes)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.unwrap())
        .collect()
}

fn scores(toxicity: f64, spam: f64, explicit: f64) -> Scores {
    Scores {
        toxicity,
        spam,
        explicit,
    }
}

fn item(message_id: &str, decision_id: i64, s: Scores, at: DateTime<Utc>) -> NewReviewItem {
    NewReviewItem {
        app: API_KEY.into(),
        message_id: message_id.into(),
        decision_id,
        decision: "flag".into(),
        scores: s,
        text: format!("text of {message_id}"),
        cid: Some("messaging:general".into()),
        user_id: Some("u1".into()),
        reasons: r#"["a reason"]"#.into(),
        rule_ids: vec![],
        action_status: "dry_run".into(),
        at,
    }
}

async fn tokens_are_created_looked_up_by_hash_and_revoked(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let (alice, secret) = store
        .create_token("alice", Role::Moderator, secs(0))
        .await
        .unwrap()
        .unwrap();
    assert!(secret.starts_with("cg_") && secret.len() > 40, "{secret}");
    assert_eq!(alice.token_hash, hash_token(&secret));
    assert_ne!(alice.token_hash, secret);
    assert_eq!(alice.role(), Some(Role::Moderator));
    assert!(
        store
            .create_token("alice", Role::Admin, secs(1))
            .await
            .unwrap()
            .is_none(),
        "names are unique"
    );
    let (_, bob_secret) = store
        .create_token("bob", Role::Viewer, secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(bob_secret, secret);

    let found = store
        .token_by_hash(&hash_token(&secret), secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, found.last_used_at), (alice.id, Some(secs(10))));
    // Within the minute the stored time stays; after it, it moves.
    store
        .token_by_hash(&hash_token(&secret), secs(20))
        .await
        .unwrap();
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(secs(10)));
    store
        .token_by_hash(&hash_token(&secret), secs(100))
        .await
        .unwrap();
    assert_eq!(
        store.list_tokens().await.unwrap()[0].last_used_at,
        Some(secs(100))
    );
    assert!(
        store
            .token_by_hash(&hash_token("cg_wrong"), secs(10))
            .await
            .unwrap()
            .is_none()
    );
    let json = serde_json::to_value(&listed[0]).unwrap();
    assert!(json.get("token_hash").is_none(), "{json}");

    let names: Vec<_> = listed.iter().map(|t| (t.name.as_str(), t.role())).collect();
    assert_eq!(
        names,
        [
            ("alice", Some(Role::Moderator)),
            ("bob", Some(Role::Viewer))
        ]
    );
    assert!(store.revoke_token("alice", secs(200)).await.unwrap());
    assert!(!store.revoke_token("alice", secs(300)).await.unwrap());
    assert!(matches!(
        store.revoke_token("nobody", secs(300)).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .token_by_hash(&hash_token(&secret), secs(400))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .token_by_hash(&hash_token(&bob_secret), secs(400))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.list_tokens().await.unwrap()[0].revoked_at,
        Some(secs(200))
    );
    store.close().await;
}
both_backends!(tokens, tokens_are_created_looked_up_by_hash_and_revoked);

async fn one_open_item_per_message_collects_its_flags(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let d = decisions(&store, 4).await;
    let id = store
        .open_review_item(&item("m1", d[0], scores(0.7, 0.1, 0.0), secs(0)))
        .await
        .unwrap();
    let mut second = item("m1", d[2], scores(0.2, 0.9, 0.0), secs(5));
    second.rule_ids = vec!["spam.link".into()];
    assert_eq!(store.open_review_item(&second).await.unwrap(), id);
    // An older decision arriving late counts as a flag but does not replace the newer one.
    assert_eq!(
        store
            .open_review_item(&item("m1", d[1], scores(0.1, 0.1, 0.1), secs(6)))
            .await
            .unwrap(),
        id
    );
    let row = store.get_review_item(id).await.unwrap();
    assert_eq!(row.flags, 3);
    assert_eq!((row.first_decision_id, row.decision_id), (d[0], d[2]));
    assert_eq!((row.category.as_str(), row.score), ("spam", 0.9));
    assert_eq!(row.rule_id_list(), ["spam.link"]);
    assert_eq!((row.created_at, row.updated_at), (secs(0), secs(6)));
    assert_eq!(row.status, "open");
    let json = serde_json::to_value(row.view()).unwrap();
    assert_eq!(json["reasons"][0], "a reason");
    assert_eq!(json["excerpt"], "text of m1");

    let other = store
        .open_review_item(&item("m2", d[0], scores(0.5, 0.0, 0.0), secs(0)))
        .await
        .unwrap();
    assert_ne!(other, id);

    // Once resolved, a new flag opens a new item.
    let resolved = store
        .resolve_review_item(&req(id, "ann", Resolution::Remove, None, secs(10)))
        .await
        .unwrap();
    assert!(matches!(resolved, ResolveOutcome::Resolved { .. }));
    let reopened = store
        .open_review_item(&item("m1", d[3], scores(0.8, 0.0, 0.0), secs(20)))
        .await
        .unwrap();
    assert_ne!(reopened, id);
    assert_eq!(store.get_review_item(reopened).await.unwrap().flags, 1);
    assert_eq!(store.get_review_item(id).await.unwrap().flags, 3);
    store.close().await;
}
both_backends!(one_open_item, one_open_item_per_message_collects_its_flags);

async fn concurrent_flags_on_one_message_make_one_item(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let d = decisions(&store, 20).await;
    let tasks: Vec<_> = d
        .iter()
        .map(|&decision_id| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .open_review_item(&item("m-hot", decision_id, scores(0.6, 0.0, 0.0), secs(0)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().unwrap();
    let row = store.get_review_item(id).await.unwrap();
    assert_eq!(row.flags, 20);
    assert_eq!(row.decision_id, *d.iter().max().unwrap());
    let (all, _) = store
        .list_review_items(&ReviewFilter::default(), 100, None)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    store.close().await;
}
both_backends!(
    concurrent_open,
    concurrent_flags_on_one_message_make_one_item
);

fn message_ids(rows: &[ReviewItemRow]) -> Vec<&str> {
    rows.iter().map(|r| r.message_id.as_str()).collect()
}

async fn each_filter_and_sort_selects_the_right_items(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let d = decisions(&store, 1).await[0];
    let specs = [
        ("a", "messaging:c1", "u1", "flag", scores(0.9, 0.1, 0.0), 0),
        (
            "b",
            "messaging:c2",
            "u2",
            "block",
            scores(0.1, 0.6, 0.0),
            10,
        ),
        ("c", "messaging:c1", "u2", "ban", scores(0.2, 0.0, 0.95), 20),
        ("d", "messaging:c2", "u1", "flag", scores(0.4, 0.0, 0.1), 30),
    ];
    let mut ids = HashMap::new();
    for (m, cid, user, decision, s, at) in specs {
        let mut it = item(m, d, s, secs(at));
        it.cid = Some(cid.into());
        it.user_id = Some(user.into());
        it.decision = decision.into();
        ids.insert(m, store.open_review_item(&it).await.unwrap());
    }
    store
        .resolve_review_item(&req(ids["c"], "ann", Resolution::Ban, None, secs(35)))
        .await
        .unwrap();
    store
        .claim_review_item(ids["d"], "ann", secs(30), Duration::seconds(60))
        .await
        .unwrap();

    let list = async |f: ReviewFilter| {
        let (rows, next) = store.list_review_items(&f, 100, None).await.unwrap();
        assert!(next.is_none());
        message_ids(&rows)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let base = ReviewFilter {
        sort: ReviewSort::Oldest,
        ..ReviewFilter::default()
    };
    let with = |f: &dyn Fn(&mut ReviewFilter)| {
        let mut filter = base.clone();
        f(&mut filter);
        filter
    };
    let cases: Vec<(ReviewFilter, &[&str])> = vec![
        (base.clone(), &["a", "b", "c", "d"]),
        (
            with(&|f| {
                f.status = Some(ReviewStatus::Open);
                f.now = Some(secs(40));
            }),
            &["a", "b"],
        ),
        (
            with(&|f| {
                f.status = Some(ReviewStatus::Open);
                f.now = Some(secs(100));
            }),
            &["a", "b", "d"],
        ),
        (
            with(&|f| {
                f.status = Some(ReviewStatus::Claimed);
                f.now = Some(secs(40));
            }),
            &["d"],
        ),
        (
            with(&|f| {
                f.status = Some(ReviewStatus::Claimed);
                f.now = Some(secs(100));
            }),
            &[],
        ),
        (with(&|f| f.status = Some(ReviewStatus::Resolved)), &["c"]),
        (with(&|f| f.category = Some("toxicity".into())), &["a", "d"]),
        (with(&|f| f.category = Some("spam".into())), &["b"]),
        (with(&|f| f.decision = Some("flag".into())), &["a", "d"]),
        (with(&|f| f.cid = Some("messaging:c1".into())), &["a", "c"]),
        (with(&|f| f.user_id = Some("u2".into())), &["b", "c"]),
        (with(&|f| f.min_score = Some(0.9)), &["a", "c"]),
        (
            with(&|f| f.created_after = Some(secs(10))),
            &["b", "c", "d"],
        ),
        (with(&|f| f.created_before = Some(secs(20))), &["a", "b"]),
        (
            with(&|f| {
                f.category = Some("toxicity".into());
                f.user_id = Some("u1".into());
                f.min_score = Some(0.5);
            }),
            &["a"],
        ),
        (
            with(&|f| f.sort = ReviewSort::Newest),
            &["d", "c", "b", "a"],
        ),
        (with(&|f| f.sort = ReviewSort::Score), &["c", "a", "b", "d"]),
    ];
    for (filter, want) in cases {
        assert_eq!(list(filter.clone()).await, want, "{filter:?}");
    }
    store.close().await;
}
both_backends!(filters, each_filter_and_sort_selects_the_right_items);

/// The keys a listing in `sort` is ordered by, as a comparable tuple.
fn sort_key(sort: ReviewSort, r: &ReviewItemRow) -> (f64, i64, i64) {
    let t = r.created_at.timestamp_micros();
    match sort {
        ReviewSort::Newest => (0.0, -t, -r.id),
        ReviewSort::Oldest => (0.0, t, r.id),
        ReviewSort::Score => (-r.score, 0, -r.id),
    }
}

async fn keyset_pages_see_every_item_once_while_items_are_added(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let d = decisions(&store, 1).await[0];
    let mut originals = HashSet::new();
    for i in 0..250i64 {
        // Three items per second and ten distinct scores: ties on every sort key.
        let s = scores((i % 10) as f64 / 10.0, 0.0, 0.0);
        let id = store
            .open_review_item(&item(&format!("orig-{i}"), d, s, secs(i / 3)))
            .await
            .unwrap();
        originals.insert(id);
    }
    for (round, sort) in [ReviewSort::Newest, ReviewSort::Oldest, ReviewSort::Score]
        .into_iter()
        .enumerate()
    {
        let writer = store.clone();
        let inserter = tokio::spawn(async move {
            for j in 0..100i64 {
                // Spread over the originals' range, so they land on both sides of the cursor.
                let at = secs((j * 37) % 84) + Duration::milliseconds(500);
                let s = scores(((j * 7) % 10) as f64 / 10.0, 0.0, 0.0);
                writer
                    .open_review_item(&item(&format!("new-{round}-{j}"), d, s, at))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        });
        let filter = ReviewFilter {
            sort,
            ..ReviewFilter::default()
        };
        let mut seen: Vec<ReviewItemRow> = Vec::new();
        let mut cursor: Option<Cursor> = None;
        let mut pages = 0;
        loop {
            let (rows, next) = store
                .list_review_items(&filter, 10, cursor.as_ref())
                .await
                .unwrap();
            pages += 1;
            assert!(rows.len() <= 10);
            seen.extend(rows);
            // Through the opaque text, as a client would send it back.
            cursor = match next {
                Some(c) => Some(Cursor::decode(&c.encode(), sort).unwrap()),
                None => break,
            };
            tokio::task::yield_now().await;
        }
        inserter.await.unwrap();
        assert!(pages >= 25, "{sort:?}: {pages} pages");
        let mut ids = HashSet::new();
        for r in &seen {
            assert!(ids.insert(r.id), "{sort:?}: item {} seen twice", r.id);
        }
        let missing: Vec<_> = originals.difference(&ids).collect();
        assert!(missing.is_empty(), "{sort:?}: missed {missing:?}");
        for w in seen.windows(2) {
            assert!(
                sort_key(sort, &w[0]) < sort_key(sort, &w[1]),
                "{sort:?}: out of order: {} then {}",
                w[0].id,
                w[1].id
            );
        }
    }
    store.close().await;
}
both_backends!(
    pagination,
    keyset_pages_see_every_item_once_while_items_are_added
);

async fn claims_are_exclusive_until_they_expire(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let d = decisions(&store, 1).await[0];
    let ttl = Duration::minutes(5);
    for round in 0..10 {
        let id = store
            .open_review_item(&item(
                &format!("race-{round}"),
                d,
                scores(0.5, 0.0, 0.0),
                secs(0),
            ))
            .await
            .unwrap();
        let claim = |who: &'static str| {
            let store = store.clone();
            tokio::spawn(async move {
                (
                    who,
                    store
                        .claim_review_item(id, who, secs(10), ttl)
                        .await
                        .unwrap(),
                )
            })
        };
        let (a, b) = (claim("ann"), claim("ben"));
        let results = [a.await.unwrap(), b.await.unwrap()];
        let winners: Vec<_> = results
            .iter()
            .filter_map(|(who, o)| matches!(o, ClaimOutcome::Claimed(_)).then_some(*who))
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for (who, outcome) in &results {
            if *who != winners[0] {
                assert_eq!(
                    outcome,
                    &ClaimOutcome::HeldBy {
                        moderator: winners[0].to_owned(),
                        until: secs(10) + ttl
                    }
                );
            }
        }
    }

    let id = store
        .open_review_item(&item("m", d, scores(0.5, 0.0, 0.0), secs(0)))
        .await
        .unwrap();
    let ClaimOutcome::Claimed(row) = store
        .claim_review_item(id, "ann", secs(10), ttl)
        .await
        .unwrap()
    else {
        panic!("first claim")
    };
    assert_eq!(
        (row.status.as_str(), row.claimed_by.as_deref()),
        ("claimed", Some("ann"))
    );
    // The holder may claim again, which extends the claim.
    let ClaimOutcome::Claimed(row) = store
        .claim_review_item(id, "ann", secs(60), ttl)
        .await
        .unwrap()
    else {
        panic!("re-claim")
    };
    assert_eq!(row.claim_expires_at, Some(secs(60) + ttl));
    assert!(matches!(
        store
            .claim_review_item(id, "ben", secs(60) + ttl - Duration::seconds(1), ttl)
            .await
            .unwrap(),
        ClaimOutcome::HeldBy { .. }
    ));
    let ClaimOutcome::Claimed(row) = store
        .claim_review_item(id, "ben", secs(60) + ttl, ttl)
        .await
        .unwrap()
    else {
        panic!("claim after expiry")
    };
    assert_eq!(row.claimed_by.as_deref(), Some("ben"));

    assert!(matches!(
        store.release_review_item(id, "ann").await.unwrap(),
        ReleaseOutcome::NotHeld(_)
    ));
    let ReleaseOutcome::Released(row) = store.release_review_item(id, "ben").await.unwrap() else {
        panic!("release by the holder")
    };
    assert_eq!((row.status.as_str(), row.claimed_by), ("open", None));
    assert!(matches!(
        store
            .claim_review_item(id, "ann", secs(500), ttl)
            .await
            .unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    store
        .resolve_review_item(&req(id, "ann", Resolution::Dismiss, None, secs(510)))
        .await
        .unwrap();
    assert!(matches!(
        store
            .claim_review_item(id, "ben", secs(520), ttl)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyResolved(_)
    ));
    assert!(matches!(
        store
            .claim_review_item(9_999_999, "ann", secs(0), ttl)
            .await,
        Err(StoreError::NotFound)
    ));
    store.close().await;
}
both_backends!(claims, claims_are_exclusive_until_they_expire);

async fn resolving_is_idempotent_and_respects_claims(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let d = decisions(&store, 1).await[0];
    let id = store
        .open_review_item(&item("m", d, scores(0.5, 0.0, 0.0), secs(0)))
        .await
        .unwrap();
    store
        .claim_review_item(id, "ann", secs(10), Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(
        store
            .resolve_review_item(&req(id, "ben", Resolution::Approve, None, secs(20)))
            .await
            .unwrap(),
        ResolveOutcome::HeldBy {
            moderator: "ann".into(),
            until: secs(10) + Duration::minutes(5)
        }
    );
    let ResolveOutcome::Resolved { row: done, .. } = store
        .resolve_review_item(&req(
            id,
            "ann",
            Resolution::Remove,
            Some("scam link"),
            secs(30),
        ))
        .await
        .unwrap()
    else {
        panic!("the holder resolves")
    };
    assert_eq!(done.status, "resolved");
    assert_eq!(done.resolution.as_deref(), Some("remove"));
    assert_eq!(done.note.as_deref(), Some("scam link"));
    assert_eq!(done.resolved_by.as_deref(), Some("ann"));
    assert_eq!(done.resolved_at, Some(secs(30)));
    assert_eq!(done.claimed_by, None);
    for (who, res) in [("ann", Resolution::Approve), ("ben", Resolution::Ban)] {
        assert_eq!(
            store
                .resolve_review_item(&req(id, who, res, Some("again"), secs(40)))
                .await
                .unwrap(),
            ResolveOutcome::AlreadyResolved(done.clone())
        );
    }
    assert_eq!(store.get_review_item(id).await.unwrap(), done);

    // No claim needed; an expired claim does not block.
    let other = store
        .open_review_item(&item("m2", d, scores(0.5, 0.0, 0.0), secs(0)))
        .await
        .unwrap();
    store
        .claim_review_item(other, "ann", secs(0), Duration::seconds(30))
        .await
        .unwrap();
    assert!(matches!(
        store
            .resolve_review_item(&req(other, "ben", Resolution::Approve, None, secs(31)))
            .await
            .unwrap(),
        ResolveOutcome::Resolved { .. }
    ));
    assert!(matches!(
        store
            .resolve_review_item(&req(9_999_999, "ben", Resolution::Approve, None, secs(31)))
            .await,
        Err(StoreError::NotFound)
    ));
    store.close().await;
}
both_backends!(resolve, resolving_is_idempotent_and_respects_claims);

/// Message, scores, rule ids, created (seconds), resolved (seconds after, how).
type StatsSpec = (
    &'static str,
    Scores,
    &'static [&'static str],
    i64,
    Option<(i64, Resolution)>,
);

async fn stats_count_open_items_median_time_and_upheld_shares(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let d = decisions(&store, 1).await[0];
    let tox = scores(0.9, 0.0, 0.0);
    let spam = scores(0.0, 0.9, 0.0);
    let expl = scores(0.0, 0.0, 0.9);
    let specs: [StatsSpec; 8] = [
        ("i1", tox, &["r1"], 0, Some((60, Resolution::Remove))),
        (
            "i2",
            tox,
            &["r1", "r2"],
            0,
            Some((120, Resolution::Approve)),
        ),
        ("i3", spam, &["r2"], 0, Some((300, Resolution::Ban))),
        ("i7", spam, &["r2"], 0, Some((30, Resolution::Dismiss))),
        ("i8", spam, &["r3"], 0, Some((1, Resolution::Remove))),
        ("i4", spam, &[], 10, None),
        ("i5", expl, &["r3"], 20, None),
        ("i6", tox, &[], 30, None),
    ];
    for (m, s, rules, created, resolved) in specs {
        let mut it = item(m, d, s, secs(created));
        it.rule_ids = rules.iter().map(|r| r.to_string()).collect();
        let id = store.open_review_item(&it).await.unwrap();
        if let Some((after, how)) = resolved {
            store
                .resolve_review_item(&req(id, "ann", how, None, secs(created + after)))
                .await
                .unwrap();
        }
        if m == "i6" {
            store
                .claim_review_item(id, "ann", secs(40), Duration::minutes(5))
                .await
                .unwrap();
        }
    }
    let stats = store.review_stats(secs(1000)).await.unwrap();
    let open: Vec<_> = stats
        .open_by_category
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(open, [("explicit", 1), ("spam", 1), ("toxicity", 1)]);
    assert_eq!(stats.oldest_open_secs, Some(990.0));
    assert_eq!(stats.resolved, 5);
    // Durations 1, 30, 60, 120, 300.
    assert_eq!(stats.median_resolution_secs, Some(60.0));
    let shares = |m: &std::collections::BTreeMap<String, chatguard::store::UpheldStats>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.reviewed, v.upheld, v.upheld_share))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shares(&stats.by_rule),
        [
            ("r1".to_owned(), 2, 1, 0.5),
            ("r2".to_owned(), 3, 1, 1.0 / 3.0),
            ("r3".to_owned(), 1, 1, 1.0),
        ]
    );
    assert_eq!(
        shares(&stats.by_category),
        [
            ("spam".to_owned(), 3, 2, 2.0 / 3.0),
            ("toxicity".to_owned(), 2, 1, 0.5),
        ]
    );

    // An even count takes the mean of the middle two: 1, 30, 60, 120, 300, 400 → 90.
    let id = store
        .open_review_item(&item("i9", d, tox, secs(0)))
        .await
        .unwrap();
    store
        .resolve_review_item(&req(id, "ann", Resolution::Approve, None, secs(400)))
        .await
        .unwrap();
    let stats = store.review_stats(secs(1000)).await.unwrap();
    assert_eq!(stats.median_resolution_secs, Some(90.0));
    store.close().await;
}
both_backends!(stats, stats_count_open_items_median_time_and_upheld_shares);

async fn labels_export_pages_through_reviewed_items_since_a_time(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let d = decisions(&store, 1).await[0];
    let mut want = Vec::new();
    for i in 0..7i64 {
        let id = store
            .open_review_item(&item(&format!("m{i}"), d, scores(0.5, 0.0, 0.0), secs(0)))
            .await
            .unwrap();
        // m0 is resolved before `since`; m5 and m6 stay open.
        if i < 5 {
            store
                .resolve_review_item(&req(id, "ann", Resolution::Remove, None, secs(10 + i * 10)))
                .await
                .unwrap();
            if i > 0 {
                want.push(id);
            }
        }
    }
    let since = secs(20);
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let page = store.reviewed_labels(since, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.id;
        assert!(page.iter().all(|r| r.status == "resolved"));
        got.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(got, want);
    store.close().await;
}
both_backends!(
    export,
    labels_export_pages_through_reviewed_items_since_a_time
);

async fn audit_log_lists_newest_first_with_before_and_after(db: &TestDb, _: Backend) {
    let store = store(db).await;
    let before = serde_json::json!({"status": "open"});
    let after = serde_json::json!({"status": "resolved", "resolution": "remove"});
    let mut ids = Vec::new();
    for (i, action) in ["claim", "resolve", "token.revoke"].iter().enumerate() {
        ids.push(
            store
                .insert_audit(
                    "alice",
                    action,
                    &format!("review_item:{i}"),
                    Some(&before),
                    (i != 2).then_some(&after),
                    secs(i as i64),
                )
                .await
                .unwrap(),
        );
    }
    let page = store.list_audit(2, None).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    assert_eq!(page[0].action, "token.revoke");
    assert_eq!(page[0].after, None);
    let entry = page[1].view();
    assert_eq!(entry.before, Some(before));
    assert_eq!(entry.after, Some(after));
    assert_eq!(entry.actor, "alice");
    let rest = store.list_audit(10, Some(ids[1])).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(rest[0].at, secs(0));
    store.close().await;
}
both_backends!(audit, audit_log_lists_newest_first_with_before_and_after);

/// A resolution that makes no Stream call (resolved at once).
fn req<'a>(
    id: i64,
    moderator: &'a str,
    resolution: Resolution,
    note: Option<&'a str>,
    now: DateTime<Utc>,
) -> chatguard::store::ResolveRequest<'a> {
    chatguard::store::ResolveRequest {
        id,
        moderator,
        resolution,
        note,
        now,
        steps: None,
        context: Default::default(),
        outcome_without_calls: serde_json::Value::Null,
    }
}

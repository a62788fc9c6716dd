//! The moderators' console in a real browser: headless Debian Chromium driven over WebDriver
//! (`fantoccini`) against the real app on loopback with the Stream stand-in. Also the console's
//! security headers, the overview's time-series endpoint (both backends) and the bounds the
//! OpenAPI document states.
//!
//! Without `chromium` and `chromium-driver` the browser tests are skipped with a note, unless
//! `CI` is set, where they fail.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chatguard::store::{ReviewFilter, Role};
use chrono::Utc;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::openapi::ApiDoc;
use crate::stream_standin::StreamStandin;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The browser harness

/// One chromedriver for the tests running at the same time: started by the first, stopped when
/// the last one is done (so no process outlives the test binary).
static DRIVER: Mutex<(usize, Option<(Child, u16)>)> = Mutex::new((0, None));

/// True when the browser tests can run; false (with a note) when they are skipped.
fn browser_available() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {CHROMIUM} or {CHROMEDRIVER} is missing: .ci/run installs chromium and chromium-driver"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (browser) {}: install the Debian packages chromium and chromium-driver",
        std::thread::current().name().unwrap_or("test")
    );
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A share of the chromedriver; dropping it stops the driver if it was the last.
struct DriverLease {
    port: u16,
}

impl DriverLease {
    async fn acquire() -> Self {
        let port = {
            let mut d = DRIVER.lock().unwrap();
            d.0 += 1;
            if d.1.is_none() {
                let port = free_port();
                let child = Command::new(CHROMEDRIVER)
                    .arg(format!("--port={port}"))
                    .arg("--allowed-ips=127.0.0.1")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start chromedriver");
                d.1 = Some((child, port));
            }
            d.1.as_ref().unwrap().1
        };
        let lease = DriverLease { port };
        let status = format!("http://127.0.0.1:{port}/status");
        let client = reqwest::Client::new();
        eventually(Duration::from_secs(20), "chromedriver to listen", || {
            let req = client.get(&status);
            async move {
                let v: Value = req.send().await.ok()?.json().await.ok()?;
                (v["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        lease
    }
}

impl Drop for DriverLease {
    fn drop(&mut self) {
        let mut d = DRIVER.lock().unwrap();
        d.0 -= 1;
        if d.0 == 0
            && let Some((mut child, _)) = d.1.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A browser session with its own profile.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
    _lease: DriverLease,
}

impl Browser {
    /// `dark`: the system asks for dark pages (`prefers-color-scheme: dark`).
    async fn start(dark: bool) -> Self {
        let lease = DriverLease::acquire().await;
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        if dark {
            args.push("--force-dark-mode".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", lease.port))
            .await
            .expect("a chromium session");
        Browser {
            client,
            _profile: profile,
            _lease: lease,
        }
    }

    /// Runs `test` with a browser and always closes the session, even when `test` panics.
    async fn with<F>(test: impl FnOnce(Client) -> F)
    where
        F: std::future::Future<Output = ()>,
    {
        Self::with_scheme(false, test).await
    }

    async fn with_scheme<F>(dark: bool, test: impl FnOnce(Client) -> F)
    where
        F: std::future::Future<Output = ()>,
    {
        let b = Browser::start(dark).await;
        let client = b.client.clone();
        let outcome = AssertUnwindSafe(async move {
            test(client.clone()).await;
            no_faults(&client).await;
        })
        .catch_unwind()
        .await;
        let _ = b.client.clone().close().await;
        drop(b);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Presses one key (a character, or `\u{E007}` for Enter) wherever the focus is.
async fn press(c: &Client, key: char) {
    let keys = KeyActions::new(format!("kb-{key}"))
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    c.perform_actions(keys).await.unwrap();
}

const ENTER: char = '\u{E007}';

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Waits until `script` (a function body returning a value) returns something truthy.
async fn wait_js(c: &Client, what: &str, script: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if !(v.is_null() || v == false || v == 0 || v == "") {
            return v;
        }
        assert!(start.elapsed() < PAGE_WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn css(c: &Client, selector: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no {selector}: {e}"))
}

/// Where the tests leave screenshots: `target/console-screenshots/` (test artefacts), or the
/// folder `CONSOLE_SCREENSHOTS_DIR` names; `CONSOLE_SCREENSHOTS_DIR=docs/screenshots` refreshes
/// the README's.
fn screenshot_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = match std::env::var_os("CONSOLE_SCREENSHOTS_DIR") {
        Some(d) => root.join(d),
        None => root.join("target/console-screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fails if the console reported a fault of its own (an uncaught error or rejection).
async fn no_faults(c: &Client) {
    let faults = js(c, "return document.body.dataset.faults || null").await;
    assert_eq!(faults, Value::Null, "the console reported faults");
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(name), png).unwrap();
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/console")).await.unwrap();
    let input = css(c, "#token").await;
    input.send_keys(token).await.unwrap();
    css(c, "form.signin button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    css(c, "#sign-out").await;
}

// ---------------------------------------------------------------------------------------------
// The stack: app + Stream stand-in + fixtures

struct Stack {
    app: TestApp,
    stream: StreamStandin,
}

impl Stack {
    async fn start(db: &TestDb) -> Self {
        let stream = StreamStandin::start(API_KEY, SECRET).await;
        let base = stream.base_url();
        let app = TestApp::spawn(config(&db.url, &[("STREAM_BASE_URL", base.as_str())])).await;
        Stack { app, stream }
    }

    async fn token(&self, name: &str, role: Role) -> String {
        self.app
            .store()
            .create_token(name, role, Utc::now())
            .await
            .unwrap()
            .unwrap()
            .1
    }

    /// Posts messages and waits until each has its review item and chatguard's own action on
    /// Stream is finished (so the calls a test counts afterwards are the console's).
    async fn messages(&self, msgs: &[(&str, &str, &str)]) -> Vec<i64> {
        for (id, user, text) in msgs {
            let r = self
                .app
                .post_webhook(&message_new(id, user, text), &format!("w-{id}"))
                .await;
            assert_eq!(r.status(), 200);
        }
        wait_settled(self.app.store()).await;
        let mut ids = Vec::new();
        for (id, _, _) in msgs {
            let store = self.app.store().clone();
            let message = id.to_string();
            ids.push(
                eventually(PAGE_WAIT, "the review item", || {
                    let store = store.clone();
                    let message = message.clone();
                    async move {
                        let (items, _) = store
                            .list_review_items(&ReviewFilter::default(), 200, None)
                            .await
                            .ok()?;
                        items
                            .iter()
                            .find(|i| i.message_id == message && i.action_status != "pending")
                            .map(|i| i.id)
                    }
                })
                .await,
            );
        }
        ids
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .app
            .client
            .request(method, format!("{}/api/v1{path}", self.app.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn item_status(&self, id: i64) -> String {
        self.app.store().get_review_item(id).await.unwrap().status
    }

    /// Waits for an item's status: a resolution may be carried out after the answer.
    async fn wait_status(&self, id: i64, want: &str) {
        let store = self.app.store();
        eventually(PAGE_WAIT, &format!("item {id} {want}"), || async move {
            (store.get_review_item(id).await.ok()?.status == want).then_some(())
        })
        .await
    }

    /// Waits until exactly `n` requests whose path contains `part` reached the stand-in, then
    /// checks a moment later that no more arrived.
    async fn expect_calls(&self, part: &str, n: usize) {
        let stream = &self.stream;
        eventually(
            PAGE_WAIT,
            &format!("{n} call(s) to {part}"),
            || async move { (stream.calls_to(part).len() >= n).then_some(()) },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(self.stream.calls_to(part).len(), n, "calls to {part}");
    }
}

/// Borderline insults: flagged, so each opens a review item.
const FLAGGED: &str = "what an idiot";

// ---------------------------------------------------------------------------------------------
// Browser flows

/// A moderator signs in, sees the fixture items, opens one (highlighted span), removes it with
/// `r` (one Stream call), bulk-approves two with `x` and `a`, sees the overview charts drawn
/// from those decisions, and signs out (the token is forgotten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderator_sweeps_the_queue_with_the_keyboard() {
    if !browser_available() {
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = Stack::start(&db).await;
    let ids = s
        .messages(&[
            ("m-c1", "u-ana", "you idiot"),
            ("m-c2", "u-ben", "you absolute idiot"),
            ("m-c3", "u-cy", FLAGGED),
            ("m-c4", "u-dee", "ur an idiot"),
        ])
        .await;
    let moderator = s.token("mo", Role::Moderator).await;
    let base = s.app.url.clone();
    {
        let s = &s;
        let ids = &ids;
        Browser::with(|c| async move {
        sign_in(&c, &base, &moderator).await;
        // The queue lists the fixture items, newest first, with counts per category.
        wait_js(&c, "four rows", "return document.querySelectorAll('#queue-table tbody tr.row').length === 4").await;
        let shown: Vec<i64> = serde_json::from_value(js(&c, "return [...document.querySelectorAll('#queue-table tbody tr.row')].map(r => Number(r.dataset.id))").await).unwrap();
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(shown, newest_first);
        let counts = css(&c, ".counts .total").await.text().await.unwrap();
        assert_eq!(counts, "4 open");
        // Nothing in the URL but the view.
        let url = c.current_url().await.unwrap();
        assert!(!url.as_str().contains(&moderator));
        assert_eq!(js(&c, "return sessionStorage.getItem('chatguard.token')").await, json!(moderator));
        screenshot(&c, "queue.png").await;

        // j moves down, Enter opens: the second-newest item, claimed, with its span marked.
        press(&c, 'j').await;
        press(&c, ENTER).await;
        let opened = newest_first[1];
        css(&c, "#message-text mark.hl").await;
        assert_eq!(c.current_url().await.unwrap().fragment(), Some(format!("/item/{opened}").as_str()));
        let marked = css(&c, "#message-text mark.hl").await.attr("data-kinds").await.unwrap();
        let word = js(&c, "return document.querySelector('#message-text mark.hl').firstChild.textContent").await;
        assert_eq!(word, "idiot", "kinds {marked:?}");
        // The scores are drawn against the policy's thresholds (rules/policy.toml: toxicity
        // flags at 0.6 and blocks at 0.85).
        css(&c, ".score-bar .tick.block").await;
        let label = js(&c, "return document.querySelector('.score-bar').getAttribute('aria-label')").await;
        let label = label.as_str().unwrap_or_default().to_owned();
        assert!(label.contains("flag at 0.60") && label.contains("block at 0.85"), "{label}");
        wait_js(&c, "the claim", "return document.querySelector('.claim .badge.ok')").await;
        assert_eq!(s.item_status(opened).await, "claimed");
        screenshot(&c, "item.png").await;

        // r removes it: Stream gets exactly one delete for that message.
        s.stream.clear_calls();
        let message = format!("/messages/{}", s.app.store().get_review_item(opened).await.unwrap().message_id);
        press(&c, 'r').await;
        wait_js(&c, "the outcome", "return document.querySelector('.result .ok-box')").await;
        s.expect_calls(&message, 1).await;
        assert_eq!(s.stream.calls().len(), 1, "{:?}", s.stream.calls());
        wait_js(&c, "resolved", "const b = document.getElementById('item-status'); return b && b.textContent === 'resolved'").await;
        s.wait_status(opened, "resolved").await;

        // Back to the queue: three open; select two with x and approve both with a.
        press(&c, 'u').await;
        wait_js(&c, "three rows", "return document.querySelectorAll('#queue-table tbody tr.row').length === 3").await;
        s.stream.clear_calls();
        press(&c, 'x').await;
        press(&c, 'j').await;
        press(&c, 'x').await;
        wait_js(&c, "two selected", "return document.querySelectorAll('#queue-table tr.selected').length === 2").await;
        let chosen: Vec<i64> = serde_json::from_value(js(&c, "return [...document.querySelectorAll('#queue-table tr.selected')].map(r => Number(r.dataset.id))").await).unwrap();
        press(&c, 'a').await;
        wait_js(&c, "one row left", "return document.querySelectorAll('#queue-table tbody tr.row').length === 1").await;
        for id in &chosen {
            s.wait_status(*id, "resolved").await;
        }
        s.expect_calls("/moderation/unflag", 2).await;

        // The overview draws its charts from these decisions.
        c.goto(&format!("{base}/console#/overview")).await.unwrap();
        css(&c, "svg.chart rect").await;
        let total = css(&c, "#decision-total").await.text().await.unwrap();
        assert_eq!(total, "4");
        let label = css(&c, "svg.chart").await.attr("aria-label").await.unwrap().unwrap();
        assert!(label.contains("4 in all") && label.contains("flag 4"), "{label}");
        let bars = js(&c, "return document.querySelectorAll('svg.chart')[0].querySelectorAll('rect').length").await;
        assert!(bars.as_u64().unwrap() >= 1);
        let precision = css(&c, "table.compact tbody").await.text().await.unwrap();
        assert!(precision.contains("toxicity"), "{precision}");
        screenshot(&c, "overview.png").await;

        // Sign-out forgets the token.
        css(&c, "#sign-out").await.click().await.unwrap();
        css(&c, "#token").await;
        assert_eq!(js(&c, "return sessionStorage.getItem('chatguard.token')").await, Value::Null);
        c.goto(&format!("{base}/console#/queue")).await.unwrap();
        css(&c, "#token").await;
    })
    .await;
    }
    s.app.stop().await;
    db.cleanup().await;
}

/// A viewer sees no selection boxes and no resolve controls, the keys do nothing, and the API
/// refuses the resolution anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_sees_no_resolve_controls_and_the_api_refuses() {
    if !browser_available() {
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = Stack::start(&db).await;
    let ids = s.messages(&[("m-v1", "u-vi", FLAGGED)]).await;
    let viewer = s.token("vera", Role::Viewer).await;
    let base = s.app.url.clone();
    let token = viewer.clone();
    {
        let s = &s;
        let ids = &ids;
        // This one in the dark theme.
        Browser::with_scheme(true, |c| async move {
        sign_in(&c, &base, &token).await;
        css(&c, "#queue-table tbody tr.row").await;
        let bg = js(&c, "return getComputedStyle(document.body).backgroundColor").await;
        assert_eq!(bg, "rgb(17, 20, 24)");
        screenshot(&c, "queue-dark.png").await;
        // A new item appears without a reload.
        let r = s.app.post_webhook(&message_new("m-v2", "u-vi2", FLAGGED), "w-m-v2").await;
        assert_eq!(r.status(), 200);
        wait_js(&c, "the new item", "return document.querySelectorAll('#queue-table tbody tr.row').length === 2").await;
        // Filters live in the URL: a shared link shows the same view, a form change writes it.
        c.goto(&format!("{base}/console#/queue?status=open&user=u-vi2")).await.unwrap();
        wait_js(&c, "one row", "return document.querySelectorAll('#queue-table tbody tr.row').length === 1 && document.querySelector('.excerpt')").await;
        css(&c, "select[name=sort]").await.select_by_value("score").await.unwrap();
        wait_js(&c, "the sort in the URL", "return location.hash.includes('sort=score') && location.hash.includes('user=u-vi2')").await;
        c.goto(&format!("{base}/console#/queue?status=open&user=nobody")).await.unwrap();
        css(&c, "#queue-table td.empty").await;
        c.goto(&format!("{base}/console#/queue")).await.unwrap();
        wait_js(&c, "both rows", "return document.querySelectorAll('#queue-table tbody tr.row').length === 2").await;
        assert_eq!(css(&c, ".who .role").await.text().await.unwrap(), "viewer");
        assert_eq!(js(&c, "return document.querySelectorAll('#queue-table input[type=checkbox]').length").await, 0);
        let nav = css(&c, "#nav").await.text().await.unwrap();
        assert!(!nav.contains("Tokens") && !nav.contains("Audit"), "{nav}");
        s.stream.clear_calls();
        press(&c, 'r').await;
        press(&c, ENTER).await;
        css(&c, "#message-text").await;
        assert_eq!(js(&c, "return document.querySelectorAll('[data-resolution], textarea[name=note]').length").await, 0);
        press(&c, 'r').await;
        press(&c, 'a').await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(s.stream.calls().is_empty(), "{:?}", s.stream.calls());
        assert_eq!(s.item_status(ids[0]).await, "open");
    })
    .await;
    }
    let (status, body) = s
        .api(
            Method::POST,
            &format!("/review-items/{}/resolve", ids[0]),
            &viewer,
            Some(json!({"resolution": "remove"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(s.stream.calls().is_empty());
    s.app.stop().await;
    db.cleanup().await;
}

/// Markup, script, `javascript:` links and bidi tricks in messages go through the whole flow
/// (webhook, engine, queue, item page) and are shown as text: nothing runs, nothing loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_render_as_text_and_nothing_runs() {
    if !browser_available() {
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = Stack::start(&db).await;
    let hostile = [
        (
            "m-x1",
            "u-x1",
            "what an idiot <img src=x onerror=\"window.__pwned='img'\">",
        ),
        (
            "m-x2",
            "u-x2",
            "what an idiot <script>window.__pwned='script'</script>",
        ),
        (
            "m-x3",
            "u-x3",
            "what an idiot <a href=\"javascript:window.__pwned='link'\">click</a> javascript:window.__pwned='bare'",
        ),
        (
            "m-x4",
            "u-x4",
            "what an idiot \u{202E}gnp.exe\u{202C} and \u{2066}isolated\u{2069}",
        ),
        (
            "m-x5",
            "<b>u-x5</b>",
            "what an idiot <svg onload=\"window.__pwned='svg'\"></svg><iframe src=\"https://example.com\"></iframe>",
        ),
    ];
    let ids = s.messages(&hostile).await;
    let moderator = s.token("mo", Role::Moderator).await;
    let base = s.app.url.clone();
    {
        let s = &s;
        let ids = &ids;
        Browser::with(|c| async move {
        // Any CSP violation is recorded: there should be none, because nothing tries.
        sign_in(&c, &base, &moderator).await;
        js(&c, "window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective)); return 1").await;
        wait_js(&c, "five rows", "return document.querySelectorAll('#queue-table tbody tr.row').length === 5").await;
        let excerpts: Vec<String> = serde_json::from_value(js(&c, "return [...document.querySelectorAll('#queue-table .excerpt')].map(a => a.textContent)").await).unwrap();
        // Exactly the API's excerpts (which leave out control characters), as text.
        for id in ids.iter() {
            let excerpt = s.app.store().get_review_item(*id).await.unwrap().view().excerpt;
            assert!(excerpts.contains(&excerpt), "{excerpt:?} not shown as text in {excerpts:?}");
        }
        assert!(excerpts.iter().any(|e| e.contains("<img src=x onerror=")), "{excerpts:?}");
        let user_cell = js(&c, "return [...document.querySelectorAll('#queue-table td a')].some(a => a.textContent === '<b>u-x5</b>')").await;
        assert_eq!(user_cell, true);
        for (i, id) in ids.iter().enumerate() {
            c.goto(&format!("{base}/console#/item/{id}")).await.unwrap();
            let text = css(&c, "#message-text").await;
            wait_js(&c, "the item", &format!("return document.querySelector('.item-head h1') && document.querySelector('.item-head h1').textContent === 'Item {id}'")).await;
            // The text, with control characters replaced by their visible names.
            let shown = text.text().await.unwrap();
            let want = hostile[i].2;
            let plain: String = want.chars().filter(|c| !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')).collect();
            let visible = js(&c, "const q = document.getElementById('message-text').cloneNode(true); q.querySelectorAll('.ctl, .sr-only').forEach(e => e.remove()); return q.textContent").await;
            assert_eq!(visible, plain, "{shown}");
            if i == 3 {
                let markers: Vec<String> = serde_json::from_value(js(&c, "return [...document.querySelectorAll('#message-text .ctl')].map(e => e.textContent)").await).unwrap();
                assert_eq!(markers[..4], ["U+202E", "U+202C", "U+2066", "U+2069"]);
                // Nowhere on the page (the user's history included) does a control act.
                wait_js(&c, "the history", "return document.querySelector('table.compact tbody tr td.msg')").await;
                let raw = js(&c, r"return /[\u202A-\u202E\u2066-\u2069]/.test(document.body.textContent)").await;
                assert_eq!(raw, false);
                screenshot(&c, "item-bidi.png").await;
            }
        }
        // Opening an item claimed it; leaving it unresolved gave it back.
        for id in &ids[..ids.len() - 1] {
            s.wait_status(*id, "open").await;
        }
        let report = js(&c, "return { pwned: window.__pwned === undefined ? null : window.__pwned, csp: window.__csp, \
            imgs: [...document.querySelectorAll('img')].map(i => i.getAttribute('src')), \
            scripts: [...document.querySelectorAll('script')].map(s => s.getAttribute('src')), \
            frames: document.querySelectorAll('iframe, svg[onload], [onerror], [onload]').length, \
            jsLinks: [...document.querySelectorAll('a')].filter(a => /^\\s*javascript:/i.test(a.getAttribute('href') || '')).length }").await;
        assert_eq!(report, json!({
            "pwned": null, "csp": [], "imgs": ["/console/icon.svg"], "scripts": ["/console/app.js"],
            "frames": 0, "jsLinks": 0,
        }));
    })
    .await;
    }
    s.app.stop().await;
    db.cleanup().await;
}

/// An admin: a resolution Stream refuses is shown as an error and the retry goes through; a ban
/// with timeout and reason from the dialog, then the unban on the user's page; a token created
/// (secret shown once, and it works) and revoked; the audit log and the decision log; `?`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_retries_a_refused_resolution_bans_unbans_and_manages_tokens() {
    if !browser_available() {
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = Stack::start(&db).await;
    let ids = s
        .messages(&[
            ("m-a1", "u-retry", FLAGGED),
            ("m-a2", "u-ban", FLAGGED),
            ("m-a3", "u-held", FLAGGED),
            ("m-a4", "u-async", FLAGGED),
        ])
        .await;
    let admin = s.token("root", Role::Admin).await;
    let other = s.token("other-mod", Role::Moderator).await;
    let (status, _) = s
        .api(
            Method::POST,
            &format!("/review-items/{}/claim", ids[2]),
            &other,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let base = s.app.url.clone();
    {
        let s = &s;
        let ids = &ids;
        Browser::with(|c| async move {
            sign_in(&c, &base, &admin).await;
            let nav = css(&c, "#nav").await.text().await.unwrap();
            assert!(nav.contains("Tokens") && nav.contains("Audit log"), "{nav}");

            // Stream refuses the removal for good (a 5xx would be retried by the server until it
            // went through): an error with a retry; the item is as it was.
            s.stream.clear_calls();
            s.stream.push_scripted(
                crate::stream_standin::Op::DeleteMessage,
                crate::stream_standin::Scripted::stream_error(400, 4, "bad request"),
                1,
            );
            c.goto(&format!("{base}/console#/item/{}", ids[0])).await.unwrap();
            css(&c, "button[data-resolution=remove]").await.click().await.unwrap();
            let error = css(&c, ".result .error-box").await.text().await.unwrap();
            assert!(error.contains("Stream refused"), "{error}");
            assert_ne!(s.item_status(ids[0]).await, "resolved");
            css(&c, "#retry").await.click().await.unwrap();
            css(&c, ".result .ok-box").await;
            s.wait_status(ids[0], "resolved").await;
            s.expect_calls("/messages/m-a1", 2).await;

            // b asks for the ban's length and reason.
            c.goto(&format!("{base}/console#/item/{}", ids[1])).await.unwrap();
            css(&c, "#message-text").await;
            press(&c, 'b').await;
            css(&c, "dialog.ban-dialog input[name=ban_timeout_minutes]").await.send_keys("60").await.unwrap();
            css(&c, "dialog.ban-dialog input[name=reason]").await.send_keys("insults").await.unwrap();
            css(&c, "dialog.ban-dialog button[type=submit]").await.click().await.unwrap();
            css(&c, ".result .ok-box").await;
            s.expect_calls("/moderation/ban", 1).await;
            let ban = s.stream.calls_to("/moderation/ban").remove(0).body.unwrap();
            assert_eq!((ban["timeout"].as_i64(), ban["reason"].as_str()), (Some(60), Some("insults")), "{ban}");

            // The user's page shows the ban; unban lifts it on Stream.
            c.goto(&format!("{base}/console#/users/u-ban")).await.unwrap();
            let banned = css(&c, "main .badge").await.text().await.unwrap();
            assert_eq!(banned, "banned");
            css(&c, "main button.primary").await.click().await.unwrap();
            wait_js(&c, "not banned", "const b = document.querySelector('main .badge'); return b && b.textContent === 'not banned'").await;
            // Unban is `DELETE /moderation/ban`: the second call there.
            s.expect_calls("/moderation/ban", 2).await;
            assert_eq!(s.stream.calls_to("/moderation/ban")[1].method, Method::DELETE);

            // A token: the secret once, working; gone after a reload; then revoked.
            c.goto(&format!("{base}/console#/tokens")).await.unwrap();
            css(&c, "input[name=name]").await.send_keys("newbie").await.unwrap();
            css(&c, "select[name=role]").await.select_by_value("viewer").await.unwrap();
            css(&c, "form.filters button[type=submit]").await.click().await.unwrap();
            let secret = css(&c, "#new-secret").await.prop("value").await.unwrap().unwrap();
            assert!(secret.len() >= 20, "{secret}");
            assert_eq!(s.api(Method::GET, "/review-items", &secret, None).await.0, 200);
            c.refresh().await.unwrap();
            css(&c, "table tbody tr").await;
            let page = js(&c, "return document.body.textContent + [...document.querySelectorAll('input')].map(i => i.value).join(' ')").await;
            assert!(!page.as_str().unwrap().contains(&secret));
            let revoke = css(&c, "button[aria-label='Revoke newbie']").await;
            revoke.click().await.unwrap();
            revoke.click().await.unwrap();
            wait_js(&c, "revoked", "return !document.querySelector(\"button[aria-label='Revoke newbie']\")").await;
            assert_eq!(s.api(Method::GET, "/review-items", &secret, None).await.0, 401);

            // The audit log shows the changes; the decision log filters by user.
            c.goto(&format!("{base}/console#/audit")).await.unwrap();
            let audit = css(&c, "main table").await.text().await.unwrap();
            for action in ["token.create", "token.revoke", "review_item.resolve", "review_item.resolve_failed", "user.unban"] {
                assert!(audit.contains(action), "{action} missing from {audit}");
            }
            c.goto(&format!("{base}/console#/decisions?user=u-ban")).await.unwrap();
            wait_js(&c, "one decision", "return document.querySelectorAll('main tbody tr td.msg').length === 1").await;

            // Someone else's claim is shown, and a resolution is refused with their name.
            c.goto(&format!("{base}/console#/item/{}", ids[2])).await.unwrap();
            let claim = css(&c, ".claim").await.text().await.unwrap();
            assert!(claim.contains("Claimed") && claim.contains("other-mod"), "{claim}");
            s.stream.clear_calls();
            press(&c, 'd').await;
            let refused = css(&c, ".result .error-box").await.text().await.unwrap();
            assert!(refused.contains("claimed by other-mod"), "{refused}");
            assert_eq!(s.item_status(ids[2]).await, "claimed");

            // A status the console does not know (`resolving`, while Stream has not confirmed)
            // is shown as it is, and the item is read again until it changes.
            set_status_unchecked(s, ids[3], "resolving").await;
            c.goto(&format!("{base}/console#/item/{}", ids[3])).await.unwrap();
            wait_js(&c, "resolving", "const b = document.getElementById('item-status'); return b && b.textContent === 'resolving'").await;
            set_status_unchecked(s, ids[3], "resolved").await;
            wait_js(&c, "resolved without a reload", "const b = document.getElementById('item-status'); return b && b.textContent === 'resolved'").await;

            // ? lists the keys.
            press(&c, '?').await;
            let help = css(&c, "dialog#help[open]").await.text().await.unwrap();
            assert!(help.contains("this list"), "{help}");
        })
        .await;
    }
    s.app.stop().await;
    db.cleanup().await;
}

/// Sets an item's status past the schema's check, as a newer server's status would arrive.
async fn set_status_unchecked(s: &Stack, id: i64, status: &str) {
    let chatguard::store::Db::Sqlite(pool) = s.app.store().db() else {
        panic!("SQLite only");
    };
    let mut conn = pool.acquire().await.unwrap();
    let pragma = |on: &'static str| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "pragma ignore_check_constraints = {on}"
        )))
    };
    pragma("on").execute(&mut *conn).await.unwrap();
    sqlx::query("update review_items set status = $1 where id = $2")
        .bind(status)
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    pragma("off").execute(&mut *conn).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Without a browser

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_served_with_a_strict_policy() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(&db.url, &[])).await;
    for path in [
        "/console",
        "/console/",
        "/console/app.js",
        "/console/views/item.js",
        "/console/console.css",
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        let ct = h["content-type"].to_str().unwrap().to_owned();
        let want = if path.ends_with(".js") {
            "text/javascript"
        } else if path.ends_with(".css") {
            "text/css"
        } else {
            "text/html"
        };
        assert!(ct.starts_with(want), "{path}: {ct}");
    }
    for path in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/views/",
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    app.stop().await;
    db.cleanup().await;
}

/// The series counts the decisions actually made, per hour, by decision and by category.
async fn series_counts_real_decisions(db: &TestDb, _: Backend) {
    let s = Stack::start(db).await;
    s.messages(&[("m-s1", "u-s1", FLAGGED), ("m-s2", "u-s2", "idiot idiot")])
        .await;
    for (i, text) in ["hello there", "see you at lunch"].iter().enumerate() {
        let r = s
            .app
            .post_webhook(
                &message_new(&format!("m-ok{i}"), "u-ok", text),
                &format!("w-ok{i}"),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    wait_settled(s.app.store()).await;
    let viewer = s.token("vera", Role::Viewer).await;
    let doc = ApiDoc::generated();
    let decisions = s.app.store().recent_decisions(100).await.unwrap();
    assert_eq!(decisions.len(), 4);
    for window in ["24h", "7d"] {
        let path = format!("/overview/series?window={window}");
        let (status, body) = s.api(Method::GET, &path, &viewer, None).await;
        assert_eq!(status, 200, "{body}");
        doc.check(&Method::GET, &format!("/api/v1{path}"), status, &body)
            .unwrap();
        let buckets = body["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), if window == "24h" { 24 } else { 168 });
        let sum = |field: &str, key: &str| -> i64 {
            buckets
                .iter()
                .map(|b| b[field][key].as_i64().unwrap())
                .sum()
        };
        for d in ["allow", "flag", "block", "ban"] {
            let want = decisions.iter().filter(|r| r.decision == d).count() as i64;
            assert_eq!(sum("by_decision", d), want, "{window} {d}");
        }
        let flagged = decisions.iter().filter(|r| r.decision != "allow").count() as i64;
        let by_cat: i64 = ["toxicity", "spam", "explicit"]
            .iter()
            .map(|c| sum("by_category", c))
            .sum();
        assert_eq!(by_cat, flagged);
        // All in the current hour: the last bucket, which starts within the hour before `to`.
        let last = buckets.last().unwrap();
        let total: i64 = last["by_decision"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(total, 4, "{last}");
        assert_eq!(body["bucket_secs"], 3600);
    }
    let (status, _) = s
        .api(Method::GET, "/overview/series?window=1y", &viewer, None)
        .await;
    assert_eq!(status, 400);
    let res = s
        .app
        .client
        .get(format!("{}/api/v1/overview/series", s.app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    s.app.stop().await;
}
both_backends!(overview_series, series_counts_real_decisions);

/// Each bound the server enforces is in the document, and a request just past it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_the_bounds_the_server_enforces() {
    let doc = serde_json::to_value(chatguard::api::review::openapi()).unwrap();
    let param = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    for path in [
        "/api/v1/review-items",
        "/api/v1/decisions",
        "/api/v1/audit-log",
    ] {
        let limit = param(path, "limit");
        assert_eq!(
            (limit["minimum"].as_f64(), limit["maximum"].as_f64()),
            (Some(1.0), Some(200.0)),
            "{path}"
        );
    }
    let score = param("/api/v1/review-items", "min_score");
    assert_eq!(
        (score["minimum"].as_f64(), score["maximum"].as_f64()),
        (Some(0.0), Some(1.0))
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["NewToken"]["properties"]["name"]["maxLength"], 64);
    assert_eq!(schemas["NewToken"]["properties"]["name"]["minLength"], 1);
    assert_eq!(schemas["BulkBody"]["properties"]["ids"]["maxItems"], 100);
    assert_eq!(schemas["BulkBody"]["properties"]["ids"]["minItems"], 1);
    assert_eq!(
        schemas["ResolveBody"]["properties"]["ban_timeout_minutes"]["minimum"].as_f64(),
        Some(1.0)
    );

    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = Stack::start(&db).await;
    let admin = s.token("root", Role::Admin).await;
    for path in [
        "/review-items?limit=201",
        "/review-items?limit=0",
        "/decisions?limit=201",
        "/audit-log?limit=0",
        "/review-items?min_score=1.01",
    ] {
        assert_eq!(
            s.api(Method::GET, path, &admin, None).await.0,
            400,
            "{path}"
        );
    }
    let long = "n".repeat(65);
    assert_eq!(
        s.api(
            Method::POST,
            "/tokens",
            &admin,
            Some(json!({"name": long, "role": "viewer"}))
        )
        .await
        .0,
        400
    );
    let ids: Vec<i64> = (1..=101).collect();
    assert_eq!(
        s.api(
            Method::POST,
            "/review-items/bulk-resolve",
            &admin,
            Some(json!({"ids": ids, "resolution": "dismiss"}))
        )
        .await
        .0,
        400
    );
    s.app.stop().await;
    db.cleanup().await;
}

/// Page weight and time to first render of the queue with 10,000 open items (a measurement,
/// not a timed test): five reloads of the signed-in queue, read from the browser's Performance
/// API (`queue-rendered` is marked when the first page is on screen).
///
/// ```sh
/// cargo test --test api console::queue_first_render -- --ignored --nocapture
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn queue_first_render_with_10k_open_items() {
    if !browser_available() {
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    crate::review_load::seed(&db, &crate::review_load::generate(10_000, Utc::now())).await;
    let s = Stack::start(&db).await;
    if let chatguard::store::Db::Sqlite(pool) = s.app.store().db() {
        sqlx::query(
            "update review_items set status = 'open', claimed_by = null, claim_expires_at = null, \
             resolved_by = null, resolution = null, resolved_at = null",
        )
        .execute(pool)
        .await
        .unwrap();
    }
    let viewer = s.token("vera", Role::Viewer).await;
    let (_, stats) = s.api(Method::GET, "/stats", &viewer, None).await;
    let open: i64 = stats["open_by_category"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(open, 10_000);
    let base = s.app.url.clone();
    Browser::with(|c| async move {
        sign_in(&c, &base, &viewer).await;
        wait_js(&c, "the first page", "return document.querySelectorAll('#queue-table tbody tr.row').length === 50").await;
        let mut renders = Vec::new();
        let mut report = Value::Null;
        for _ in 0..5 {
            c.refresh().await.unwrap();
            report = wait_js(&c, "queue-rendered", "const m = performance.getEntriesByName('queue-rendered')[0]; if (!m) return null; \
                const nav = performance.getEntriesByType('navigation')[0]; \
                const res = performance.getEntriesByType('resource').map(r => ({name: new URL(r.name).pathname, bytes: r.encodedBodySize, ms: Math.round(r.duration)})); \
                return {render_ms: m.startTime, dom_content_loaded_ms: nav.domContentLoadedEventEnd, html_bytes: nav.encodedBodySize, resources: res, \
                  rows: document.querySelectorAll('#queue-table tbody tr.row').length}").await;
            renders.push(report["render_ms"].as_f64().unwrap());
        }
        renders.sort_by(f64::total_cmp);
        let resources = report["resources"].as_array().unwrap();
        let (assets, api): (Vec<&Value>, Vec<&Value>) = resources
            .iter()
            .partition(|r| r["name"].as_str().unwrap().starts_with("/console/"));
        let sum = |list: &[&Value]| -> u64 { list.iter().map(|r| r["bytes"].as_u64().unwrap_or(0)).sum() };
        let html = report["html_bytes"].as_u64().unwrap();
        eprintln!(
            "queue with 10,000 open items: first render {:.0} ms median (min {:.0}, max {:.0}) over {} reloads; \
             page weight {} bytes = {} HTML + {} in {} assets (uncompressed) + {} API ({} requests); rows shown {}",
            renders[renders.len() / 2], renders[0], renders[renders.len() - 1], renders.len(),
            html + sum(&assets) + sum(&api), html, sum(&assets), assets.len(), sum(&api), api.len(), report["rows"]
        );
        for r in resources {
            eprintln!("  {} {} B {} ms", r["name"], r["bytes"], r["ms"]);
        }
    })
    .await;
    s.app.stop().await;
    db.cleanup().await;
}

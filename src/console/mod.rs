//! The moderators' console: a single page served at `/console`, a pure client of `/api/v1`.
//!
//! The assets are plain files under `src/console/assets/` compiled into the binary, so
//! `chatguard serve` needs nothing beside it and no Node toolchain builds them. Every answer
//! carries a Content-Security-Policy without inline script or style, `nosniff` and
//! `frame-ancestors 'none'`: message text is attacker-controlled, and the scripts only ever put
//! it into the page as text, but the policy makes sure that nothing injected could run, load or
//! be framed even if a mistake slipped in.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console serves; anything else under `/console/` is a 404.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("text.js", JS),
    asset!("charts.js", JS),
    asset!("keys.js", JS),
    asset!("views/queue.js", JS),
    asset!("views/item.js", JS),
    asset!("views/users.js", JS),
    asset!("views/logs.js", JS),
    asset!("views/tokens.js", JS),
    asset!("views/overview.js", JS),
    asset!("views/resolve.js", JS),
];

/// Scripts and styles from this origin only (no inline script, no `eval`), requests to this
/// origin only, no plugins, no framing, no `<base>` and no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// `GET /console`, `GET /console/` and `GET /console/{*asset}`.
pub fn router() -> Router {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{*path}", get(asset))
}

/// The bytes of every asset, for the page-weight figure.
pub fn total_asset_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

async fn index() -> Response {
    serve(ASSETS.iter().find(|a| a.name == "index.html"))
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(ASSETS.iter().find(|a| a.name == path))
}

fn serve(asset: Option<&Asset>) -> Response {
    let mut res = match asset {
        Some(a) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            )],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    // Revalidated on every load, so a new binary's console is never mixed with an old one's.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_asset_carries_inline_script_or_markup_sinks() {
        for a in ASSETS {
            if a.name.ends_with(".html") {
                assert!(!a.body.contains("<script>"), "{}: inline script", a.name);
                let handler = a.body.match_indices(" on").any(|(i, _)| {
                    let rest = &a.body[i + 3..];
                    let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                    !name.is_empty() && rest[name.len()..].starts_with('=')
                });
                assert!(!handler, "{}: an inline event handler", a.name);
                assert!(!a.body.contains("style="), "{}: inline style", a.name);
            }
            if a.name.ends_with(".js") {
                for sink in [
                    "innerHTML",
                    "outerHTML",
                    "insertAdjacentHTML",
                    "document.write",
                    "eval(",
                ] {
                    assert!(!a.body.contains(sink), "{} uses {sink}", a.name);
                }
            }
        }
    }
}

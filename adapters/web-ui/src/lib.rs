//! # slavealloc-web-ui
//!
//! The release engineers' web UI, served by the daemon under `/ui`:
//! a dashboard, the slaves and masters tables with inline editing, the silo
//! report with per-master spread, the audit log and, when the daemon keeps
//! the live fleet (what the Buildbot masters' polls say), who is connected
//! where and where that differs from what was recorded (the drift page).
//! Slaves can be selected and changed in bulk (enable, disable with a note
//! and an end, lock, move), each change previewed with the bulk API's dry
//! run before it is applied; masters are drained with a note, an end and
//! optionally gracefully, and a master's page shows its drain and the
//! workers still connected to it; the tac preview says why the slave gets
//! its master.
//!
//! The main design decision: pages are rendered on the server from the
//! domain [`Inventory`], and every write goes through the daemon's JSON REST
//! API from a little plain JavaScript. Rendering on the server keeps a
//! 10,000-slave list fast (it is filtered, sorted and paged where the data
//! is, and the browser only ever holds one page); writing through the API
//! means its checks, write authentication and audit apply to the UI exactly
//! as to any other client. This crate therefore never writes anything.
//!
//! Holds (drains and disables with a note) are the API's maintenance
//! service, not the inventory's: this crate is given no port for them, so a
//! master's page renders the master and `app.js` reads its drain from `GET
//! /api/masters/<id>/drain`, refreshing it while the page is open. Every
//! value such a read brings is put into the page as text, never as markup.
//!
//! Templates and assets are embedded in the binary (`include_str!`): there is
//! no JavaScript build step and nothing is fetched from outside, since the
//! build network has no internet.
//!
//! The daemon mounts [`routes_with_live`] (or [`routes`], without the live
//! fleet) at `<base>/ui` (`slavealloc-http-warp`'s `ServerConfig::ui`): the
//! filter sees only the path after `/ui`.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use slavealloc_domain::{Host, Inventory, LiveStore};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

mod pages;
mod view;

/// How the UI is served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiConfig {
    /// The path prefix the daemon is reachable under from the browser
    /// (`--base-url`, e.g. `/slavealloc` behind nginx; empty at the root).
    /// Every link and every API request of the UI starts with it.
    pub base_url: String,
    /// Whether the API wants `Authorization: Bearer <token>` on writes: the
    /// UI then asks once for a token and keeps it for the browser session.
    pub write_auth: bool,
    /// How long a page may wait for the database before it is answered with
    /// 503 instead (the daemon passes its own database deadline); `None`
    /// waits as long as the store does.
    pub db_deadline: Option<Duration>,
}

impl UiConfig {
    /// The base as a path prefix without a trailing slash: `""` or
    /// `"/prefix"`. A full URL is kept as it is (minus the slash), so links
    /// still work if a deployment passes one.
    fn base_path(&self) -> String {
        let trimmed = self.base_url.trim().trim_end_matches('/');
        if trimmed.is_empty() || trimmed.starts_with('/') || trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("/{trimmed}")
        }
    }
}

/// Where the pages read the live fleet from: the boots, the Buildbot
/// masters' polls and the masters' status ([`slavealloc_domain::live`]).
/// The same three things the JSON API's live objects are judged with, so
/// that a page and `GET /api/slaves` agree on who is connected.
#[derive(Clone)]
pub struct LiveSource {
    /// Where the live state is kept (the daemon's database).
    pub store: Arc<dyn LiveStore>,
    /// Facts from a master that has not answered a poll for this long are
    /// marked "not fresh".
    pub fresh_for: Duration,
    /// The clock the facts are judged by: "3 min ago", fresh, stale.
    pub host: Arc<dyn Host>,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("fresh_for", &self.fresh_for)
            .finish_non_exhaustive()
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("dashboard.html", include_str!("../templates/dashboard.html")),
    ("slaves.html", include_str!("../templates/slaves.html")),
    ("masters.html", include_str!("../templates/masters.html")),
    ("master.html", include_str!("../templates/master.html")),
    ("silos.html", include_str!("../templates/silos.html")),
    ("audit.html", include_str!("../templates/audit.html")),
    ("drift.html", include_str!("../templates/drift.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("pager.html", include_str!("../templates/pager.html")),
];

const APP_CSS: &str = include_str!("../assets/app.css");
const APP_JS: &str = include_str!("../assets/app.js");
/// A favicon drawn inline so the browser does not ask for `/favicon.ico`.
const ICON_SVG: &str = include_str!("../assets/icon.svg");

/// Everything a page handler needs; built once and shared.
pub(crate) struct Ui {
    env: Environment<'static>,
    base: String,
    write_auth: bool,
    db_deadline: Option<Duration>,
    /// Changes whenever an asset does, so browsers never run stale
    /// JavaScript against new pages (assets are cached for a day).
    asset_version: String,
    pub(crate) inventory: Inventory,
    /// `None`: the pages show what was recorded only, as before the live
    /// fleet existed.
    pub(crate) live: Option<LiveSource>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Ui {
    fn new(config: &UiConfig, inventory: Inventory, live: Option<LiveSource>) -> Self {
        let mut env = Environment::new();
        // A typo in a template must fail the page (and the tests), never
        // render as an empty string.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Loaded lazily so that a broken template is an error page for that
        // page, not a panic at start-up; the tests render every page.
        env.set_loader(|name| Ok(TEMPLATES.iter().find(|(n, _)| *n == name).map(|(_, t)| (*t).to_owned())));
        env.add_filter("thousands", view::thousands);
        env.set_formatter(|out, state, value| match value.as_str() {
            // minijinja also escapes `/`, which is safe but turns every URL
            // into `&#x2f;` soup; the five characters below are what HTML
            // needs in text and quoted attributes.
            Some(s) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
                Ok(out.write_str(&view::escape_html(s))?)
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        let mut hasher = DefaultHasher::new();
        (APP_CSS, APP_JS, ICON_SVG).hash(&mut hasher);
        Self {
            env,
            base: config.base_path(),
            write_auth: config.write_auth,
            db_deadline: config.db_deadline,
            asset_version: format!("{:x}", hasher.finish() & 0xffff_ffff),
            inventory,
            live,
        }
    }

    /// Renders a page with the context every page gets; a template error is
    /// logged and answered with a plain 500.
    pub(crate) fn render(&self, status: StatusCode, template: &str, ctx: minijinja::Value) -> Response {
        let common = minijinja::context! {
            base => self.base,
            write_auth => self.write_auth,
            version => self.asset_version,
            // The drift tab and the live columns exist only with a source.
            has_live => self.live.is_some(),
        };
        let result = self
            .env
            .get_template(template)
            .and_then(|t| t.render(minijinja::context! { ..ctx, ..common }));
        match result {
            Ok(body) => page_response(status, body),
            Err(e) => {
                tracing::error!(template, error = %format!("{e:#}"), "cannot render a UI page");
                let mut r = format!("cannot render this page: {e}").into_response();
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        }
    }

    /// Runs a page, bounded by the database deadline.
    async fn page(&self, page: impl Future<Output = Response>) -> Response {
        let Some(deadline) = self.db_deadline else {
            return page.await;
        };
        match tokio::time::timeout(deadline, page).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(
                    deadline_ms = deadline.as_millis() as u64,
                    "a UI page timed out on the database"
                );
                self.error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database did not answer",
                    &format!("No answer within {} ms. Try again in a moment.", deadline.as_millis()),
                )
            }
        }
    }

    /// An error page with a short reason.
    pub(crate) fn error(&self, status: StatusCode, title: &str, message: &str) -> Response {
        self.render(
            status,
            "error.html",
            minijinja::context! { page => "", title => title, message => message, status => status.as_u16() },
        )
    }
}

fn page_response(status: StatusCode, body: String) -> Response {
    let mut r = warp::reply::html(body).into_response();
    *r.status_mut() = status;
    let h = r.headers_mut();
    // Pages show live data.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}

fn asset(name: &str) -> Option<Response> {
    let (body, content_type) = match name {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "icon.svg" => (ICON_SVG, "image/svg+xml"),
        _ => return None,
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Links carry a content hash (`?v=`), so a day of caching is safe.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(r)
}

/// The UI's routes without the live fleet: [`routes_with_live`] with no
/// source, for a daemon that keeps no live state.
pub fn routes(config: UiConfig, inventory: Inventory) -> BoxedFilter<(Response,)> {
    routes_with_live(config, inventory, None)
}

/// The UI's routes, relative to where they are mounted (`<base>/ui`): `/`
/// (the dashboard), `/slaves`, `/masters`, `/masters/<nickname>`, `/silos`,
/// `/audit`, `/drift`, the
/// assets under `/static/`, and an HTML 404 for any other `GET`. Other
/// methods are rejected, for the daemon's recovery to answer.
///
/// Pages read through `inventory`; writes are made by the browser through
/// the JSON API under `<base_url>/api`. With `live`, the slaves, masters and
/// dashboard pages show who is connected where and `/drift` compares it
/// with what was recorded; without it they render as they always did and
/// `/drift` is a 404 that says why.
pub fn routes_with_live(config: UiConfig, inventory: Inventory, live: Option<LiveSource>) -> BoxedFilter<(Response,)> {
    let ui = Arc::new(Ui::new(&config, inventory, live));
    let with_ui = {
        let ui = ui.clone();
        warp::any().map(move || ui.clone())
    };
    // `warp::query::raw` rejects a request without a query string.
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let dashboard = warp::path::end()
        .and(with_ui.clone())
        .then(|ui: Arc<Ui>| async move { ui.page(pages::dashboard(&ui)).await });
    let slaves = warp::path("slaves")
        .and(warp::path::end())
        .and(with_ui.clone())
        .and(raw_query)
        .then(|ui: Arc<Ui>, q: String| async move { ui.page(pages::slaves(&ui, &q)).await });
    let masters = warp::path("masters")
        .and(warp::path::end())
        .and(with_ui.clone())
        .and(raw_query)
        .then(|ui: Arc<Ui>, q: String| async move { ui.page(pages::masters(&ui, &q)).await });
    // One master: its details, its drain and the drain's progress.
    let master = warp::path("masters")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(with_ui.clone())
        .then(|name: String, ui: Arc<Ui>| async move {
            let name = view::decode_segment(&name);
            ui.page(pages::master(&ui, &name)).await
        });
    let silos = warp::path("silos")
        .and(warp::path::end())
        .and(with_ui.clone())
        .and(raw_query)
        .then(|ui: Arc<Ui>, q: String| async move { ui.page(pages::silos(&ui, &q)).await });
    let audit = warp::path("audit")
        .and(warp::path::end())
        .and(with_ui.clone())
        .and(raw_query)
        .then(|ui: Arc<Ui>, q: String| async move { ui.page(pages::audit(&ui, &q)).await });
    let drift = warp::path("drift")
        .and(warp::path::end())
        .and(with_ui.clone())
        .and(raw_query)
        .then(|ui: Arc<Ui>, q: String| async move { ui.page(pages::drift(&ui, &q)).await });
    let statics = warp::path("static")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(with_ui.clone())
        .map(|name: String, ui: Arc<Ui>| {
            asset(&name).unwrap_or_else(|| ui.error(StatusCode::NOT_FOUND, "Not found", "There is no such asset."))
        });
    let not_found = with_ui.map(|ui: Arc<Ui>| {
        ui.error(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page. The tabs above list every page of the UI.",
        )
    });

    warp::get()
        .and(
            dashboard
                .or(slaves)
                .unify()
                .or(masters)
                .unify()
                .or(master)
                .unify()
                .or(silos)
                .unify()
                .or(audit)
                .unify()
                .or(drift)
                .unify()
                .or(statics)
                .unify()
                .or(not_found)
                .unify(),
        )
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_is_a_prefix_without_trailing_slash() {
        let base = |s: &str| {
            UiConfig {
                base_url: s.into(),
                ..UiConfig::default()
            }
            .base_path()
        };
        assert_eq!(base(""), "");
        assert_eq!(base("/"), "");
        assert_eq!(base("/slavealloc/"), "/slavealloc");
        assert_eq!(base("slavealloc"), "/slavealloc");
        assert_eq!(base("https://relops.example.com/sa/"), "https://relops.example.com/sa");
    }

    #[test]
    fn every_template_parses() {
        let env = Ui::new(&UiConfig::default(), dummy_inventory(), None).env;
        for (name, _) in TEMPLATES {
            env.get_template(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    fn dummy_inventory() -> Inventory {
        let store = Arc::new(slavealloc_store_memory::MemoryStore::new());
        let host = Arc::new(slavealloc_domain::FixedHost {
            now: std::time::SystemTime::UNIX_EPOCH,
            fqdn: "test".into(),
        });
        Inventory::new(store, host)
    }
}

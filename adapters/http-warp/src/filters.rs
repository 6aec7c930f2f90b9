//! Routing only: which request goes to which handler.
//!
//! Every route matches its path before its method, so that a known path
//! with the wrong method is a 405 and an unknown path a 404 (warp prefers
//! "method not allowed" over "not found" when it combines rejections).

use std::convert::Infallible;
use std::sync::Arc;

use slavealloc_domain::Table;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::handlers::{self, Caller};
use crate::metrics::route_of;
use crate::models::Body;
use crate::{client, holds, rejections, workers, AppState, UiFilter};

type Routes = BoxedFilter<(Response,)>;

fn with_state(state: Arc<AppState>) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&state))
}

/// The raw query string, empty when there is none (warp's own rejects a
/// request without one).
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// A table the API serves, from one path segment; anything else is not
/// found.
fn table() -> impl Filter<Extract = (Table,), Error = Rejection> + Clone {
    warp::path::param::<String>().and_then(|name: String| async move {
        name.parse::<Table>()
            .ok()
            .filter(|t| t.is_exposed())
            .ok_or_else(warp::reject::not_found)
    })
}

fn caller(state: &AppState) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(client(Arc::clone(&state.trusted_proxies)))
        .map(|authorization, client| Caller { authorization, client })
}

fn body() -> impl Filter<Extract = (Body,), Error = Rejection> + Clone {
    warp::body::stream().map(Body::new)
}

/// `/gettac/<slave>`.
fn gettac(state: Arc<AppState>) -> Routes {
    warp::path!("gettac" / String)
        .and(warp::get())
        .and(client(Arc::clone(&state.trusted_proxies)))
        .and(with_state(state))
        .then(|name, client, state| handlers::gettac(state, name, client))
        .boxed()
}

/// Everything under `/api`, with JSON answers for what no route matches.
fn api(state: Arc<AppState>, allocator: bool) -> Routes {
    let s = || with_state(Arc::clone(&state));
    let index = warp::path::end().and(warp::get()).and(s()).then(handlers::api_index);
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .and(s())
        .then(handlers::openapi);
    let audit = warp::path!("audit")
        .and(warp::get())
        .and(s())
        .and(raw_query())
        .then(handlers::audit);
    let drift = warp::path!("drift").and(warp::get()).and(s()).then(handlers::drift);
    let whatif = warp::path!("whatif")
        .and(warp::get())
        .and(s())
        .and(raw_query())
        .then(handlers::whatif);
    let list = table()
        .and(warp::path::end())
        .and(warp::get())
        .and(s())
        .and(raw_query())
        .then(|t, state, q| handlers::list(state, t, q));
    let create = table()
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(caller(&state))
        .and(body())
        .then(|t, state, c, b| handlers::create_row(state, t, c, b));
    let row = || table().and(warp::path::param::<String>()).and(warp::path::end());
    let get = row()
        .and(warp::get())
        .and(s())
        .and(raw_query())
        .then(|t, key, state, q| handlers::get_row(state, t, key, q));
    let put = row()
        .and(warp::put())
        .and(s())
        .and(raw_query())
        .and(caller(&state))
        .and(body())
        .then(|t, key, state, q, c, b| handlers::put_row(state, t, key, q, c, b));
    let delete = row()
        .and(warp::delete())
        .and(s())
        .and(raw_query())
        .and(caller(&state))
        .then(|t, key, state, q, c| handlers::delete_row(state, t, key, q, c));

    let mut routes: Routes = index
        .or(openapi)
        .unify()
        .or(audit)
        .unify()
        .or(drift)
        .unify()
        .or(whatif)
        .unify()
        .or(list)
        .unify()
        .or(create)
        .unify()
        .or(get)
        .unify()
        .or(put)
        .unify()
        .or(delete)
        .unify()
        .boxed();
    // A Buildbot master's worker list (crate::workers): an inventory read,
    // so it is served with --no-allocator too.
    let workers = warp::path!("masters" / String / "workers")
        .and(warp::get())
        .and(s())
        .and(raw_query())
        .and(caller(&state))
        .then(|master, state, q, c| workers::master_workers(state, master, q, c));
    routes = workers.or(routes).unify().boxed();
    let bulk = warp::path!("slaves" / "bulk")
        .and(warp::post())
        .and(s())
        .and(caller(&state))
        .and(body())
        .then(holds::bulk);
    let holds_list = warp::path!("holds")
        .and(warp::get())
        .and(s())
        .and(raw_query())
        .then(holds::list);
    let drain_status = warp::path!("masters" / String / "drain")
        .and(warp::get())
        .and(s())
        .and(raw_query())
        .then(|key, state, q| holds::drain_status(state, key, q));
    // Only the action names match, so that a POST to another route under
    // a row (its worker list) is still "method not allowed".
    let action = warp::path::param::<String>().and_then(|a: String| async move {
        if holds::ACTIONS.contains(&a.as_str()) {
            Ok(a)
        } else {
            Err(warp::reject::not_found())
        }
    });
    let act = table()
        .and(warp::path::param::<String>())
        .and(action)
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(raw_query())
        .and(caller(&state))
        .and(body())
        .then(|t, key, action, state, q, c, b| holds::act(state, t, key, action, q, c, b));
    routes = bulk
        .or(holds_list)
        .unify()
        .or(drain_status)
        .unify()
        .or(act)
        .unify()
        .or(routes)
        .unify()
        .boxed();
    if allocator {
        let peek = warp::path!("gettac" / String)
            .and(warp::get())
            .and(s())
            .and(caller(&state))
            .and(raw_query())
            .then(|name, state, c, q| handlers::peek(state, name, c, q));
        routes = peek.or(routes).unify().boxed();
    }
    warp::path("api").and(routes.recover(rejections::json).unify()).boxed()
}

/// Refuses, before any route, what [`crate::guard`] refuses.
fn guarded(state: Arc<AppState>) -> BoxedFilter<()> {
    warp::method()
        .and(warp::path::peek())
        .and(warp::header::headers_cloned())
        .and_then(move |method, path: warp::path::Peek, headers| {
            let verdict = state.guard.check(&method, path.as_str(), &headers);
            async move { verdict.map_err(|e| warp::reject::custom(rejections::Refused(e))) }
        })
        .untuple_one()
        .boxed()
}

/// Matches the base path's segments (nothing for `/`).
fn base_path(base: &str) -> BoxedFilter<()> {
    base.split('/')
        .filter(|s| !s.is_empty())
        .fold(warp::any().boxed(), |f, segment| {
            f.and(warp::path(segment.to_owned())).boxed()
        })
}

/// The whole application: every route under the base path, rejections
/// rendered, `Cache-Control: no-cache` on every answer, metrics counted.
pub(crate) fn app(state: Arc<AppState>, allocator: bool, ui: Option<UiFilter>) -> Routes {
    let s = || with_state(Arc::clone(&state));
    let healthz = warp::path!("healthz").and(warp::get()).and(s()).then(handlers::healthz);
    let metrics = warp::path!("metrics").and(warp::get()).and(s()).then(handlers::metrics);
    let root = warp::path::end().and(warp::get()).and(s()).then(handlers::root);

    let mut routes: Routes = healthz
        .or(metrics)
        .unify()
        .or(root)
        .unify()
        .or(api(Arc::clone(&state), allocator))
        .unify()
        .boxed();
    if allocator {
        routes = gettac(Arc::clone(&state)).or(routes).unify().boxed();
    }
    if let Some(ui) = ui {
        routes = routes.or(warp::path("ui").and(ui)).unify().boxed();
    }

    let counted = Arc::clone(&state);
    base_path(&state.base)
        .and(guarded(Arc::clone(&state)))
        .and(routes)
        .recover(rejections::plain)
        .unify()
        .with(warp::reply::with::default_header("cache-control", "no-cache"))
        .with(warp::log::custom(move |info| {
            let path = info.path().strip_prefix(counted.base.as_str()).unwrap_or(info.path());
            let status = info.status().as_u16();
            counted.metrics.request(route_of(path), info.method().as_str(), status);
            tracing::debug!(
                method = %info.method(),
                path = info.path(),
                status,
                elapsed_ms = info.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
        }))
        .map(Reply::into_response)
        .boxed()
}

//! `GET /api/<table>` is streamed a page at a time; on a real listener,
//! over a fleet of several pages, its answer must be what the whole list
//! gave: the domain's rows, in key order, with its filters, and each
//! slave's and master's `live` object as the one-row answer judges it.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::SystemTime;

use common::Kind;
use serde_json::Value as Json;
use slavealloc_domain::{FixedHost, Inventory, SlaveFilter, Table};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_http_warp::{routes, ServerConfig};

/// GETs `path` from a real socket, body read whole.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Json) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(hyper::Body::empty())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = hyper::body::to_bytes(resp.into_body()).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

fn without_live(rows: &Json) -> Vec<Json> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("live");
            r
        })
        .collect()
}

async fn streamed_list_is_the_whole_list(kind: Kind) {
    // 1,234 slaves: three pages and many chunks.
    let fleet = generate_fleet(&FleetSpec::with_slaves(1234));
    let Some((store, db)) = common::store(kind, &fleet).await else {
        return;
    };
    let filter = routes(common::services(Arc::clone(&store)), ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(slavealloc_http_warp::serve(listener, filter, async {
        let _ = stopped.await;
    }));
    let host = Arc::new(FixedHost {
        now: SystemTime::now(),
        fqdn: "slavealloc.test".into(),
    });
    let inventory = Inventory::new(store.clone(), host);

    let pool = fleet.rows(Table::Pools)[0]["name"].as_text().unwrap().to_owned();
    let cases = [
        ("/api/slaves", SlaveFilter::default()),
        (
            "/api/slaves?include_decomm=1",
            SlaveFilter {
                include_decomm: true,
                ..Default::default()
            },
        ),
        (
            &*format!("/api/slaves?pool={pool}&enabled=1"),
            SlaveFilter {
                pool: vec![pool.clone()],
                enabled: Some(true),
                ..Default::default()
            },
        ),
    ];
    for (path, slave_filter) in cases {
        let (status, answer) = get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        let whole = serde_json::to_value(inventory.list(Table::Slaves, &slave_filter).await.unwrap()).unwrap();
        assert!(!whole.as_array().unwrap().is_empty(), "{path}");
        assert_eq!(without_live(&answer), *whole.as_array().unwrap(), "{path}");
    }
    // The live object of each row is the one its own answer judges.
    let (_, slaves) = get(addr, "/api/slaves?include_decomm=1").await;
    assert!(slaves.as_array().unwrap().len() > 1000, "several pages");
    for row in slaves.as_array().unwrap().iter().step_by(97) {
        let (_, one) = get(addr, &format!("/api/slaves/{}", row["slaveid"])).await;
        assert_eq!(row["live"], one["live"]);
    }
    // A live filter keeps exactly the rows whose live object says so.
    let (_, unconnected) = get(addr, "/api/slaves?connected=0").await;
    let (_, all) = get(addr, "/api/slaves").await;
    let kept: Vec<&Json> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["live"]["state"] != "connected")
        .collect();
    assert_eq!(unconnected.as_array().unwrap().iter().collect::<Vec<_>>(), kept);
    // Masters and a small table: the whole list, as before.
    let (_, masters) = get(addr, "/api/masters").await;
    let whole = serde_json::to_value(inventory.list(Table::Masters, &SlaveFilter::default()).await.unwrap()).unwrap();
    assert_eq!(without_live(&masters), *whole.as_array().unwrap());
    let (_, master) = get(addr, &format!("/api/masters/{}", masters[0]["masterid"])).await;
    assert_eq!(masters[0]["live"], master["live"]);
    let (_, pools) = get(addr, "/api/pools").await;
    assert_eq!(pools, serde_json::to_value(fleet.rows(Table::Pools)).unwrap());

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    drop(inventory);
    drop(store);
    if let Some(db) = db {
        db.destroy().await;
    }
}

on_every_store!(streamed_list_is_the_whole_list);

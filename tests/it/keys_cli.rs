//! `corral keys …` and `/admin/api/keys*`: messy imports, duplicates, state round trips,
//! validation against an in-process `corral sim` that requires keys, on SQLite and Postgres.

use std::path::{Path, PathBuf};

use actix_web::{App, test as atest, web};
use corral::cli::keys as keys_cli;
use corral::config::Config;
use corral::keys::probe::Verdict;
use corral::keys::{KeyPools, derive_key_id};
use corral::metrics::Metrics;
use corral::sim::{SimArgs, SimHandle};
use corral::store::{Store, keys, users};
use serde_json::Value;

use crate::support::postgres::PgServer;

const K1: &str = "sk-one-aaaaaaaaaaaaaaaa";
const K2: &str = "sk-two-bbbbbbbbbbbbbbbb";
const K3: &str = "0123456789abcdef.ZYXWVUTSRQ";
const K4: &str = "sk-four-dddddddddddddddd";

/// Blank lines, comments, garbage, a duplicate, CRLF, 4-field lines (one broken).
fn messy_file() -> String {
    [
        "# cloud keys",                                             // 1
        "",                                                         // 2
        K1,                                                         // 3
        "   ",                                                      // 4
        "not a key at all",                                         // 5
        &format!("me@example.com----hunter2pw----sess-zz----{K2}"), // 6
        K1,                                                         // 7 duplicate of 3
        "short",                                                    // 8
        &format!("a@b----pw----{K3}"),                              // 9 three fields
        &format!("  {K3}  "),                                       // 10
        &format!("x@y----pw2----sess-yy----{K4}"),                  // 11
    ]
    .join("\r\n")
}

struct Db {
    url: String,
    _guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Pg(#[allow(dead_code)] PgServer),
}

fn sqlite() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    Db {
        url: format!("sqlite://{}", dir.path().join("corral.db").display()),
        _guard: Guard::Sqlite(dir),
    }
}

fn postgres() -> Option<Db> {
    let server = PgServer::start()?;
    let url = server.create_db("corral").expect("create db");
    Some(Db {
        url,
        _guard: Guard::Pg(server),
    })
}

fn config(db_url: &str, extra: &str) -> Config {
    Config::from_toml(&format!(
        "[server]\nworkers = 1\n[database]\nurl = \"{db_url}\"\npool_size = 4\n\
         [[key_pools]]\nname = \"cloud\"\n[[key_pools]]\nname = \"other\"\n{extra}"
    ))
    .expect("test config")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn assert_no_secret(text: &str) {
    for secret in [K1, K2, K3, K4, "hunter2pw", "sess-zz", "me@example.com"] {
        assert!(!text.contains(secret), "`{secret}` shown in:\n{text}");
    }
}

fn import_list_and_state(db: Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "keys.txt", &messy_file());
    let cfg = config(&db.url, "");
    let store = Store::connect(&cfg.database).expect("connect");

    let err = keys_cli::import(&cfg, &store, &file, "nope", false).unwrap_err();
    assert!(err.contains("`nope`") && err.contains("cloud"), "{err}");

    let s = keys_cli::import(&cfg, &store, &file, "cloud", false).expect("import");
    assert_eq!((s.added, s.duplicates, s.invalid), (4, 1, 3));
    let lines: Vec<usize> = s.problems.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [5, 7, 8, 9]);
    assert!(
        s.problems[1].1.contains("duplicate of line 3"),
        "{:?}",
        s.problems
    );
    assert!(
        s.problems[3]
            .1
            .contains("email----password----session----key")
    );
    let text = s.render();
    assert!(text.starts_with("pool `cloud` from "), "{text}");
    assert!(text.contains("4 added, 1 duplicate, 3 invalid"), "{text}");
    assert_no_secret(&text);

    // Only keys are stored, nothing else of the 4-field lines.
    let stored = store.blocking(keys::load_stored).expect("load");
    let mut secrets: Vec<&str> = stored.iter().map(|(_, k)| k.secret.as_str()).collect();
    secrets.sort();
    let mut want = vec![K1, K2, K3, K4];
    want.sort();
    assert_eq!(secrets, want);
    assert!(stored.iter().all(|(p, k)| p == "cloud" && k.enabled));
    assert!(stored.iter().all(|(_, k)| k.id == derive_key_id(&k.secret)));

    // Again: everything is a duplicate; into another pool: named as stored elsewhere.
    let again = keys_cli::import(&cfg, &store, &file, "cloud", false).expect("re-import");
    assert_eq!((again.added, again.duplicates, again.invalid), (0, 5, 3));
    assert!(
        again
            .problems
            .iter()
            .any(|(l, m)| *l == 3 && m.starts_with("already stored ("))
    );
    let other = keys_cli::import(&cfg, &store, &file, "other", false).expect("other pool");
    assert_eq!(other.added, 0);
    assert!(other.render().contains("already stored in pool `cloud`"));

    let table = keys_cli::list(&cfg, &store, None).expect("list");
    assert_no_secret(&table);
    let header = table.lines().next().unwrap_or_default();
    for col in ["ID", "POOL", "PREFIX", "STATE", "CATEGORY", "CREATED"] {
        assert!(header.contains(col), "{header}");
    }
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.contains("sk-one-…"), "{table}");
    assert_eq!(
        keys_cli::list(&cfg, &store, Some("other"))
            .expect("list")
            .lines()
            .count(),
        1
    );

    let id = derive_key_id(K2);
    let said = keys_cli::set_enabled(&cfg, &store, &id, false).expect("disable");
    assert!(said.contains(&id) && said.contains("disabled"), "{said}");
    assert_no_secret(&said);
    let table = keys_cli::list(&cfg, &store, Some("cloud")).expect("list");
    let row = table.lines().find(|l| l.starts_with(&id)).expect("row");
    assert!(row.contains("disabled"), "{row}");
    let k2 = store.blocking(|c| keys::get_stored(c, &id)).expect("get");
    assert!(!k2.expect("stored").1.enabled);
    keys_cli::set_enabled(&cfg, &store, &id, true).expect("enable");
    let row = store
        .blocking(|c| keys::get(c, &id))
        .expect("get")
        .expect("row");
    assert_eq!(row.state, "active");
    let err = keys_cli::set_enabled(&cfg, &store, "f-000000000000", true).unwrap_err();
    assert!(err.contains("f-000000000000"), "{err}");
}

#[test]
fn import_list_and_state_sqlite() {
    import_list_and_state(sqlite());
}

#[test]
fn import_list_and_state_postgres() {
    if let Some(db) = postgres() {
        import_list_and_state(db);
    }
}

#[test]
fn list_shows_keys_file_keys_and_explains_they_are_not_stored() {
    let db = sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let kf = write(dir.path(), "apikeys.txt", &format!("{K3}\n{K1}\n"));
    let mut cfg = config(&db.url, "");
    cfg.key_pools[0].keys_file = Some(kf);
    let store = Store::connect(&cfg.database).expect("connect");
    let file = write(dir.path(), "import.txt", K1);
    keys_cli::import(&cfg, &store, &file, "cloud", false).expect("import");
    let table = keys_cli::list(&cfg, &store, None).expect("list");
    assert_no_secret(&table);
    assert_eq!(
        table.lines().count(),
        3,
        "K1 once, stored; K3 from the file:\n{table}"
    );
    let k3 = table
        .lines()
        .find(|l| l.starts_with(&derive_key_id(K3)))
        .expect("file key listed");
    assert!(k3.ends_with("keys_file"), "{k3}");
    let err = keys_cli::set_enabled(&cfg, &store, &derive_key_id(K3), false).unwrap_err();
    assert!(
        err.contains("keys_file") && err.contains("apikeys.txt"),
        "{err}"
    );
}

async fn keyed_sim(keys: &[&str]) -> SimHandle {
    corral::sim::start(SimArgs {
        require_key: keys.iter().map(|k| k.to_string()).collect(),
        ..SimArgs::default()
    })
    .await
    .expect("sim starts")
}

fn backend(sim: &SimHandle) -> String {
    format!(
        "[[backends]]\nname = \"cloud-sim\"\nurl = \"{}\"\nkey_pool = \"cloud\"\npoll_interval = \"1s\"\n",
        sim.url()
    )
}

#[actix_web::test]
async fn validate_disables_the_key_the_upstream_refuses() {
    let sim = keyed_sim(&[K1]).await;
    let db = sqlite();
    let cfg = config(&db.url, &backend(&sim));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "keys.txt", &format!("{K1}\n{K2}\n"));
    let run = {
        let (cfg, file) = (cfg.clone(), file.clone());
        move || {
            let store = Store::connect(&cfg.database).expect("connect");
            let no_backend = keys_cli::import(&cfg, &store, &file, "other", true).unwrap_err();
            let summary = keys_cli::import(&cfg, &store, &file, "cloud", true);
            (store, no_backend, summary)
        }
    };
    let (store, no_backend, summary) = actix_web::rt::task::spawn_blocking(run)
        .await
        .expect("import thread");
    assert!(no_backend.contains("key_pool = \"other\""), "{no_backend}");
    let s = summary.expect("import with --validate");
    assert_eq!(s.added, 2);
    assert_eq!(s.checks.len(), 2);
    assert_eq!(s.checks[0].id, derive_key_id(K1));
    assert_eq!(s.checks[0].verdict, Verdict::Valid { note: None });
    assert!(
        matches!(&s.checks[1].verdict, Verdict::Rejected { reason } if reason.contains("401")),
        "{:?}",
        s.checks[1]
    );
    let text = s.render();
    assert!(text.contains("1 ok, 1 disabled, 0 not checked"), "{text}");
    assert_no_secret(&text);
    let state = |k: &str| {
        let id = derive_key_id(k);
        store
            .blocking(|c| keys::get(c, &id))
            .expect("get")
            .expect("row")
            .state
    };
    assert_eq!(state(K1), "active");
    assert_eq!(state(K2), "disabled");
    sim.stop().await;
}

#[actix_web::test]
async fn admin_endpoints_list_toggle_persist_and_health_check() {
    let sim = keyed_sim(&[K1, K3]).await;
    let db = sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    // K3 (good) comes from the keys file; K1 (good) and K2 (refused) from the database.
    let kf = write(dir.path(), "apikeys.txt", K3);
    let mut cfg = config(&db.url, &backend(&sim));
    cfg.key_pools[0].keys_file = Some(kf);
    let imported = write(dir.path(), "import.txt", &format!("{K1}\n{K2}\n"));

    let (store, admin, user) = {
        let (cfg, imported) = (cfg.clone(), imported.clone());
        actix_web::rt::task::spawn_blocking(move || {
            let store = Store::connect(&cfg.database).expect("connect");
            keys_cli::import(&cfg, &store, &imported, "cloud", false).expect("import");
            let (_, admin) = store
                .blocking(|c| users::create(c, "root", true, None, None))
                .expect("admin");
            let (_, user) = store
                .blocking(|c| users::create(c, "alice", false, None, None))
                .expect("user");
            (store, admin, user)
        })
        .await
        .expect("setup")
    };

    let pools = KeyPools::new(&cfg, std::sync::Arc::new(Metrics::new()));
    assert_eq!(keys::load_into(&store, &pools).await.expect("load"), 2);
    let gw = corral::Gateway::start(cfg.clone()).await.expect("gateway");
    let app = atest::init_service(
        App::new()
            .app_data(web::Data::new(gw))
            .app_data(web::Data::new(pools.clone()))
            .configure(corral::api::admin_keys::configure),
    )
    .await;
    let call = |method: &str, path: &str, token: &str| {
        let req = match method {
            "GET" => atest::TestRequest::get(),
            _ => atest::TestRequest::post(),
        };
        req.uri(path)
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request()
    };

    let resp = atest::call_service(&app, call("GET", "/admin/api/keys", "crl_nope")).await;
    assert_eq!(resp.status(), 401);
    let body: Value = atest::read_body_json(resp).await;
    assert!(body["error"]["message"].is_string(), "OpenAI shape: {body}");
    let resp = atest::call_service(&app, call("GET", "/admin/api/keys", &user)).await;
    assert_eq!(resp.status(), 403);

    let resp = atest::call_service(&app, call("GET", "/admin/api/keys?pool=cloud", &admin)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = atest::read_body_json(resp).await;
    assert_no_secret(&body.to_string());
    let pool = &body["pools"][0];
    assert_eq!(pool["name"], "cloud");
    assert_eq!(pool["keys"].as_array().map(Vec::len), Some(3));
    assert_eq!(pool["active"], 3);
    let resp = atest::call_service(&app, call("GET", "/admin/api/keys?pool=nope", &admin)).await;
    assert_eq!(resp.status(), 404);

    // Disable and enable a stored key: live state and database both follow.
    let k1 = derive_key_id(K1);
    let db_state = |id: String| {
        let store = store.clone();
        async move {
            actix_web::rt::task::spawn_blocking(move || {
                store
                    .blocking(|c| keys::get(c, &id))
                    .expect("get")
                    .map(|r| r.state)
            })
            .await
            .expect("db")
        }
    };
    let resp = atest::call_service(
        &app,
        call("POST", &format!("/admin/api/keys/{k1}/disable"), &admin),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let key: Value = atest::read_body_json(resp).await;
    assert_eq!(
        (key["id"].as_str(), key["state"].as_str()),
        (Some(k1.as_str()), Some("disabled"))
    );
    assert_eq!(db_state(k1.clone()).await.as_deref(), Some("disabled"));
    let resp = atest::call_service(
        &app,
        call("POST", &format!("/admin/api/keys/{k1}/enable"), &admin),
    )
    .await;
    let key: Value = atest::read_body_json(resp).await;
    assert_eq!(key["state"], "active");
    assert_eq!(db_state(k1.clone()).await.as_deref(), Some("active"));

    // A file key toggles live only; unknown ids and actions are 404.
    let k3 = derive_key_id(K3);
    let resp = atest::call_service(
        &app,
        call("POST", &format!("/admin/api/keys/{k3}/disable"), &admin),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(pools.key(&k3).expect("k3")["state"], "disabled");
    atest::call_service(
        &app,
        call("POST", &format!("/admin/api/keys/{k3}/enable"), &admin),
    )
    .await;
    for path in [
        "/admin/api/keys/f-000000000000/disable".to_string(),
        format!("/admin/api/keys/{k1}/frobnicate"),
    ] {
        let resp = atest::call_service(&app, call("POST", &path, &admin)).await;
        assert_eq!(resp.status(), 404, "{path}");
    }

    // A key imported while the gateway runs joins its pool when first touched.
    let late = write(dir.path(), "late.txt", K4);
    {
        let (cfg, store) = (cfg.clone(), store.clone());
        actix_web::rt::task::spawn_blocking(move || {
            keys_cli::import(&cfg, &store, &late, "cloud", false).expect("late import")
        })
        .await
        .expect("late");
    }
    let k4 = derive_key_id(K4);
    assert!(pools.key(&k4).is_none());
    let resp = atest::call_service(
        &app,
        call("POST", &format!("/admin/api/keys/{k4}/enable"), &admin),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(pools.key(&k4).expect("k4 joined")["state"], "active");

    // Health check: K1 and K3 pass; K2 and K4 are refused, disabled live and in the database.
    let resp =
        atest::call_service(&app, call("POST", "/admin/api/keys/health-check", &admin)).await;
    assert_eq!(resp.status(), 400);
    let resp = atest::call_service(
        &app,
        call("POST", "/admin/api/keys/health-check?pool=cloud", &admin),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = atest::read_body_json(resp).await;
    assert_no_secret(&body.to_string());
    assert_eq!(body["checked"], 4, "{body}");
    assert_eq!(body["ok"], 2, "{body}");
    let failed = body["failed"].as_array().expect("failed");
    let mut ids: Vec<&str> = failed.iter().filter_map(|f| f["id"].as_str()).collect();
    ids.sort();
    let (k2, mut want) = (derive_key_id(K2), vec![derive_key_id(K2), k4.clone()]);
    want.sort();
    assert_eq!(ids, want);
    for f in failed {
        assert!(
            f["prefix"].as_str().is_some_and(|p| p.ends_with('…')),
            "{f}"
        );
        assert!(
            f["reason"].as_str().is_some_and(|r| r.contains("401")),
            "{f}"
        );
    }
    assert_eq!(pools.key(&k2).expect("k2")["state"], "disabled");
    assert_eq!(db_state(k2).await.as_deref(), Some("disabled"));
    assert_eq!(db_state(k4).await.as_deref(), Some("disabled"));
    assert_eq!(pools.key(&k1).expect("k1")["state"], "active");
    sim.stop().await;
}

/// A key the upstream refuses is disabled (reason and time in the database), re-probed with
/// an authenticated listing and enabled again once accepted; a manual disable is never
/// undone, and 5xx answers never count against a key.
#[actix_web::test]
async fn refused_keys_are_disabled_persisted_reprobed_and_enabled_again() {
    let sim = keyed_sim(&[K1]).await;
    let db = sqlite();
    let mut cfg = config(&db.url, &backend(&sim));
    cfg.auth.allow_anonymous = true;
    cfg.key_pools[0].disable_after_failures = 1;
    cfg.key_pools[0].reprobe_after = std::time::Duration::from_millis(300);
    let store = Store::connect(&cfg.database).expect("connect");
    let imported = corral::keys::parse_keys(K1);
    store
        .blocking(|c| keys::insert_many(c, "cloud", &imported.keys))
        .expect("stored");
    let id = derive_key_id(K1);
    let gw = crate::proxy::gateway(cfg).await;
    let chat = |text: &str| {
        crate::proxy::client()
            .post(format!("{}/api/chat", gw.url()))
            .send_json(&serde_json::json!({"model": "qwen3:8b", "stream": false,
                "messages": [{"role": "user", "content": text}]}))
    };
    let row = |store: &Store| {
        let id = id.clone();
        store
            .blocking(move |c| keys::get(c, &id))
            .expect("read")
            .expect("row")
    };

    let mut resp = chat("[[error=401]] hi").await.expect("sent");
    assert_eq!(
        resp.status(),
        502,
        "a refused upstream credential is corral's fault"
    );
    let text = String::from_utf8_lossy(&resp.body().await.expect("body")).to_string();
    assert!(
        text.contains("refused corral's credentials") && !text.contains(K1),
        "{text}"
    );
    let key = gw.gateway.keys.key(&id).unwrap();
    assert_eq!(key["state"], "disabled", "{key}");
    assert_eq!(key["disabled_reason"], "failures");
    let persisted = wait_for(|| {
        let r = row(&store);
        (r.state == "disabled" && r.disabled_reason.as_deref() == Some("failures")).then_some(r)
    })
    .await;
    assert!(persisted.is_some(), "the disable reached the database");

    // The probe finds the key accepted (the sim only fails the directive's request).
    let enabled = wait_for(|| {
        let r = row(&store);
        (gw.gateway.keys.key(&id).unwrap()["state"] == "active" && r.state == "active").then_some(r)
    })
    .await
    .expect("re-enabled after the probe");
    assert_eq!(enabled.disabled_reason, None);

    // 5xx is the backend's health: the key stays active.
    for _ in 0..3 {
        let resp = chat("[[error=500]] hi").await.expect("sent");
        assert!(resp.status().is_server_error());
    }
    assert_eq!(gw.gateway.keys.key(&id).unwrap()["state"], "active");

    // An operator's disable is never undone by the probe.
    assert!(gw.gateway.keys.set_enabled(&id, false));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let key = gw.gateway.keys.key(&id).unwrap();
    assert_eq!(key["state"], "disabled");
    assert_eq!(key["disabled_reason"], "manual");
}

/// `f`'s first `Some` within 10 s (polled every 50 ms).
async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..200 {
        if let Some(v) = f() {
            return Some(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

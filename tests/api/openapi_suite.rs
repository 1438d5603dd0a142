//! The OpenAPI document stays in step with the router: every route in `src/` is described, every
//! described operation is a route, and every described operation is mounted in the running
//! service.

use std::collections::BTreeSet;
use std::path::Path;

use meterpay::http::openapi::is_page;
use serde_json::Value;

use crate::helpers::spawn_app;

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// Source files whose routers belong to simulators, not to the service.
const SIMULATORS: &[&str] = &["src/dunning/sandbox.rs"];

/// `(METHOD, path)` of every `.route("path", method(…).method(…))` in the service's source,
/// leaving out unit tests.
fn routes_in_source() -> BTreeSet<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p)
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut routes = BTreeSet::new();
    for f in files {
        // Simulators of other parties' servers (the sandbox SMS provider) are served on their own
        // listeners, never by the service's router.
        if SIMULATORS.iter().any(|s| f.ends_with(s)) {
            continue;
        }
        let source = std::fs::read_to_string(&f).unwrap();
        let source = source.split("#[cfg(test)]").next().unwrap();
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for chunk in code.split(".route(").skip(1) {
            let chunk = chunk.trim_start();
            // A path given by a constant (the stylesheet) is a page; only literals are API.
            let Some(rest) = chunk.strip_prefix('"') else { continue };
            let (path, rest) = rest.split_once('"').unwrap();
            // The arguments run to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &rest[..end];
            let mut found = 0;
            for m in METHODS {
                let pat = format!("{m}(");
                for (i, _) in args.match_indices(&pat) {
                    let before = args[..i].chars().last();
                    if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                        routes.insert((m.to_ascii_uppercase(), path.to_string()));
                        found += 1;
                    }
                }
            }
            assert!(found > 0, "{}: no method found for route {path}", f.display());
        }
    }
    routes
}

fn routes_in_document(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("a path item") {
            out.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_openapi_document_describes_every_api_route_and_nothing_else() {
    let app = spawn_app().await;
    let r = app.get("/api/v1/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let source: BTreeSet<_> = routes_in_source().into_iter().filter(|(_, p)| !is_page(p)).collect();
    assert!(source.len() > 30, "the scan finds the routes ({})", source.len());
    let documented = routes_in_document(&doc);
    let undocumented: Vec<_> = source.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from src/http/openapi.rs OPERATIONS: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&source).collect();
    assert!(stale.is_empty(), "documented operations with no route: {stale:?}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn every_documented_operation_is_mounted_in_the_running_service() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let client = crate::staff::no_redirects();
    let mut checked = 0;
    for (method, path) in routes_in_document(&doc) {
        let concrete: String = path
            .split('/')
            .map(|s| match s {
                "{id}" => "1",
                s if s.starts_with('{') => "nothing-here",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        let mut req = client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{concrete}", app.address),
        );
        if method != "GET" && method != "DELETE" {
            req = req.header("content-type", "application/json").body("{}");
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path}: the path is routed but not this method");
        assert!(
            !(status == 404 && body.contains("no such endpoint")),
            "{method} {path}: not mounted (the fallback answered)"
        );
        checked += 1;
    }
    assert!(checked > 30, "{checked}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn every_documented_path_parameter_is_declared() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            for n in &names {
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == *n && p["in"] == "path"));
                assert!(declared, "{method} {path}: path parameter {n} is not declared");
            }
        }
    }
    app.stop().await.unwrap();
}

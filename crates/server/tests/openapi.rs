//! The served OpenAPI document (`src/openapi.json`) documents every route of the router, with
//! each of its methods, and nothing the router does not serve. The routes are read from the
//! crate's own source (every `.route("PATH", METHOD(handler).METHOD(handler)...)` under
//! `src/`), so an endpoint added without its documentation fails here.

use pmargin_server::api::OPENAPI;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The text up to the parenthesis that closes the one just before `s` (`s` starts inside it),
/// and the rest after it.
fn until_close(s: &str) -> Option<(&str, &str)> {
    let mut depth = 1;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&s[..i], &s[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// The methods of a method router written `[path::]get(h).post(h)...`.
fn methods_of(handler: &str) -> Option<Vec<String>> {
    let mut rest = handler.trim();
    let mut methods = Vec::new();
    loop {
        let open = rest.find('(')?;
        let name = rest[..open]
            .trim()
            .rsplit("::")
            .next()?
            .trim_start_matches('.');
        if !METHODS.contains(&name) {
            return None;
        }
        methods.push(name.to_string());
        let (_, after) = until_close(&rest[open + 1..])?;
        rest = after.trim_start();
        if rest.is_empty() {
            return Some(methods);
        }
        if !rest.starts_with('.') {
            return None;
        }
    }
}

/// Every (path, method) the crate's routers register.
fn routes() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Comments may quote code; only code registers routes.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        for nesting in [".nest(", ".nest_service(", ".route_service("] {
            assert!(
                !code.contains(nesting),
                "{} uses `{nesting}`: this test reads plain `.route` calls only; teach it the prefix",
                file.display()
            );
        }
        for (at, _) in code.match_indices(".route(") {
            let call = &code[at + ".route(".len()..];
            let (args, _) = until_close(call)
                .unwrap_or_else(|| panic!("{}: unclosed .route( call", file.display()));
            let where_ = || format!("{}: .route({args})", file.display());
            let (path, handler) = args
                .trim_start()
                .strip_prefix('"')
                .and_then(|a| a.split_once('"'))
                .unwrap_or_else(|| panic!("{}: the path is not a string literal", where_()));
            let handler = handler
                .trim_start()
                .strip_prefix(',')
                .unwrap_or_else(|| panic!("{}: no handler", where_()))
                // (rustfmt ends a call written across lines with a comma)
                .trim_end()
                .trim_end_matches(',');
            let methods = methods_of(handler).unwrap_or_else(|| {
                panic!(
                    "{}: cannot read the methods (expected `get(h).post(h)...`)",
                    where_()
                )
            });
            for m in methods {
                routes.insert((path.to_string(), m));
            }
        }
    }
    routes
}

fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    let paths = doc["paths"].as_object().expect("openapi.json has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item
                .as_object()
                .unwrap_or_else(|| panic!("{path}: not an object"));
            item.keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect()
}

#[test]
fn the_route_reader_reads_what_the_router_writes() {
    // The parser itself, on the shapes the router uses, so that a route it cannot read fails
    // loudly rather than going unchecked.
    assert_eq!(methods_of(" get(healthz)").unwrap(), ["get"]);
    assert_eq!(
        methods_of("\n post(post_key).get(list_keys)\n").unwrap(),
        ["post", "get"]
    );
    assert_eq!(
        methods_of(" axum::routing::delete(delete_key)").unwrap(),
        ["delete"]
    );
    assert_eq!(methods_of(" some_router").as_deref(), None);
    assert_eq!(methods_of(" any(handler)").as_deref(), None);
    let r = routes();
    // Routes written across lines, with a path and two methods, and from another module.
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/keys", "post"),
        ("/v1/keys", "get"),
        ("/v1/accounts/{id}/settlement", "get"),
        ("/v1/dashboard/summary", "get"),
    ] {
        assert!(
            r.contains(&(path.to_string(), method.to_string())),
            "{method} {path} not read from the router: {r:?}"
        );
    }
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let routes = routes();
    let documented = documented();
    let undocumented: Vec<String> = routes
        .difference(&documented)
        .map(|(p, m)| format!("{} {p}", m.to_uppercase()))
        .collect();
    let stale: Vec<String> = documented
        .difference(&routes)
        .map(|(p, m)| format!("{} {p}", m.to_uppercase()))
        .collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "routes missing from src/openapi.json: {undocumented:?}; documented but not routed: {stale:?}"
    );
}

//! Checks of the code's shape that the compiler does not make: the core crate stays free of the
//! kernel and the runtime, and no two modules of a crate import each other (directly or round
//! a longer loop), so that the way through the code never doubles back.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// Crates the pure core must not depend on, even indirectly.
const NOT_IN_CORE: [&str; 6] = ["aya", "tokio", "axum", "prometheus", "hyper", "clap"];

/// `cargo tree` of the core: none of NOT_IN_CORE may appear.
pub fn core_is_pure(root: &Path) -> Result<()> {
    let mut c = cmd::command("cargo", &["tree", "-p", "iotwatch-core", "-e", "normal", "--prefix", "none"]);
    c.current_dir(root);
    let tree = cmd::output(&mut c)?;
    let found: BTreeSet<&str> =
        tree.lines().filter_map(|l| l.split_whitespace().next()).filter(|name| NOT_IN_CORE.contains(name)).collect();
    if !found.is_empty() {
        bail!(
            "agent-core depends on {}: the core must build without kernel or runtime crates",
            found.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The module a source file defines, from its path under `src/`: `kernel/load.rs` is
/// `kernel::load`, `kernel/mod.rs` is `kernel`, `lib.rs` is the crate root (empty).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_owned());
        }
    }
    parts.join("::")
}

/// The `crate::...` paths that code (not its tests) of `source` names, as module paths: the
/// longest known module that each path starts with.
fn imports(source: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        // `crate::{a::X, b}` names several paths: take the words of the group.
        let group = match rest.strip_prefix('{') {
            Some(g) => &g[..g.find("};").unwrap_or(g.len())],
            None => &rest[..rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len())],
        };
        for item in group.split([',', '\n']) {
            let path: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
                .collect();
            let mut parts: Vec<&str> = path.split("::").map(|p| p.trim_start_matches('{')).collect();
            while !parts.is_empty() {
                let m = parts.join("::");
                if modules.contains(&m) {
                    out.insert(m);
                    break;
                }
                parts.pop();
            }
        }
    }
    out
}

/// A cycle in `edges`, as the modules along it, if there is one.
pub fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|m| visit(m, edges, &mut Vec::new(), &mut done))
}

/// No import cycle among the modules of the crate whose sources are in `src`. A module's own
/// parent and children are not edges: `mod` declarations are structure, not imports.
pub fn no_import_cycle(src: &Path) -> Result<()> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f.strip_prefix(src).unwrap_or(f))).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let this = module_of(f.strip_prefix(src).unwrap_or(f));
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let related = |other: &String| {
            other == &this || other.starts_with(&format!("{this}::")) || this.starts_with(&format!("{other}::"))
        };
        let deps: BTreeSet<String> = imports(&text, &modules).into_iter().filter(|o| !related(o)).collect();
        edges.entry(this).or_default().extend(deps);
    }
    if let Some(cycle) = find_cycle(&edges) {
        bail!("{}: modules import each other: {}", src.display(), cycle.join(" -> "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_their_imports() {
        assert_eq!(module_of(Path::new("kernel/load.rs")), "kernel::load");
        assert_eq!(module_of(Path::new("kernel/mod.rs")), "kernel");
        assert_eq!(module_of(Path::new("lib.rs")), "");
        let modules: BTreeSet<String> = ["kernel", "kernel::load", "output::web", "pipeline"].map(String::from).into();
        let src = "use crate::{\n    kernel::load::{self, X},\n    output::web,\n};\nfn f() { crate::pipeline::open(); }\nuse crate::cmd;\nkernel\n#[cfg(test)]\nuse crate::kernel::Y;";
        let got = imports(src, &modules);
        assert_eq!(got, ["kernel::load", "output::web", "pipeline"].map(String::from).into());
    }

    #[test]
    fn finds_cycles_and_only_cycles() {
        let edges = |pairs: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                m.entry((*a).to_owned()).or_default().insert((*b).to_owned());
            }
            m
        };
        assert_eq!(find_cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
        let c = find_cycle(&edges(&[("events", "report"), ("report", "pipeline"), ("pipeline", "events")]))
            .expect("a cycle");
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn a_cycle_between_files_is_reported() {
        let tmp = crate::tmp::TempDir::new("iotwatch-structure").expect("a temporary directory");
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("cmd")).expect("mkdir");
        std::fs::write(dir.join("lib.rs"), "pub mod cmd;\npub mod web;\n").expect("write");
        std::fs::write(dir.join("cmd/mod.rs"), "pub mod run;\n").expect("write");
        std::fs::write(dir.join("cmd/run.rs"), "use crate::web::serve;\n").expect("write");
        std::fs::write(dir.join("web.rs"), "use crate::cmd::run::{Agent, lock};\n").expect("write");
        let err = no_import_cycle(dir).expect_err("run <-> web is a cycle");
        assert!(
            err.to_string().contains("cmd::run -> web -> cmd::run")
                || err.to_string().contains("web -> cmd::run -> web"),
            "{err}"
        );
    }

    /// Today's crates have none (the check runs on them in `cargo xtask test` as well).
    #[test]
    fn the_crates_have_no_import_cycle() {
        let root = crate::workspace_root();
        for src in ["agent/src", "agent-core/src", "xtask/src"] {
            no_import_cycle(&root.join(src)).unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
}

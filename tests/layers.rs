//! The source's layers run one way: each module of `src/` may use only the modules below it in
//! [`LAYERS`], and no group of modules (at any depth) uses itself in a circle. Read from the `use`
//! paths of the code itself (tests inside `#[cfg(test)]` modules are left out), so a new import that
//! runs back up fails here with the file that made it. No ONNX Runtime needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules, bottom first. A module may use those before it (and itself).
const LAYERS: &[&[&str]] = &[
    // Leaves: no imports from the crate.
    &["token", "metrics", "tls"],
    // The step-model contract, with the event binning it describes.
    &["contract"],
    // Requests decoded into frames.
    &["input"],
    // The anytime engine: scheduler, admission, policy (steps a `Stepper`).
    &["engine"],
    // ONNX Runtime: the `Stepper` that runs a real model.
    &["backend"],
    // Models put together from files: sessions and engines, the repository.
    &["model"],
    // Flags, log output and trace export (the subscriber's layers).
    &["config", "logging", "telemetry"],
    // The doors.
    &["api"],
    &["server"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/api/kserve/http.rs` is `api::kserve::http`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The file's code without its test modules (`#[cfg(test)]` to the end of that item).
fn without_tests(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // Skip the attributed item: to the matching closing brace of its first block.
            let mut depth = 0usize;
            let mut opened = false;
            for line in lines.by_ref() {
                depth += line.matches('{').count();
                opened |= line.contains('{');
                depth = depth.saturating_sub(line.matches('}').count());
                if opened && depth == 0 || !opened && line.trim_end().ends_with(';') {
                    break;
                }
            }
            continue;
        }
        if !line.trim_start().starts_with("//") {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// Every `crate::a::b` and `super::x` the code names, as absolute module paths.
fn references(module: &[String], code: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let words = |rest: &str| -> Vec<String> {
        rest.split("::")
            .map(|w| w.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>())
            .take_while(|w| !w.is_empty() && w.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        found.insert(words(&code[i + "crate::".len()..]));
    }
    // `super` is the module's parent: the crate for `src/api/mod.rs` (module `api`), `api` for
    // `src/api/http.rs` (module `api::http`).
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut path = parent.clone();
        path.extend(words(&code[i + "super::".len()..]));
        found.insert(path);
    }
    found.retain(|p| !p.is_empty());
    found
}

struct Graph {
    /// module (at some depth) -> modules it uses, with one file that makes each edge.
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

fn graph(depth: usize) -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let known: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let cut = |path: &[String]| path[..path.len().min(depth)].join("::");
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module.is_empty() {
            continue; // lib.rs / main.rs: the roots
        }
        let text = std::fs::read_to_string(file).expect("read");
        for reference in references(&module, &without_tests(&text)) {
            // The longest known module the path starts with (the rest names items).
            let Some(target) =
                (1..=reference.len()).rev().map(|n| reference[..n].to_vec()).find(|p| known.contains(p))
            else {
                continue;
            };
            let (from, to) = (cut(&module), cut(&target));
            if from != to && !to.is_empty() {
                let shown = file.strip_prefix(&src).unwrap_or(file).display().to_string();
                edges.entry(from).or_default().entry(to).or_insert(shown);
            }
        }
    }
    Graph { edges }
}

/// Groups of modules that use each other in a circle (Tarjan's strongly connected components).
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let targets: Vec<&'a str> =
            s.graph.edges.get(v).map(|t| t.keys().map(String::as_str).collect()).unwrap_or_default();
        for w in targets {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn describe(graph: &Graph, group: &[String]) -> String {
    let mut lines = Vec::new();
    for from in group {
        for (to, file) in graph.edges.get(from).into_iter().flatten() {
            if group.contains(to) {
                lines.push(format!("  {from} -> {to} (in src/{file})"));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn top_level_modules_use_only_the_layers_below_them() {
    let graph = graph(1);
    let mut wrong = Vec::new();
    for (from, targets) in &graph.edges {
        let Some(from_rank) = rank(from) else {
            wrong.push(format!("  {from}: not in LAYERS (add it to its layer in tests/layers.rs)"));
            continue;
        };
        for (to, file) in targets {
            match rank(to) {
                Some(to_rank)
                    if to_rank < from_rank
                        || LAYERS[from_rank].contains(&to.as_str()) && to_rank == from_rank => {}
                Some(_) => wrong.push(format!("  {from} -> {to} runs back up (in src/{file})")),
                None => wrong.push(format!("  {to}: not in LAYERS (used from src/{file})")),
            }
        }
    }
    assert!(wrong.is_empty(), "imports that break the layers:\n{}", wrong.join("\n"));
}

#[test]
fn no_modules_use_each_other_in_a_circle() {
    for depth in 1..=3 {
        let graph = graph(depth);
        let found = circles(&graph);
        let shown: Vec<String> = found.iter().map(|group| describe(&graph, group)).collect();
        assert!(found.is_empty(), "circles at depth {depth}:\n{}", shown.join("\n"));
    }
}

#[test]
fn the_checker_sees_a_circle_and_a_layer_break() {
    // The checker itself: a made-up graph with a circle is reported, one without is not.
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into(), "a.rs".into());
    edges.entry("b".into()).or_default().insert("a".into(), "b.rs".into());
    edges.entry("c".into()).or_default().insert("a".into(), "c.rs".into());
    let graph = Graph { edges };
    assert_eq!(circles(&graph), vec![vec!["a".to_owned(), "b".to_owned()]]);
    assert!(rank("engine") < rank("backend") && rank("contract") < rank("input"));
    let code = "use crate::engine::{Engine};\nuse super::frames::X;\n// crate::api::nope\n";
    let found = references(&["engine".into(), "scheduler".into()], &without_tests(code));
    assert!(
        found.contains(&vec!["engine".to_owned()])
            && found.contains(&vec!["engine".to_owned(), "frames".to_owned()])
    );
    assert!(
        !found.iter().any(|p| p.first().is_some_and(|m| m == "api")),
        "comments are not imports: {found:?}"
    );
}

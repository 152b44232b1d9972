//! The shape of the code: modules depend on each other one way only.
//!
//! Every `.rs` file under `src/` is a module. A module depends on another when it names it in a
//! path (`use crate::events::Envelope`, `super::model::now`, `crate::ids::encode(..)`). A parent
//! may name its own children (it declares them and may re-export them); every other dependency
//! counts, a child's on its parent included. The check fails on any cycle and names it, so the
//! data flow the design notes promise (http -> graphql -> chat -> store, chat -> events) cannot
//! quietly bend back.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use syn::visit::Visit;

/// A module path from the crate root, e.g. `["chat", "messages"]`.
type Module = Vec<String>;

fn module_of(file: &Path, src: &Path) -> Option<Module> {
    let relative = file.strip_prefix(src).ok()?;
    let mut parts: Module = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    } else if parts.is_empty() && stem == "main" {
        // The binary is a crate of its own, above the library.
        return None;
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Collects every path a file names, made absolute from the crate root.
struct Paths {
    /// The module being read: the file's, then any inline module inside it (`mod tests`).
    here: Module,
    found: Vec<Module>,
}

impl Paths {
    fn absolute(&self, segments: &[String]) -> Option<Module> {
        let (first, rest) = segments.split_first()?;
        match first.as_str() {
            "crate" => Some(rest.to_vec()),
            "super" => {
                let mut base = self.here.clone();
                base.pop()?;
                let mut rest = rest;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                base.extend_from_slice(rest);
                Some(base)
            }
            "self" => {
                let mut base = self.here.clone();
                base.extend_from_slice(rest);
                Some(base)
            }
            _ => None,
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => self.record(prefix, Some(name.ident.to_string())),
            syn::UseTree::Rename(rename) => self.record(prefix, Some(rename.ident.to_string())),
            syn::UseTree::Glob(_) => self.record(prefix, None),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    fn record(&mut self, prefix: &[String], last: Option<String>) {
        let mut segments = prefix.to_vec();
        if let Some(last) = last
            && last != "self"
        {
            segments.push(last);
        }
        if let Some(path) = self.absolute(&segments) {
            self.found.push(path);
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.here.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.here.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(path) = self.absolute(&segments) {
            self.found.push(path);
        }
        syn::visit::visit_path(self, path);
    }
}

/// The module a path lands in: its longest prefix that is a module.
fn owner(path: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

fn dependencies() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let parsed: Vec<(Module, syn::File)> = files
        .iter()
        .filter_map(|file| {
            let module = module_of(file, &src)?;
            let text = std::fs::read_to_string(file).expect("a readable source file");
            let ast = syn::parse_file(&text)
                .unwrap_or_else(|err| panic!("{} does not parse: {err}", file.display()));
            Some((module, ast))
        })
        .collect();
    let modules: BTreeSet<Module> = parsed.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, ast) in &parsed {
        let mut paths = Paths {
            here: module.clone(),
            found: Vec::new(),
        };
        paths.visit_file(ast);
        let targets = edges.entry(module.clone()).or_default();
        for path in paths.found {
            let Some(target) = owner(&path, &modules) else {
                continue;
            };
            // Itself, the crate root, or one of its own children.
            if target.is_empty() || target.starts_with(module) {
                continue;
            }
            targets.insert(target);
        }
    }
    edges
}

/// The groups of modules that depend on each other in a circle (strongly connected components
/// of more than one module, Tarjan's algorithm).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        found: Vec<Vec<Module>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, at: &Module) {
            let n = self.index.len();
            self.index.insert(at.clone(), n);
            self.low.insert(at.clone(), n);
            self.stack.push(at.clone());
            for next in self.edges.get(at).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[at].min(self.low[next]);
                    self.low.insert(at.clone(), low);
                } else if self.stack.contains(next) {
                    let low = self.low[at].min(self.index[next]);
                    self.low.insert(at.clone(), low);
                }
            }
            if self.low[at] == self.index[at] {
                let mut group = Vec::new();
                loop {
                    let m = self.stack.pop().expect("on the stack");
                    let last = &m == at;
                    group.push(m);
                    if last {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for module in edges.keys() {
        if !walk.index.contains_key(module) {
            walk.visit(module);
        }
    }
    walk.found
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn modules_depend_on_each_other_one_way_only() {
    let edges = dependencies();
    assert!(
        edges.len() > 20,
        "the source was found and read ({} modules)",
        edges.len()
    );
    let report: Vec<String> = circles(&edges)
        .into_iter()
        .map(|group| {
            let inside: Vec<String> = group
                .iter()
                .flat_map(|from| {
                    edges[from]
                        .iter()
                        .filter(|to| group.contains(to))
                        .map(move |to| format!("  {} -> {}", name(from), name(to)))
                })
                .collect();
            format!(
                "{} modules in a circle:\n{}",
                group.len(),
                inside.join("\n")
            )
        })
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_check_sees_a_circle() {
    let module = |s: &str| s.split("::").map(str::to_owned).collect::<Module>();
    let mut edges = BTreeMap::new();
    edges.insert(module("a"), BTreeSet::from([module("b")]));
    edges.insert(module("b"), BTreeSet::from([module("c")]));
    edges.insert(module("c"), BTreeSet::from([module("a")]));
    edges.insert(module("d"), BTreeSet::from([module("a")]));
    assert_eq!(
        circles(&edges),
        vec![vec![module("a"), module("b"), module("c")]]
    );
    edges.insert(module("c"), BTreeSet::new());
    assert!(circles(&edges).is_empty());
}

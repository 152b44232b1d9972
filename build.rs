//! Builds GraphiQL's files into the binary. The third-party code (GraphiQL, React, graphql-ws,
//! Monaco) is not in the repository: `web/graphiql/package-lock.json` pins it with integrity
//! hashes, `npm ci` fetches it, and esbuild bundles it with `web/graphiql/src/main.js` into
//! production files that `src/graphiql.rs` embeds. Without npm the build still succeeds, and
//! `GET /graphql` serves a page saying how to get GraphiQL.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let web = root.join("web/graphiql");
    for input in ["package.json", "package-lock.json", "src/main.js"] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let assets = out.join("graphiql");
    let built = match build(&web, &assets) {
        Ok(()) => true,
        Err(why) => {
            println!("cargo:warning=GraphiQL is not built into this binary: {why}");
            false
        }
    };
    let mut listing = String::from("/// GraphiQL's files: name, media type, bytes.\n");
    listing.push_str("pub const ASSETS: &[(&str, &str, &[u8])] = &[\n");
    if built {
        let mut files: Vec<_> = std::fs::read_dir(&assets)
            .expect("esbuild wrote its output")
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        files.sort();
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 name");
            let media = match file.extension().and_then(|e| e.to_str()) {
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("ttf") => "font/ttf",
                _ => "application/octet-stream",
            };
            writeln!(
                listing,
                "    ({name:?}, {media:?}, include_bytes!({:?})),",
                file.display()
            )
            .expect("writing to a String");
        }
    }
    listing.push_str("];\n");
    std::fs::write(out.join("graphiql_assets.rs"), listing).expect("OUT_DIR is writable");
}

/// Installs the locked packages when they are missing or older than the lock file, then bundles.
fn build(web: &Path, assets: &Path) -> Result<(), String> {
    let installed = web.join("node_modules/.package-lock.json");
    let lock = web.join("package-lock.json");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if modified(&installed).is_none() || modified(&installed) < modified(&lock) {
        // `--ignore-scripts`: no package runs code at install time; esbuild's binary comes in its
        // platform package and needs no install script.
        run(Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(web))?;
    }
    let _ = std::fs::remove_dir_all(assets);
    run(Command::new(web.join("node_modules/.bin/esbuild"))
        .current_dir(web)
        .args([
            "graphiql=src/main.js",
            "editor.worker=monaco-editor/esm/vs/editor/editor.worker.js",
            "json.worker=monaco-editor/esm/vs/language/json/json.worker.js",
            "graphql.worker=monaco-graphql/esm/graphql.worker.js",
            "--bundle",
            "--minify",
            "--format=iife",
            "--define:process.env.NODE_ENV=\"production\"",
            "--loader:.ttf=file",
            "--asset-names=[name]",
            "--log-level=error",
        ])
        .arg(format!("--outdir={}", assets.display())))
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{shown} failed ({status})")),
        Err(err) => Err(format!(
            "{shown} could not start ({err}); install Node.js and npm"
        )),
    }
}

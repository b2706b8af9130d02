//! Embeds the server's own SQL migrations (`../migrations/NNNN_name.sql`) into the binary,
//! so a deployed `rowcast` needs no files beside it.
use std::{env, fs, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("..")
        .join("migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&dir).expect("migrations/ exists at the repository root") {
        let path = entry.expect("readable directory entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
        if path.extension().and_then(|e| e.to_str()) == Some("sql") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 file name")
                .to_string();
            files.push((name, fs::canonicalize(&path).expect("canonical path")));
        }
    }
    files.sort();
    let mut out = String::from(
        "/// Server migrations, sorted by file name.\npub(super) static EMBEDDED: &[(&str, &str)] = &[\n",
    );
    for (name, path) in files {
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    fs::write(dest, out).expect("write generated migrations list");
}

//! Every feature in Cargo.toml is listed in the crate docs' `# Features` and in the README's
//! Features table, so a new one cannot ship undocumented.

use std::path::Path;

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in Cargo.toml's `[features]` table, `default` left out.
fn features() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let table = manifest
        .split("\n[features]\n")
        .nth(1)
        .expect("a [features] table");
    let table = table.split("\n[").next().unwrap_or(table);
    table
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(" = "))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| name != "default")
        .collect()
}

#[test]
fn every_feature_is_in_the_crate_docs_and_the_readme() {
    let features = features();
    assert!(features.len() >= 8, "{features:?}");
    let crate_docs = read("src/lib.rs");
    let readme = read("README.md");
    for feature in &features {
        assert!(
            crate_docs.contains(&format!("//! - `{feature}`")),
            "src/lib.rs's # Features does not list `{feature}`"
        );
        assert!(
            readme.contains(&format!("| `{feature}` |")),
            "the README's Features table does not list `{feature}`"
        );
    }
}

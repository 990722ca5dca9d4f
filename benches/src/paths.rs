//! Where reports are written.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The cargo target directory of the workspace this bench runs in.
///
/// `CARGO_TARGET_DIR` when it is set (relative to the current directory if relative); otherwise
/// `target/` next to the nearest `Cargo.toml` above the current directory that declares a
/// `[workspace]` (cargo runs benches from their package's directory); otherwise the nearest
/// `target/` directory above; otherwise `./target`.
pub fn target_dir() -> PathBuf {
    let cwd = env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return cwd.join(dir);
    }
    if let Some(root) = cwd.ancestors().find(|dir| is_workspace_root(dir)) {
        return root.join("target");
    }
    if let Some(dir) = cwd.ancestors().find(|dir| dir.join("target").is_dir()) {
        return dir.join("target");
    }
    cwd.join("target")
}

/// `target/bench-report/`, where full runs write their plots. Not created here.
pub fn report_dir() -> PathBuf {
    target_dir().join("bench-report")
}

/// Whether `dir/Cargo.toml` declares a workspace.
fn is_workspace_root(dir: &Path) -> bool {
    fs::read_to_string(dir.join("Cargo.toml"))
        .map(|manifest| manifest.lines().any(|line| line.trim() == "[workspace]"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_declares_a_workspace_and_the_package_does_not() {
        let package = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(!is_workspace_root(package));
        assert!(is_workspace_root(package.parent().unwrap()));
    }
}

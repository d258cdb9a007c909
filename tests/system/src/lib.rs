//! The suites that cross every function (in `tests/`): they drive all the routes at once through
//! `tokenctl`'s router or its binary, so they live apart from any one crate.

use std::path::PathBuf;

/// The `tokenctl` binary of this build (`cargo test --workspace` builds it beside the test
/// binaries: `target/<profile>/tokenctl`).
pub fn tokenctl() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test binary>");
    let binary = profile.join(format!("tokenctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: build it first (cargo build -p tokenctl)",
        binary.display()
    );
    binary
}

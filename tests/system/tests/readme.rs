//! The walkthrough (`docs/WALKTHROUGH.md`, begun in the README), run verbatim against
//! `tokenctl serve` on a fresh table: every response must be the one it shows (tokens, ids, timestamps and expiry aside). The
//! same walkthrough runs against `sam local start-api` (`scripts/sam-local.sh suites`, in
//! `make test`): the `#[ignore]`d `..._through_sam_local` test, with `SAM_API_URL` and
//! `SAM_API_TABLE` set.

use std::process::Command;

use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use regex::Regex;
use serde_json::Value;

use shared::test_support::{command_on, random_hex, LocalServer};

const KEY: &str = "readme-test-key-0123456789abcdef0123456789";

/// The fenced blocks of the full walkthrough: (language, text).
fn walkthrough_blocks() -> Vec<(String, String)> {
    section_blocks(include_str!("../../../docs/WALKTHROUGH.md"))
}

/// The fenced blocks of `text`'s `## Walkthrough` section: (language, text).
fn section_blocks(readme: &str) -> Vec<(String, String)> {
    let start = readme
        .find("\n## Walkthrough")
        .expect("a Walkthrough section");
    let rest = &readme[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |end| end + 3)];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(language) = line.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push((language.to_string(), body.join("\n")));
        }
    }
    blocks
}

/// Replaces what differs from run to run.
fn normalize(text: &str) -> String {
    let rules = [
        (r"tkn([apwcus])_[0-9A-Za-z…]+", "tkn${1}_TOKEN"),
        (r"\b\d+-[0-9a-f]{20}\b", "ID"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", "TIME"),
        (r#""expires":\d+"#, r#""expires":N"#),
        (r#""token_hash":"[0-9a-f]{64}""#, r#""token_hash":"HASH""#),
        // Audit events: their ids, cursors and where the request came from (API Gateway's
        // request context under SAM local, none under tokenctl serve).
        (r#""id":"[0-9a-f]{24}""#, r#""id":"EVENT""#),
        (
            r#""next_cursor":"\d+\.[0-9a-f]{24}""#,
            r#""next_cursor":"CURSOR""#,
        ),
        (
            r#""source":(null|\{"ip":"[^"]*","user_agent":"[^"]*"\})"#,
            r#""source":SOURCE"#,
        ),
        // Recorded in the background, so a listing right after a use may or may not show it.
        (
            r#""last_used_at":(null|"TIME")"#,
            r#""last_used_at":LAST_USED"#,
        ),
    ];
    rules
        .iter()
        .fold(text.to_string(), |text, (pattern, replacement)| {
            Regex::new(pattern)
                .unwrap()
                .replace_all(&text, *replacement)
                .into_owned()
        })
}

fn tokenctl(table: &str) -> Command {
    command_on(&system_tests::tokenctl().to_string_lossy(), table, KEY)
}

#[test]
fn the_readme_walkthrough_works_verbatim() {
    let table = format!("readme-{}", random_hex(6));
    let demo = seed(&table);
    // A key pair of the test's own stands in for GitHub's, as scripts/scanning-key.sh's does
    // for `make dev`.
    let mut secret = [0u8; 32];
    shared::token::fill_random(&mut secret);
    let signing = p256::ecdsa::SigningKey::from_slice(&secret).unwrap();
    let public = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let keys = serde_json::json!({"public_keys": [{"key_identifier": "local-dev", "key": public}]});
    let mut server = tokenctl(&table);
    server.env("SECRET_SCANNING_KEYS", keys.to_string());
    let server = LocalServer::start(server);
    let private = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
    walk_through(
        &format!("http://127.0.0.1:{}", server.port),
        &demo,
        &private,
    );
}

#[test]
#[ignore = "needs sam local start-api: scripts/sam-local.sh suites (make test) runs it"]
fn the_readme_walkthrough_works_verbatim_through_sam_local() {
    let (Ok(url), Ok(table)) = (std::env::var("SAM_API_URL"), std::env::var("SAM_API_TABLE"))
    else {
        panic!("SAM_API_URL and SAM_API_TABLE are not set: run scripts/sam-local.sh suites");
    };
    // The demo directory is already there (the script seeded it); seeding again keeps its users
    // and mints fresh keys. The functions trust the local key pair the script made.
    let private = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.tools/dev-secret-scanning-key.pem"
    ))
    .expect("scripts/scanning-key.sh made the local secret-scanning key");
    walk_through(&url, &seed(&table), &private);
}

/// The table `table` with the demo directory; the keys `seed-demo` printed.
fn seed(table: &str) -> Value {
    assert!(tokenctl(table)
        .arg("init")
        .output()
        .unwrap()
        .status
        .success());
    let demo = tokenctl(table)
        .args(["seed-demo", "--json"])
        .output()
        .unwrap();
    assert!(demo.status.success());
    serde_json::from_slice(&demo.stdout).unwrap()
}

/// Runs the walkthrough's shell blocks against `base_url` with `demo`'s keys (and `scanning_key`,
/// the PEM private key the server trusts as `local-dev`), and compares each answer with the
/// README's.
fn walk_through(base_url: &str, demo: &Value, scanning_key: &str) {
    let blocks = walkthrough_blocks();
    let script: Vec<&str> = blocks
        .iter()
        .filter(|(language, _)| language == "sh")
        .map(|(_, text)| text.as_str())
        .collect();
    let expected: Vec<String> = blocks
        .iter()
        .filter(|(language, _)| language == "json")
        .map(|(_, text)| normalize(text))
        .collect();
    assert!(
        script.len() > 10 && expected.len() > 10,
        "walkthrough found"
    );
    // The layout `make dev` leaves: .tools/demo.env in the working directory.
    let dir = std::env::temp_dir().join(format!("readme-{}", random_hex(4)));
    std::fs::create_dir_all(dir.join(".tools")).unwrap();
    std::fs::write(
        dir.join(".tools/demo.env"),
        format!(
            "BASE_URL={base_url}\nADMIN_KEY={}\nUSER_KEY={}\n",
            demo["admin_key"].as_str().unwrap(),
            demo["user_key"].as_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(dir.join(".tools/dev-secret-scanning-key.pem"), scanning_key).unwrap();
    let output = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script.join("\n"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the walkthrough failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let actual: Vec<String> = stdout.lines().map(normalize).collect();
    assert_eq!(actual, expected);
}

#[test]
fn the_readme_walkthrough_is_the_start_of_the_full_one() {
    let short = section_blocks(include_str!("../../../README.md"));
    let full = walkthrough_blocks();
    assert!(
        short.len() >= 2,
        "the README shows a request and its answer"
    );
    assert_eq!(
        short,
        full[..short.len()],
        "README.md's walkthrough left the full one's path"
    );
}

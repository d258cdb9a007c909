//! Cold starts: each release binary started against a minimal Lambda runtime API on loopback,
//! timed from exec to its first `next` (init) and to its first response, with its peak RSS,
//! next to `baseline`, the floor (a bare lambda_http binary that builds a DynamoDB client as a
//! typical Rust Lambda does: system roots, default credentials chain).

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

const RUNS: usize = 15;

/// When the runtime API saw the first `next` and the first response.
#[derive(Default)]
struct Seen {
    next: Option<Instant>,
    response: Option<Instant>,
    error: Option<String>,
}

/// One cold start: (exec -> first next, exec -> first response, peak RSS in kB).
async fn cold_start(binary: &PathBuf, event: &Value) -> Result<(Duration, Duration, u64), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let body = event.to_string();
    let server_seen = seen.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = server_seen.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    let body = body.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        let now = Instant::now();
                        if path.ends_with("/invocation/next") {
                            let first = {
                                let mut seen = seen.lock().unwrap();
                                let first = seen.next.is_none();
                                seen.next.get_or_insert(now);
                                first
                            };
                            if !first {
                                // One invocation per process: later polls wait until it is killed.
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            let deadline = SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .unwrap()
                                .as_millis()
                                + 30_000;
                            let response = hyper::Response::builder()
                                .header("lambda-runtime-aws-request-id", "bench-request")
                                .header("lambda-runtime-deadline-ms", deadline.to_string())
                                .header(
                                    "lambda-runtime-invoked-function-arn",
                                    "arn:aws:lambda:us-east-1:123456789012:function:bench",
                                )
                                .body(Full::new(Bytes::from(body)))
                                .unwrap();
                            return Ok::<_, Infallible>(response);
                        }
                        let mut seen = seen.lock().unwrap();
                        if path.ends_with("/error") {
                            seen.error = Some(path);
                        }
                        seen.response.get_or_insert(now);
                        Ok(hyper::Response::builder()
                            .status(202)
                            .body(Full::new(Bytes::new()))
                            .unwrap())
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let started = Instant::now();
    let mut child = Command::new(binary)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        // What Lambda always sets, so no figure depends on the caller's environment (without a
        // region the SDK would ask the instance metadata endpoint).
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_SESSION_TOKEN", "bench")
        .env("TABLE_NAME", "bench-cold-start")
        .env(
            "PERMANENT_TOKEN_KEY",
            "bench-permanent-key-0123456789abcdef",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let pid = child.id();
    let outcome = loop {
        {
            let seen = seen.lock().unwrap();
            if let (Some(next), Some(response)) = (seen.next, seen.response) {
                break match &seen.error {
                    Some(error) => Err(format!("the function reported an error ({error})")),
                    None => Ok((next - started, response - started)),
                };
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            break Err("no response within 30 s".to_string());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("exited early: {status}"));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    server.abort();
    outcome.map(|(next, response)| (next, response, rss))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn file_size(path: &PathBuf) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Prints the cold-start table.
pub async fn report() {
    let dir =
        PathBuf::from(std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/release".into()));
    // An HTTP event no route of any function matches: start-up and routing, no database call.
    let mut event: Value = serde_json::from_str(include_str!("../../../events/api-keys-get.json"))
        .expect("the sample event");
    // API Gateway's resource template decides the route (shared::http::gateway_request).
    event["path"] = Value::from("/bench/cold-start");
    event["resource"] = Value::from("/bench/cold-start");
    event["requestContext"]["resourcePath"] = Value::from("/bench/cold-start");
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("Authorization");
    event["multiValueHeaders"]
        .as_object_mut()
        .unwrap()
        .remove("Authorization");

    println!(
        "Cold start ({RUNS} interleaved runs each, medians; exec -> first `next` is the init phase Lambda bills)"
    );
    println!(
        "{:<16} {:>12} {:>15} {:>13} {:>10} {:>11}",
        "binary", "init ms", "1st response ms", "peak RSS MB", "file MB", "init ratio"
    );
    // Rounds over every binary in turn, so a slower stretch of the machine weighs on all alike.
    let names: Vec<&str> = tokenctl::serve::FUNCTIONS
        .iter()
        .map(|function| function.name)
        .chain(["baseline"])
        .collect();
    let mut samples: Vec<Option<Vec<(Duration, Duration, u64)>>> =
        names.iter().map(|_| Some(Vec::new())).collect();
    for _ in 0..RUNS {
        for (name, runs) in names.iter().zip(samples.iter_mut()) {
            let Some(done) = runs else { continue };
            match cold_start(&dir.join(name), &event).await {
                Ok(sample) => done.push(sample),
                Err(error) => {
                    println!("{name:<16} failed: {error}");
                    *runs = None;
                }
            }
        }
    }
    let rows: Vec<_> = names
        .iter()
        .zip(samples)
        .filter_map(|(name, runs)| {
            let runs = runs?;
            let mut rss: Vec<u64> = runs.iter().map(|r| r.2).collect();
            rss.sort();
            Some((
                name.to_string(),
                median(runs.iter().map(|r| r.0).collect()),
                median(runs.iter().map(|r| r.1).collect()),
                rss[RUNS / 2],
                file_size(&dir.join(name)),
            ))
        })
        .collect();
    let baseline = rows
        .iter()
        .find(|r| r.0 == "baseline")
        .map(|r| r.1)
        .unwrap_or(Duration::from_nanos(1));
    for (name, init, response, rss, size) in rows {
        println!(
            "{:<16} {:>12.2} {:>15.2} {:>13.1} {:>10.2} {:>11.2}",
            name,
            ms(init),
            ms(response),
            rss as f64 / 1024.0,
            size.unwrap_or(0) as f64 / 1e6,
            init.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}

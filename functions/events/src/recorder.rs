//! A local stand-in for EventBridge's PutEvents (it has no emulator): an HTTP server that
//! decodes the requests the AWS SDK really sends (`AWSEvents.PutEvents`, JSON 1.1), records the
//! entries it accepts with the time they arrived, and refuses what a test asks it to: a whole
//! request (HTTP 500), or some entries of the next request (partial failure).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// One entry as the recorder received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub source: String,
    pub detail_type: String,
    pub detail: Value,
    pub bus: String,
    pub at: Instant,
}

/// What the recorder does to the next request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Answers HTTP 500 (nothing recorded).
    Request,
    /// Refuses these entries (by index) with `InternalFailure`, records the others.
    Entries(Vec<usize>),
}

#[derive(Default)]
struct Recorded {
    entries: Vec<Received>,
    requests: usize,
    refusals: VecDeque<Refusal>,
}

/// A running recorder; stops with the runtime it was started on.
#[derive(Clone)]
pub struct Recorder {
    pub endpoint: String,
    state: Arc<Mutex<Recorded>>,
}

impl Recorder {
    /// Starts a recorder on a free local port.
    pub async fn start() -> Recorder {
        let state = Arc::new(Mutex::new(Recorded::default()));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the recorder");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        let app = Router::new()
            .route("/", post(put_events))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Recorder { endpoint, state }
    }

    /// Everything accepted so far, in the order received.
    pub fn entries(&self) -> Vec<Received> {
        self.state.lock().expect("recorder").entries.clone()
    }

    /// PutEvents requests received so far (refused ones included).
    pub fn requests(&self) -> usize {
        self.state.lock().expect("recorder").requests
    }

    /// Refuses the next request as `refusal` says (queued after earlier ones).
    pub fn refuse_next(&self, refusal: Refusal) {
        self.state
            .lock()
            .expect("recorder")
            .refusals
            .push_back(refusal);
    }

    /// A client of this recorder (any credentials, the region of the environment or us-east-1).
    pub async fn client(&self) -> aws_sdk_eventbridge::Client {
        let sdk = shared::config::sdk_config(shared::trust::TrustRoots::default(), None).await;
        let mut config =
            aws_sdk_eventbridge::config::Builder::from(&sdk).endpoint_url(&self.endpoint);
        if sdk.region().is_none() {
            config = config.region(aws_sdk_eventbridge::config::Region::new("us-east-1"));
        }
        aws_sdk_eventbridge::Client::from_conf(config.build())
    }
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

async fn put_events(
    State(state): State<Arc<Mutex<Recorded>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let bad = |message: &str| {
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({"__type": "ValidationException", "message": message}),
        )
    };
    if target != "AWSEvents.PutEvents" {
        return bad("not PutEvents");
    }
    let Some(entries) = request["Entries"].as_array() else {
        return bad("no Entries");
    };
    if entries.is_empty() || entries.len() > 10 {
        return bad("1 to 10 entries");
    }
    let mut state = state.lock().expect("recorder");
    state.requests += 1;
    let refused = match state.refusals.pop_front() {
        Some(Refusal::Request) => {
            return json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"__type": "InternalException", "message": "injected"}),
            )
        }
        Some(Refusal::Entries(indexes)) => indexes,
        None => Vec::new(),
    };
    let now = Instant::now();
    let mut results = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if refused.contains(&index) {
            results.push(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "injected"}));
            continue;
        }
        let text = |name: &str| entry[name].as_str().unwrap_or_default().to_string();
        state.entries.push(Received {
            source: text("Source"),
            detail_type: text("DetailType"),
            detail: serde_json::from_str(&text("Detail")).unwrap_or(Value::Null),
            bus: text("EventBusName"),
            at: now,
        });
        results.push(json!({"EventId": format!("{:08x}", state.entries.len())}));
    }
    json_answer(
        StatusCode::OK,
        json!({"FailedEntryCount": refused.iter().filter(|i| **i < entries.len()).count(), "Entries": results}),
    )
}

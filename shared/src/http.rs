//! Request plumbing every function shares: routing whatever the stage prefix, body limits and
//! JSON parsing, query strings, and timestamps in the seeds' formats.

use lambda_http::http::{HeaderMap, Method};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde_json::{Map, Value};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::error::ApiError;

/// Largest request body accepted; more is answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// One route: a method and a path pattern whose `{name}` segments capture path parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<R> {
    pub method: &'static str,
    pub pattern: &'static str,
    pub action: R,
}

/// The action of the route that matches `method` and `path`, with its path parameters.
///
/// Patterns match the end of the path, so a stage prefix (`/prod/api/...`) or none (function
/// URLs, the local server) makes no difference. A path that matches only with another method is
/// 405; no match at all is 404.
pub fn route<R: Copy>(
    routes: &[Route<R>],
    method: &Method,
    path: &str,
) -> Result<(R, Vec<String>), ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut allowed: Vec<&str> = Vec::new();
    let mut matched_path = None;
    for route in routes {
        let Some((params, matched)) = match_suffix(route.pattern, &segments) else {
            continue;
        };
        if route.method == method.as_str() {
            return Ok((route.action, params));
        }
        if !allowed.contains(&route.method) {
            allowed.push(route.method);
        }
        matched_path.get_or_insert(matched);
    }
    let shown = segments.join("/");
    match matched_path {
        Some(path) => Err(ApiError::MethodNotAllowed {
            method: method.as_str().to_string(),
            path,
            allow: allowed.join(", "),
        }),
        None => Err(ApiError::RouteNotFound(shown)),
    }
}

/// The route of a request, with its path parameters. Behind API Gateway the route the gateway
/// matched (the event's resource template) and the path parameters it parsed decide, so a
/// parameter that the event's decoded `path` cannot carry (a trailing control character, which
/// URL parsing drops) still reaches its route; elsewhere, [`route`] on the path.
pub fn route_request<R: Copy>(
    routes: &[Route<R>],
    request: &Request,
) -> Result<(R, Vec<String>), ApiError> {
    let gateway_route = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.resource_path.as_deref(),
        _ => None,
    }
    .and_then(|resource| {
        routes
            .iter()
            .find(|r| r.pattern == resource && r.method == request.method().as_str())
    });
    let Some(matched) = gateway_route else {
        return route(routes, request.method(), request.uri().path());
    };
    let parameters = request.path_parameters_ref();
    let params = matched
        .pattern
        .split('/')
        .filter_map(path_parameter)
        .map(|name| {
            parameters
                .and_then(|p| p.first(name))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    Ok((matched.action, params))
}

/// Whether any route matches `path`, whatever the method.
pub fn serves<R: Copy>(routes: &[Route<R>], path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    routes
        .iter()
        .any(|r| match_suffix(r.pattern, &segments).is_some())
}

/// The name of a route pattern's path-parameter segment (`{id}` -> `id`, `{proxy+}` ->
/// `proxy+`); `None` for a literal segment.
pub fn path_parameter(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

fn match_suffix(pattern: &str, segments: &[&str]) -> Option<(Vec<String>, String)> {
    let wanted: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let tail = segments.get(segments.len().checked_sub(wanted.len())?..)?;
    let mut params = Vec::new();
    for (want, have) in wanted.iter().zip(tail) {
        if path_parameter(want).is_some() {
            params.push(percent_decode(have));
        } else if want != have {
            return None;
        }
    }
    Some((params, tail.join("/")))
}

/// The body as a JSON object. An empty body is an empty object (so the route reports the
/// missing fields); more than 16 KiB is 413; anything else that is not an object is 400.
pub fn json_object(request: &Request) -> Result<Map<String, Value>, ApiError> {
    let bytes = request.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::BadRequest(
            "The request body must be a JSON object.".into(),
        )),
        Err(_) => Err(ApiError::BadRequest(
            "The request body is not valid JSON. Send a JSON object with Content-Type: application/json."
                .into(),
        )),
    }
}

/// The first value of query parameter `name`, percent-decoded.
pub fn query_parameter(request: &Request, name: &str) -> Option<String> {
    request
        .uri()
        .query()?
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
        .next()
}

/// Decodes `%XX` escapes and `+` (form encoding); invalid escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
}

/// A header's value as text, when present and valid UTF-8.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = header(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `2025-01-08T10:30:00.000000Z`, the api-keys seed's timestamps.
pub fn timestamp_micros(ms: u64) -> String {
    format_ms(
        ms,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"),
    )
}

/// `2024-01-15T19:00:00Z`, the api-tokens seed's timestamps.
pub fn timestamp_seconds(ms: u64) -> String {
    format_ms(
        ms,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"),
    )
}

fn format_ms(ms: u64, format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Action {
        List,
        Create,
        Delete,
    }

    const ROUTES: [Route<Action>; 3] = [
        Route {
            method: "GET",
            pattern: "/api/user/api-keys",
            action: Action::List,
        },
        Route {
            method: "POST",
            pattern: "/api/user/api-keys",
            action: Action::Create,
        },
        Route {
            method: "DELETE",
            pattern: "/api/user/api-keys/{id}",
            action: Action::Delete,
        },
    ];

    #[test]
    fn routes_match_with_or_without_a_stage() {
        for path in [
            "/api/user/api-keys",
            "/prod/api/user/api-keys",
            "/api/user/api-keys/",
        ] {
            assert_eq!(route(&ROUTES, &Method::GET, path).unwrap().0, Action::List);
        }
        let (action, params) =
            route(&ROUTES, &Method::DELETE, "/v1/api/user/api-keys/a%20b").unwrap();
        assert_eq!(action, Action::Delete);
        assert_eq!(params, ["a b"]);
    }

    #[test]
    fn wrong_methods_and_paths_are_told_apart() {
        match route(&ROUTES, &Method::PUT, "/api/user/api-keys") {
            Err(ApiError::MethodNotAllowed { allow, .. }) => assert_eq!(allow, "GET, POST"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            route(&ROUTES, &Method::GET, "/api/user/other"),
            Err(ApiError::RouteNotFound(_))
        ));
        assert!(matches!(
            route(&ROUTES, &Method::GET, "/"),
            Err(ApiError::RouteNotFound(_))
        ));
    }

    fn request(body: &str) -> Request {
        lambda_http::http::Request::builder()
            .uri("/x?userId=12&x=%E2%9C%93&plus=a+b&bad=%zz&userId=13")
            .body(Body::Text(body.into()))
            .unwrap()
    }

    #[test]
    fn bodies_are_objects_or_errors() {
        assert!(json_object(&request("")).unwrap().is_empty());
        assert_eq!(json_object(&request(r#"{"a":1}"#)).unwrap()["a"], 1);
        assert!(matches!(
            json_object(&request("[1]")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            json_object(&request("{")),
            Err(ApiError::BadRequest(_))
        ));
        let huge = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert!(matches!(
            json_object(&request(&huge)),
            Err(ApiError::PayloadTooLarge)
        ));
    }

    #[test]
    fn query_parameters_decode() {
        let request = request("");
        assert_eq!(query_parameter(&request, "userId").as_deref(), Some("12"));
        assert_eq!(query_parameter(&request, "x").as_deref(), Some("✓"));
        assert_eq!(query_parameter(&request, "plus").as_deref(), Some("a b"));
        assert_eq!(query_parameter(&request, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_parameter(&request, "missing"), None);
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%a✓"), "%a✓");
    }

    #[test]
    fn bearer_tokens_need_the_scheme() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert("authorization", "abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }

    proptest::proptest! {
        #[test]
        fn any_path_routes_or_is_a_client_error(path in "(/[a-z{}%0-9.-]{0,12}){0,6}", method in "[A-Z]{3,7}") {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            if let Err(error) = route(&ROUTES, &method, &path) {
                proptest::prop_assert!(error.status().is_client_error());
            }
        }

        #[test]
        fn any_body_bytes_are_an_object_or_a_client_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let request = lambda_http::http::Request::builder()
                .body(Body::Binary(bytes))
                .unwrap();
            if let Err(error) = json_object(&request) {
                proptest::prop_assert!(error.status().is_client_error());
            }
        }

        #[test]
        fn any_query_string_decodes_without_panicking(query in ".{0,40}") {
            let uri = format!("/x?{}", query.replace(['#', ' '], ""));
            if let Ok(request) = lambda_http::http::Request::builder().uri(uri).body(Body::Empty) {
                let _ = query_parameter(&request, "userId");
            }
        }
    }

    #[test]
    fn timestamps_follow_the_seeds() {
        assert_eq!(
            timestamp_micros(1_736_332_200_000),
            "2025-01-08T10:30:00.000000Z"
        );
        assert_eq!(
            timestamp_micros(1_736_332_200_123),
            "2025-01-08T10:30:00.123000Z"
        );
        assert_eq!(timestamp_seconds(1_705_345_200_999), "2024-01-15T19:00:00Z");
    }
}

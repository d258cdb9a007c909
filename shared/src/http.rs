//! Request plumbing under the web layer: the route API Gateway matched, bodies (JSON, forms)
//! and their limit, query strings, headers and tokens, and timestamps in the seeds' formats.

use lambda_http::http::{HeaderMap, Request, Uri};
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use serde_json::{Map, Value};

use crate::deadline;
use crate::error::ApiError;

/// Largest request body accepted; more is answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The name of a route template's path-parameter segment (`{id}` -> `id`, `{proxy+}` ->
/// `proxy+`); `None` for a literal segment.
pub fn path_parameter(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// The request as it is routed. Behind API Gateway the route the gateway matched (the event's
/// resource template, or an HTTP API's route key) decides, with the path parameters it parsed
/// put back percent-encoded: the stage, a custom domain's base path and anything URL parsing
/// drops from the event's decoded `path` (a trailing control character in a parameter) then make
/// no difference. Elsewhere (`tokenctl serve`) the path without empty segments, so
/// `/api/user/api-keys/` is `/api/user/api-keys` as API Gateway treats it.
pub fn routed_request<B>(mut request: Request<B>) -> Request<B> {
    let path = match gateway_template(&request) {
        Some(template) => gateway_path(&request, &template),
        None => {
            let path = request.uri().path();
            let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let normal = format!("/{}", segments.join("/"));
            if normal == path {
                return request;
            }
            normal
        }
    };
    let uri = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    if let Ok(uri) = uri.parse() {
        *request.uri_mut() = uri;
    }
    request
}

/// The route template API Gateway matched, when the request came through it.
fn gateway_template<B>(request: &Request<B>) -> Option<String> {
    let template = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.resource_path.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context
            .route_key
            .as_deref()
            .and_then(|key| key.split_once(' '))
            .map(|(_, template)| template.to_string()),
        _ => None,
    };
    template.filter(|t| t.starts_with('/'))
}

/// `template` with the request's path parameters in place, percent-encoded.
fn gateway_path<B>(request: &Request<B>, template: &str) -> String {
    let parameters = request.path_parameters_ref();
    let mut path = String::new();
    for segment in template.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        match path_parameter(segment) {
            Some(name) => {
                let value = parameters
                    .and_then(|p| p.first(name.trim_end_matches('+')))
                    .unwrap_or_default();
                // A greedy `{name+}` parameter spans segments; its slashes stay.
                let segments: Vec<String> = if name.ends_with('+') {
                    value.split('/').map(encode_segment).collect()
                } else {
                    vec![encode_segment(value)]
                };
                path.push_str(&segments.join("/"));
            }
            None => path.push_str(segment),
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// Percent-encodes everything in a path segment but RFC 3986's unreserved characters.
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The deadline of the invocation a request arrived in (none outside Lambda).
pub fn deadline_of<B>(request: &Request<B>) -> Option<std::time::Instant> {
    request
        .lambda_context_ref()
        .and_then(|context| deadline::instant_of(context.deadline()))
}

/// How a body's fields are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    /// `application/x-www-form-urlencoded`; `name[]=a&name[]=b` (or `name[0]=`) is a list.
    Form,
}

/// A body's fields. An empty body is no fields; a JSON body must be an object (else 400). Its
/// size is the caller's to bound (see [`crate::web::Fields`]).
pub fn body_fields(bytes: &[u8], format: BodyFormat) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    if format == BodyFormat::Form {
        return Ok(form_fields(bytes));
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

/// A form's fields as PHP reads them: the last value of a repeated name wins, `name[]` and
/// `name[N]` collect a list.
fn form_fields(bytes: &[u8]) -> Map<String, Value> {
    let mut fields = Map::new();
    for (key, value) in form_urlencoded::parse(bytes) {
        let value = Value::String(value.into_owned());
        let list = key
            .strip_suffix(']')
            .and_then(|k| k.split_once('['))
            .filter(|(_, index)| index.bytes().all(|b| b.is_ascii_digit()));
        match list {
            Some((name, _)) => match fields
                .entry(name.to_string())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(value),
                other => *other = Value::Array(vec![value]),
            },
            None => {
                fields.insert(key.into_owned(), value);
            }
        }
    }
    fields
}

/// The first value of query parameter `name`, decoded as forms are (`+` is a space; escapes
/// that are not UTF-8 become U+FFFD).
pub fn query_parameter(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
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

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;
    use serde_json::json;

    fn fields(body: &str) -> Result<Map<String, Value>, ApiError> {
        body_fields(body.as_bytes(), BodyFormat::Json)
    }

    #[test]
    fn bodies_are_objects_or_errors() {
        assert!(fields("").unwrap().is_empty());
        assert_eq!(fields(r#"{"a":1}"#).unwrap()["a"], 1);
        assert!(matches!(fields("[1]"), Err(ApiError::BadRequest(_))));
        assert!(matches!(fields("{"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn forms_read_as_php_reads_them() {
        let form = body_fields(
            b"name=Deploy+key&abilities[]=calls%3Aread&abilities[]=x&n=1&n=2&list[0]=a&odd[x]=y",
            BodyFormat::Form,
        )
        .unwrap();
        assert_eq!(
            Value::Object(form),
            json!({
                "name": "Deploy key",
                "abilities": ["calls:read", "x"],
                "n": "2",
                "list": ["a"],
                "odd[x]": "y",
            })
        );
        assert!(body_fields(b"  ", BodyFormat::Form).unwrap().is_empty());
        assert_eq!(
            body_fields(b"a=%ff", BodyFormat::Form).unwrap()["a"],
            "\u{fffd}"
        );
    }

    #[test]
    fn query_parameters_decode() {
        let uri: Uri = "/x?userId=12&x=%E2%9C%93&plus=a+b&bad=%zz&userId=13"
            .parse()
            .unwrap();
        assert_eq!(query_parameter(&uri, "userId").as_deref(), Some("12"));
        assert_eq!(query_parameter(&uri, "x").as_deref(), Some("✓"));
        assert_eq!(query_parameter(&uri, "plus").as_deref(), Some("a b"));
        assert_eq!(query_parameter(&uri, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_parameter(&uri, "missing"), None);
    }

    #[test]
    fn gateway_events_route_by_their_resource_template() {
        let event = json!({
            "resource": "/api/user/api-keys/{id}",
            "path": "/api/user/api-keys/a b",
            "httpMethod": "DELETE",
            "headers": {},
            "queryStringParameters": {"q": "1"},
            "pathParameters": {"id": "a/b\u{0}"},
            "requestContext": {"stage": "prod", "resourcePath": "/api/user/api-keys/{id}", "httpMethod": "DELETE", "path": "/prod/api/user/api-keys/a b"},
            "body": null,
            "isBase64Encoded": false,
        });
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        let routed = routed_request(request);
        assert_eq!(routed.uri().path(), "/api/user/api-keys/a%2Fb%00");
        assert_eq!(routed.uri().query(), Some("q=1"));
        // Not from API Gateway: the path without empty segments.
        for (path, routed) in [
            ("/prod/x", "/prod/x"),
            ("//a//b/?q=1", "/a/b?q=1"),
            ("/", "/"),
        ] {
            let plain = lambda_http::http::Request::builder()
                .uri(path)
                .body(Body::Empty)
                .unwrap();
            assert_eq!(routed_request(plain).uri(), routed);
        }
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
        fn any_body_bytes_are_fields_or_a_client_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), form: bool) {
            let format = if form { BodyFormat::Form } else { BodyFormat::Json };
            if let Err(error) = body_fields(&bytes, format) {
                proptest::prop_assert!(!form && error.status().is_client_error());
            }
        }

        #[test]
        fn any_query_string_decodes_without_panicking(query in ".{0,40}") {
            if let Ok(uri) = format!("/x?{}", query.replace(['#', ' '], "")).parse::<Uri>() {
                let _ = query_parameter(&uri, "userId");
            }
        }
    }
}

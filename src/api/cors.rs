//! Cross-origin calls from web pages (CORS), off by default. With `--cors-allow-origin` a page on an
//! allowed origin may call every HTTP route (`/v1` JSON and SSE, `/v2`): preflights are answered
//! before authentication (browsers send them without credentials), every answer, errors included,
//! carries `Access-Control-Allow-Origin`, and the request-id header is exposed to the page.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::request_id::HEADER as REQUEST_ID;

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum CorsConfigError {
    #[error(
        "--cors-allow-origin {0:?} is not an origin: give scheme://host[:port] (as a browser sends it, \
         no path), or * for any"
    )]
    NotAnOrigin(String),
    #[error("--cors-allow-origin: * allows every origin and cannot be combined with a list")]
    AnyWithList,
}

/// The CORS layer for the allowed origins; `None` when none are given (CORS off).
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, CorsConfigError> {
    let origins: Vec<&str> = origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.contains(&"*") {
        if origins.len() > 1 {
            return Err(CorsConfigError::AnyWithList);
        }
        AllowOrigin::any()
    } else {
        let list = origins.iter().map(|o| origin_value(o)).collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    let request_id = HeaderName::from_static(REQUEST_ID);
    let binary_length = HeaderName::from_static(super::kserve::http::HEADER_LENGTH);
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::AUTHORIZATION,
                request_id.clone(),
                binary_length.clone(),
            ])
            .expose_headers([request_id, binary_length])
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}

/// An origin as browsers send it: `scheme://host` with an optional port, nothing after.
fn origin_value(origin: &str) -> Result<HeaderValue, CorsConfigError> {
    let fail = || CorsConfigError::NotAnOrigin(origin.to_owned());
    let (scheme, rest) = origin.split_once("://").ok_or_else(fail)?;
    let well_formed = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && rest.bytes().all(|b| b.is_ascii_graphic());
    if !well_formed {
        return Err(fail());
    }
    HeaderValue::from_str(origin).map_err(|_| fail())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_at_start_up() {
        assert!(layer(&[]).expect("no origins").is_none());
        assert!(layer(&["*".into()]).expect("any").is_some());
        assert!(layer(&["https://app.example".into(), "http://localhost:3000".into()])
            .expect("list")
            .is_some());
        for bad in ["app.example", "https://app.example/", "ftp://app.example", "https://", "https://a b"] {
            assert!(
                matches!(layer(&[bad.into()]), Err(CorsConfigError::NotAnOrigin(o)) if o == bad),
                "{bad} accepted"
            );
        }
        assert!(matches!(
            layer(&["*".into(), "https://a.example".into()]),
            Err(CorsConfigError::AnyWithList)
        ));
    }
}

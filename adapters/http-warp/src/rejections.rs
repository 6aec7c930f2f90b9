//! Rendering what no route answered: rejections mean only "another route
//! could have matched", so they reach here when none did.

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::models::ApiError;

/// A request refused before any route (see [`crate::guard`]): answered
/// with the JSON error body wherever it was sent.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) ApiError);

impl warp::reject::Reject for Refused {}

/// The status and message of a rejection.
fn classify(r: &Rejection) -> ApiError {
    use warp::reject;
    if let Some(Refused(e)) = r.find::<Refused>() {
        e.clone()
    } else if r.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not found")
    } else if r.find::<reject::MethodNotAllowed>().is_some() {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if let Some(e) = r.find::<reject::InvalidHeader>() {
        ApiError::bad_request(e.to_string())
    } else if let Some(e) = r.find::<reject::MissingHeader>() {
        ApiError::bad_request(e.to_string())
    } else if let Some(e) = r.find::<reject::InvalidQuery>() {
        ApiError::bad_request(e.to_string())
    } else if r.find::<reject::PayloadTooLarge>().is_some() {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large")
    } else if r.find::<reject::LengthRequired>().is_some() {
        ApiError::new(StatusCode::LENGTH_REQUIRED, "a content-length header is required")
    } else if r.find::<reject::UnsupportedMediaType>().is_some() {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported media type")
    } else {
        tracing::error!(rejection = ?r, "unhandled rejection");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

/// Under `/api`: the JSON error body.
pub async fn json(r: Rejection) -> Result<Response, Infallible> {
    Ok(classify(&r).into_json())
}

/// Elsewhere: plain text, as `/gettac` answers.
pub async fn plain(r: Rejection) -> Result<Response, Infallible> {
    let e = classify(&r);
    if r.find::<Refused>().is_some() {
        return Ok(e.into_json());
    }
    Ok(warp::reply::with_status(e.message, e.status).into_response())
}

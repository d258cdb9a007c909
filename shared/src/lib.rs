//! The library every function and the CLI share: tokens, authentication, the store, errors and
//! responses.

pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod deadline;
#[cfg(feature = "demo")]
pub mod demo;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod import;
pub mod limits;
pub mod metrics;
pub mod mint;
pub mod model;
pub mod recording;
pub mod service;
pub mod store;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod token;
pub mod trust;
pub mod validate;
pub mod web;

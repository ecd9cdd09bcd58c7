//! Helpers shared by the integration tests: generated certificates, scripted servers, the
//! exporter as a child process, the real mail stack, Prometheus and Alertmanager.
#![allow(dead_code)]

pub mod certs;
pub mod exporter;
pub mod fake_idp;
pub mod jsonschema;
pub mod mailstack;
pub mod outcome;
pub mod promstack;
pub mod proxy;
pub mod scripted;
pub mod tls_server;

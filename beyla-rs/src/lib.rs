//! beyla-rs: eBPF auto-instrumentation. Data flows one way through these modules:
//!
//! [`capture`] (kernel programs, ring buffer, event decoding) → [`pipeline`] (dispatch) →
//! [`connection`] and [`protocol`] (per-connection HTTP/1.x and HTTP/2 state) → [`span`]
//! (semantic conventions) → [`export`] (OTLP, trace printer); [`metrics`] records RED
//! metrics from every finished exchange (OTLP, Prometheus).
//!
//! [`process`] decides which processes are instrumented and what they are called, and
//! [`resource`] what their spans and metrics say about them;
//! [`config`] reads the environment; [`daemon`] wires it all together.

pub mod capture;
pub mod clock;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod export;
pub mod metrics;
pub mod pipeline;
pub mod privileges;
pub mod process;
pub mod protocol;
pub mod resource;
pub mod route;
pub mod sampler;
pub mod sockets;
pub mod span;
pub mod stats;
pub mod tls;

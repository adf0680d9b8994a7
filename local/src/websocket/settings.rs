//! The local WebSocket API's settings (DESIGN §9, §11) and the API Gateway
//! quotas it holds clients and the management API to.

use std::time::Duration;

/// The WebSocket API's port when `LOCAL_WS_PORT` is unset (DESIGN §9).
pub const DEFAULT_WS_PORT: u16 = 3002;

/// API Gateway's idle connection timeout (10 minutes), the default of
/// `LOCAL_WS_IDLE_TIMEOUT_S`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// API Gateway's longest connection (2 hours, DESIGN §12), the default of
/// `LOCAL_WS_MAX_CONNECTION_S`.
pub const DEFAULT_MAX_CONNECTION: Duration = Duration::from_secs(7_200);

/// API Gateway's message payload quota, 128 KiB (131,072 bytes): the most
/// one `PostToConnection` body may carry. A client message over it still
/// reaches the function (up to [`MAX_READ_BYTES`]), which answers the
/// `payload_too_large` error frame DESIGN §12 promises.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// The longest client frame or message the gateway reads, 1 MiB: it bounds
/// a connection's memory. Anything longer closes the connection with
/// `1009 Message too big`.
pub const MAX_READ_BYTES: usize = 1024 * 1024;

/// The read buffer each connection starts with, in bytes; it grows for a
/// larger frame. tungstenite zero-fills up to this much before every read
/// attempt, including the many that find nothing while the connection is
/// being written to, so its default (128 KiB) cost 9 % of the stack's CPU
/// in a fan-out to 10,000 connections (`docs/BENCHMARKS.md`).
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

/// How long the gateway waits for one handler answer: API Gateway's
/// integration timeout, 29 s.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);

/// The local WebSocket API's settings (DESIGN §9, §11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// `LOCAL_WS_PORT` (3002); 0 picks a free port.
    pub port: u16,
    /// `LOCAL_WS_IDLE_TIMEOUT_S` (600): no client frame for this long
    /// closes the connection.
    pub idle_timeout: Duration,
    /// `LOCAL_WS_MAX_CONNECTION_S` (7,200): a connection open this long
    /// is closed.
    pub max_connection: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self { port: DEFAULT_WS_PORT, idle_timeout: DEFAULT_IDLE_TIMEOUT, max_connection: DEFAULT_MAX_CONNECTION }
    }
}

//! The resume cursor (DESIGN §12): opaque to clients, base64url (no
//! padding) of `{"c": connection id, "s": seq, "t": issued ms}`. It names
//! the last data frame the client holds on the connection that issued it;
//! the registry keeps that connection's sent state for
//! `STREAM_CURSOR_RETENTION_S` after it ends.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::connection::ConnectionId;
use crate::domain::ids::{is_storable_instant, Millis};

/// A decoded cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub connection: ConnectionId,
    /// The `seq` of the frame that carried it.
    pub seq: u64,
    /// When it was issued (service clock, epoch ms).
    pub issued_ms: Millis,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    c: String,
    s: u64,
    t: Millis,
}

impl Cursor {
    /// The longest cursor text read; anything longer is malformed. A
    /// cursor this service issues is under 250 bytes.
    pub const MAX_TEXT_BYTES: usize = 300;

    /// The cursor's text.
    pub fn encode(&self) -> String {
        let wire = Wire { c: self.connection.as_str().to_owned(), s: self.seq, t: self.issued_ms };
        // A struct of a string and two integers always serializes.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads a cursor's text; `None` for anything this service did not
    /// issue in this shape, or issued at an instant outside
    /// `0..=MAX_INSTANT_MS` (malformed: the caller answers a reset).
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() > Self::MAX_TEXT_BYTES {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let wire: Wire = serde_json::from_slice(&bytes).ok()?;
        // No cursor of this service was issued outside the instants the
        // service holds (DESIGN §7): a forged `t` is malformed, and never
        // reaches the resume's age.
        if !is_storable_instant(wire.t) {
            return None;
        }
        Some(Self { connection: ConnectionId::new(&wire.c)?, seq: wire.s, issued_ms: wire.t })
    }

    /// Whether the cursor is older than `retention_ms` at `now`, or issued
    /// more than a minute ahead of `now` (no clock of the service is that
    /// far off): such a cursor answers a reset.
    pub fn expired(&self, now: Millis, retention_ms: i64) -> bool {
        self.issued_ms > now.saturating_add(60_000) || now.saturating_sub(self.issued_ms) > retention_ms
    }
}

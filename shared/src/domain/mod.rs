//! The pure rules of presence: ids, events, session registers, merge,
//! derivation, visibility, transitions, the read model and the scanner's schedule. No I/O and no clock: every rule
//! that depends on time takes `now`.

pub mod announce;
pub mod audience;
pub mod derive;
pub mod event;
pub mod feed;
pub mod ids;
pub mod last_seen;
pub mod manual;
pub mod platform;
pub mod read_model;
pub mod record;
pub mod schedule;
pub mod state;
pub mod status;
pub mod stream;
pub mod view;

pub use announce::OutboxEvent;
pub use audience::{Audience, AudienceDefault, AudienceError, AudienceRule, LastSeenRule, ListTag, ViewerClass};
pub use derive::Connection;
pub use event::{EventError, EventKind, PresenceEvent};
pub use feed::{FeedChange, FeedEvent};
pub use ids::{Millis, SessionId, UserId};
pub use last_seen::LastSeen;
pub use manual::{ManualError, ManualState, ManualStatus, ManualTransition};
pub use platform::{Platform, Platforms};
pub use read_model::ReadModel;
pub use record::{Transition, UserRecord};
pub use state::{Presence, Register, Session, UserState};
pub use status::{Rules, Status};
pub use view::{View, Visibility};
